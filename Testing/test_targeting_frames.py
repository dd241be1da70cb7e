"""AC-PC and Leksell frame coordinates: exact under arbitrary rigid poses, clear errors on bad input."""
from __future__ import annotations

import numpy as np
import pytest

from QSMLogic.errors import QSMInputError
from QSMLogic.targeting.acpc import acpc_frame
from QSMLogic.targeting.frame import (
    frame_registration_from_fiducials, leksell_coordinates, ras_from_leksell, ring_arc_angles, trajectory_direction,
)


def random_rigid(rng: np.random.Generator, max_shift_mm: float = 60.0) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    r = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                  [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                  [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = rng.uniform(-max_shift_mm, max_shift_mm, 3)
    return m


def move(m: np.ndarray, p) -> np.ndarray:
    return np.asarray(p, float) @ m[:3, :3].T + m[:3, 3]


# A head in a canonical pose: MCP at the origin, AC-PC along +A, midline point on the vertex.
AC, PC, MID = (0.0, 12.5, 0.0), (0.0, -12.5, 0.0), (0.0, -5.0, 45.0)
STN_ACPC = (12.0, -2.0, -4.0)     # a typical right STN target (lateral, AP, vertical)
GPI_ACPC = (-20.0, 2.0, -4.0)     # a typical left GPi target


def test_acpc_coordinates_exact_under_random_rigid_poses():
    rng = np.random.default_rng(7)
    worst = 0.0
    for _ in range(20):
        m = random_rigid(rng)
        frame = acpc_frame(move(m, AC), move(m, PC), move(m, MID))
        for truth in (STN_ACPC, GPI_ACPC):
            got = frame.to_acpc(move(m, truth))[0]
            worst = max(worst, float(np.abs(got - truth).max()))
        back = frame.to_ras(frame.to_acpc(move(m, STN_ACPC)))[0]
        worst = max(worst, float(np.abs(back - move(m, STN_ACPC)).max()))
    assert worst < 0.1          # the bound; measured ~1e-14 mm
    assert worst < 1e-9
    frame = acpc_frame(move(m, AC), move(m, PC), move(m, MID))
    rep = frame.describe(move(m, GPI_ACPC))
    assert rep["side"] == "left" and rep["lateral_mm"] == pytest.approx(20.0, abs=1e-9)
    assert rep["ap_mm"] == pytest.approx(2.0, abs=1e-9) and rep["vertical_mm"] == pytest.approx(-4.0, abs=1e-9)
    assert frame.acpc_length_mm == pytest.approx(25.0)
    np.testing.assert_allclose(frame.ras_to_acpc @ frame.acpc_to_ras, np.eye(4), atol=1e-12)


def test_acpc_midline_point_off_the_plane_axis_only_sets_the_plane():
    # a midline point anywhere above the AC-PC line in the mid-sagittal plane gives the same frame
    f1 = acpc_frame(AC, PC, MID)
    f2 = acpc_frame(AC, PC, (0.0, 30.0, 10.0))
    np.testing.assert_allclose(f1.rotation, f2.rotation, atol=1e-12)
    np.testing.assert_allclose(f1.rotation, np.eye(3), atol=1e-12)  # canonical pose: x right, y anterior, z up


@pytest.mark.parametrize("ac, pc, mid, message", [
    (AC, AC, MID, "AC = PC"),
    ((0.0, 1.0, 0.0), (0.0, -1.0, 0.0), MID, "2.00 mm apart"),
    (AC, PC, None, "midline point is missing"),
    (AC, PC, (np.nan, 0.0, 40.0), "midline point has NaN"),
    (AC, PC, (0.0, 40.0, 1.0), "from the AC-PC line"),
    (None, PC, MID, "AC is missing"),
    (AC, (0.0, 1.0), MID, "PC must be 3 coordinates"),
])
def test_acpc_bad_input_messages(ac, pc, mid, message):
    with pytest.raises(QSMInputError, match=message.replace("(", r"\(")):
        acpc_frame(ac, pc, mid)


def test_leksell_coordinates_exact_under_known_frame_transform():
    rng = np.random.default_rng(3)
    # frame centre is (100, 100, 100); X toward the patient's left, Y anterior, Z inferior
    identity = np.eye(4)
    np.testing.assert_allclose(leksell_coordinates([0, 0, 0], identity), [[100, 100, 100]])
    np.testing.assert_allclose(leksell_coordinates([10, 20, 30], identity), [[90, 120, 70]])
    worst = 0.0
    for _ in range(20):
        ras_to_frame = random_rigid(rng)
        frame_xyz = rng.uniform(60, 140, (5, 3))
        frame_ras = np.column_stack([100 - frame_xyz[:, 0], frame_xyz[:, 1] - 100, 100 - frame_xyz[:, 2]])
        image_ras = move(np.linalg.inv(ras_to_frame), frame_ras)
        got = leksell_coordinates(image_ras, ras_to_frame)
        worst = max(worst, float(np.abs(got - frame_xyz).max()))
        np.testing.assert_allclose(ras_from_leksell(got, ras_to_frame), image_ras, atol=1e-9)
    assert worst < 0.1 and worst < 1e-9


def test_frame_registration_from_localiser_fiducials():
    rng = np.random.default_rng(11)
    ras_to_frame = random_rigid(rng)
    # fiducials on the localiser box (frame coordinates) seen in the image with 0.3 mm localisation noise
    xyz = np.array([[5, 40, 40], [5, 160, 40], [5, 100, 140], [195, 40, 40], [195, 160, 40], [195, 100, 140],
                    [100, 215, 60], [100, 215, 140]], float)
    frame_ras = np.column_stack([100 - xyz[:, 0], xyz[:, 1] - 100, 100 - xyz[:, 2]])
    image = move(np.linalg.inv(ras_to_frame), frame_ras) + rng.normal(0, 0.3, xyz.shape)
    reg = frame_registration_from_fiducials(image, xyz)
    assert reg.rms_residual_mm < 0.5
    target = move(np.linalg.inv(ras_to_frame), [[-12.0, 5.0, -10.0]])
    err = np.abs(leksell_coordinates(target, reg.ras_to_frame) - leksell_coordinates(target, ras_to_frame)).max()
    assert err < 0.3
    with pytest.raises(QSMInputError, match="at least 3"):
        frame_registration_from_fiducials(image[:2], xyz[:2])
    with pytest.raises(QSMInputError, match="collinear"):
        frame_registration_from_fiducials([[0, 0, 0], [10, 0, 0], [20, 0, 0]], [[0, 0, 0], [10, 0, 0], [20, 0, 0]])
    with pytest.raises(QSMInputError, match="pair up"):
        frame_registration_from_fiducials(image, xyz[:5])


def test_ring_arc_angles_round_trip_and_conventions():
    rng = np.random.default_rng(5)
    ras_to_frame = random_rigid(rng)
    to_image = np.linalg.inv(ras_to_frame)
    target = move(to_image, [10.0, -5.0, -8.0])
    # vertical trajectory: ring = arc = 90
    entry = move(to_image, [10.0, -5.0, 62.0])
    ring, arc = ring_arc_angles(target, entry, ras_to_frame)
    assert ring == pytest.approx(90.0, abs=1e-9) and arc == pytest.approx(90.0, abs=1e-9)
    # lateral-right mounting: entry toward the right lowers the arc angle, anterior lowers the ring angle
    ring, arc = ring_arc_angles(target, move(to_image, [30.0, -5.0, 50.0]), ras_to_frame)
    assert arc < 90 and ring == pytest.approx(90.0, abs=1e-9)
    ring, arc = ring_arc_angles(target, move(to_image, [10.0, 20.0, 50.0]), ras_to_frame)
    assert ring < 90 and arc == pytest.approx(90.0, abs=1e-9)
    for mounting in ("lateral-right", "lateral-left", "sagittal-anterior", "sagittal-posterior"):
        for ring0, arc0 in ((70.0, 110.0), (100.0, 65.0)):
            d = trajectory_direction(ring0, arc0, mounting)
            entry = move(to_image, np.array([10.0, -5.0, -8.0]) + 70.0 * d)
            ring, arc = ring_arc_angles(target, entry, ras_to_frame, mounting)
            assert ring == pytest.approx(ring0, abs=1e-6) and arc == pytest.approx(arc0, abs=1e-6)
    with pytest.raises(QSMInputError, match="not above the target"):
        ring_arc_angles(target, move(to_image, [10.0, -5.0, -60.0]), ras_to_frame)
    with pytest.raises(QSMInputError, match="two distinct points"):
        ring_arc_angles(target, target, ras_to_frame)
    with pytest.raises(QSMInputError, match="not rigid"):
        ring_arc_angles(target, entry, np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(QSMInputError, match="unknown arc mounting"):
        trajectory_direction(90, 90, "overhead")
