"""The parallel Euclidean distance transform equals SciPy's on anisotropic grids."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from QSMLogic._distance import distance_mm


@pytest.mark.parametrize("shape, vox", [((20, 17, 13), (1.0, 1.0, 1.0)), ((31, 24, 19), (0.7, 1.3, 2.5)),
                                        ((5, 40, 3), (2.0, 1.0, 1.0))])
@pytest.mark.parametrize("fill", [0.5, 0.9, 0.99])
def test_matches_scipy(shape, vox, fill):
    m = np.random.default_rng(0).random(shape) < fill
    np.testing.assert_allclose(distance_mm(m, vox), ndi.distance_transform_edt(m, sampling=vox), atol=1e-9)


def test_sphere_distance_and_edge_cases():
    x, y, z = np.meshgrid(*[np.arange(40) - 19.5] * 3, indexing="ij")
    ball = x**2 + y**2 + z**2 < 15**2
    d = distance_mm(ball, (0.5, 0.5, 0.5))
    assert d[~ball].max() == 0 and 7.0 < d.max() <= 7.5  # radius 15 voxels of 0.5 mm
    assert np.isinf(distance_mm(np.ones((4, 4, 4), bool), (1, 1, 1))).all()
    with pytest.raises(ValueError, match="3D"):
        distance_mm(np.ones((4, 4), bool), (1, 1, 1))
