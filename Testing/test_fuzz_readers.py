"""Property-based fuzzing of the NIfTI, NRRD and DICOM readers (hypothesis).

Valid small files are mutated — header fields (dimensions, datatypes, scaling, voxel sizes 0/NaN/negative,
qform/sform codes, NRRD sizes/types/encodings/space directions, DICOM matrix, bit depth, rescale, geometry,
enhanced multi-frame groups) and raw bytes (truncation, flipped bytes) — and every read must either give a valid
:class:`GREData` or raise :class:`QSMInputError` with a message: never another exception, a hang (a 20 s deadline
per case) or a memory blow-up (headers announcing more than the machine can hold are refused before reading; the
limit is lowered here so that a wrong allocation would show). The runs are derandomised, so CI is reproducible and
bounded (:data:`CASES` per reader); the counts are printed (``pytest -s``) and checked.
"""
from __future__ import annotations

import io
import os
import tempfile
from collections import Counter

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from QSMLogic.errors import QSMInputError
from QSMLogic.gre import GREData
from QSMLogic.io import load_gre
from dicom_helpers import ENHANCED_MR_STORAGE, MR_STORAGE, item, mr_image

#: Cases per reader in CI (about 15 s for all three on 2 cores); ``SUSCEPTIBILITY_MRI_FUZZ_SCALE=N`` runs N times as
#: many, with fresh random draws instead of the fixed sequence (a longer search, by hand).
SCALE = int(os.environ.get("SUSCEPTIBILITY_MRI_FUZZ_SCALE", "1"))
CASES = {k: n * SCALE for k, n in {"nifti": 100, "nrrd": 80, "dicom": 80}.items()}
FUZZ = settings(deadline=20000, derandomize=SCALE == 1, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
OUTCOMES: Counter = Counter()
SHAPE = (6, 5, 4, 2)
TE, B0 = (0.004, 0.008), 3.0


@pytest.fixture(autouse=True)
def small_memory_limit(monkeypatch):
    """Headers announcing more than 64 MiB are refused, so a reader that allocated first would be caught."""
    monkeypatch.setenv("SUSCEPTIBILITY_MRI_MAX_INPUT_BYTES", str(64 << 20))


def _check(read) -> str:
    """Run one read: a valid GREData or a QSMInputError with a message; anything else fails the test."""
    try:
        gre = read()
    except QSMInputError as exc:
        assert str(exc).strip(), "QSMInputError without a message"
        return "refused"
    assert isinstance(gre, GREData)
    assert np.isfinite(gre.phase_rad).all() and np.abs(gre.phase_rad).max() <= np.pi + 1e-3
    assert gre.magnitude is None or (np.isfinite(gre.magnitude).all() and gre.magnitude.min() >= 0)
    assert np.isfinite(gre.affine).all() and all(v > 0 for v in gre.voxel_size_mm)
    return "read"


def _phase_values(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-np.pi, np.pi, SHAPE).astype(np.float32)


# ------------------------------------------------------------------------------------------------------ NIfTI
NIFTI_DTYPES = [2, 4, 8, 16, 64, 256, 512, 768, 32, 128, 1024, 1280, 1536, 2304, 0, 7, 9999]
nifti_mutation = st.one_of(
    st.tuples(st.just("dim"), st.integers(0, 7), st.sampled_from([-1, 0, 1, 2, 3, 7, 32767, 2**15 - 1])),
    st.tuples(st.just("datatype"), st.just(0), st.sampled_from(NIFTI_DTYPES)),
    st.tuples(st.just("pixdim"), st.integers(0, 4),
              st.sampled_from([0.0, -1.0, -2.5, float("nan"), float("inf"), 1e-30, 1e30, 2.0])),
    st.tuples(st.just("scl_slope"), st.just(0), st.sampled_from([0.0, float("nan"), float("inf"), -1.0, 1e-6, 3.0])),
    st.tuples(st.just("scl_inter"), st.just(0), st.sampled_from([float("nan"), float("inf"), 5.0, -1e9])),
    st.tuples(st.just("qform_code"), st.just(0), st.integers(-2, 5)),
    st.tuples(st.just("sform_code"), st.just(0), st.integers(-2, 5)),
    st.tuples(st.just("srow"), st.integers(0, 11), st.sampled_from([0.0, float("nan"), float("inf"), -3.0, 1e20])),
    st.tuples(st.just("quatern"), st.integers(0, 2), st.sampled_from([0.0, 1.0, 2.0, float("nan"), -0.9])),
    st.tuples(st.just("vox_offset"), st.just(0), st.sampled_from([0.0, 100.0, 352.0, 353.0, 1e9, -4.0])),
    st.tuples(st.just("truncate"), st.integers(0, 2000), st.just(0)),
    st.tuples(st.just("flip"), st.integers(0, 2000), st.integers(1, 255)),
)


def _nifti_bytes(seed: int, mutations, compressed: bool) -> bytes:
    img = nib.Nifti1Image(_phase_values(seed), np.diag([2.0, 2.0, 2.5, 1.0]))
    img.set_qform(img.affine, code=1)
    hdr = img.header
    hdr["vox_offset"] = 352
    raw = bytearray(hdr.binaryblock + b"\0" * 4 + np.asarray(img.dataobj).tobytes())
    for kind, i, v in mutations:
        if kind in ("truncate", "flip"):
            continue
        h = nib.Nifti1Header.from_fileobj(io.BytesIO(bytes(raw[:348])), check=False)
        try:
            if kind == "dim":
                d = h["dim"].copy()
                d[i] = v
                h["dim"] = d
            elif kind == "pixdim":
                p = h["pixdim"].copy()
                p[i] = v
                h["pixdim"] = p
            elif kind == "srow":
                row = ("srow_x", "srow_y", "srow_z")[i // 4]
                r = h[row].copy()
                r[i % 4] = v
                h[row] = r
            elif kind == "quatern":
                h[("quatern_b", "quatern_c", "quatern_d")[i]] = v
            else:
                h[kind] = v
        except (ValueError, OverflowError):
            continue
        raw[:348] = h.binaryblock
    for kind, i, v in mutations:
        if kind == "truncate":
            raw = raw[: max(0, len(raw) - i)]
        elif kind == "flip" and raw:
            raw[i % len(raw)] ^= v
    data = bytes(raw)
    if compressed:
        import gzip

        data = gzip.compress(data, compresslevel=1)
    return data


@settings(FUZZ, max_examples=CASES["nifti"])
@given(seed=st.integers(0, 3), mutations=st.lists(nifti_mutation, min_size=1, max_size=4),
       compressed=st.booleans(), with_magnitude=st.booleans())
def _fuzz_nifti(seed, mutations, compressed, with_magnitude):
    with tempfile.TemporaryDirectory() as d:
        suffix = ".nii.gz" if compressed else ".nii"
        ph = os.path.join(d, "phase" + suffix)
        open(ph, "wb").write(_nifti_bytes(seed, mutations, compressed))
        mag = None
        if with_magnitude:
            mag = os.path.join(d, "mag" + suffix)
            open(mag, "wb").write(_nifti_bytes(seed + 10, [], compressed))
        OUTCOMES["nifti " + _check(lambda: load_gre(magnitude=mag, phase=ph, te_s=TE, b0_tesla=B0))] += 1


# ------------------------------------------------------------------------------------------------------- NRRD
nrrd_mutation = st.one_of(
    st.tuples(st.just("sizes"), st.sampled_from(["6 5 4 2", "6 5 4", "6 5", "6 5 4 2 3", "0 5 4 2", "-6 5 4 2",
                                                  "60000 60000 60000 2", "6 5 4 x", ""])),
    st.tuples(st.just("type"), st.sampled_from(["float", "double", "short", "uchar", "int64", "block", "bogus"])),
    st.tuples(st.just("encoding"), st.sampled_from(["raw", "gzip", "ascii", "hex", "bzip2", "nonsense"])),
    st.tuples(st.just("space"), st.sampled_from(["left-posterior-superior", "right-anterior-superior",
                                                  "scanner-xyz", "3D-right-handed", ""])),
    st.tuples(st.just("space directions"), st.sampled_from([
        "none (2,0,0) (0,2,0) (0,0,2.5)", "none (0,0,0) (0,2,0) (0,0,2.5)", "none (nan,0,0) (0,2,0) (0,0,2.5)",
        "none (2,0,0) (2,0,0) (0,0,2.5)", "(2,0,0) (0,2,0) (0,0,2.5) none", "none (2,0,0) (0,2,0)",
        "none (2,0) (0,2,0) (0,0,2.5)", "none none none none", "none (inf,0,0) (0,2,0) (0,0,2.5)"])),
    st.tuples(st.just("kinds"), st.sampled_from(["list domain domain domain", "domain domain domain domain",
                                                  "vector domain domain", "bogus"])),
    st.tuples(st.just("space origin"), st.sampled_from(["(0,0,0)", "(nan,0,0)", "(1,2)", "garbage"])),
    st.tuples(st.just("echo_times_s"), st.sampled_from(["0.004 0.008", "4 8", "nan 0.008", "0.008 0.004", "x"])),
    st.tuples(st.just("b0_tesla"), st.sampled_from(["3", "0", "-3", "3000", "nan", "x"])),
    st.tuples(st.just("truncate"), st.integers(1, 900)),
    st.tuples(st.just("flip"), st.integers(0, 1000)),
)


def _nrrd_bytes(seed: int, mutations) -> bytes:
    fields = {"type": "float", "dimension": "4", "space": "right-anterior-superior", "sizes": "2 6 5 4",
              "space directions": "none (2,0,0) (0,2,0) (0,0,2.5)", "kinds": "list domain domain domain",
              "endian": "little", "encoding": "raw", "space origin": "(0,0,0)"}
    extra = {}
    data = np.moveaxis(_phase_values(seed), 3, 0).astype("<f4").tobytes(order="F")
    for kind, v in mutations:
        if kind == "sizes":
            fields["sizes"] = v
            fields["dimension"] = str(max(1, len(v.split())))
        elif kind in ("echo_times_s", "b0_tesla"):
            extra[kind] = v
        elif kind in fields or kind in ("type", "encoding"):
            fields[kind] = v
    lines = ["NRRD0004"] + [f"{k}: {v}" for k, v in fields.items()] + [f"{k}:={v}" for k, v in extra.items()]
    raw = bytearray(("\n".join(lines) + "\n\n").encode() + data)
    for kind, v in mutations:
        if kind == "truncate":
            raw = raw[: max(0, len(raw) - v)]
        elif kind == "flip" and raw:
            raw[v % len(raw)] ^= 0x5A
    return bytes(raw)


@settings(FUZZ, max_examples=CASES["nrrd"])
@given(seed=st.integers(0, 3), mutations=st.lists(nrrd_mutation, min_size=1, max_size=4), explicit=st.booleans())
def _fuzz_nrrd(seed, mutations, explicit):
    with tempfile.TemporaryDirectory() as d:
        ph = os.path.join(d, "phase.nrrd")
        open(ph, "wb").write(_nrrd_bytes(seed, mutations))
        kw = {"te_s": TE, "b0_tesla": B0} if explicit else {}
        OUTCOMES["nrrd " + _check(lambda: load_gre(phase=ph, **kw))] += 1


# ------------------------------------------------------------------------------------------------------ DICOM
ROWS, COLS, NSL = 5, 6, 4


def _base(sop_class: str) -> Dataset:
    return mr_image(sop_class, ROWS, COLS, "SIEMENS", "3", bits_stored=12)


DICOM_TAGS = {
    "Rows": [0, 1, 4, 6, 65535], "Columns": [0, 3, 7, 65535], "BitsAllocated": [1, 8, 12, 32, 64],
    "BitsStored": [0, 8, 16, 17], "PixelRepresentation": [1, 2], "SamplesPerPixel": [0, 3],
    "RescaleSlope": ["0", "nan", "-1", "1e30", "x"], "RescaleIntercept": ["nan", "-4096", "inf"],
    "PixelSpacing": [["0", "1"], ["-1", "1"], ["nan", "1"], ["1"]], "EchoTime": ["", "0", "-4", "nan", "4000"],
    "ImageOrientationPatient": [["1", "0", "0", "1", "0", "0"], ["0"] * 6, ["nan"] * 6, ["1", "0", "0"]],
    "ImagePositionPatient": [["0", "0"], ["nan", "0", "0"]], "ImageType": [["ORIGINAL"], ["X", "Y", "Z"]],
    "MagneticFieldStrength": ["0", "-3", "nan", "3000"], "NumberOfFrames": ["0", "3", "100000", "-1"],
    "PhotometricInterpretation": ["RGB", "PALETTE COLOR"],
}
dicom_mutation = st.one_of(
    st.tuples(st.just("tag"), st.sampled_from(sorted(DICOM_TAGS)), st.integers(0, 5)),
    st.tuples(st.just("delete"), st.sampled_from(["Rows", "PixelData", "EchoTime", "ImagePositionPatient",
                                                  "ImageOrientationPatient", "PixelSpacing", "ImageType",
                                                  "PerFrameFunctionalGroupsSequence",
                                                  "SharedFunctionalGroupsSequence"]), st.just(0)),
    st.tuples(st.just("truncate"), st.integers(1, 400), st.just(0)),
    st.tuples(st.just("flip"), st.integers(0, 3000), st.integers(1, 255)),
    st.tuples(st.just("frames"), st.integers(0, 2), st.just(0)),
)


def _apply(ds: Dataset, mutations, file_index: int) -> None:
    for kind, name, i in mutations:
        if kind == "tag":
            values = DICOM_TAGS[name]
            setattr(ds, name, values[i % len(values)])
        elif kind == "delete" and name in ds and (file_index == 0 or name != "PixelData"):
            delattr(ds, name)
        elif kind == "frames" and "PerFrameFunctionalGroupsSequence" in ds:
            groups = ds.PerFrameFunctionalGroupsSequence
            ds.PerFrameFunctionalGroupsSequence = Sequence(list(groups)[: len(groups) - 1 - name])


def _write_dicom(folder: str, seed: int, mutations, enhanced: bool) -> None:
    rng = np.random.default_rng(seed)
    iop = ["1", "0", "0", "0", "1", "0"]
    paths = []
    if enhanced:
        ds = _base(ENHANCED_MR_STORAGE)
        frames, pixels = [], []
        for kind in ("M", "P"):
            for e in range(2):
                for k in range(NSL):
                    frames.append(item(
                        PlanePositionSequence=Sequence([item(ImagePositionPatient=["0", "0", str(2.5 * k)])]),
                        MREchoSequence=Sequence([item(EffectiveEchoTime=4.0 * (e + 1))]),
                        MRImageFrameTypeSequence=Sequence([item(FrameType=["ORIGINAL", "PRIMARY", kind, "NONE"])]),
                    ))
                    pixels.append(rng.integers(0, 4096, (ROWS, COLS)))
        ds.SharedFunctionalGroupsSequence = Sequence([item(
            PixelMeasuresSequence=Sequence([item(PixelSpacing=["2", "2"], SliceThickness="2.5")]),
            PlaneOrientationSequence=Sequence([item(ImageOrientationPatient=iop)]))])
        ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
        ds.NumberOfFrames = len(frames)
        ds.PixelData = np.stack(pixels).astype(np.uint16).tobytes()
        _apply(ds, mutations, 0)
        paths.append(os.path.join(folder, "enhanced.dcm"))
        ds.save_as(paths[-1], enforce_file_format=True)
    else:
        n = 0
        for kind in ("M", "P"):
            for e in range(2):
                for k in range(NSL):
                    ds = _base(MR_STORAGE)
                    ds.ImageType = ["ORIGINAL", "PRIMARY", kind]
                    ds.EchoTime, ds.EchoNumbers = str(4.0 * (e + 1)), e + 1
                    ds.ImagePositionPatient, ds.ImageOrientationPatient = ["0", "0", str(2.5 * k)], iop
                    ds.PixelSpacing, ds.SliceThickness = ["2", "2"], "2.5"
                    ds.PixelData = rng.integers(0, 4096, (ROWS, COLS)).astype(np.uint16).tobytes()
                    if n == 0:  # the first file carries the mutations
                        _apply(ds, mutations, 0)
                    paths.append(os.path.join(folder, f"IM{n:03d}"))
                    ds.save_as(paths[-1], enforce_file_format=True)
                    n += 1
    for kind, a, b in mutations:
        if kind in ("truncate", "flip"):
            raw = bytearray(open(paths[0], "rb").read())
            if kind == "truncate":
                raw = raw[: max(0, len(raw) - a)]
            elif raw:
                raw[a % len(raw)] ^= b
            open(paths[0], "wb").write(bytes(raw))


@settings(FUZZ, max_examples=CASES["dicom"])
@given(seed=st.integers(0, 3), mutations=st.lists(dicom_mutation, min_size=1, max_size=3), enhanced=st.booleans())
def _fuzz_dicom(seed, mutations, enhanced):
    with tempfile.TemporaryDirectory() as d:
        try:
            _write_dicom(d, seed, mutations, enhanced)
        except (ValueError, TypeError, OverflowError, AttributeError, KeyError):
            return  # pydicom refused to write this mutation: nothing to read
        OUTCOMES["dicom " + _check(lambda: load_gre(phase=d))] += 1


def _run_and_count(kind: str, fuzz) -> None:
    """Run one reader's fuzzer (every case) and check and print how the cases ended."""
    for outcome in ("read", "refused"):
        OUTCOMES[f"{kind} {outcome}"] = 0
    fuzz()
    read, refused = OUTCOMES[f"{kind} read"], OUTCOMES[f"{kind} refused"]
    print(f"fuzz {kind}: {read + refused} cases, {read} read, {refused} refused with a message")
    assert read + refused >= CASES[kind] // 2 and refused > 0, (kind, read, refused)


def test_fuzz_nifti():
    _run_and_count("nifti", _fuzz_nifti)
    assert OUTCOMES["nifti read"] > 0


def test_fuzz_nrrd():
    _run_and_count("nrrd", _fuzz_nrrd)
    assert OUTCOMES["nrrd read"] > 0


def test_fuzz_dicom():
    _run_and_count("dicom", _fuzz_dicom)
