"""DICOM reading: synthetic Siemens-like and Philips-like single-frame series and an enhanced multi-frame file,
all oblique, written with pydicom and read back (data, TE, B0, affine to 1e-4 mm, B0 direction)."""
from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.sequence import Sequence

from QSMLogic.errors import QSMInputError
from QSMLogic.geometry import rotation_matrix
from QSMLogic.io import load_gre, read_dicom_gre
from dicom_helpers import ENHANCED_MR_STORAGE, MR_STORAGE, item, mr_image

COLS, ROWS, NSLICE = 12, 10, 6
TE_MS = (4.1, 9.3, 14.5)
SPACING = (0.9, 0.8)  # PixelSpacing: (between rows, between columns) mm
SLICE_MM = 2.5
ROT = rotation_matrix((1.0, 0.3, 0.2), 25.0)  # oblique, LPS columns: row dir, column dir, slice normal
ORIGIN = np.array([-101.25, -87.5, 33.75])


def _ds(x):
    return f"{x:.8f}".rstrip("0").rstrip(".")


def _geometry():
    row_cos, col_cos, normal = ROT[:, 0], ROT[:, 1], ROT[:, 2]
    iop = [_ds(v) for v in np.concatenate([row_cos, col_cos])]
    positions = [[_ds(v) for v in ORIGIN + k * SLICE_MM * normal] for k in range(NSLICE)]
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = row_cos * SPACING[1], col_cos * SPACING[0]
    lps[:3, 2], lps[:3, 3] = normal * SLICE_MM, ORIGIN
    return iop, positions, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _new(sop_class, manufacturer, b0):
    return mr_image(sop_class, ROWS, COLS, manufacturer, _ds(b0))


def _set_pixels(ds, pixels):
    signed = pixels.dtype.kind == "i"
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = np.ascontiguousarray(pixels.astype(np.int16 if signed else np.uint16)).tobytes()


def _write_classic(folder, volumes, image_types, rescale, manufacturer, b0=3.0):
    """volumes: {kind: (x, y, z, echo) stored ints}; one file per slice/echo/kind, written in shuffled order."""
    iop, positions, _ = _geometry()
    rng = np.random.default_rng(0)
    jobs = [(kind, e, k) for kind in volumes for e in range(len(TE_MS)) for k in range(NSLICE)]
    for n, i in enumerate(rng.permutation(len(jobs))):
        kind, e, k = jobs[i]
        ds = _new(MR_STORAGE, manufacturer, b0)
        ds.ImageType = image_types[kind]
        ds.EchoTime, ds.EchoNumbers = _ds(TE_MS[e]), e + 1
        ds.ImagePositionPatient, ds.ImageOrientationPatient = positions[k], iop
        ds.PixelSpacing, ds.SliceThickness = [_ds(SPACING[0]), _ds(SPACING[1])], _ds(SLICE_MM)
        slope, intercept = rescale.get(kind, (1.0, 0.0))
        ds.RescaleSlope, ds.RescaleIntercept = _ds(slope), _ds(intercept)
        _set_pixels(ds, volumes[kind][:, :, k, e].T)  # DICOM pixels are (rows, columns)
        ds.save_as(str(folder / f"IM{n:04d}"), enforce_file_format=True)
    (folder / "README.txt").write_text("not a DICOM file")


def _stored(seed, lo, hi):
    return np.random.default_rng(seed).integers(lo, hi + 1, size=(COLS, ROWS, NSLICE, len(TE_MS)))


def _check_geometry(gre):
    _, _, affine = _geometry()
    np.testing.assert_allclose(gre.affine, affine, atol=1e-4)
    # B0 (LPS/RAS +z) seen in the array axes is the z-components of the row, column and normal directions
    np.testing.assert_allclose(gre.b0_direction, ROT[2, :], atol=1e-6)
    assert abs(gre.b0_direction[2]) < 0.99  # really oblique
    np.testing.assert_allclose(gre.te_s, np.array(TE_MS) * 1e-3, rtol=1e-9)


def _wrap(x):
    return np.angle(np.exp(1j * x))


def test_siemens_like_classic_series(tmp_path):
    mag, ph = _stored(1, 0, 4000), _stored(2, 0, 4095)
    _write_classic(tmp_path, {"magnitude": mag, "phase": ph},
                   {"magnitude": ["ORIGINAL", "PRIMARY", "M", "ND"], "phase": ["ORIGINAL", "PRIMARY", "P", "ND"]},
                   {"phase": (2.0, -4096.0)}, "SIEMENS", b0=2.89362)
    gre = load_gre(magnitude=str(tmp_path), phase=str(tmp_path))
    _check_geometry(gre)
    assert gre.b0_tesla == pytest.approx(2.89362)
    np.testing.assert_array_equal(gre.magnitude, mag)
    expected = (2.0 * ph - 4096) * np.pi / 4096
    assert np.abs(gre.phase_rad - expected).max() < 1e-5
    assert gre.metadata["phase_scaling"]["rule"] == "dicom_int12"
    assert gre.metadata["rescale"]["phase"] == [(2.0, -4096.0)]
    assert gre.metadata["n_skipped_files"] == 1 and gre.metadata["manufacturer"] == "SIEMENS"
    assert len(gre.metadata["source_files"]) == 2 * NSLICE * len(TE_MS)


@pytest.mark.parametrize("units, slope, intercept, rule", [("rad", 2 * np.pi / 4096, -np.pi, "radians"),
                                                           ("mrad", 2000 * np.pi / 4096, -1000 * np.pi,
                                                            "milliradians")])
def test_philips_like_rescaled_phase(tmp_path, units, slope, intercept, rule):
    mag, ph = _stored(3, 0, 3000), _stored(4, 0, 4095)
    _write_classic(tmp_path, {"magnitude": mag, "phase": ph},
                   {"magnitude": ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"],
                    "phase": ["ORIGINAL", "PRIMARY", "P_FFE", "P", "FFE"]},
                   {"magnitude": (1.5, 0.0), "phase": (slope, intercept)}, "Philips Medical Systems", b0=7.0)
    files = sorted(str(p) for p in tmp_path.iterdir() if p.name.startswith("IM"))
    gre = read_dicom_gre(files)
    _check_geometry(gre)
    assert gre.b0_tesla == 7.0
    np.testing.assert_allclose(gre.magnitude, 1.5 * mag, rtol=1e-6)
    expected = ph * (2 * np.pi / 4096) - np.pi
    assert np.abs(_wrap(gre.phase_rad - expected)).max() < 2e-5
    assert gre.metadata["phase_scaling"]["rule"] == rule


def test_real_imaginary_series_gives_complex_phase(tmp_path):
    re, im = _stored(5, -2000, 2000), _stored(6, -2000, 2000)
    _write_classic(tmp_path, {"real": re.astype(np.int16), "imaginary": im.astype(np.int16)},
                   {"real": ["ORIGINAL", "PRIMARY", "R_FFE", "R", "FFE"],
                    "imaginary": ["ORIGINAL", "PRIMARY", "I_FFE", "I", "FFE"]}, {}, "Philips")
    gre = load_gre(phase=str(tmp_path))
    _check_geometry(gre)
    np.testing.assert_allclose(gre.phase_rad, np.angle(re + 1j * im), atol=1e-5)
    np.testing.assert_allclose(gre.magnitude, np.abs(re + 1j * im), rtol=1e-5)
    assert gre.metadata["phase_scaling"]["rule"] == "complex"


def test_enhanced_multiframe(tmp_path):
    iop, positions, _ = _geometry()
    mag, ph = _stored(7, 0, 4000), _stored(8, 0, 4095)
    ds = _new(ENHANCED_MR_STORAGE, "Philips", 3.0)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "MIXED", "NONE"]
    ds.SharedFunctionalGroupsSequence = Sequence([item(
        PixelMeasuresSequence=Sequence([item(PixelSpacing=[_ds(SPACING[0]), _ds(SPACING[1])],
                                              SliceThickness=_ds(SLICE_MM))]),
        PlaneOrientationSequence=Sequence([item(ImageOrientationPatient=iop)]),
    )])
    frames, pixels = [], []
    jobs = [(kind, e, k) for kind in ("magnitude", "phase") for e in range(len(TE_MS)) for k in range(NSLICE)]
    for i in np.random.default_rng(1).permutation(len(jobs)):
        kind, e, k = jobs[i]
        # per-frame rescale: the magnitude slope differs per echo
        slope, intercept = (1.0 + 0.5 * e, 0.0) if kind == "magnitude" else (2 * np.pi / 4096, -np.pi)
        frames.append(item(
            PlanePositionSequence=Sequence([item(ImagePositionPatient=positions[k])]),
            MREchoSequence=Sequence([item(EffectiveEchoTime=TE_MS[e])]),
            FrameContentSequence=Sequence([item(InStackPositionNumber=k + 1, DimensionIndexValues=[e + 1, k + 1])]),
            MRImageFrameTypeSequence=Sequence([item(FrameType=["ORIGINAL", "PRIMARY", kind.upper()[:1], "NONE"],
                                                     ComplexImageComponent=kind.upper())]),
            PixelValueTransformationSequence=Sequence([item(RescaleSlope=_ds(slope), RescaleIntercept=_ds(intercept),
                                                             RescaleType="US")]),
        ))
        pixels.append((mag if kind == "magnitude" else ph)[:, :, k, e].T)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.NumberOfFrames = len(frames)
    _set_pixels(ds, np.stack(pixels).astype(np.uint16))
    path = tmp_path / "enhanced.dcm"
    ds.save_as(str(path), enforce_file_format=True)
    gre = load_gre(phase=[str(path)])
    _check_geometry(gre)
    assert gre.b0_tesla == 3.0
    np.testing.assert_allclose(gre.magnitude, mag * (1.0 + 0.5 * np.arange(len(TE_MS))), rtol=1e-6)
    slope = float(_ds(2 * np.pi / 4096))
    assert np.abs(_wrap(gre.phase_rad - (ph * slope - np.pi))).max() < 2e-5
    assert gre.metadata["phase_scaling"]["rule"] == "radians"


def test_dicom_bad_inputs(tmp_path):
    with pytest.raises(QSMInputError, match="DICOM path .* does not exist"):
        read_dicom_gre(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hello")
    with pytest.raises(QSMInputError, match=r"no DICOM images found .* \(1 other files skipped\)"):
        read_dicom_gre(str(tmp_path / "empty"))
    with pytest.raises(QSMInputError, match=r"DICOM file '.*notes\.txt' is not a readable DICOM file"):
        read_dicom_gre([str(tmp_path / "empty" / "notes.txt")])
    mag = _stored(9, 0, 4000)
    only_mag = tmp_path / "mag"
    only_mag.mkdir()
    _write_classic(only_mag, {"magnitude": mag}, {"magnitude": ["ORIGINAL", "PRIMARY", "M"]}, {}, "SIEMENS")
    with pytest.raises(QSMInputError, match=r"no phase images found .*image kinds found: \['magnitude'\]"):
        read_dicom_gre(str(only_mag))
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    _write_classic(unknown, {"phase": mag}, {"phase": ["ORIGINAL", "PRIMARY", "OTHER"]}, {}, "GE")
    with pytest.raises(QSMInputError, match=r"cannot tell whether the image is magnitude or phase"):
        read_dicom_gre(str(unknown))
    # duplicate slices (two copies of the series) and missing echo times / field strength
    dup = tmp_path / "dup"
    dup.mkdir()
    ph = _stored(10, 0, 4095)
    for sub in ("a", "b"):
        (dup / sub).mkdir()
        _write_classic(dup / sub, {"phase": ph}, {"phase": ["ORIGINAL", "PRIMARY", "P"]}, {}, "SIEMENS")
    with pytest.raises(QSMInputError, match="same slice position"):
        read_dicom_gre(str(dup))
    gre = read_dicom_gre(str(dup / "a"), b0_tesla=1.5, te_s=(0.005, 0.01, 0.015))
    assert gre.b0_tesla == 1.5 and gre.metadata["b0_source"] == "explicit"
    files = sorted((dup / "a").glob("IM*"))
    for f in files:
        ds = pydicom.dcmread(f)
        del ds.MagneticFieldStrength
        del ds.EchoTime
        ds.save_as(str(f), enforce_file_format=True)
    with pytest.raises(QSMInputError, match="echo times are missing for 3 echo.*DICOM EchoTime"):
        read_dicom_gre(str(dup / "a"), b0_tesla=3.0)
    with pytest.raises(QSMInputError, match="field strength is missing.*MagneticFieldStrength"):
        read_dicom_gre(str(dup / "a"), te_s=(0.004, 0.009, 0.014))
    # a missing slice makes the slices unevenly spaced
    for f in files:
        ds = pydicom.dcmread(f)
        if np.allclose([float(v) for v in ds.ImagePositionPatient], ORIGIN + 2 * SLICE_MM * ROT[:, 2], atol=1e-4):
            f.unlink()
    with pytest.raises(QSMInputError, match="not evenly spaced"):
        read_dicom_gre(str(dup / "a"), te_s=(0.004, 0.009, 0.014), b0_tesla=3.0)
