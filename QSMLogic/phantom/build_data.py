"""Regenerate the phantom's shipped anatomy (``QSMLogic/data/head_labels_1mm.npz``) from the source templates.

Run once by the maintainers (``python -m QSMLogic.phantom.build_data [/work/shared/data]``); the phantom itself only
reads the ``.npz`` it writes. Sources (see ``QSMLogic/data/README.md`` for licences and citations):

* MNI ICBM152 2009a nonlinear symmetric, 1 mm (Fonov et al., NeuroImage 2009, 2011): the brain-extracted T1 gives the
  brain outline; the GM and WM probability maps give the tissue classes (GM, WM or CSF by the largest probability,
  CSF = 1 − GM − WM).
* CIT168 subcortical atlas (Pauli et al., Sci Data 2018, CC BY 4.0; PAQD RGBA encoding, R = most likely region,
  B = its probability × 255): caudate, putamen, nucleus accumbens, GPe, GPi, substantia nigra (pars compacta and
  reticulata), red nucleus and subthalamic nucleus where the most likely region's probability is ≥ 0.4.
* Thalamus and dentate nucleus (in neither shippable atlas) as ellipsoids at their MNI positions (Mai et al.,
  Atlas of the Human Brain, 4th ed. 2015, coordinates); lateral ventricles from the deep CSF of the template.
* Outside the brain (the template is skull-stripped): a 6 mm skull and 6 mm scalp shell following the intracranial
  outline, a face and neck block, and air spaces (frontal and sphenoid sinuses, nasal cavity, maxillary sinuses, ear
  canals with mastoid air cells) as ellipsoids at their typical MNI positions.

The output is one uint8 label map (labels of :mod:`QSMLogic.phantom.tissues`) on the MNI 1 mm grid.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Tuple

import numpy as np
from scipy import ndimage as ndi

from .tissues import label_of

#: Where the shipped file goes.
DATA_FILE = Path(__file__).resolve().parent.parent / "data" / "head_labels_1mm.npz"
#: MNI 2009a 1 mm grid: index (0, 0, 0) is at this RAS position (mm).
MNI_ORIGIN_MM: Tuple[float, float, float] = (-98.0, -134.0, -72.0)

SKULL_MM = 6.0
SCALP_MM = 6.0
#: CSF between the template's brain outline and the inner table of the skull (mm).
SUBARACHNOID_MM = 1.0
#: Below this MNI z (mm) the intracranial space ends (foramen magnum); the cord below is soft tissue.
FORAMEN_MAGNUM_Z_MM = -62.0
CIT168_THRESHOLD = 0.4

#: CIT168 region name (without the L/R prefix) → phantom tissue.
CIT168_MAP = {
    "Putamen": "putamen", "Caudate": "caudate", "Nucleus Accumbens": "nucleus accumbens",
    "Globus Pallidus externa": "globus pallidus externa (GPe)",
    "Globus Pallidus interna": "globus pallidus interna (GPi)",
    "Substantia Nigra pars compacta": "substantia nigra", "Substantia-Nigra-pars-reticulata": "substantia nigra",
    "Red Nucleus": "red nucleus", "Subthalamic Nucleus": "subthalamic nucleus",
}

#: Ellipsoids (right-side centre, semi-axes, MNI mm); mirrored to the left.
THALAMUS = ((11.0, -18.0, 7.0), (7.5, 14.0, 8.0))
DENTATE = ((15.0, -57.0, -35.0), (6.0, 8.0, 5.0))
#: Air spaces: (centre, semi-axes) in MNI mm; an x ≠ 0 centre is mirrored.
AIR_SPACES = (
    ((0.0, 74.0, 12.0), (14.0, 6.0, 10.0)),     # frontal sinus
    ((0.0, 18.0, -34.0), (11.0, 11.0, 9.0)),    # sphenoid sinus
    ((0.0, 52.0, -42.0), (8.0, 22.0, 14.0)),    # nasal cavity
    ((30.0, 42.0, -48.0), (12.0, 15.0, 14.0)),  # maxillary sinus
    ((64.0, -20.0, -38.0), (12.0, 4.0, 4.0)),   # external ear canal
    ((52.0, -36.0, -42.0), (8.0, 8.0, 9.0)),    # mastoid air cells
)
FACE = ((0.0, 35.0, -52.0), (58.0, 60.0, 42.0))
NECK_Y_MM, NECK_SEMI_MM, NECK_TOP_Z_MM = -25.0, (52.0, 58.0), -35.0


def _mm_grid(shape: Tuple[int, int, int]):
    return [(MNI_ORIGIN_MM[a] + np.arange(n, dtype=np.float32)).reshape([n if b == a else 1 for b in range(3)])
            for a, n in enumerate(shape)]


def _ellipsoid(grid, center, semi) -> np.ndarray:
    x, y, z = grid
    return ((x - center[0]) / semi[0]) ** 2 + ((y - center[1]) / semi[1]) ** 2 + ((z - center[2]) / semi[2]) ** 2 <= 1


def _mirrored(center):
    return [center] if center[0] == 0 else [(center[0], center[1], center[2]), (-center[0], center[1], center[2])]


def _cit168(root: Path, shape) -> np.ndarray:
    import nibabel as nib

    img = nib.load(str(root / "atlases" / "CIT168" / "CIT168.nii.gz"))
    rgba = np.asarray(img.dataobj)
    names = json.loads((root / "atlases" / "CIT168" / "CIT168.json").read_text())["labels"]
    lut = np.zeros(256, np.uint8)
    for i, n in enumerate(names):
        key = n[2:].strip() if n[:2] in ("L ", "R ") else n.strip()
        if key in CIT168_MAP:
            lut[i] = label_of(CIT168_MAP[key])
    lab = np.where(rgba["B"] >= CIT168_THRESHOLD * 255, lut[rgba["R"]], 0).astype(np.uint8)
    if not np.allclose(img.affine[:3, :3], np.eye(3)):
        raise ValueError("CIT168 is expected on a 1 mm RAS grid")
    off = np.round(img.affine[:3, 3] - np.asarray(MNI_ORIGIN_MM)).astype(int)
    out = np.zeros(shape, np.uint8)
    out[tuple(slice(o, o + n) for o, n in zip(off, lab.shape))] = lab
    return out


def build(root: Path) -> np.ndarray:
    """The head label map on the MNI 1 mm grid, from the templates under ``root``."""
    import nibabel as nib

    mni = root / "mni152"
    t1 = np.asarray(nib.load(str(mni / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")).dataobj)
    gm = np.asarray(nib.load(str(mni / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")).dataobj) / 255.0
    wm = np.asarray(nib.load(str(mni / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")).dataobj) / 255.0
    shape = t1.shape
    grid = _mm_grid(shape)
    x, y, z = grid

    brain = ndi.binary_fill_holes(ndi.binary_closing(t1 > 0, iterations=3))
    out_dist = ndi.distance_transform_edt(~brain)
    icv = (out_dist <= SUBARACHNOID_MM) & (z >= FORAMEN_MAGNUM_Z_MM)
    dist_icv = ndi.distance_transform_edt(~icv)

    face = _ellipsoid(grid, *FACE)
    neck = (((x / NECK_SEMI_MM[0]) ** 2 + ((y - NECK_Y_MM) / NECK_SEMI_MM[1]) ** 2) <= 1) & (z <= NECK_TOP_Z_MM)
    head = (dist_icv <= SKULL_MM + SCALP_MM) | face | neck | (brain & ~icv)
    lab = np.zeros(shape, np.uint8)
    lab[head] = label_of("scalp")
    lab[(dist_icv > 0) & (dist_icv <= SKULL_MM)] = label_of("skull")
    for c, semi in AIR_SPACES:
        for cc in _mirrored(c):
            lab[_ellipsoid(grid, cc, semi) & ~icv & head] = label_of("sinus air")

    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    tissue = np.argmax(np.stack([csf, gm, wm]), axis=0)
    classes = np.array([label_of("CSF"), label_of("GM"), label_of("WM")], np.uint8)
    lab[icv] = classes[tissue[icv]]
    in_dist = ndi.distance_transform_edt(icv)
    deep_csf = (lab == label_of("CSF")) & (in_dist > 14.0) & (np.abs(x) < 30) & (z > -20) & (z < 40)
    comp, n = ndi.label(deep_csf)
    sizes = ndi.sum(deep_csf, comp, index=np.arange(1, n + 1))
    lab[np.isin(comp, 1 + np.nonzero(sizes >= 300)[0])] = label_of("ventricles")

    for (c, semi), name in ((THALAMUS, "thalamus"), (DENTATE, "dentate nucleus")):
        for cc in _mirrored(c):
            lab[_ellipsoid(grid, cc, semi) & icv] = label_of(name)
    nuc = _cit168(root, shape)
    put = (nuc > 0) & icv
    lab[put] = nuc[put]
    return lab


def main(argv=None) -> None:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else Path("/work/shared/data")
    lab = build(root)
    DATA_FILE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(DATA_FILE, labels=lab, origin_mm=np.asarray(MNI_ORIGIN_MM), voxel_size_mm=np.ones(3))
    print(f"wrote {DATA_FILE} ({DATA_FILE.stat().st_size / 1e6:.2f} MB), labels {sorted(np.unique(lab).tolist())}")


if __name__ == "__main__":
    main()
