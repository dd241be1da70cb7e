"""NIfTI (per-echo and 4D, BIDS sidecars), NRRD round trips, load_gre dispatch, result writing and bad inputs."""
from __future__ import annotations

import json
import os

import nibabel as nib
import nrrd
import numpy as np
import pytest

import QSMLogic
from QSMLogic.errors import QSMInputError
from QSMLogic.geometry import affine_from_geometry, b0_direction_from_affine, rotation_matrix
from QSMLogic.io import (
    load_gre, make_provenance, read_nifti_gre, read_nrrd, write_nrrd, write_result,
)
from shared_data import REAL_GRE_SMALL

REAL = REAL_GRE_SMALL
SHAPE = (14, 12, 8)
TE = (0.004, 0.009, 0.014)
ROT = rotation_matrix((1.0, 0.4, 0.2), 23.0)
AFFINE = affine_from_geometry((1.5, 1.2, 2.0), ROT, (-20.0, 15.5, 7.25))


def _data(seed=0):
    rng = np.random.default_rng(seed)
    phase = rng.uniform(-np.pi, np.pi, SHAPE + (len(TE),)).astype(np.float32)
    mag = rng.uniform(10, 100, SHAPE + (len(TE),)).astype(np.float32)
    return mag, phase


def _save(path, array, affine=AFFINE, sidecar=None, dtype=np.float32):
    nib.save(nib.Nifti1Image(np.asarray(array).astype(dtype), affine), str(path))
    if sidecar is not None:
        with open(str(path).replace(".nii.gz", ".json").replace(".nii", ".json"), "w") as f:
            json.dump(sidecar, f)
    return str(path)


def test_nifti_per_echo_files_sorted_by_sidecar_echo_time(tmp_path):
    mag, phase = _data()
    int12 = np.clip(np.round(phase / np.pi * 4096), -4096, 4095)  # dcm2niix-like integer phase
    mags, phases = [], []
    for e, te in enumerate(TE):
        side = {"EchoTime": te, "MagneticFieldStrength": 2.89}
        mags.append(_save(tmp_path / f"mag_e{e + 1}.nii.gz", mag[..., e], sidecar=side))
        phases.append(_save(tmp_path / f"ph_e{e + 1}.nii", int12[..., e], sidecar=side, dtype=np.int16))
    order = [2, 0, 1]  # given out of order: sorted by EchoTime
    gre = load_gre(magnitude=[mags[i] for i in order], phase=[phases[i] for i in order])
    np.testing.assert_allclose(gre.te_s, TE)
    assert gre.b0_tesla == pytest.approx(2.89)
    np.testing.assert_allclose(gre.affine, AFFINE, atol=1e-5)
    np.testing.assert_allclose(gre.magnitude, mag, rtol=1e-6)
    assert np.abs(np.angle(np.exp(1j * (gre.phase_rad - phase)))).max() < np.pi / 4096 + 1e-5
    assert gre.metadata["phase_scaling"]["rule"] == "dicom_int12"
    assert gre.metadata["source_files"]["phase"] == phases
    assert gre.metadata["te_source"] == "sidecar" and gre.metadata["format"] == "nifti"
    expected_b0 = ROT.T @ np.array([0.0, 0.0, 1.0])
    np.testing.assert_allclose(gre.b0_direction, expected_b0, atol=1e-5)


@pytest.mark.parametrize("sidecar", [{"EchoTime": list(TE), "MagneticFieldStrength": 7.0},
                                     {"EchoTime1": TE[0], "EchoTime2": TE[1], "EchoTime3": TE[2],
                                      "MagneticFieldStrength": 7.0}])
def test_nifti_4d_with_sidecar_and_explicit_values_win(tmp_path, sidecar):
    mag, phase = _data(1)
    m = _save(tmp_path / "mag.nii.gz", mag, sidecar=sidecar)
    p = _save(tmp_path / "phase.nii.gz", phase, sidecar=sidecar)
    gre = read_nifti_gre(m, p, phase_sign=-1)
    np.testing.assert_allclose(gre.te_s, TE)
    assert gre.b0_tesla == 7.0
    np.testing.assert_allclose(gre.phase_rad, -phase, atol=1e-6)
    assert gre.metadata["phase_scaling"]["rule"] == "radians"
    gre = load_gre(magnitude=m, phase=p, te_s=(0.005, 0.01, 0.015), b0_tesla=3.0)
    np.testing.assert_allclose(gre.te_s, (0.005, 0.01, 0.015))
    assert gre.b0_tesla == 3.0 and gre.metadata["te_source"] == "explicit"


def test_nifti_missing_echo_times_and_field_named(tmp_path):
    mag, phase = _data()
    p = _save(tmp_path / "phase.nii.gz", phase)
    with pytest.raises(QSMInputError, match=r"echo times are missing for 3 echo.*te_s.*phase\.json"):
        load_gre(phase=p, b0_tesla=3.0)
    with pytest.raises(QSMInputError, match=r"field strength is missing.*b0_tesla.*MagneticFieldStrength"):
        load_gre(phase=p, te_s=TE)
    with pytest.raises(QSMInputError, match="3 echo times but .* has 3 echoes|lists 2 echo times"):
        _save(tmp_path / "p2.nii.gz", phase, sidecar={"EchoTime": [0.004, 0.008]})
        load_gre(phase=str(tmp_path / "p2.nii.gz"), b0_tesla=3.0)


def test_nifti_bad_files(tmp_path):
    mag, phase = _data()
    p = _save(tmp_path / "phase.nii.gz", phase)
    kw = dict(te_s=TE, b0_tesla=3.0)
    with pytest.raises(QSMInputError, match=r"NIfTI file '.*nothere\.nii\.gz' does not exist"):
        load_gre(phase=str(tmp_path / "nothere.nii.gz"), **kw)
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"this is not a nifti file at all" * 10)
    with pytest.raises(QSMInputError, match=r"cannot read NIfTI file '.*broken\.nii\.gz'"):
        load_gre(phase=str(bad), **kw)
    flat = _save(tmp_path / "flat.nii.gz", np.zeros((5, 5)))
    with pytest.raises(QSMInputError, match=r"flat\.nii\.gz' is 2D"):
        load_gre(phase=flat, **kw)
    with pytest.raises(QSMInputError, match="one file per echo must be 3D"):
        load_gre(phase=[p, p], **kw)
    # magnitude/phase geometry mismatch: shape, then affine
    m_small = _save(tmp_path / "m_small.nii.gz", mag[:-1])
    with pytest.raises(QSMInputError, match=r"geometry mismatch.*spatial shape \(13, 12, 8\).*\(14, 12, 8\)"):
        load_gre(magnitude=m_small, phase=p, **kw)
    shifted = AFFINE.copy()
    shifted[0, 3] += 1.0
    m_shift = _save(tmp_path / "m_shift.nii.gz", mag, affine=shifted)
    with pytest.raises(QSMInputError, match="geometry mismatch: the affines .* differ by up to 1 mm"):
        load_gre(magnitude=m_shift, phase=p, **kw)
    m_two = _save(tmp_path / "m_two.nii.gz", mag[..., :2])
    with pytest.raises(QSMInputError, match="echo count mismatch"):
        load_gre(magnitude=m_two, phase=p, **kw)
    # phase not convertible
    p_bad = _save(tmp_path / "p_bad.nii.gz", np.random.default_rng(0).normal(300, 20, SHAPE + (3,)))
    with pytest.raises(QSMInputError, match=r"p_bad\.nii\.gz.*cannot tell how the phase is scaled"):
        load_gre(phase=p_bad, **kw)
    p_nan = phase.copy()
    p_nan[0, 0, 0, :] = np.nan
    p_nan = _save(tmp_path / "p_nan.nii.gz", p_nan)
    with pytest.raises(QSMInputError, match="3 NaN/Inf voxel"):
        load_gre(phase=p_nan, **kw)
    with pytest.raises(QSMInputError, match="nan_policy must be one of"):
        load_gre(phase=p_nan, nan_policy="ignore", **kw)
    with pytest.raises(QSMInputError, match="echo times .* look like milliseconds"):
        load_gre(phase=p, te_s=(4, 9, 14), b0_tesla=3.0)
    with pytest.raises(QSMInputError, match="mixed file types"):
        load_gre(magnitude=str(tmp_path / "m.nrrd"), phase=p, **kw)


@pytest.mark.skipif(not os.path.isdir(REAL), reason=f"real sample folder {REAL} is absent")
def test_real_sample_and_nan_policy():
    gre = load_gre(magnitude=os.path.join(REAL, "Mag.nii.gz"), phase=os.path.join(REAL, "Phase.nii.gz"),
                   te_s=(0.004, 0.008, 0.012), b0_tesla=3.0)
    assert gre.shape == (51, 51, 41) and gre.n_echoes == 3
    assert gre.metadata["phase_scaling"]["rule"] == "range"
    assert gre.phase_rad.min() == pytest.approx(-np.pi, abs=1e-5)
    assert gre.phase_rad.max() == pytest.approx(np.pi, abs=1e-5)
    np.testing.assert_allclose(gre.voxel_size_mm, (0.46875, 0.46875, 1.0))
    nan_file = os.path.join(REAL, "phase_with_nan.nii.gz")
    with pytest.raises(QSMInputError, match=r"phase_with_nan\.nii\.gz.*1280 NaN/Inf voxel.*nan_policy='mask'"):
        load_gre(phase=nan_file, te_s=(0.004, 0.008), b0_tesla=3.0)
    gre = load_gre(phase=nan_file, te_s=(0.004, 0.008), b0_tesla=3.0, nan_policy="mask", phase_rule="range")
    valid = gre.metadata["valid_mask"]
    assert valid.shape == (128, 128, 5, 2) and int((~valid).sum()) == 1280
    assert gre.metadata["n_invalid_voxels"] == 1280
    assert np.all(gre.phase_rad[~valid] == 0) and np.all(np.isfinite(gre.phase_rad))


def test_nrrd_round_trip_4d_lps_and_3d_ras(tmp_path):
    mag, phase = _data(2)
    p = write_nrrd(tmp_path / "phase.nrrd", phase, AFFINE, te_s=TE, b0_tesla=3.0)
    m = write_nrrd(tmp_path / "mag.nrrd", mag, AFFINE, space="RAS")
    header = nrrd.read_header(p)
    assert header["space"] == "left-posterior-superior" and header["kinds"][0] == "list"
    data, affine, _ = read_nrrd(p)
    np.testing.assert_array_equal(data, phase)
    np.testing.assert_allclose(affine, AFFINE, atol=1e-9)
    gre = load_gre(magnitude=m, phase=p)
    np.testing.assert_allclose(gre.te_s, TE)
    assert gre.b0_tesla == 3.0 and gre.metadata["format"] == "nrrd"
    np.testing.assert_allclose(gre.magnitude, mag)
    np.testing.assert_allclose(gre.affine, AFFINE, atol=1e-9)
    np.testing.assert_allclose(gre.b0_direction, b0_direction_from_affine(AFFINE), atol=1e-9)
    h = write_nrrd(tmp_path / "one.nhdr", phase[..., 0], AFFINE, space="RAS")
    data, affine, header = read_nrrd(h)
    assert header["space"] == "right-anterior-superior"
    np.testing.assert_array_equal(data, phase[..., 0])
    np.testing.assert_allclose(affine, AFFINE, atol=1e-9)
    # per-echo 3D NRRD files, TE given explicitly
    files = [write_nrrd(tmp_path / f"p{e}.nrrd", phase[..., e], AFFINE) for e in range(3)]
    gre = load_gre(phase=files, te_s=TE, b0_tesla=3.0)
    np.testing.assert_allclose(gre.phase_rad, phase, atol=1e-6)


def test_nrrd_hand_written_lps_header_with_echo_axis_last(tmp_path):
    data = np.arange(4 * 3 * 2 * 2, dtype=np.int16).reshape(4, 3, 2, 2, order="F")
    header = {"space": "left-posterior-superior", "kinds": ["domain", "domain", "domain", "list"],
              "space directions": np.array([[0, 2.0, 0], [-1.0, 0, 0], [0, 0, 3.0], [np.nan] * 3]),
              "space origin": np.array([10.0, 20.0, 30.0])}
    nrrd.write(str(tmp_path / "h.nrrd"), data, header, index_order="F")
    out, affine, _ = read_nrrd(tmp_path / "h.nrrd")
    np.testing.assert_array_equal(out, data)
    expected = np.array([[0, 1.0, 0, -10], [-2.0, 0, 0, -20], [0, 0, 3.0, 30], [0, 0, 0, 1]])  # LPS → RAS
    np.testing.assert_allclose(affine, expected)


def test_nrrd_bad_files(tmp_path):
    with pytest.raises(QSMInputError, match="NRRD file .* does not exist"):
        read_nrrd(tmp_path / "none.nrrd")
    (tmp_path / "junk.nrrd").write_bytes(b"garbage\n")
    with pytest.raises(QSMInputError, match=r"cannot read NRRD file '.*junk\.nrrd'"):
        read_nrrd(tmp_path / "junk.nrrd")
    nrrd.write(str(tmp_path / "five.nrrd"), np.zeros((2, 2, 2, 2, 2), np.float32))
    with pytest.raises(QSMInputError, match=r"five\.nrrd' is 5D"):
        read_nrrd(tmp_path / "five.nrrd")
    nrrd.write(str(tmp_path / "nospace.nrrd"), np.zeros((2, 2, 2), np.float32))
    with pytest.raises(QSMInputError, match="space None"):
        read_nrrd(tmp_path / "nospace.nrrd")
    with pytest.raises(QSMInputError, match="3D or 4D"):
        write_nrrd(tmp_path / "x.nrrd", np.zeros((2, 2)), AFFINE)


def test_write_result_and_provenance(tmp_path):
    mag, phase = _data(3)
    inp = _save(tmp_path / "phase.nii.gz", phase, sidecar={"EchoTime": list(TE)})
    before = open(inp, "rb").read()
    chi = phase[..., 0] * 0.05
    prov = make_provenance("inversion", "tkd", {"threshold": np.float32(0.19), "shape": (3, 4)}, 1.25,
                           reference="Shmueli et al., MRM 2009")
    out = write_result(tmp_path / "chi.nii.gz", chi, AFFINE, prov, input_paths=[inp], units="ppm",
                       reference_region="whole_brain")
    img = nib.load(out)
    assert img.get_data_dtype() == np.float32
    np.testing.assert_allclose(img.get_fdata(), chi, rtol=1e-6)
    np.testing.assert_allclose(img.affine, AFFINE, atol=1e-5)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    side = json.load(open(tmp_path / "chi.json"))
    assert side["method"] == "tkd" and side["stage"] == "inversion"
    assert side["parameters"]["threshold"] == pytest.approx(0.19) and side["parameters"]["shape"] == [3, 4]
    assert side["version"] == QSMLogic.__version__ and side["run_time_s"] == 1.25
    assert side["input_files"] == [inp] and side["units"] == "ppm" and side["reference_region"] == "whole_brain"
    assert side["timestamp"].startswith("20") and side["shape"] == list(chi.shape)
    assert side["reference"] == "Shmueli et al., MRM 2009"
    out4 = write_result(tmp_path / "four.nii", phase, AFFINE, prov)
    assert nib.load(out4).shape == phase.shape
    # refusals: never onto an input, nor onto an input's sidecar; the input stays untouched
    with pytest.raises(QSMInputError, match="refusing to overwrite input file"):
        write_result(inp, chi, AFFINE, prov, input_paths=[inp])
    with pytest.raises(QSMInputError, match="refusing to overwrite input file"):
        write_result(tmp_path / "sub" / ".." / "phase.nii.gz", chi, AFFINE, prov, input_paths=[inp])
    with pytest.raises(QSMInputError, match=r"refusing to overwrite input file '.*phase\.json'"):
        write_result(tmp_path / "phase.nii", chi, AFFINE, prov, input_paths=[inp, str(tmp_path / "phase.json")])
    assert open(inp, "rb").read() == before
    with pytest.raises(QSMInputError, match="must end with .nii or .nii.gz"):
        write_result(tmp_path / "chi.mha", chi, AFFINE, prov)
    with pytest.raises(QSMInputError, match="3D or 4D"):
        write_result(tmp_path / "c.nii", chi[..., 0], AFFINE, prov)


def test_phantom_round_trip_through_bids_files(tmp_path):
    phantom = pytest.importorskip("QSMLogic.phantom")
    model = phantom.make_head_model(shape=(40, 40, 28), voxel_size_mm=(4.0, 4.0, 4.0), seed=0)
    acq = phantom.simulate_acquisition(model, te_s=TE, b0_tesla=3.0, snr=100.0, seed=0)
    g = acq.gre
    stored = np.round((g.phase_rad + np.pi) / (2 * np.pi) * 4096) % 4096  # as a scanner's 0..4095 integers
    mags, phases = [], []
    for e, te in enumerate(TE):
        side = {"EchoTime": te, "MagneticFieldStrength": 3.0}
        mags.append(_save(tmp_path / f"mag{e}.nii.gz", g.magnitude[..., e], affine=g.affine, sidecar=side))
        phases.append(_save(tmp_path / f"ph{e}.nii.gz", stored[..., e], affine=g.affine, sidecar=side,
                            dtype=np.uint16))
    gre = load_gre(magnitude=mags, phase=phases)
    assert gre.metadata["phase_scaling"]["rule"] == "dicom_uint12"
    assert np.abs(np.angle(np.exp(1j * (gre.phase_rad - g.phase_rad)))).max() < np.pi / 4096 + 1e-5
    np.testing.assert_allclose(gre.magnitude, g.magnitude, rtol=1e-6)
    np.testing.assert_allclose(gre.affine, g.affine, atol=1e-5)
    np.testing.assert_allclose(gre.b0_direction, g.b0_direction, atol=1e-6)
    out = write_result(tmp_path / "chi.nii.gz", acq.chi_ppm, gre.affine,
                       make_provenance("inversion", "truth", {}, 0.0), input_paths=mags + phases, units="ppm")
    back = nib.load(out)
    np.testing.assert_allclose(back.get_fdata(), acq.chi_ppm, atol=1e-6)
    np.testing.assert_allclose(back.affine, g.affine, atol=1e-5)
