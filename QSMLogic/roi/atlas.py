"""Deep-grey-nuclei atlases: the shipped CIT168 (decoded from its PAQD encoding) and PD25 read from a user's folder.

* **CIT168** (Pauli WM, Nili AN, Tyszka JM. A high-resolution probabilistic in vivo atlas of human subcortical brain
  nuclei. Sci Data 5 (2018) 180063; CC BY 4.0) ships in ``Resources/Atlases/CIT168`` in the PAQD RGBA encoding of
  the NiiVue demo images: R = index of the most likely region, G = the second most likely, B and A = their
  probabilities × 255. :func:`decode_paqd` turns it into a label map (most likely region where its probability is at
  least ``min_probability``) and per-region probability maps (B where R is the region, plus A where G is).
* **PD25** (Xiao Y et al. A dataset of multi-contrast population-averaged brain MRI atlases of a Parkinson's disease
  cohort. Data Brief 12 (2017) 370–379; CC BY-NC-SA 3.0) is *not shipped*: its non-commercial licence would bind
  every user of the extension. :func:`load_pd25` reads it from a folder the user gives (the NiiVue demo files
  ``PD25-subcortical-1mm.nii.gz``, ``PD25-subcortical.json``, ``PD25-fusion-template-1mm.nii.gz``); it has the
  thalamus, which CIT168 lacks, and a T1–T2* fusion template that shows the iron-rich nuclei.

Registration templates (:func:`atlas_template`): the atlas's own MRI template (contrast ``atlas``: CIT168 T1w,
cropped to the deep-grey box; PD25 T1–T2* fusion) and synthetic QSM, R2* and magnitude templates painted from the
phantom's MNI-space tissue map (:mod:`QSMLogic.phantom.tissues` values on ``QSMLogic/data/head_labels_1mm.npz``),
so a subject's χ, R2* or magnitude image is registered against the matching contrast.

Where the shipped files are found (:func:`resources_dir`): ``$SUSCEPTIBILITY_MRI_RESOURCES/Atlases`` when that
variable is set; else ``Resources/Atlases`` beside the ``QSMLogic`` folder — the top of a source checkout, and
``qt-scripted-modules/Resources/Atlases`` in the installed Slicer extension, where
``SusceptibilityMRI/QSMLogicPackage/CMakeLists.txt`` installs them (Testing/test_cmake_configure.py checks it). A
pip-installed ``QSMLogic`` outside a checkout needs the variable (the wheel carries the library only).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import QSMInputError

PathLike = Union[str, "os.PathLike[str]"]

CIT168_CITATION = ("Pauli WM, Nili AN, Tyszka JM. A high-resolution probabilistic in vivo atlas of human subcortical "
                   "brain nuclei. Sci Data 5 (2018) 180063. doi:10.1038/sdata.2018.63")
CIT168_LICENCE = "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)"
PD25_CITATION = ("Xiao Y, Fonov V, Chakravarty MM, Beriault S, Al Subaie F, Sadikot A, Pike GB, Bertrand G, "
                 "Collins DL. "
                 "A dataset of multi-contrast population-averaged brain MRI atlases of a Parkinson's disease cohort. "
                 "Data Brief 12 (2017) 370-379. doi:10.1016/j.dib.2017.04.013")
PD25_LICENCE = ("CC BY-NC-SA 3.0 (https://creativecommons.org/licenses/by-nc-sa/3.0/): non-commercial use only; "
                "not shipped with the extension")
#: Most-likely-region probability below which a CIT168 voxel is left unlabelled (the phantom uses the same value).
DEFAULT_MIN_PROBABILITY = 0.4
#: Echo time of the synthetic magnitude template (s).
MAGNITUDE_TEMPLATE_TE_S = 0.02
#: Template contrasts: synthetic QSM, R2* and magnitude, or the atlas's own MRI template ("atlas": CIT168's T1w,
#: PD25's T1–T2* fusion).
CONTRASTS = ("qsm", "r2star", "magnitude", "atlas")


@dataclass(frozen=True)
class Region:
    """One atlas label: its full name, the structure it belongs to (side removed), the side and a display colour."""

    label: int
    name: str
    structure: str
    side: str  # "L", "R" or "" (midline / not split)
    color: Tuple[int, int, int]


@dataclass
class Atlas:
    """A label atlas on its own 1 mm grid: ``labels`` (int16), ``affine`` (index → RAS mm), its regions and source.

    ``probability`` (optional) gives the probability map (float32, 0–1) of one label, for probabilistic atlases.
    """

    name: str
    labels: np.ndarray
    affine: np.ndarray
    regions: Dict[int, Region]
    citation: str
    licence: str
    template_mri: Optional[Tuple[np.ndarray, np.ndarray]] = None
    paqd: Optional[np.ndarray] = field(default=None, repr=False)

    def probability(self, label: int) -> np.ndarray:
        """Probability map of ``label`` on the atlas grid (PAQD atlases); the binary label map otherwise."""
        if label not in self.regions:
            raise QSMInputError(f"atlas {self.name} has no label {label}; labels are {sorted(self.regions)}")
        if self.paqd is None:
            return (self.labels == label).astype(np.float32)
        return decode_paqd_probability(self.paqd, label)

    def labels_of(self, structure: str, side: Optional[str] = None) -> List[int]:
        """Labels whose structure name contains ``structure`` (case-insensitive), on ``side`` when given."""
        key = structure.lower()
        out = [r.label for r in self.regions.values()
               if key in r.structure.lower() and (side is None or r.side == side)]
        if not out:
            raise QSMInputError(f"atlas {self.name} has no structure matching {structure!r}; structures are "
                                f"{sorted({r.structure for r in self.regions.values()})}")
        return out


def resources_dir() -> Path:
    """The folder holding the shipped atlases (see the module docstring for the search order)."""
    env = os.environ.get("SUSCEPTIBILITY_MRI_RESOURCES")
    here = Path(__file__).resolve()
    candidates = ([Path(env) / "Atlases"] if env else []) + [here.parents[2] / "Resources" / "Atlases"]
    for c in candidates:
        if (c / "CIT168" / "CIT168.nii.gz").is_file():
            return c
    raise FileNotFoundError("the shipped atlases were not found; looked in " + ", ".join(str(c) for c in candidates)
                            + " (set SUSCEPTIBILITY_MRI_RESOURCES to the folder that holds Atlases/)")


def split_side(name: str) -> Tuple[str, str]:
    n = name.strip()
    low = n.lower()
    for prefix, side in (("l ", "L"), ("r ", "R"), ("left ", "L"), ("right ", "R")):
        if low.startswith(prefix):
            return n[len(prefix):].strip().replace("-", " "), side
    return n.replace("-", " "), ""


def regions_from_lut(lut: dict) -> Dict[int, Region]:
    """Regions from a NiiVue-style lookup table (``labels`` list with ``R``, ``G``, ``B`` colour lists); entry 0 is
    the background and is left out."""
    names = lut.get("labels")
    if not isinstance(names, list) or len(names) < 2:
        raise QSMInputError("atlas lookup table has no 'labels' list")
    cols = [lut.get(c, [128] * len(names)) for c in ("R", "G", "B")]
    out = {}
    for k, n in enumerate(names):
        if k == 0:
            continue
        structure, side = split_side(str(n))
        out[k] = Region(k, str(n).strip(), structure, side, (int(cols[0][k]), int(cols[1][k]), int(cols[2][k])))
    return out


def decode_paqd(rgba: np.ndarray, min_probability: float = DEFAULT_MIN_PROBABILITY) -> np.ndarray:
    """Label map of a PAQD atlas: the most likely region (R) where its probability (B/255) ≥ ``min_probability``.

    ``rgba`` is a structured array with fields R, G, B, A (nibabel's RGBA NIfTI) or a (..., 4) uint8 array.
    """
    r, _, b, _ = _paqd_channels(rgba)
    if not 0.0 <= min_probability <= 1.0:
        raise QSMInputError(f"min_probability must be in [0, 1], got {min_probability}")
    return np.where((b.astype(np.float32) / 255.0 >= min_probability) & (r > 0), r, 0).astype(np.int16)


def decode_paqd_probability(rgba: np.ndarray, label: int) -> np.ndarray:
    """Probability (0–1, float32) of region ``label``: B/255 where R is the region plus A/255 where G is."""
    r, g, b, a = _paqd_channels(rgba)
    p = np.where(r == label, b, 0).astype(np.float32) + np.where(g == label, a, 0).astype(np.float32)
    return p / 255.0


def _paqd_channels(rgba: np.ndarray):
    arr = np.asarray(rgba)
    if arr.dtype.names is not None:
        if not {"R", "G", "B", "A"} <= set(arr.dtype.names):
            raise QSMInputError(f"PAQD atlas needs R, G, B, A fields, got {arr.dtype.names}")
        return arr["R"], arr["G"], arr["B"], arr["A"]
    if arr.shape[-1] != 4 or arr.dtype != np.uint8:
        raise QSMInputError(f"PAQD atlas must be RGBA uint8 (…, 4), got {arr.dtype} {arr.shape}")
    return arr[..., 0], arr[..., 1], arr[..., 2], arr[..., 3]


def _read(path: Path) -> Tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    if not path.is_file():
        raise QSMInputError(f"atlas file {str(path)!r} does not exist")
    img = nib.load(str(path))
    return np.asarray(img.dataobj), np.asarray(img.affine, np.float64)


@lru_cache(maxsize=2)
def _cit168_files(min_probability: float) -> Atlas:
    root = resources_dir() / "CIT168"
    rgba, aff = _read(root / "CIT168.nii.gz")
    regions = regions_from_lut(json.loads((root / "CIT168.json").read_text()))
    t1, t1_aff = _read(root / "CIT168_T1w_deepgrey_box.nii.gz")
    labels = decode_paqd(rgba, min_probability)
    for a in (labels, rgba, t1):
        a.setflags(write=False)
    return Atlas("CIT168", labels, aff, regions, CIT168_CITATION, CIT168_LICENCE,
                 template_mri=(t1.astype(np.float32), t1_aff), paqd=rgba)


def load_cit168(min_probability: float = DEFAULT_MIN_PROBABILITY) -> Atlas:
    """The shipped CIT168 atlas (32 left/right regions, no thalamus), labels decoded at ``min_probability``."""
    return _cit168_files(float(min_probability))


def load_pd25(folder: PathLike) -> Atlas:
    """PD25 subcortical labels (16 left/right regions, with the thalamus) and its T1–T2* fusion template from the
    user's ``folder`` (not shipped: CC BY-NC-SA 3.0)."""
    root = Path(os.fspath(folder))
    need = ("PD25-subcortical-1mm.nii.gz", "PD25-subcortical.json", "PD25-fusion-template-1mm.nii.gz")
    missing = [n for n in need if not (root / n).is_file()]
    if missing:
        raise QSMInputError(f"PD25 folder {str(root)!r} lacks {', '.join(missing)} (the NiiVue demo-image files)")
    lab, aff = _read(root / need[0])
    regions = regions_from_lut(json.loads((root / need[1]).read_text()))
    tpl, tpl_aff = _read(root / need[2])
    return Atlas("PD25", lab.astype(np.int16), aff, regions, PD25_CITATION, PD25_LICENCE,
                 template_mri=(tpl.astype(np.float32), tpl_aff))


def load_atlas(name: str, path: Optional[PathLike] = None, min_probability: float = DEFAULT_MIN_PROBABILITY) -> Atlas:
    """``"cit168"`` (shipped) or ``"pd25"`` (needs ``path``, the folder with the PD25 files)."""
    key = name.lower()
    if key == "cit168":
        return load_cit168(min_probability)
    if key == "pd25":
        if path is None:
            raise QSMInputError("PD25 is not shipped (CC BY-NC-SA 3.0): give the folder holding its files")
        return load_pd25(path)
    raise QSMInputError(f"unknown atlas {name!r}; choose cit168 or pd25")


@lru_cache(maxsize=4)
def _synthetic_template(contrast: str) -> Tuple[np.ndarray, np.ndarray]:
    from ..phantom.model import _labels_1mm
    from ..phantom.tissues import TISSUES

    lab, origin = _labels_1mm()
    lut = np.zeros(256, np.float32)
    for t in TISSUES:
        if not t.in_brain:
            continue
        if contrast == "qsm":
            lut[t.label] = t.chi_ppm
        elif contrast == "r2star":
            lut[t.label] = t.r2star_hz
        else:
            lut[t.label] = t.proton_density * np.exp(-t.r2star_hz * MAGNITUDE_TEMPLATE_TE_S)
    img = lut[lab]
    aff = np.eye(4)
    aff[:3, 3] = origin
    img.setflags(write=False)
    return img, aff


def atlas_template(atlas: Atlas, contrast: str, box_margin_mm: float = 25.0) -> Tuple[np.ndarray, np.ndarray]:
    """Registration template of ``contrast`` (``qsm``, ``r2star``, ``magnitude`` or ``atlas``) for ``atlas``, cropped
    to the atlas's box plus ``box_margin_mm``: (float32 image, index → RAS affine)."""
    if contrast not in CONTRASTS:
        raise QSMInputError(f"unknown template contrast {contrast!r}; choose one of {CONTRASTS}")
    if contrast == "atlas":
        if atlas.template_mri is None:
            raise QSMInputError(f"atlas {atlas.name} has no MRI template")
        img, aff = atlas.template_mri
    else:
        img, aff = _synthetic_template(contrast)
    return crop_to_box(img, aff, atlas_box_mm(atlas, box_margin_mm))


def atlas_box_mm(atlas: Atlas, margin_mm: float) -> Tuple[np.ndarray, np.ndarray]:
    """RAS corners (low, high) of the box around the atlas's labelled voxels, grown by ``margin_mm``."""
    idx = np.argwhere(atlas.labels > 0)
    if idx.size == 0:
        raise QSMInputError(f"atlas {atlas.name} has no labelled voxel")
    corners = np.array([[a, b, c] for a in (idx[:, 0].min(), idx[:, 0].max()) for b in (idx[:, 1].min(),
                        idx[:, 1].max()) for c in (idx[:, 2].min(), idx[:, 2].max())], np.float64)
    ras = corners @ atlas.affine[:3, :3].T + atlas.affine[:3, 3]
    return ras.min(axis=0) - margin_mm, ras.max(axis=0) + margin_mm


def crop_to_box(img: np.ndarray, affine: np.ndarray, box: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """The part of ``img`` (axis-aligned grid) inside the RAS ``box`` (low, high corners)."""
    inv = np.linalg.inv(affine)
    lo, hi = (np.asarray(b, np.float64) for b in box)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    ijk = corners @ inv[:3, :3].T + inv[:3, 3]
    i0 = np.clip(np.floor(ijk.min(axis=0)).astype(int), 0, np.array(img.shape[:3]))
    i1 = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + 1, 0, np.array(img.shape[:3]))
    out = np.ascontiguousarray(img[i0[0]:i1[0], i0[1]:i1[1], i0[2]:i1[2]], dtype=np.float32)
    aff = affine.copy()
    aff[:3, 3] = affine[:3, :3] @ i0 + affine[:3, 3]
    return out, aff


@lru_cache(maxsize=1)
def template_brain_centre_ras() -> Tuple[float, float, float]:
    """MNI (RAS mm) centroid of the intracranial space of the templates (from the phantom's MNI tissue map): the
    point the registration's starting pose puts on the subject's brain centre."""
    from ..phantom.model import _labels_1mm
    from ..phantom.tissues import TISSUES

    lab, origin = _labels_1mm()
    brain = np.isin(lab, [t.label for t in TISSUES if t.in_brain])
    c = np.argwhere(brain).mean(axis=0) + origin
    return float(c[0]), float(c[1]), float(c[2])
