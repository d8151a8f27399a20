"""The mesh path on shapes with holes, flat faces and thin parts (bench/zoo.py), and the zoo's
bad-input errors. Small views / grids so the suite stays fast; no shared files."""

import numpy as np
import pytest
import torch
import trimesh

from orbitforge.bench.zoo import SHAPES, check_volume, load_or_make, make_shape
from orbitforge.kernels.cameras import make_orbit_cameras
from orbitforge.kernels.mesh_pipeline import reconstruct_mesh
from orbitforge.kernels.mesh_render import normalize_mesh, render_mesh
from orbitforge.kernels.metrics import genus, roughness_deg


def _orbit(n=16, res=128):
    # two rings (elevation 5 and 35): the low ring looks along +z (azimuth 0) and +x
    el = np.array([5.0, 35.0] * (n // 2))
    az = np.arange(n) * 360.0 / n
    return make_orbit_cameras(el, az, 2.2, 33.8, res, res)


def _reconstruct(mesh, cams, grid=96, **kw):
    v = render_mesh(mesh, cams, occlusion=True, shadows=True)
    return reconstruct_mesh(v["mask"], cams, grid, images=v["rgb"], keep_components=1,
                            watertight=True, **kw)


def test_zoo_shapes_are_closed_solids():
    for name in SHAPES:
        m = make_shape(name)
        assert m.is_watertight and m.volume > 0, name
    assert genus(make_shape("box_hole")) == 1
    assert genus(make_shape("plate_holes")) == 3
    # seeded: another seed changes the dimensions, the same seed repeats them
    a, b = make_shape("gear", seed=3), make_shape("gear", seed=3)
    assert np.allclose(a.vertices, b.vertices)
    assert not np.allclose(a.extents, make_shape("gear").extents)


def test_zoo_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unknown zoo shape 'teacup'"):
        make_shape("teacup")
    with pytest.raises(ValueError, match="unknown zoo shape"):
        load_or_make("zoo:teacup")
    flat = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], [[0, 1, 2], [1, 3, 2]])
    path = str(tmp_path / "flat.obj")
    flat.export(path)
    with pytest.raises(ValueError, match="flat.obj.*zero volume"):
        load_or_make(path)
    with pytest.raises(ValueError, match="zero volume"):
        check_volume(flat, "flat")
    with pytest.raises(ValueError, match="does not exist"):
        load_or_make(str(tmp_path / "missing.obj"))
