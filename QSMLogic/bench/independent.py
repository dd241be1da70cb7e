"""An independent validation head: MNI152/CIT168 anatomy simulated by someone else's forward model.

The project's own phantom (:mod:`QSMLogic.phantom`) and the pipeline were written together, so accuracy measured on
it can hide shared assumptions (same dipole discretisation, signal sampled at the voxel centres, no phase offset,
no shim). Here the head is simulated by the PyPI package ``qsm-forward`` (Stewart et al., the forward model behind
the QSM-CI / QSMxT test data; GPL-3.0, so it is a test/benchmark extra only and never imported by ``QSMLogic`` at
run time): the field is computed on a 1 mm model grid, the complex signal (SPGR magnitude, R2* decay, a smooth
transceiver phase offset, a 2nd-order shim residual, complex Gaussian noise at a peak SNR) is made there and then
*k-space cropped* to the acquisition's voxel size, as a scanner band-limits it. Thick slices and oblique B0 (the
geometry carried by the affine) come out of the same model.

Anatomy: the shipped MNI152 2009a + CIT168 label map (``QSMLogic/data/head_labels_1mm.npz``, see its README) at
its native MNI size (the project phantom scales it by 0.92), with this module's own susceptibility, R1, R2* and M0
per tissue and its own veins and calcification, so nothing but the label geometry is shared with the phantom.

Pitfalls of qsm-forward 0.32 handled here: array inputs fail (files are written and passed as paths); its resizing
of derivatives drops the affine origin (the truth is resampled here from the model grid:
``crop_kspace(χ·mask, shape, gibbs_correction=False)``); its dipole kernel swaps the voxel sizes of axes 0 and 1
(the model grid is isotropic); its oblique affines are not exactly rotation × voxel size (column norms of 1.486
for 1.5 mm), a header defect real converters also produce, kept as it is.

Simulations are cached on disk (keyed by a hash of the variant, this module's version and the label map), so a
test pays the simulation once per machine.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from itertools import combinations_with_replacement
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Tuple

import numpy as np

from ..gre import GREData
from ..phantom.shapes import Grid, ellipsoid_fraction, tube_fraction
from ..phantom.tissues import BY_NAME, LABEL_NAMES

if TYPE_CHECKING:
    from ..pipeline import PipelineConfig

#: Bump when the head or the simulation changes (invalidates the cache); the truth maps have their own version.
BUILDER_VERSION = "2"
TRUTH_VERSION = "3"
LABELS_FILE = Path(__file__).resolve().parent.parent / "data" / "head_labels_1mm.npz"
#: Crop of the 1 mm MNI grid (197×233×189) that holds the whole head; with :data:`NECK_PAD_MM` slices added below
#: it is 180×224×192, dimensions divisible by 2, 3, 4 and 6 so that 1.5 and 2 mm slices and a 2 mm model grid land
#: on whole voxels.
CROP_1MM = (slice(8, 188), slice(9, 233), slice(0, 174))
#: The template's neck is cut at its lowest slice. A cut at the field of view's edge would be a signal step that
#: k-space cropping (as any Fourier-encoded acquisition) wraps onto the top of the head, ringing through every
#: thick slice; a scanner's slab profile and coil sensitivity fade the neck out instead. So the neck is continued
#: downwards by this many slices (repeating the lowest one) and its signal (M0) fades out over them (sin² ramp).
NECK_PAD_MM = 18

#: Susceptibility (ppm, relative to CSF) per tissue. Brain values: Deistung et al., NeuroImage 65 (2013) 299–314
#: and Lim et al., NeuroImage 82 (2013) 449–469 (3 T regional means, rounded); air +9.41 ppm relative to water
#: (Schenck, Med Phys 23 (1996) 815–850); cortical bone −1.8 ppm (Buch et al., Magn Reson Med 73 (2015) 2185);
#: venous blood Hct 0.42, Y 0.65 → 0.50 ppm (Spees et al., Magn Reson Med 45 (2001) 533); calcification −0.4 ppm
#: (Chen et al., Radiology 270 (2014) 496–505).
CHI_PPM: Dict[str, float] = {
    "background/air": 9.41, "scalp": -0.05, "skull": -1.8, "sinus air": 9.41, "CSF": 0.0, "ventricles": 0.0,
    "GM": 0.015, "WM": -0.025, "caudate": 0.06, "putamen": 0.05, "globus pallidus externa (GPe)": 0.16,
    "globus pallidus interna (GPi)": 0.13, "thalamus": 0.01, "substantia nigra": 0.13, "red nucleus": 0.10,
    "subthalamic nucleus": 0.09, "dentate nucleus": 0.10, "nucleus accumbens": 0.03,
}
#: R2* at 3 T (Hz; scaled linearly with B0), R1 at 3 T (1/s) and M0 (relative to CSF) per tissue (R1 and M0 of
#: the deep grey nuclei not listed: ``NUCLEUS_DEFAULTS``). R2*: Peran et
#: al., Brain 130 (2007) 1767–1781; R1: Wansapura et al., J Magn Reson Imaging 9 (1999) 531–538.
R2STAR_3T_HZ: Dict[str, float] = {
    "background/air": 0.0, "scalp": 35.0, "skull": 250.0, "sinus air": 0.0, "CSF": 3.0, "ventricles": 3.0,
    "GM": 17.0, "WM": 21.0, "caudate": 24.0, "putamen": 27.0, "globus pallidus externa (GPe)": 40.0,
    "globus pallidus interna (GPi)": 38.0, "thalamus": 21.0, "substantia nigra": 36.0, "red nucleus": 31.0,
    "subthalamic nucleus": 33.0, "dentate nucleus": 30.0, "nucleus accumbens": 21.0,
}
R1_3T_HZ: Dict[str, float] = {
    "background/air": 0.0, "scalp": 2.5, "skull": 2.0, "sinus air": 0.0, "CSF": 0.25, "ventricles": 0.25,
    "GM": 0.75, "WM": 1.2, "thalamus": 0.95, "dentate nucleus": 0.9,
}
M0: Dict[str, float] = {
    "background/air": 0.0, "scalp": 0.8, "skull": 0.1, "sinus air": 0.0, "CSF": 1.0, "ventricles": 1.0,
    "GM": 0.83, "WM": 0.70,
}
NUCLEUS_DEFAULTS = {"r1": 0.85, "m0": 0.78}
#: Veins (MNI mm polyline, radius mm): superior sagittal sinus, straight sinus, internal cerebral veins, basal
#: veins of Rosenthal, thalamostriate veins and three cortical veins. χ, R2*, R1, M0 of venous blood.
VEINS: Tuple[Tuple[Tuple[Tuple[float, float, float], ...], float], ...] = (
    (((0.0, 55.0, 30.0), (0.0, 30.0, 58.0), (0.0, 0.0, 70.0), (0.0, -30.0, 72.0), (0.0, -62.0, 60.0),
      (0.0, -85.0, 38.0), (0.0, -98.0, 12.0)), 3.0),
    (((0.0, -48.0, 8.0), (0.0, -72.0, 0.0), (0.0, -95.0, 4.0)), 2.2),
    (((3.0, -6.0, 18.0), (3.0, -24.0, 16.0), (2.0, -44.0, 9.0)), 1.1),
    (((-3.0, -6.0, 18.0), (-3.0, -24.0, 16.0), (-2.0, -44.0, 9.0)), 1.1),
    (((20.0, -8.0, -12.0), (22.0, -24.0, -6.0), (8.0, -42.0, 6.0)), 1.0),
    (((-20.0, -8.0, -12.0), (-22.0, -24.0, -6.0), (-8.0, -42.0, 6.0)), 1.0),
    (((12.0, 0.0, 20.0), (6.0, -6.0, 18.0)), 0.8),
    (((-12.0, 0.0, 20.0), (-6.0, -6.0, 18.0)), 0.8),
    (((-55.0, -20.0, 10.0), (-50.0, -18.0, 45.0)), 1.4),
    (((50.0, 20.0, 20.0), (42.0, 40.0, 42.0)), 1.3),
    (((25.0, -75.0, 40.0), (50.0, -70.0, 30.0)), 1.3),
)
VEIN = {"chi": 0.50, "r2star": 45.0, "r1": 0.6, "m0": 0.85}
#: Physiological calcification in the choroid plexus of the right atrium (MNI mm, radius mm).
CALCIFICATION = ((28.0, -42.0, 14.0), 2.5)
CALCIFICATION_TISSUE = {"chi": -0.4, "r2star": 90.0, "r1": 1.5, "m0": 0.3}
#: Deep grey nuclei scored against the issue's targets (label names of :mod:`QSMLogic.phantom.tissues`).
DEEP_NUCLEI = ("putamen", "caudate", "globus pallidus externa (GPe)", "globus pallidus interna (GPi)",
               "substantia nigra", "red nucleus", "subthalamic nucleus")
MNI_ORIGIN_MM = (-98.0, -134.0, -72.0)


@dataclass(frozen=True)
class Variant:
    """One simulated acquisition: voxel size (mm, array axes), model grid (isotropic mm), field strength, B0 tilt
    about the array's first axis (degrees; the geometry goes into the affine), peak SNR, echo times, whether air,
    sinuses and bone carry their susceptibility (``air=False``: no background field) and the noise seed."""

    voxel_size_mm: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    model_voxel_mm: float = 1.0
    b0_tesla: float = 3.0
    tilt_deg: float = 0.0
    peak_snr: float = 100.0
    te_s: Tuple[float, ...] = (0.004, 0.009, 0.014, 0.019, 0.024)
    air: bool = True
    seed: int = 0

    def key(self) -> str:
        blob = json.dumps({**asdict(self), "builder": BUILDER_VERSION, "labels": _labels_digest()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


#: The benchmark's variants (model grid 1 mm) and the small ones the tests use (model grid 2 mm).
VARIANTS: Dict[str, Variant] = {
    "1 mm, no air": Variant(air=False),
    "1 mm": Variant(),
    "1x1x1.5 mm": Variant(voxel_size_mm=(1.0, 1.0, 1.5)),
    "1x1x2 mm": Variant(voxel_size_mm=(1.0, 1.0, 2.0)),
    "1x1x1.5 mm, B0 15 deg": Variant(voxel_size_mm=(1.0, 1.0, 1.5), tilt_deg=15.0),
    "1 mm, 7 T": Variant(b0_tesla=7.0, te_s=(0.004, 0.008, 0.012, 0.016, 0.020)),
    "1 mm, SNR 50": Variant(peak_snr=50.0),
}
SMALL_VARIANTS: Dict[str, Variant] = {
    "2 mm": Variant(voxel_size_mm=(2.0, 2.0, 2.0), model_voxel_mm=2.0),
    "2x2x3 mm": Variant(voxel_size_mm=(2.0, 2.0, 3.0), model_voxel_mm=2.0),
    "2x2x3 mm, B0 15 deg": Variant(voxel_size_mm=(2.0, 2.0, 3.0), model_voxel_mm=2.0, tilt_deg=15.0),
    "2x2x4 mm": Variant(voxel_size_mm=(2.0, 2.0, 4.0), model_voxel_mm=2.0),
    "2 mm, 7 T": Variant(voxel_size_mm=(2.0, 2.0, 2.0), model_voxel_mm=2.0, b0_tesla=7.0,
                         te_s=(0.004, 0.008, 0.012, 0.016, 0.020)),
    "2 mm, SNR 50": Variant(voxel_size_mm=(2.0, 2.0, 2.0), model_voxel_mm=2.0, peak_snr=50.0),
}


@dataclass
class IndependentData:
    """A simulated acquisition read back through the project's own NIfTI reader, and its truth on that grid.

    ``chi_ppm``: ``crop_kspace(χ·brain, shape)`` (ppm, relative to CSF); ``total_field_ppm``: the field of all
    sources before shim and offsets, signal-weighted (see :func:`_write_truth`); ``local_field_ppm``: the field of
    the brain's own χ, k-space cropped;
    ``brain_mask``: intracranial space; ``labels``: tissue labels (:mod:`QSMLogic.phantom.tissues`) at the voxel
    centres; ``files``: the BIDS magnitude and phase files qsm-forward wrote.
    """

    gre: GREData
    chi_ppm: np.ndarray
    total_field_ppm: np.ndarray
    local_field_ppm: np.ndarray
    brain_mask: np.ndarray
    labels: np.ndarray
    variant: Variant
    files: Dict[str, list]


def _labels_digest() -> str:
    return hashlib.sha256(LABELS_FILE.read_bytes()).hexdigest()[:16]


def cache_dir() -> Path:
    """Where simulations are kept: ``$QSM_INDEPENDENT_CACHE`` or ``<tmp>/susceptibility-mri-independent``."""
    return Path(os.environ.get("QSM_INDEPENDENT_CACHE")
                or Path(tempfile.gettempdir()) / "susceptibility-mri-independent")


def _tissue_tables(b0_tesla: float, air: bool) -> Dict[str, np.ndarray]:
    tabs = {k: np.zeros(256, np.float32) for k in ("chi", "r2star", "r1", "m0")}
    for label, name in LABEL_NAMES.items():
        if name not in CHI_PPM:  # veins, calcification, haemorrhage of the project phantom are not in the map
            continue
        chi = CHI_PPM[name]
        if not air and name in ("background/air", "sinus air", "skull", "scalp"):
            chi = 0.0
        tabs["chi"][label] = chi
        tabs["r2star"][label] = R2STAR_3T_HZ[name] * b0_tesla / 3.0
        tabs["r1"][label] = R1_3T_HZ.get(name, NUCLEUS_DEFAULTS["r1"])
        tabs["m0"][label] = M0.get(name, NUCLEUS_DEFAULTS["m0"])
    return tabs


def head_1mm(b0_tesla: float = 3.0, air: bool = True) -> Dict[str, np.ndarray]:
    """The head on the cropped 1 mm MNI grid: ``chi`` (ppm), ``r2star`` (Hz), ``r1`` (1/s), ``m0``, ``brain``
    (intracranial, float 0/1), ``labels`` (uint8; veins and the calcification painted where they cover ≥ half a
    voxel) and ``origin_mm`` (MNI position of voxel (0, 0, 0))."""
    with np.load(LABELS_FILE) as f:
        lab = f["labels"][CROP_1MM]
    lab = np.ascontiguousarray(np.concatenate([np.repeat(lab[:, :, :1], NECK_PAD_MM, axis=2), lab], axis=2))
    tabs = _tissue_tables(b0_tesla, air)
    out = {k: v[lab] for k, v in tabs.items()}
    ramp = np.sin(0.5 * np.pi * (np.arange(NECK_PAD_MM, dtype=np.float32) + 0.5) / NECK_PAD_MM) ** 2
    out["m0"][:, :, :NECK_PAD_MM] *= ramp
    brain = np.isin(lab, [k for k, n in LABEL_NAMES.items() if n in CHI_PPM and n not in
                          ("background/air", "scalp", "skull", "sinus air")]).astype(np.float32)
    origin = tuple(MNI_ORIGIN_MM[a] + CROP_1MM[a].start - (NECK_PAD_MM if a == 2 else 0) for a in range(3))
    grid = Grid(shape=lab.shape, voxel_size_mm=(1.0, 1.0, 1.0), origin_mm=origin)
    labels = lab.astype(np.uint8)

    def paint(sl, frac, props, name):
        f = frac * brain[sl]
        for k, key in (("chi", "chi"), ("r2star", "r2star"), ("r1", "r1"), ("m0", "m0")):
            v = props[key] * (b0_tesla / 3.0 if k == "r2star" else 1.0)
            out[k][sl] = (1.0 - f) * out[k][sl] + f * v
        labels[sl][f >= 0.5] = BY_NAME[name].label

    for pts, radius in VEINS:
        got = tube_fraction(grid, pts, radius)
        if got is not None:
            paint(got[0], got[1], VEIN, "veins")
    got = ellipsoid_fraction(grid, CALCIFICATION[0], (CALCIFICATION[1],) * 3)
    if got is not None:
        paint(got[0], got[1], CALCIFICATION_TISSUE, "calcification")
    out.update(brain=brain, labels=labels, origin_mm=np.asarray(origin))
    return out


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    s = tuple(n // f for n in a.shape)
    return a[:s[0] * f, :s[1] * f, :s[2] * f].reshape(s[0], f, s[1], f, s[2], f).mean(axis=(1, 3, 5))


def head_model(variant: Variant) -> Dict[str, np.ndarray]:
    """:func:`head_1mm` on the variant's model grid (block averages for a coarser isotropic grid; brain and
    non-brain averaged separately so the intracranial edge stays sharp, as a real brain edge is)."""
    h = head_1mm(variant.b0_tesla, variant.air)
    f = int(round(variant.model_voxel_mm))
    if f == 1:
        return h
    if abs(variant.model_voxel_mm - f) > 1e-6 or f < 1:
        raise ValueError(f"model_voxel_mm must be a whole number of millimetres, got {variant.model_voxel_mm}")
    fb = _block_mean(h["brain"], f)
    brain = fb >= 0.5
    out: Dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in ("chi", "r2star", "r1", "m0"):
            a_in = _block_mean(h[k] * h["brain"], f) / fb
            a_out = _block_mean(h[k] * (1.0 - h["brain"]), f) / (1.0 - fb)
            out[k] = np.where(brain, a_in, a_out).astype(np.float32)
    centre = f // 2
    out["labels"] = h["labels"][centre::f, centre::f, centre::f][:fb.shape[0], :fb.shape[1], :fb.shape[2]]
    out["brain"] = brain.astype(np.float32)
    out["origin_mm"] = h["origin_mm"] + (f - 1) / 2.0
    return out


def _b0_direction(tilt_deg: float) -> np.ndarray:
    t = np.deg2rad(tilt_deg)
    return np.array([0.0, np.sin(t), np.cos(t)])


def _sample_labels(labels: np.ndarray, out_shape: Sequence[int]) -> np.ndarray:
    """Label at each output voxel's centre: k-space cropping keeps the field of view, so output voxel j sits at
    model position j·N_model/N_out."""
    from scipy import ndimage as ndi

    step = [labels.shape[a] / out_shape[a] for a in range(3)]
    return ndi.affine_transform(labels, step, output_shape=tuple(out_shape), order=0, mode="nearest")


def simulate(variant: Variant, directory: Optional[Path] = None) -> IndependentData:
    """Simulate ``variant`` with qsm-forward (or reuse the cached simulation) and read it back with
    :func:`QSMLogic.io.load_gre` (echo times and B0 from the BIDS sidecars, geometry from the NIfTI affine)."""
    from ..io import load_gre

    root = Path(directory) if directory is not None else cache_dir() / variant.key()
    if not (root / "dataset_description.json").exists():
        _run_qsm_forward(variant, root)
    truth_file = root / f"truth-{TRUTH_VERSION}.npz"
    if not truth_file.exists():
        _write_truth(variant, root, truth_file)
    anat = root / "sub-1" / "anat"
    n = len(variant.te_s)
    mags = [str(anat / f"sub-1_echo-{i + 1}_part-mag_MEGRE.nii") for i in range(n)]
    phases = [str(anat / f"sub-1_echo-{i + 1}_part-phase_MEGRE.nii") for i in range(n)]
    gre = load_gre(magnitude=mags, phase=phases, phase_rule="radians")
    with np.load(truth_file) as t:
        arrays = {k: t[k] for k in t.files}
    return IndependentData(gre=gre, chi_ppm=arrays["chi_ppm"], total_field_ppm=arrays["total_field_ppm"],
                           local_field_ppm=arrays["local_field_ppm"], brain_mask=arrays["brain_mask"].astype(bool),
                           labels=arrays["labels"], variant=variant, files={"magnitude": mags, "phase": phases})


def _run_qsm_forward(variant: Variant, root: Path) -> None:
    import nibabel as nib
    import qsm_forward as qf

    h = head_model(variant)
    v = float(variant.model_voxel_mm)
    model_dir = root / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    affine = np.diag([v, v, v, 1.0])
    affine[:3, 3] = h["origin_mm"]
    paths = {}
    for key, data in (("chi", h["chi"]), ("mask", h["brain"]), ("M0", h["m0"]), ("R1", h["r1"]),
                      ("R2star", h["r2star"]), ("seg", h["labels"].astype(np.float32))):
        paths[key] = str(model_dir / f"{key}.nii")
        nib.save(nib.Nifti1Image(np.asarray(data, np.float32), affine), paths[key])
    tissue = qf.TissueParams(chi=paths["chi"], mask=paths["mask"], M0=paths["M0"], R1=paths["R1"],
                             R2star=paths["R2star"], seg=paths["seg"])
    recon = qf.ReconParams(TEs=np.asarray(variant.te_s), B0=variant.b0_tesla, B0_dir=_b0_direction(variant.tilt_deg),
                           voxel_size=np.asarray(variant.voxel_size_mm, dtype=float), peak_snr=variant.peak_snr,
                           random_seed=variant.seed, generate_phase_offset=True, generate_shim_field=True)
    qf.generate_bids(tissue_params=tissue, recon_params=recon, bids_dir=str(root), save_chi=False, save_mask=False,
                     save_segmentation=False)
    for p in paths.values():
        os.remove(p)


def _write_truth(variant: Variant, root: Path, truth_file: Path) -> None:
    """The truth on the acquisition's grid. χ and the local field (smooth where it is scored) are the model-grid maps
    k-space cropped. The total field is not: inside air and bone it is large and kinked, and cropping rings it into
    the brain (on a 2×2×3 mm head: alternate-slice errors of 0.02 ppm > 10 mm deep), while the scanner only sees
    it through the signal. So the total field is the signal-weighted one, crop(M0·δ)/crop(M0), what a perfect
    field fit of the cropped signal returns to first order in the phase."""
    import nibabel as nib
    import qsm_forward as qf

    h = head_model(variant)
    v = float(variant.model_voxel_mm)
    b0_dir = _b0_direction(variant.tilt_deg)
    out_shape = nib.load(str(root / "sub-1" / "anat" / "sub-1_echo-1_part-phase_MEGRE.nii")).shape[:3]
    brain = h["brain"]

    def crop(a: np.ndarray) -> np.ndarray:
        return np.real(qf.crop_kspace(a, out_shape, gibbs_correction=False))

    # qsm-forward's own convolution (as in its signal) on the model grid, band-limited like the signal
    total = qf.generate_field(h["chi"], brain, voxel_size=[v, v, v], B0_dir=b0_dir)
    w = crop(h["m0"])
    with np.errstate(divide="ignore", invalid="ignore"):
        total_out = np.where(w > 1e-3, crop(h["m0"] * total) / w, 0.0).astype(np.float32)
    del total
    local = qf.generate_field(h["chi"] * brain, brain, voxel_size=[v, v, v], B0_dir=b0_dir)
    np.savez_compressed(truth_file, chi_ppm=crop(h["chi"] * brain).astype(np.float32),
                        brain_mask=crop(brain) >= 0.5, labels=_sample_labels(h["labels"], out_shape).astype(np.uint8),
                        total_field_ppm=total_out, local_field_ppm=crop(local).astype(np.float32))


# --------------------------------------------------------------------------------------------------------------
# Per-stage error attribution


def polynomial_residual(values: np.ndarray, mask: np.ndarray, order: int = 2) -> np.ndarray:
    """``values`` minus its least-squares polynomial of total degree ≤ ``order`` in the voxel coordinates over
    ``mask`` (0 outside). A 2nd-order fit removes a scanner's shim terms (qsm-forward adds a 2nd-order shim residual,
    as a scanner's shim leaves one), so what remains of total-field error is the stage's own."""
    m = np.asarray(mask, dtype=bool)
    idx = np.nonzero(m)
    c = [(i - i.mean()) / max(float(np.ptp(i)), 1.0) for i in (a.astype(np.float64) for a in idx)]
    cols = [np.ones_like(c[0])]
    for deg in range(1, order + 1):
        for axes in combinations_with_replacement(range(3), deg):
            cols.append(np.prod([c[k] for k in axes], axis=0))
    a = np.stack(cols, axis=1)
    y = np.asarray(values, dtype=np.float64)[idx]
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    out = np.zeros(m.shape, dtype=np.float64)
    out[idx] = y - a @ coef
    return out


def _centred(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    v = np.asarray(a, dtype=np.float64)[m]
    return v - v.mean()


def chi_scores(chi: np.ndarray, truth: np.ndarray, mask: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    """χ nRMSE (%), regression slope of estimate on truth and each deep nucleus's mean error (ppm), both maps
    referenced to their mean in ``mask`` (susceptibility is relative); nuclei are the labelled voxels in ``mask``."""
    m = np.asarray(mask, dtype=bool)
    e, t = _centred(chi, m), _centred(truth, m)
    out = {"chi_nrmse_pct": 100.0 * float(np.linalg.norm(e - t) / np.linalg.norm(t)),
           "slope": float(np.dot(e, t) / np.dot(t, t))}
    lab = np.asarray(labels)[m]
    for name in DEEP_NUCLEI:
        sel = lab == BY_NAME[name].label
        if sel.any():
            out[f"err_{name}"] = float(e[sel].mean() - t[sel].mean())
    return out


def _short(name: str) -> str:
    return {"globus pallidus externa (GPe)": "GPe", "globus pallidus interna (GPi)": "GPi",
            "substantia nigra": "SN", "red nucleus": "RN", "subthalamic nucleus": "STN"}.get(name, name)


def attribute_errors(data: IndependentData, config: Optional[PipelineConfig] = None, deep_mm: float = 10.0,
                     **pipeline_kwargs: Any) -> Dict[str, float]:
    """Run the pipeline (``config``, default chain when None; ``pipeline_kwargs`` go to
    :func:`~QSMLogic.pipeline.run_pipeline`) on ``data`` and name the stage that loses accuracy.

    * ``total_field_rms_ppm`` / ``total_field_deep_rms_ppm``: RMS of (fitted − true total field) after a
      2nd-order polynomial (shim) fit, over the chain's field mask / its part deeper than ``deep_mm``;
    * ``local_field_nrmse_pct`` / ``local_field_deep_nrmse_pct``: local field against the true local field, both
      minus their mean, over the chain's QSM mask / deeper than ``deep_mm`` (relative to the true field's RMS;
      NaN for single-step inversions, whose χ does not come from it);
    * ``chi_true_field_nrmse_pct`` / ``chi_true_field_slope``: the same inversion from the true local field in the
      true brain mask (single-step inversions: from the true total field);
    * ``chi_nrmse_pct``, ``slope``, ``err_<nucleus>``: the chain's χ (:func:`chi_scores`), in its QSM mask;
    * ``coverage_pct``: share of the brain in the QSM mask; ``holes_deep``: brain voxels deeper than ``deep_mm``
      missing from the field mask.
    """
    from .._distance import depth_mm
    from ..metrics import centred_nrmse
    from ..params import run_method
    from ..pipeline import SINGLE_STEP_INVERSIONS, PipelineConfig, run_pipeline

    cfg = config or PipelineConfig.default()
    gre = data.gre
    res = run_pipeline(gre, cfg, **pipeline_kwargs)
    out = res.outputs
    vox = gre.voxel_size_mm
    brain = data.brain_mask
    depth = depth_mm(brain, vox)
    deep = depth > deep_mm
    fm = out["field_mask"].astype(bool)
    qm = out["qsm_mask"].astype(bool)
    scores: Dict[str, float] = {"coverage_pct": 100.0 * float((qm & brain).sum() / brain.sum()),
                                "holes_deep": float((deep & ~fm).sum())}
    r = polynomial_residual(out["total_field_ppm"] - data.total_field_ppm, fm)
    scores["total_field_rms_ppm"] = float(np.sqrt(np.mean(r[fm] ** 2)))
    scores["total_field_deep_rms_ppm"] = float(np.sqrt(np.mean(r[fm & deep] ** 2)))
    single_step = cfg.stages["inversion"]["method"] in SINGLE_STEP_INVERSIONS
    for suffix, m in (("", qm), ("_deep", qm & deep)):
        if single_step or "local_field_ppm" not in out:  # not the inversion's input: not part of its chain
            scores[f"local_field{suffix}_nrmse_pct"] = float("nan")
            continue
        scores[f"local_field{suffix}_nrmse_pct"] = centred_nrmse(out["local_field_ppm"], data.local_field_ppm, m)
    inv = cfg.stages["inversion"]
    # single-step inversions remove the background themselves: they get the true total field
    fields = ({"total_field_ppm": data.total_field_ppm, "local_field_ppm": None}
              if inv["method"] in SINGLE_STEP_INVERSIONS else {"local_field_ppm": data.local_field_ppm})
    chi_true = run_method("inversion", inv["method"], {
        **fields, "mask": brain, "weight": brain.astype(np.float32),
        "magnitude": out["magnitude"], "labels": None, "te_s": gre.te_s, "b0_tesla": gre.b0_tesla,
        "voxel_size_mm": vox, "b0_direction": gre.b0_direction, "cancel": lambda: False}, inv.get("params"))
    true_field = chi_scores(chi_true, data.chi_ppm, brain, data.labels)
    scores["chi_true_field_nrmse_pct"] = true_field["chi_nrmse_pct"]
    scores["chi_true_field_slope"] = true_field["slope"]
    scores.update(chi_scores(out["chi_ppm"], data.chi_ppm, qm, data.labels))
    scores["seconds"] = float(res.provenance["total_seconds"])
    return scores


def format_attribution(name: str, s: Dict[str, float]) -> str:
    """One markdown table row of :func:`attribute_errors`'s scores."""
    nuclei = " / ".join(f"{s[f'err_{n}']:+.3f}" if f"err_{n}" in s else "–" for n in DEEP_NUCLEI)
    return (f"| {name} | {s['total_field_deep_rms_ppm']:.4f} | {s['local_field_nrmse_pct']:.1f} "
            f"({s['local_field_deep_nrmse_pct']:.1f}) | {s['chi_true_field_nrmse_pct']:.1f} | "
            f"{s['chi_nrmse_pct']:.1f} | {s['slope']:.2f} | {nuclei} | {s['coverage_pct']:.1f} |")


ATTRIBUTION_HEADER = (
    "| variant | total field, deep residual (ppm) | local field nRMSE % (deep) | χ from true local field % | "
    "χ nRMSE % | slope | " + " / ".join(_short(n) for n in DEEP_NUCLEI) + " error (ppm) | coverage % |\n"
    "|---|---|---|---|---|---|---|---|")


def run(ctx) -> list:
    """Benchmark area ``independent``: the default chain on qsm-forward heads, scored stage by stage (the small
    2 mm-model variants with ``--quick``, the 1 mm-model ones otherwise; each simulation is cached)."""
    from .common import BenchRow, measure

    rows = []
    variants = SMALL_VARIANTS if ctx.quick else VARIANTS
    lines = [ATTRIBUTION_HEADER]
    for name, variant in variants.items():
        data, t_sim, _ = measure(simulate, variant)
        scores, dt, mem = measure(attribute_errors, data)
        lines.append(format_attribution(name, scores))
        keep = {"nRMSE_%": "chi_nrmse_pct", "slope": "slope", "local_%": "local_field_nrmse_pct",
                "true_local_%": "chi_true_field_nrmse_pct", "total_ppm": "total_field_deep_rms_ppm",
                "coverage_%": "coverage_pct"}
        rows.append(BenchRow("independent", name, dt, mem, {k: round(scores[v], 4) for k, v in keep.items()},
                             f"qsm-forward {data.gre.shape}, simulated/cached in {t_sim:.0f} s"))
        print(lines[-1], flush=True)
    print("\n".join(lines))
    return rows
