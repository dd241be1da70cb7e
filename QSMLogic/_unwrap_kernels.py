"""Numba kernels of the spatial phase unwrappers (:mod:`QSMLogic.unwrap`); private, arrays only.

Edge layout shared by all kernels: the volume is C-ordered ``(nx, ny, nz)`` and flattened; edge ``3·v + d`` joins
voxel ``v`` to its neighbour ``v + stride[d]`` along axis ``d``. An edge whose neighbour lies outside the grid or
outside the mask carries the sentinel bin :data:`NO_EDGE`.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

#: Bin value of an edge that does not exist (grid border, voxel outside the mask).
NO_EDGE = 255
TWO_PI = 2.0 * np.pi


@njit(cache=True, inline="always")
def _wrap(x: float) -> float:
    """Wrap a phase difference into [-π, π)."""
    return x - TWO_PI * np.floor((x + np.pi) / TWO_PI)


@njit(cache=True, parallel=True)
def romeo_edge_bins(phase, phase2, te_ratio, magnitude, mag_ref, mask, n_bins, use_phase2, use_mag):
    """Quantised ROMEO edge weights (Dymerska et al., MRM 2021), shape ``(nx, ny, nz, 3)`` uint8.

    Weight of the edge a→b (all factors in [0, 1], multiplied): phase coherence ``1 − |wrap(φa − φb)|/π``;
    if ``use_phase2`` the phase-gradient coherence with a second echo ``max(0, 1 − |Δφ − te_ratio·Δφ2|)``
    (``te_ratio`` = TE / TE2, so the second echo's gradient is scaled to this echo's); if ``use_mag`` the
    magnitude coherence ``(min/max)²`` and the magnitude weight ``min(1, min(Ma, Mb)/mag_ref)``. The weight
    ``w`` goes to bin ``round((1 − w)·(n_bins − 1))`` (bin 0 best). Edges inside the mask always exist (a zero
    weight still connects, in the last bin) so one connected mask region is one unwrapping region.
    """
    nx, ny, nz = phase.shape
    out = np.full((nx, ny, nz, 3), NO_EDGE, dtype=np.uint8)
    top = n_bins - 1
    for x in prange(nx):
        for y in range(ny):
            for z in range(nz):
                if not mask[x, y, z]:
                    continue
                for d in range(3):
                    xb = x + (1 if d == 0 else 0)
                    yb = y + (1 if d == 1 else 0)
                    zb = z + (1 if d == 2 else 0)
                    if xb >= nx or yb >= ny or zb >= nz or not mask[xb, yb, zb]:
                        continue
                    d1 = _wrap(phase[x, y, z] - phase[xb, yb, zb])
                    w = 1.0 - abs(d1) / np.pi
                    if use_phase2:
                        d2 = _wrap(phase2[x, y, z] - phase2[xb, yb, zb])
                        w *= max(0.0, 1.0 - abs(d1 - te_ratio * d2))
                    if use_mag:
                        ma = magnitude[x, y, z]
                        mb = magnitude[xb, yb, zb]
                        lo = min(ma, mb)
                        hi = max(ma, mb)
                        w *= (lo / hi) ** 2 if hi > 0 else 0.0
                        w *= min(1.0, lo / mag_ref) if mag_ref > 0 else 1.0
                    b = int((1.0 - w) * top + 0.5)
                    out[x, y, z, d] = min(max(b, 0), top)
    return out


@njit(cache=True, parallel=True)
def voxel_quality(bins, n_bins):
    """Mean weight ``1 − bin/(n_bins − 1)`` of each voxel's existing edges (0 where it has none)."""
    nx, ny, nz, _ = bins.shape
    q = np.zeros((nx, ny, nz), dtype=np.float32)
    top = n_bins - 1
    for x in prange(nx):
        for y in range(ny):
            for z in range(nz):
                s = 0.0
                n = 0
                for d in range(3):
                    b = bins[x, y, z, d]
                    if b != NO_EDGE:
                        s += 1.0 - b / top
                        n += 1
                if x > 0 and bins[x - 1, y, z, 0] != NO_EDGE:
                    s += 1.0 - bins[x - 1, y, z, 0] / top
                    n += 1
                if y > 0 and bins[x, y - 1, z, 1] != NO_EDGE:
                    s += 1.0 - bins[x, y - 1, z, 1] / top
                    n += 1
                if z > 0 and bins[x, y, z - 1, 2] != NO_EDGE:
                    s += 1.0 - bins[x, y, z - 1, 2] / top
                    n += 1
                if n:
                    q[x, y, z] = s / n
    return q


@njit(cache=True)
def _push_edges(v, bins, strides, visited, nxt, head, cur):
    """Push the edges of the newly unwrapped voxel ``v`` that lead to voxels not yet unwrapped; return the
    lowest non-empty bin."""
    for d in range(3):
        e = 3 * v + d
        b = bins[e]
        if b != NO_EDGE and not visited[v + strides[d]]:
            nxt[e] = head[b]
            head[b] = e
            if b < cur:
                cur = b
        u = v - strides[d]
        if u >= 0:
            e = 3 * u + d
            b = bins[e]
            if b != NO_EDGE and not visited[u]:
                nxt[e] = head[b]
                head[b] = e
                if b < cur:
                    cur = b
    return cur


@njit(cache=True)
def grow_regions(phase, bins, strides, seeds, n_bins):
    """Quality-guided region growing (ROMEO, Dymerska et al. MRM 2021) on flat arrays, in place.

    ``phase`` (flat float32) is unwrapped in place; ``bins`` (flat uint8, 3 per voxel) are the quantised edge
    weights; ``seeds`` lists candidate seed voxels best first. A bucket priority queue (one LIFO linked list of
    edges per bin, the links stored per edge since each edge enters the queue at most once) always expands the
    best remaining edge from the unwrapped set and adds 2π·k to its new voxel to match the voxel it came from.
    When a region is exhausted, the next not-yet-reached seed starts a new region. Returns the region number of
    every voxel (0: never reached).
    """
    n_vox = phase.size
    region = np.zeros(n_vox, dtype=np.int32)
    visited = np.zeros(n_vox, dtype=np.bool_)
    nxt = np.empty(bins.size, dtype=np.int32)
    head = np.full(n_bins, -1, dtype=np.int32)
    n_regions = 0
    for s in range(seeds.size):
        seed = seeds[s]
        if visited[seed]:
            continue
        n_regions += 1
        visited[seed] = True
        region[seed] = n_regions
        cur = _push_edges(seed, bins, strides, visited, nxt, head, n_bins)
        while True:
            while cur < n_bins and head[cur] == -1:
                cur += 1
            if cur >= n_bins:
                break
            e = head[cur]
            head[cur] = nxt[e]
            v = e // 3
            u = v + strides[e - 3 * v]
            if visited[v]:
                if visited[u]:
                    continue
                src = v
                new = u
            else:
                src = u
                new = v
            phase[new] += TWO_PI * np.round((phase[src] - phase[new]) / TWO_PI)
            visited[new] = True
            region[new] = n_regions
            cur = _push_edges(new, bins, strides, visited, nxt, head, cur)
    return region


@njit(cache=True, parallel=True)
def second_difference_reliability(phase, mask):
    """Best-path reliability ``1/D`` of each voxel (Abdul-Rahman et al., Appl Opt 2007).

    ``D² = Σ (wrap(φ(r−s) − φ(r)) − wrap(φ(r) − φ(r+s)))²`` over the 13 directions ``s`` of the 3×3×3
    neighbourhood (axes, face and space diagonals). Directions whose end voxels leave the grid or the mask are
    skipped and the sum is rescaled to 13 terms; voxels with no usable direction get reliability 0.
    """
    nx, ny, nz = phase.shape
    rel = np.zeros((nx, ny, nz), dtype=np.float32)
    for x in prange(nx):
        for y in range(ny):
            for z in range(nz):
                if not mask[x, y, z]:
                    continue
                p = phase[x, y, z]
                acc = 0.0
                n = 0
                for i in range(-1, 2):
                    for j in range(-1, 2):
                        for k in range(-1, 2):
                            # one direction of each ± pair: the first non-zero component positive
                            if i < 0 or (i == 0 and (j < 0 or (j == 0 and k <= 0))):
                                continue
                            xa, ya, za = x - i, y - j, z - k
                            xb, yb, zb = x + i, y + j, z + k
                            if (xa < 0 or ya < 0 or za < 0 or xa >= nx or ya >= ny or za >= nz
                                    or xb < 0 or yb < 0 or zb < 0 or xb >= nx or yb >= ny or zb >= nz):
                                continue
                            if not (mask[xa, ya, za] and mask[xb, yb, zb]):
                                continue
                            sd = _wrap(phase[xa, ya, za] - p) - _wrap(p - phase[xb, yb, zb])
                            acc += sd * sd
                            n += 1
                if n:
                    rel[x, y, z] = 1.0 / np.sqrt(acc * 13.0 / n + 1e-12)
    return rel


@njit(cache=True)
def _find(parent, off, v):
    """Root of ``v`` and the 2π count from ``v`` to it, compressing the path."""
    r = v
    acc = 0
    while parent[r] != r:
        acc += off[r]
        r = parent[r]
    x = v
    a = acc
    while parent[x] != x:
        p = parent[x]
        ox = off[x]
        parent[x] = r
        off[x] = a
        a -= ox
        x = p
    return r, acc


@njit(cache=True)
def best_path_merge(phase, edges, strides, in_mask):
    """Merge voxel groups along ``edges`` (flat edge ids, most reliable first) with 2π offsets (union–find).

    Each group keeps a relative 2π count per member; joining the groups of an edge's two voxels shifts the smaller
    group so that the edge's unwrapped difference equals its wrapped difference (Abdul-Rahman et al., Appl Opt
    2007). Returns the 2π count of every voxel and the group root of every voxel (−1 outside ``in_mask``).
    """
    n_vox = phase.size
    parent = np.arange(n_vox).astype(np.int64)
    off = np.zeros(n_vox, dtype=np.int32)
    size = np.ones(n_vox, dtype=np.int32)
    for t in range(edges.size):
        e = edges[t]
        i = e // 3
        j = i + strides[e - 3 * i]
        ri, oi = _find(parent, off, i)
        rj, oj = _find(parent, off, j)
        if ri == rj:
            continue
        c = -int(np.round((phase[j] - phase[i]) / TWO_PI))
        shift = c + oi - oj  # 2π count of rj relative to ri
        if size[ri] >= size[rj]:
            parent[rj] = ri
            off[rj] = shift
            size[ri] += size[rj]
        else:
            parent[ri] = rj
            off[ri] = -shift
            size[rj] += size[ri]
    k = np.zeros(n_vox, dtype=np.int32)
    root = np.full(n_vox, -1, dtype=np.int64)
    for v in range(n_vox):
        if in_mask[v]:
            r, o = _find(parent, off, v)
            k[v] = o
            root[v] = r
    return k, root


@njit(cache=True)
def best_path_edges(rel, mask):
    """Flat ids and reliabilities (sum of the two voxels' reliabilities) of all edges inside the mask."""
    nx, ny, nz = rel.shape
    n = 0
    for x in range(nx):
        for y in range(ny):
            for z in range(nz):
                if mask[x, y, z]:
                    if x + 1 < nx and mask[x + 1, y, z]:
                        n += 1
                    if y + 1 < ny and mask[x, y + 1, z]:
                        n += 1
                    if z + 1 < nz and mask[x, y, z + 1]:
                        n += 1
    ids = np.empty(n, dtype=np.int64)
    val = np.empty(n, dtype=np.float32)
    t = 0
    for x in range(nx):
        for y in range(ny):
            for z in range(nz):
                if not mask[x, y, z]:
                    continue
                v = (x * ny + y) * nz + z
                r = rel[x, y, z]
                if x + 1 < nx and mask[x + 1, y, z]:
                    ids[t] = 3 * v
                    val[t] = r + rel[x + 1, y, z]
                    t += 1
                if y + 1 < ny and mask[x, y + 1, z]:
                    ids[t] = 3 * v + 1
                    val[t] = r + rel[x, y + 1, z]
                    t += 1
                if z + 1 < nz and mask[x, y, z + 1]:
                    ids[t] = 3 * v + 2
                    val[t] = r + rel[x, y, z + 1]
                    t += 1
    return ids, val


@njit(cache=True, parallel=True)
def mean_phase_coherence(phase, mask):
    """Mean of ``1 − |wrap(Δφ)|/π`` over all neighbour pairs inside the mask (≈ 0.5 for pure noise)."""
    nx, ny, nz = phase.shape
    sums = np.zeros(nx, dtype=np.float64)
    counts = np.zeros(nx, dtype=np.int64)
    for x in prange(nx):
        s = 0.0
        n = 0
        for y in range(ny):
            for z in range(nz):
                if not mask[x, y, z]:
                    continue
                p = phase[x, y, z]
                if x + 1 < nx and mask[x + 1, y, z]:
                    s += 1.0 - abs(_wrap(p - phase[x + 1, y, z])) / np.pi
                    n += 1
                if y + 1 < ny and mask[x, y + 1, z]:
                    s += 1.0 - abs(_wrap(p - phase[x, y + 1, z])) / np.pi
                    n += 1
                if z + 1 < nz and mask[x, y, z + 1]:
                    s += 1.0 - abs(_wrap(p - phase[x, y, z + 1])) / np.pi
                    n += 1
        sums[x] = s
        counts[x] = n
    tot = counts.sum()
    return sums.sum() / tot if tot else 0.0


@njit(cache=True, parallel=True)
def sine_laplacian(phase, mask, inv_h2):
    """Schofield & Zhu's ``cos φ ∇² sin φ − sin φ ∇² cos φ`` with the 7-point Laplacian and mirrored borders.

    With the discrete Laplacian the expression equals ``Σ_neighbours sin(φn − φ)/h²`` exactly (expand
    ``cos φ (sin φn − sin φ) − sin φ (cos φn − cos φ)``), which is what is computed; a missing neighbour at the
    grid border is the voxel itself (Neumann). Zero outside ``mask``.
    """
    nx, ny, nz = phase.shape
    out = np.zeros((nx, ny, nz), dtype=np.float32)
    for x in prange(nx):
        for y in range(ny):
            for z in range(nz):
                if not mask[x, y, z]:
                    continue
                p = phase[x, y, z]
                s = 0.0
                if x > 0:
                    s += np.sin(phase[x - 1, y, z] - p) * inv_h2[0]
                if x + 1 < nx:
                    s += np.sin(phase[x + 1, y, z] - p) * inv_h2[0]
                if y > 0:
                    s += np.sin(phase[x, y - 1, z] - p) * inv_h2[1]
                if y + 1 < ny:
                    s += np.sin(phase[x, y + 1, z] - p) * inv_h2[1]
                if z > 0:
                    s += np.sin(phase[x, y, z - 1] - p) * inv_h2[2]
                if z + 1 < nz:
                    s += np.sin(phase[x, y, z + 1] - p) * inv_h2[2]
                out[x, y, z] = s
    return out


@njit(cache=True, parallel=True)
def temporal_unwrap(out, wrapped, u_t, u_d, scale, idx, t):
    """Template-mode temporal unwrapping on the voxels ``idx`` of flat (voxel, echo) arrays, in place:
    echo n takes the 2π multiple of its wrapped phase nearest ``u_t + u_d·scale[n]``; the template echo ``t``
    takes ``u_t``."""
    n_e = scale.size
    for i in prange(idx.size):
        v = idx[i]
        for n in range(n_e):
            if n == t:
                out[v, n] = u_t[v]
            else:
                pred = u_t[v] + u_d[v] * scale[n]
                w = wrapped[v, n]
                out[v, n] = w + TWO_PI * np.round((pred - w) / TWO_PI)


@njit(cache=True, parallel=True)
def fit_correction(out, wrapped, weight, te, use, idx, t, n_iter):
    """Per voxel of ``idx``: weighted linear fit of phase over TE (echoes with ``use``), then every echo but the
    template ``t`` re-rounded to the fit, ``n_iter`` times; returns the largest |residual| of the used echoes."""
    n_e = te.size
    worst = np.zeros(idx.size, dtype=np.float32)
    for i in prange(idx.size):
        v = idx[i]
        sw = 0.0
        st = 0.0
        stt = 0.0
        for n in range(n_e):
            if use[n]:
                w = weight[v, n]
                sw += w
                st += w * te[n]
                stt += w * te[n] * te[n]
        det = sw * stt - st * st
        if sw <= 0 or det <= 0:
            continue
        for it in range(n_iter + 1):
            sy = 0.0
            sty = 0.0
            for n in range(n_e):
                if use[n]:
                    w = weight[v, n]
                    sy += w * out[v, n]
                    sty += w * te[n] * out[v, n]
            b = (sw * sty - st * sy) / det
            a = (sy - b * st) / sw
            if it == n_iter:
                r = 0.0
                for n in range(n_e):
                    if use[n]:
                        r = max(r, abs(out[v, n] - a - b * te[n]))
                worst[i] = r
            else:
                for n in range(n_e):
                    if n != t:
                        wv = wrapped[v, n]
                        out[v, n] = wv + TWO_PI * np.round((a + b * te[n] - wv) / TWO_PI)
    return worst
