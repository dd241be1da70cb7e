"""Numba kernels of the spatial phase unwrappers (:mod:`QSMLogic.unwrap`); private, arrays only.

Layouts: the volume is C-ordered ``(nx, ny, nz)`` and flattened. The ROMEO kernels work on the mask voxels only
("compact" arrays of length ``n``: ``idx`` the flat grid index of each mask voxel, ``lut`` the inverse map, −1
outside the mask); their edge ``3·i + d`` joins compact voxel ``i`` to its neighbour along axis ``d``. The
best-path kernels work on the whole grid, edge ``3·v + d`` joining voxel ``v`` to ``v + stride[d]``. An edge whose
neighbour lies outside the grid or the mask carries the sentinel bin :data:`NO_EDGE`.
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


@njit(cache=True, inline="always")
def _coords(v, ny, nz):
    x = v // (ny * nz)
    r = v - x * ny * nz
    y = r // nz
    return x, y, r - y * nz


@njit(cache=True, parallel=True)
def romeo_edge_bins(idx, lut, dims, phase, phase2, te_ratio, magnitude, mag_ref, n_bins, use_phase2, use_mag,
                    use_linearity):
    """Quantised ROMEO edge weights (Dymerska et al., MRM 2021) of the mask voxels, shape ``(n, 3)`` uint8.

    Compact layout: ``idx`` holds the flat grid index of each of the ``n`` mask voxels, ``lut`` the inverse map
    (−1 outside the mask), ``phase``/``phase2``/``magnitude`` are the values at the mask voxels. Row ``i``, column
    ``d`` is the edge from voxel ``i`` (a) to its neighbour b one step further along axis ``d``. Weight (all
    factors in [0, 1], multiplied): phase coherence ``1 − |wrap(φb − φa)|/π``; if ``use_phase2`` the
    phase-gradient coherence with a second echo ``max(0, 1 − |Δφ − te_ratio·Δφ2|)`` (``te_ratio`` = TE / TE2);
    if ``use_mag`` the magnitude coherence ``(min/max)²`` and the magnitude weight ``min(1, min(Ma, Mb)/mag_ref)``;
    if ``use_linearity`` the phase linearity (the paper's second-difference weight) ``1 − |wrap(Δab − Δprev)|/π``
    for the step before a and likewise after b, where those voxels are in the mask. A weight ``w`` goes to bin
    ``round((1 − w)·(n_bins − 1))`` (bin 0 best). Returns the bins that order the growth and those of the weight
    without phase linearity, which give the voxel quality map (second differences are large wherever the phase
    is steep but unambiguous: they rank edges well but would mark such tissue as poor). Edges inside the mask
    always exist (a zero weight still connects, in the last bin) so one connected mask region is one unwrapping
    region.
    """
    nx, ny, nz = dims[0], dims[1], dims[2]
    n = idx.size
    out = np.full((n, 3), NO_EDGE, dtype=np.uint8)
    qual = np.full((n, 3), NO_EDGE, dtype=np.uint8)
    top = n_bins - 1
    for i in prange(n):
        v = idx[i]
        x, y, z = _coords(v, ny, nz)
        pa = phase[i]
        for d in range(3):
            if d == 0:
                c, size, s = x, nx, ny * nz
            elif d == 1:
                c, size, s = y, ny, nz
            else:
                c, size, s = z, nz, 1
            if c + 1 >= size:
                continue
            j = lut[v + s]
            if j < 0:
                continue
            dab = _wrap(phase[j] - pa)
            w = 1.0 - abs(dab) / np.pi
            if use_phase2:
                d2 = _wrap(phase2[j] - phase2[i])
                w *= max(0.0, 1.0 - abs(dab - te_ratio * d2))
            if use_mag:
                ma = magnitude[i]
                mb = magnitude[j]
                lo = min(ma, mb)
                hi = max(ma, mb)
                w *= (lo / hi) ** 2 if hi > 0 else 0.0
                w *= min(1.0, lo / mag_ref) if mag_ref > 0 else 1.0
            b = min(max(int((1.0 - w) * top + 0.5), 0), top)
            qual[i, d] = b
            if use_linearity and c >= 1:
                h = lut[v - s]
                if h >= 0:
                    w *= 1.0 - abs(_wrap(dab - _wrap(pa - phase[h]))) / np.pi
            if use_linearity and c + 2 < size:
                k = lut[v + 2 * s]
                if k >= 0:
                    w *= 1.0 - abs(_wrap(_wrap(phase[k] - phase[j]) - dab)) / np.pi
            out[i, d] = min(max(int((1.0 - w) * top + 0.5), 0), top)
    return out, qual


@njit(cache=True, parallel=True)
def voxel_quality(bins, idx, lut, dims, n_bins):
    """Mean weight ``1 − bin/(n_bins − 1)`` of each mask voxel's existing edges (0 where it has none)."""
    ny, nz = dims[1], dims[2]
    n = idx.size
    q = np.zeros(n, dtype=np.float32)
    top = n_bins - 1
    for i in prange(n):
        v = idx[i]
        x, y, z = _coords(v, ny, nz)
        s = 0.0
        m = 0
        for d in range(3):
            b = bins[i, d]
            if b != NO_EDGE:
                s += 1.0 - b / top
                m += 1
            if d == 0:
                c, st = x, ny * nz
            elif d == 1:
                c, st = y, nz
            else:
                c, st = z, 1
            if c > 0:
                h = lut[v - st]
                if h >= 0 and bins[h, d] != NO_EDGE:
                    s += 1.0 - bins[h, d] / top
                    m += 1
        if m:
            q[i] = s / m
    return q


@njit(cache=True, parallel=True)
def neighbours(idx, lut, dims):
    """Compact index of each mask voxel's six neighbours ``(n, 6)`` int32: +x, +y, +z, −x, −y, −z (−1: none)."""
    nx, ny, nz = dims[0], dims[1], dims[2]
    n = idx.size
    nb = np.full((n, 6), -1, dtype=np.int32)
    for i in prange(n):
        v = idx[i]
        x, y, z = _coords(v, ny, nz)
        if x + 1 < nx:
            nb[i, 0] = lut[v + ny * nz]
        if y + 1 < ny:
            nb[i, 1] = lut[v + nz]
        if z + 1 < nz:
            nb[i, 2] = lut[v + 1]
        if x > 0:
            nb[i, 3] = lut[v - ny * nz]
        if y > 0:
            nb[i, 4] = lut[v - nz]
        if z > 0:
            nb[i, 5] = lut[v - 1]
    return nb


@njit(cache=True, parallel=True)
def _six_bins(bins, nb):
    """Bins of each voxel's six edges ``(n, 6)`` in the order of :func:`neighbours` (``NO_EDGE``: none)."""
    n = nb.shape[0]
    b6 = np.full((n, 6), NO_EDGE, dtype=np.uint8)
    for i in prange(n):
        for d in range(3):
            b6[i, d] = bins[i, d]
            h = nb[i, 3 + d]
            if h >= 0:
                b6[i, 3 + d] = bins[h, d]
    return b6


@njit(cache=True)
def _push(i, b6, nb, visited, to, frm, top, cur):
    """Queue the edges from the newly unwrapped voxel ``i`` to voxels not yet unwrapped; return the lowest
    non-empty bin."""
    for k in range(6):
        j = nb[i, k]
        if j >= 0 and not visited[j]:
            b = b6[i, k]
            pos = top[b]
            to[pos] = j
            frm[pos] = i
            top[b] = pos + 1
            if b < cur:
                cur = b
    return cur


@njit(cache=True)
def grow_regions(phase, bins, nb, quality, n_bins):
    """Quality-guided region growing (ROMEO, Dymerska et al. MRM 2021) on the compact mask voxels, in place.

    ``phase`` (n float32) is unwrapped in place; ``bins`` ``(n, 3)`` uint8 are the quantised edge weights, ``nb``
    the neighbour table of :func:`neighbours`. Growth starts at the voxel of best ``quality``; a bucket priority
    queue always expands the best remaining edge from the unwrapped set and adds 2π·k to its new voxel to match
    the voxel it came from. Each edge enters the queue at most once, so each bin is a LIFO stack in one array
    sized by the bin's edge count (sequential memory, no linked list). Voxels the first region did not reach
    (other connected parts of the mask) are seeded best quality first. Returns the region number of every voxel.
    """
    n = phase.size
    b6 = _six_bins(bins, nb)
    counts = np.zeros(n_bins + 1, dtype=np.int64)
    for i in range(n):
        for d in range(3):
            counts[bins[i, d]] += 1
    start = np.zeros(n_bins + 1, dtype=np.int64)
    for b in range(1, n_bins + 1):
        start[b] = start[b - 1] + counts[b - 1]
    top = start.copy()
    to = np.empty(start[n_bins], dtype=np.int32)
    frm = np.empty(start[n_bins], dtype=np.int32)
    visited = np.zeros(n, dtype=np.uint8)
    region = np.zeros(n, dtype=np.int32)
    n_regions = 0
    order = np.empty(1, dtype=np.int64)
    order[0] = np.argmax(quality)
    for rnd in range(2):
        for s in range(order.size):
            seed = order[s]
            if visited[seed]:
                continue
            n_regions += 1
            visited[seed] = 1
            region[seed] = n_regions
            cur = _push(seed, b6, nb, visited, to, frm, top, n_bins)
            while True:
                while cur < n_bins and top[cur] == start[cur]:
                    cur += 1
                if cur >= n_bins:
                    break
                pos = top[cur] - 1
                top[cur] = pos
                new = to[pos]
                if visited[new]:
                    continue
                src = frm[pos]
                phase[new] += TWO_PI * np.round((phase[src] - phase[new]) / TWO_PI)
                visited[new] = 1
                region[new] = n_regions
                cur = _push(new, b6, nb, visited, to, frm, top, cur)
        if rnd == 0:
            rest = np.nonzero(visited == 0)[0]
            order = rest[np.argsort(-quality[rest])]
    return region


@njit(cache=True)
def center_regions(u, region, n_regions):
    """Shift each region (labels 1…n_regions) of ``u`` by 2π·k so that its mean lies in (−π, π], in place."""
    sums = np.zeros(n_regions + 1, dtype=np.float64)
    counts = np.zeros(n_regions + 1, dtype=np.int64)
    for i in range(u.size):
        sums[region[i]] += u[i]
        counts[region[i]] += 1
    shift = np.zeros(n_regions + 1, dtype=np.float32)
    for r in range(n_regions + 1):
        if counts[r]:
            shift[r] = -TWO_PI * np.round(sums[r] / counts[r] / TWO_PI)
    for i in range(u.size):
        u[i] += shift[region[i]]


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
def gentle_phase_coherence(phase, mask, ref, limits):
    """Per echo n, the mean of ``1 − |wrap(Δφ_n)|/π`` over the mask's neighbour pairs where echo ``ref`` steps by
    less than ``limits[n]`` (rad); ``phase`` is (x, y, z, echo). Returns (sums, counts) per echo."""
    nx, ny, nz, ne = phase.shape
    sums = np.zeros((nx, ne), dtype=np.float64)
    counts = np.zeros((nx, ne), dtype=np.int64)
    for xp in prange(nx):
        x = np.int64(xp)
        for y in range(ny):
            for z in range(nz):
                if not mask[x, y, z]:
                    continue
                for a in range(3):
                    x2 = x + 1 if a == 0 else x
                    y2 = y + 1 if a == 1 else y
                    z2 = z + 1 if a == 2 else z
                    if x2 >= nx or y2 >= ny or z2 >= nz or not mask[x2, y2, z2]:
                        continue
                    sr = abs(_wrap(phase[x2, y2, z2, ref] - phase[x, y, z, ref]))
                    for n in range(ne):
                        if sr < limits[n]:
                            sums[x, n] += 1.0 - abs(_wrap(phase[x2, y2, z2, n] - phase[x, y, z, n])) / np.pi
                            counts[x, n] += 1
    return sums.sum(axis=0), counts.sum(axis=0)


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
def temporal_unwrap(out, wrapped, u_t, u_d, scale, t):
    """Template-mode temporal unwrapping of compact (voxel, echo) arrays, in place: echo n takes the 2π multiple
    of its wrapped phase nearest ``u_t + u_d·scale[n]``; the template echo ``t`` takes ``u_t``."""
    n_e = scale.size
    for i in prange(u_t.size):
        for n in range(n_e):
            if n == t:
                out[i, n] = u_t[i]
            else:
                pred = u_t[i] + u_d[i] * scale[n]
                w = wrapped[i, n]
                out[i, n] = w + TWO_PI * np.round((pred - w) / TWO_PI)


@njit(cache=True, parallel=True)
def fit_correction(out, wrapped, weight, te, use, t, n_iter):
    """Per row of compact (voxel, echo) arrays: weighted linear fit of phase over TE (echoes with ``use``), then
    every echo but the template ``t`` re-rounded to the fit, ``n_iter`` times; returns the largest |residual| of
    the used echoes."""
    n_e = te.size
    worst = np.zeros(out.shape[0], dtype=np.float32)
    for v in prange(out.shape[0]):
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
                worst[v] = r
            else:
                for n in range(n_e):
                    if n != t:
                        wv = wrapped[v, n]
                        out[v, n] = wv + TWO_PI * np.round((a + b * te[n] - wv) / TWO_PI)
    return worst
