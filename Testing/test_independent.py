"""The default chain on heads simulated by an independent forward model (PyPI ``qsm-forward``, GPL-3.0, a test
extra only), at 2 mm model resolution so the suite stays cheap: thick slices and an oblique B0 from the affine.

The bounds are the values measured (the default chain, TFI, and the two-step PDF + FANSI chain beside it) with a
small margin; the issue's targets are for the 1 mm-model variants of the benchmark, not for these 2 mm ones.
``susceptibility-mri bench --areas independent`` has the 1 mm variants and docs/benchmarks.md the before/after
table. Simulations are cached on disk (``QSMLogic.bench.independent.cache_dir``).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from QSMLogic.bench.independent import DEEP_NUCLEI, SMALL_VARIANTS, attribute_errors, polynomial_residual, simulate
from QSMLogic.dipole import forward_field
from QSMLogic.pipeline import PipelineConfig, reliable_mask

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def thick():
    return simulate(SMALL_VARIANTS["2x2x3 mm"])


@pytest.fixture(scope="module")
def oblique():
    return simulate(SMALL_VARIANTS["2x2x3 mm, B0 15 deg"])


def test_qsm_forward_stays_out_of_the_library():
    """GPL-3.0: only the benchmark module (and tests) may import it; importing the library and its command line
    must not load it."""
    users = [p.relative_to(ROOT).as_posix() for p in (ROOT / "QSMLogic").rglob("*.py")
             if "import qsm_forward" in p.read_text(encoding="utf-8")]
    assert users == ["QSMLogic/bench/independent.py"]
    code = ("import sys, QSMLogic, QSMLogic.pipeline, QSMLogic.cli, QSMLogic.io, QSMLogic.bench.independent; "
            "assert 'qsm_forward' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_independent_truth_agrees_with_our_dipole_model(oblique):
    """qsm-forward's local field (its own kernel on the 2 mm model grid, B0 tilted 15°, then k-space cropped to
    2×2×3 mm) against ours from the cropped truth χ with the B0 direction read from the (defective) oblique affine:
    the two forward models and their geometry conventions agree."""
    d = oblique
    m = d.brain_mask
    ours = forward_field(d.chi_ppm * m, d.gre.voxel_size_mm, d.gre.b0_direction)
    a, b = ours[m] - ours[m].mean(), d.local_field_ppm[m] - d.local_field_ppm[m].mean()
    err = 100 * np.linalg.norm(a - b) / np.linalg.norm(b)
    print(f"our dipole model vs qsm-forward, oblique 2×2×3 mm: {err:.1f} %")
    assert err < 8.0
    assert abs(d.gre.voxel_size_mm[2] - 3.0) > 0.03, "the oblique header defect (column norm ≠ 3 mm) is kept"


def test_reliable_mask_keeps_deep_unreliable_voxels():
    """An unreliable channel from the edge to the centre (a cistern reaching the surface): only its part within
    the edge depth leaves the mask."""
    m = np.zeros((40, 40, 40), bool)
    m[5:35, 5:35, 5:35] = True
    bad = np.zeros_like(m)
    bad[19:21, 19:21, 5:20] = True
    old = reliable_mask(m, bad)
    new = reliable_mask(m, bad, (1.0, 1.0, 1.0), 5.0)
    assert not old[20, 20, 15] and new[20, 20, 15]
    assert not new[20, 20, 6] and not new[20, 20, 9] and new[20, 20, 11]


def test_reliable_mask_drops_deep_noise_when_the_mask_took_the_background():
    """A mask that covers the whole volume, mostly noise around a sphere of tissue: the unreliable majority leaves
    the mask at any depth (keeping deep noise made a local field of 0.98 ppm that the inversion refused)."""
    m = np.ones((40, 40, 40), bool)
    sphere = np.sum((np.indices(m.shape) - 19.5) ** 2, axis=0) < 10 ** 2
    out = reliable_mask(m, ~sphere, (1.0, 1.0, 1.0), 5.0)
    assert np.array_equal(out, sphere)


def _check(scores, name, chi_max, slope_min, nucleus_max):
    nuclei = {n: scores[f"err_{n}"] for n in DEEP_NUCLEI}
    print(f"{name}: χ nRMSE {scores['chi_nrmse_pct']:.1f} %, slope {scores['slope']:.2f}, local field "
          f"{scores['local_field_nrmse_pct']:.1f} %, from true field {scores['chi_true_field_nrmse_pct']:.1f} %, "
          f"deep holes {scores['holes_deep']:.0f}, nuclei {', '.join(f'{v:+.3f}' for v in nuclei.values())}")
    assert scores["chi_nrmse_pct"] < chi_max
    assert scores["slope"] > slope_min
    assert max(abs(v) for v in nuclei.values()) < nucleus_max
    assert scores["holes_deep"] < 100  # was 1,183 before the depth-aware reliability mask


def test_default_chain_on_thick_slices(thick):
    """2×2×3 mm, default chain (TFI from the total field); measured: χ nRMSE 60.4 % (PDF + FANSI, the default
    before: 71.2 %), slope 0.83 (0.66), worst nucleus 0.003 ppm, brain voxels deeper than 10 mm missing from the
    field mask 29 (1,183 before the depth-aware reliability mask). TFI's own figure from the true total field is
    not bounded here: on thick slices that field carries the truth's Gibbs ringing (docs/benchmarks.md)."""
    s = attribute_errors(thick)
    _check(s, "2×2×3 mm", chi_max=64.0, slope_min=0.78, nucleus_max=0.010)
    assert s["total_field_deep_rms_ppm"] < 0.015


def test_two_step_chain_on_thick_slices(thick):
    """The previous default (PDF + FANSI nonlinear TV) stays available and bounded: χ nRMSE 71.2 %, slope 0.66;
    its inversion from the true local field 9.5 %, so the two-step loss sits before the inversion."""
    s = attribute_errors(thick, PipelineConfig.default().set("inversion", "fansi_nltv"))
    _check(s, "2×2×3 mm, PDF + FANSI", chi_max=74.0, slope_min=0.60, nucleus_max=0.015)
    assert s["chi_true_field_nrmse_pct"] < 12.0


def test_default_chain_on_oblique_thick_slices(oblique):
    """2×2×3 mm with B0 15° off the slice axis, geometry from the affine only; measured χ nRMSE 72.1 % (PDF + FANSI
    78.9 %), slope 0.79 (0.60), worst nucleus 0.005 ppm."""
    s = attribute_errors(oblique)
    _check(s, "2×2×3 mm, B0 15°", chi_max=76.0, slope_min=0.74, nucleus_max=0.010)


def test_edge_shell_depth_per_method_and_voxel_size():
    """Regularised inversions get a 3 mm edge shell, at least 2.25 voxels (geometric mean size): measured on the
    qsm-forward heads, 1 mm 41.9 → 37.6 % and 1×1×1.5 mm 59.2 → 53.4 % against 4.5 mm, while 3 mm was worse at
    2 mm and 2×2×3 mm; MEDI and the least-squares methods keep 4.5 mm."""
    from QSMLogic.pipeline import data_edge_for

    assert data_edge_for("fansi_nltv", (1.0, 1.0, 1.0)) == 3.0
    assert data_edge_for("fansi_nltv", (1.0, 1.0, 1.5)) == 3.0
    assert data_edge_for("fansi_nltv", (2.0, 2.0, 2.0)) == pytest.approx(4.5)
    assert data_edge_for("fansi_nltv", (2.0, 2.0, 3.0)) == pytest.approx(2.25 * 12.0 ** (1 / 3))
    assert data_edge_for("medi", (1.0, 1.0, 1.0)) == 4.5


def test_shim_fit_removes_second_order_terms_only():
    """The attribution's shim fit: a 2nd-order polynomial leaves nothing, a cubic term survives."""
    m = np.zeros((20, 20, 20), bool)
    m[3:17, 3:17, 3:17] = True
    x, y, z = np.meshgrid(*[np.arange(20.0)] * 3, indexing="ij")
    assert np.abs(polynomial_residual(1 + x * y - 0.3 * z**2 + 0.2 * x, m)[m]).max() < 1e-9
    assert np.abs(polynomial_residual(1e-3 * x**3, m)[m]).max() > 0.01
