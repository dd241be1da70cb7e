"""The background run of the Slicer modules on real MRML nodes (slicer-core): the worker's file protocol
(QSMLogic.worker, both halves), the worker process (SusceptibilityMRILib.process) and the node-level BackgroundRun
(SusceptibilityMRILib.runner): same result as an in-process run with the phase sign flipped, the phase sign decided
("auto") or checked (+1/−1) on the negated head phantom in both, cancel that stops the whole process tree of a
launcher (as PythonSlicer starts python-real), a worker whose folder is deleted, and starts that fail."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "SusceptibilityMRI"))

from SusceptibilityMRILib import mrml_adapter as ad  # noqa: E402
from SusceptibilityMRILib import runner  # noqa: E402
from SusceptibilityMRILib.process import WorkerError, WorkerProcess  # noqa: E402
from SusceptibilityMRILib.testing import add_echo_volumes  # noqa: E402

from QSMLogic.errors import QSMCancelled  # noqa: E402
from QSMLogic.gre import GREData  # noqa: E402
from QSMLogic.pipeline import PipelineConfig  # noqa: E402
from QSMLogic.worker import (  # noqa: E402
    EXIT_CANCELLED,
    read_worker_input,
    worker_command,
    write_worker_input,
)

SHAPE = (24, 24, 20)
VOXEL_MM = 4.0
TE_S = (0.005, 0.010, 0.015)
#: A quick chain for these tests: the default stages with TKD inversion.
FAST = PipelineConfig.default().set("inversion", "tkd").to_dict()


def synthetic_gre(phase_sign: int = 1) -> GREData:
    """A sphere of tissue with a smooth off-resonance (Hz) and wrapped phase at three echo times."""
    idx = np.indices(SHAPE, dtype=np.float64)
    centre = (np.asarray(SHAPE, dtype=np.float64)[:, None, None, None] - 1) / 2
    r = np.sqrt(((idx - centre) ** 2).sum(0)) / (min(SHAPE) / 2)
    inside = r < 0.8
    field_hz = 40.0 * np.cos(np.pi * idx[0] / SHAPE[0]) * np.sin(np.pi * idx[2] / SHAPE[2]) * inside
    te = np.asarray(TE_S)
    rng = np.random.default_rng(0)
    phase = np.angle(np.exp(1j * (2 * np.pi * field_hz[..., None] * te + 0.3 + 0.01 * rng.standard_normal(
        SHAPE + (len(te),)))))
    phase = np.where(inside[..., None], phase, rng.uniform(-np.pi, np.pi, phase.shape))  # noise outside
    mag = np.where(inside, 1.0, 0.05)[..., None] * np.exp(-20.0 * te) + 0.01 * rng.random(SHAPE + (len(te),))
    affine = np.diag([VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])
    return GREData(phase_rad=phase.astype(np.float32), magnitude=mag.astype(np.float32), te_s=te, b0_tesla=3.0,
                   affine=affine, phase_sign=phase_sign, metadata={"te_source": "test"})


def echo_nodes(scene, gre: GREData):
    """The modules' self-test fixture, on slicer-core: (magnitude nodes, phase nodes) with their echo times."""
    assert slicer.mrmlScene is scene
    mags, phases = add_echo_volumes(gre, name="synthetic")
    assert [float(n.GetAttribute("DICOM.EchoTime")) for n in phases] == pytest.approx([t * 1e3 for t in TE_S])
    return mags, phases


def worker_env():
    return dict(os.environ, PYTHONPATH=ROOT)


def wait_for(run, timeout_s: float = 120.0):
    t0 = time.monotonic()
    while not run.poll():
        assert time.monotonic() - t0 < timeout_s, "background run did not finish"
        time.sleep(0.05)


def test_protocol_carries_phase_sign_and_metadata(tmp_path):
    """The worker rebuilds the caller's GREData: same (flipped) phase, the sign itself and the metadata, so its
    provenance records -1 as an in-process run does (the old protocol wrote the flipped phase with sign +1)."""
    gre = synthetic_gre(phase_sign=-1)
    cfg = PipelineConfig.default().to_dict()
    i, c, _ = write_worker_input(str(tmp_path), gre, cfg, mask=np.ones(SHAPE, bool))
    back, back_cfg, mask, labels, r2, sign_auto = read_worker_input(i, c)
    assert back.phase_sign == -1 and back.metadata == {"te_source": "test"} and sign_auto is False
    np.testing.assert_array_equal(back.phase_rad, gre.phase_rad)
    np.testing.assert_array_equal(back.magnitude, gre.magnitude)
    np.testing.assert_array_equal(back.te_s, gre.te_s)
    assert back.b0_direction == gre.b0_direction
    assert back_cfg.to_dict() == cfg and mask.all() and labels is None and r2 is None
    # the R2 map for source separation travels too (float32, on the data's grid)
    r2_map = np.full(SHAPE, 12.5, np.float64)
    i, c, _ = write_worker_input(str(tmp_path / "r2"), gre, cfg, r2_hz=r2_map)
    r2 = read_worker_input(i, c)[4]
    assert r2.dtype == np.float32 and r2.shape == SHAPE and np.all(r2 == 12.5)
    # the phase-sign mode: decided from the data in the worker, as in an in-process run
    i, c, _ = write_worker_input(str(tmp_path / "auto"), gre, cfg, phase_sign_auto=True)
    assert read_worker_input(i, c)[5] is True
    # an SWI-only acquisition without B0 stays without B0
    no_b0 = dataclasses.replace(synthetic_gre(), b0_tesla=None)
    i, c, _ = write_worker_input(str(tmp_path / "swi"), no_b0, PipelineConfig.swi_only().to_dict())
    assert read_worker_input(i, c)[0].b0_tesla is None


def test_background_run_gives_the_in_process_result(scene):
    gre = synthetic_gre()
    mags, phs = echo_nodes(scene, gre)
    direct = runner.run_qsm_on_nodes(scene, mags, phs, None, 3.0, FAST, phase_sign=-1, run_name="direct")
    events, done = [], []
    run = runner.start_background_run(scene, mags, phs, None, 3.0, FAST, phase_sign=-1, run_name="background",
                                      progress=lambda f, label: events.append((f, label)),
                                      on_done=lambda nodes, error: done.append((nodes, error)),
                                      python=sys.executable, env=worker_env())
    assert os.path.isdir(run.workdir)
    wait_for(run)
    assert len(done) == 1 and done[0][1] is None, done
    nodes = done[0][0]
    assert set(nodes) == set(direct)
    for key, node in nodes.items():
        np.testing.assert_array_equal(ad.array_ijk(node), ad.array_ijk(direct[key]))
        np.testing.assert_array_equal(ad.ijk_to_ras(node), ad.ijk_to_ras(phs[0]))
    prov, prov_direct = ad.read_provenance(nodes["chi_ppm"]), ad.read_provenance(direct["chi_ppm"])
    assert prov["input"]["phase_sign"] == prov_direct["input"]["phase_sign"] == -1
    assert prov["input"]["metadata"] == prov_direct["input"]["metadata"]
    assert prov["slicer_inputs"] == prov_direct["slicer_inputs"] and prov["run_name"] == "background"
    fractions = [f for f, _ in events]
    assert len(fractions) >= 5 and fractions == sorted(fractions) and fractions[-1] == 1.0
    assert not os.path.exists(run.workdir)  # the temporary folder is removed


def test_background_run_carries_the_r2_map_for_source_separation(scene):
    """The worker gets the R2 map (read from its node on another grid, resampled here) and its χ⁺/|χ⁻| equal the
    in-process run's."""
    gre = synthetic_gre()
    mags, phs = echo_nodes(scene, gre)
    r2_node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "R2 coarse")
    slicer.util.updateVolumeFromArray(r2_node, np.full((10, 12, 12), 12.0, np.float32))   # (k, j, i)
    r2_node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(np.diag([2 * VOXEL_MM] * 3 + [1.0])
                                                              @ np.array([[1, 0, 0, -0.5], [0, 1, 0, -0.5],
                                                                          [0, 0, 1, -0.5], [0, 0, 0, 1.0]])))
    cfg = PipelineConfig.from_dict(FAST).set("source_separation", "r2prime")
    cfg.stages["source_separation"]["enabled"] = True
    outputs = ("chi_para_ppm", "chi_dia_ppm", "r2prime_hz")
    direct = runner.run_qsm_on_nodes(scene, mags, phs, None, 3.0, cfg, r2_node=r2_node, output_names=outputs)
    done = []
    run = runner.start_background_run(scene, mags, phs, None, 3.0, cfg, r2_node=r2_node, output_names=outputs,
                                      on_done=lambda nodes, error: done.append((nodes, error)),
                                      python=sys.executable, env=worker_env())
    wait_for(run)
    assert len(done) == 1 and done[0][1] is None, done
    for key in outputs:
        np.testing.assert_array_equal(ad.array_ijk(done[0][0][key]), ad.array_ijk(direct[key]))
    r2p = np.asarray(ad.array_ijk(direct["r2prime_hz"]))
    assert np.median(r2p[r2p > 0]) == pytest.approx(8.0, abs=1.0)   # R2* 20 Hz − R2 12 Hz
    assert ad.read_provenance(done[0][0]["chi_para_ppm"])["slicer_inputs"]["r2_map"]["node"] == "R2 coarse"


@pytest.fixture(scope="module")
def head_2mm():
    """The head phantom at 2 mm (96×96×64 voxels, five echoes): small enough for a few runs, fine enough for the
    vein test to find its blocks (test_real_sample.py uses the same grid)."""
    from QSMLogic.phantom import make_head_model, simulate_acquisition

    return simulate_acquisition(make_head_model(shape=(96, 96, 64), voxel_size_mm=(2.0, 2.0, 2.0)),
                                te_s=(0.004, 0.008, 0.012, 0.016, 0.020), b0_tesla=3.0, snr=100)


def sign_test_config() -> dict:
    """The default chain with TKD inversion, without SWI and R2* (the phase-sign tests look at χ only)."""
    cfg = PipelineConfig.default().set("inversion", "tkd")
    cfg.stages["swi"]["enabled"] = cfg.stages["r2star"]["enabled"] = False
    return cfg.to_dict()


def negated_nodes(gre: GREData):
    """Echo volumes of ``gre`` stored with the opposite vendor convention (phase negated)."""
    return add_echo_volumes(dataclasses.replace(gre, phase_rad=-gre.phase_rad), name="negated")


def test_slicer_run_reports_a_phase_sign_the_veins_contradict(scene, head_2mm):
    """The phantom stored with the opposite vendor convention (phase negated) and run from nodes with the sign the
    user forced (+1, as the module's choice gives it): the run keeps that sign but its provenance carries the vein
    evidence and a warning naming the other sign; with −1 the evidence confirms it."""
    mags, phs = negated_nodes(head_2mm.gre)
    cfg = sign_test_config()
    logged = []
    kept = runner.run_qsm_on_nodes(scene, mags, phs, None, 3.0, cfg, phase_sign="+1", log=logged.append,
                                   output_names=("chi_ppm",))
    prov = ad.read_provenance(kept["chi_ppm"])
    sign = prov["phase_sign"]
    assert sign["chosen"] == 1 and sign["mode"] == "1" and sign["evidence"]["verdict"] == "diamagnetic"
    assert "evidence_before_flip" not in sign and prov["input"]["phase_sign"] == 1  # not flipped
    assert sign["decision"].startswith("WARNING") and any("WARNING" in line for line in logged)
    assert not any("rerunning" in line for line in logged)
    right = runner.run_qsm_on_nodes(scene, mags, phs, None, 3.0, cfg, phase_sign=-1, output_names=("chi_ppm",))
    assert ad.read_provenance(right["chi_ppm"])["phase_sign"]["evidence"]["verdict"] == "paramagnetic"


def test_auto_phase_sign_flips_the_negated_phantom_in_process_and_in_the_worker(scene, head_2mm):
    """"auto" (the module's default) on nodes: the phantom as simulated keeps +1; stored negated, its veins come out
    diamagnetic with +1, the run is repeated with −1 (the command line's decision, run_with_phase_sign), and χ is
    the as-simulated run's, veins and the iron-rich nuclei paramagnetic; in this process and in the background
    worker alike, the decision and its evidence in the log and the provenance of the output nodes."""
    from QSMLogic.phantom import label_of

    cfg, outputs = sign_test_config(), ("chi_ppm", "qsm_mask")
    mags, phs = add_echo_volumes(head_2mm.gre, name="as simulated")
    reference = runner.run_qsm_on_nodes(scene, mags, phs, None, 3.0, cfg, output_names=outputs)
    sign = ad.read_provenance(reference["chi_ppm"])["phase_sign"]
    assert (sign["mode"], sign["chosen"], sign["evidence"]["verdict"]) == ("auto", 1, "paramagnetic")
    assert "evidence_before_flip" not in sign and sign["vendor"] == "the input names no manufacturer"
    chi_ref = np.asarray(ad.array_ijk(reference["chi_ppm"]))
    mask = np.asarray(ad.array_ijk(reference["qsm_mask"])) > 0

    nmags, nphs = negated_nodes(head_2mm.gre)
    logged, bg_logged, done = [], [], []
    flipped = runner.run_qsm_on_nodes(scene, nmags, nphs, None, 3.0, cfg, phase_sign="auto", log=logged.append,
                                      output_names=outputs)
    run = runner.start_background_run(scene, nmags, nphs, None, 3.0, cfg, output_names=outputs,
                                      log=bg_logged.append, on_done=lambda nodes, error: done.append((nodes, error)),
                                      python=sys.executable, env=worker_env())
    wait_for(run, timeout_s=600.0)
    assert len(done) == 1 and done[0][1] is None, done
    for nodes, lines in ((flipped, logged), (done[0][0], bg_logged)):
        prov = ad.read_provenance(nodes["chi_ppm"])
        sign = prov["phase_sign"]
        assert sign["chosen"] == -1 and prov["input"]["phase_sign"] == -1
        assert sign["evidence_before_flip"]["verdict"] == "diamagnetic"
        assert sign["evidence"]["verdict"] == "paramagnetic"
        assert sign["decision"].startswith("sign -1 chosen: with +1 the veins came out diamagnetic")
        assert any("rerunning with -1" in line for line in lines)
        assert any(line.startswith("phase sign: sign -1 chosen") for line in lines)
        chi = np.asarray(ad.array_ijk(nodes["chi_ppm"]))
        np.testing.assert_array_equal(np.asarray(ad.array_ijk(nodes["qsm_mask"])) > 0, mask)
        assert np.abs(chi - chi_ref)[mask].max() < 1e-4  # ppm: the phase the flip restores is the simulated one
        for name in ("veins", "globus pallidus externa (GPe)"):
            assert chi[mask & (head_2mm.labels == label_of(name))].mean() > 0.05, name


def test_manufacturer_reaches_the_phase_sign_prior(scene, tmp_path):
    """The manufacturer the nodes name (attribute, Slicer's DICOM database, BIDS sidecar) goes into the GRE
    metadata, where the phase-sign decision reads its vendor prior, and with it into the worker's input."""
    from QSMLogic.phase_sign import vendor_prior

    gre = synthetic_gre()
    mags, phs = echo_nodes(scene, gre)
    assert "manufacturer" not in ad.gre_from_nodes(mags, phs, b0_tesla=3.0).metadata
    phs[0].SetAttribute("BIDS.Manufacturer", "GE")
    mags[0].SetAttribute("DICOM.Manufacturer", "SIEMENS ")
    meta = ad.gre_from_nodes(mags, phs, b0_tesla=3.0).metadata  # the phase's own attribute first
    assert (meta["manufacturer"], meta["manufacturer_source"]) == ("GE", "BIDS.Manufacturer attribute")
    phs[0].SetAttribute("BIDS.Manufacturer", "")
    meta = ad.gre_from_nodes(mags, phs, b0_tesla=3.0).metadata
    assert (meta["manufacturer"], meta["manufacturer_source"]) == ("SIEMENS", "DICOM.Manufacturer attribute")
    assert vendor_prior(meta["manufacturer"])[0] == 1

    class Database:  # Slicer's ctkDICOMDatabase: tags by SOP instance UID ("gggg,eeee")
        def instanceValue(self, uid, tag):
            return "Philips Medical Systems" if (uid, tag) == ("1.2.3", "0008,0070") else ""

    phs[1].SetAttribute("DICOM.instanceUIDs", "1.2.3")
    assert ad.manufacturer_and_source(phs, None, Database()) == ("Philips Medical Systems",
                                                                 "DICOM database (Manufacturer)")
    i, c, _ = write_worker_input(str(tmp_path / "run"), ad.gre_from_nodes(mags, phs, b0_tesla=3.0), FAST,
                                 phase_sign_auto=True)
    back, *_, sign_auto = read_worker_input(i, c)
    assert back.metadata["manufacturer"] == "SIEMENS" and sign_auto is True
    # a file loaded with its BIDS JSON sidecar
    ad.save_volume(phs[0], str(tmp_path / "sub-01_echo-1_part-phase_MEGRE.nii.gz"))
    (tmp_path / "sub-01_echo-1_part-phase_MEGRE.json").write_text('{"Manufacturer": "Siemens Healthineers"}')
    loaded = ad.load_volume(scene, str(tmp_path / "sub-01_echo-1_part-phase_MEGRE.nii.gz"))
    assert ad.manufacturer_and_source([loaded]) == ("Siemens Healthineers", "BIDS JSON sidecar")


def launcher(tmp_path) -> str:
    """A stand-in for PythonSlicer: a launcher that starts the real interpreter as its child (not exec) and
    writes the child's pid."""
    path = tmp_path / "PythonLauncher"
    path.write_text(f'#!/bin/sh\n"{sys.executable}" "$@" &\necho $! > "{tmp_path}/child.pid"\nwait $!\n')
    path.chmod(0o755)
    return str(path)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie left to a container's init that does not reap it counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(os.name != "posix", reason="the launcher stand-in is a POSIX shell script")
def test_cancel_stops_the_launcher_and_its_child(scene, tmp_path):
    gre = synthetic_gre()
    mags, phs = echo_nodes(scene, gre)
    before = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    done = []
    run = runner.start_background_run(scene, mags, phs, None, 3.0, FAST, python=launcher(tmp_path),
                                      env=worker_env(), on_done=lambda nodes, error: done.append(error))
    t0 = time.monotonic()
    while not (tmp_path / "child.pid").exists() or (tmp_path / "child.pid").read_text().strip() == "":
        assert time.monotonic() - t0 < 60
        time.sleep(0.02)
    child = int((tmp_path / "child.pid").read_text())
    assert alive(child)
    run.cancel()
    assert len(done) == 1 and isinstance(done[0], QSMCancelled)
    time.sleep(0.5)
    assert not alive(child), "the interpreter the launcher started is still computing"
    assert not os.path.exists(run.workdir)
    time.sleep(1.0)
    assert not os.path.exists(run.workdir), "the worker recreated its deleted folder"
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == before  # nothing added
    assert run.poll() and len(done) == 1  # finished once


def test_worker_whose_folder_is_deleted_stops_without_recreating_it(tmp_path):
    workdir = tmp_path / "run"
    i, c, o = write_worker_input(str(workdir), synthetic_gre(), FAST)
    proc = subprocess.Popen(worker_command(i, c, o, sys.executable), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=worker_env())
    assert proc.stdout.readline().startswith("PROGRESS")
    for f in os.listdir(workdir):
        os.remove(workdir / f)
    os.rmdir(workdir)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_CANCELLED, err
    assert "cancelled" in err and "DONE" not in out
    assert not workdir.exists()


def test_failed_starts_say_so(scene, tmp_path):
    gre = synthetic_gre()
    mags, phs = echo_nodes(scene, gre)
    left = set(os.listdir(tempfile.gettempdir()))
    with pytest.raises(WorkerError, match="could not start the background process '/nonexistent/PythonSlicer'"):
        runner.start_background_run(scene, mags, phs, None, 3.0, FAST, python="/nonexistent/PythonSlicer")
    assert set(os.listdir(tempfile.gettempdir())) == left  # its folder was removed
    # a program that exits 0 without running the worker: an error naming it, not "no results"
    done = []
    fake = tmp_path / "not-python"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    run = runner.start_background_run(scene, mags, phs, None, 3.0, FAST, python=str(fake),
                                      on_done=lambda nodes, error: done.append((nodes, error)))
    wait_for(run, 30)
    (nodes, error), = done
    assert nodes is None and isinstance(error, WorkerError)
    assert "exit code 0" in str(error) and "without running the pipeline" in str(error)
    # a worker that fails: its standard error in the message
    proc = WorkerProcess([sys.executable, "-c", "import sys; sys.exit('boom: bad thing')", str(tmp_path / "x")])
    proc.start()
    t0 = time.monotonic()
    while not proc.finished:
        proc.poll()
        assert time.monotonic() - t0 < 30
        time.sleep(0.02)
    with pytest.raises(WorkerError, match=r"exit code 1\): boom: bad thing"):
        proc.check_result()


@pytest.mark.skipif(os.name != "posix", reason="the launcher stand-in is a POSIX shell script")
def test_cancel_kills_the_whole_process_tree(tmp_path):
    """Without the worker's own stop checks: a launcher whose child ignores everything dies with it."""
    script = tmp_path / "launcher"
    script.write_text(f'#!/bin/sh\nsleep 60 &\necho $! > "{tmp_path}/child.pid"\nwait $!\n')
    script.chmod(0o755)
    proc = WorkerProcess([str(script), "-m", "QSMLogic.worker", str(tmp_path / "input.npz")])
    proc.start()
    t0 = time.monotonic()
    while not (tmp_path / "child.pid").exists() or not (tmp_path / "child.pid").read_text().strip():
        assert time.monotonic() - t0 < 30
        time.sleep(0.02)
    child = int((tmp_path / "child.pid").read_text())
    assert alive(child)
    proc.cancel()
    time.sleep(0.2)
    assert not alive(child) and proc.finished
    with pytest.raises(QSMCancelled):
        proc.check_result()
