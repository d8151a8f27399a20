"""The one world convention, SV3D's official orbits, and the camera generators."""

import math

import numpy as np
import pytest
import torch

from orbitforge.kernels.geometry import cameras


def test_convention_azimuth0_on_plus_z_azimuth90_on_plus_x_elevation_up():
    c = cameras.make_orbit_cameras([0, 0, 30], [0, 90, 0], 2.0, 40, 64, 64)
    centers = c.centers
    assert torch.allclose(centers[0], torch.tensor([0.0, 0.0, 2.0]), atol=1e-5)
    assert torch.allclose(centers[1], torch.tensor([2.0, 0.0, 0.0]), atol=1e-5)
    assert centers[2, 1] == pytest.approx(2 * math.sin(math.radians(30)), abs=1e-5)
    # OpenCV camera: +x world appears on the right of the image from azimuth 0, +y world is up
    p = torch.tensor([[0.3, 0.2, 0.0, 1.0]]).T
    pc = c.viewmats[0] @ p
    u = c.Ks[0, 0, 0] * pc[0] / pc[2] + c.Ks[0, 0, 2]
    v = c.Ks[0, 1, 1] * pc[1] / pc[2] + c.Ks[0, 1, 2]
    assert u > 32 and v < 32
    # the origin projects to the image centre for every orbit camera
    o = c.viewmats[:, :3, 3]
    uv = (c.Ks @ o.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(uv[:, :2] / uv[:, 2:], torch.full((3, 2), 32.0), atol=1e-4)


def test_orbit_roundtrip_from_viewmats():
    el, az = [5.0, -20.0, 60.0], [10.0, 200.0, 359.0]
    c = cameras.make_orbit_cameras(el, az, [1.5, 2.0, 3.0], 33.8, 32, 32)
    e2, a2, r2 = cameras.viewmats_to_orbit(c.viewmats)
    assert torch.allclose(e2, torch.tensor(el), atol=1e-4)
    assert torch.allclose(a2, torch.tensor(az), atol=1e-3)
    assert torch.allclose(r2, torch.tensor([1.5, 2.0, 3.0]), atol=1e-5)
    assert torch.allclose(c.fov, torch.tensor([33.8] * 3), atol=1e-4)
    # rotation part is orthonormal
    R = c.viewmats[:, :3, :3]
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(3, 3, 3), atol=1e-5)


def test_sv3d_static_orbit_matches_official_numbers():
    el, az = cameras.sv3d_static_orbit(10.0)
    assert len(az) == 21 and np.all(el == 10.0)
    # frame f sits at (f+1)*360/21; the conditioning view is last, at 0
    assert az[-1] == 0.0
    np.testing.assert_allclose(az[:-1], [(f + 1) * 360 / 21 for f in range(20)], atol=1e-9)
    assert az[0] == pytest.approx(17.142857142857142)
    # official polar angle is 90 - elevation
    assert np.deg2rad(90 - el[0]) == pytest.approx(1.3962634015954636)


def test_sv3d_dynamic_orbit_is_seeded_and_shaped_like_official():
    el1, az1 = cameras.sv3d_dynamic_orbit(5.0, seed=3)
    el2, az2 = cameras.sv3d_dynamic_orbit(5.0, seed=3)
    el3, _ = cameras.sv3d_dynamic_orbit(5.0, seed=4)
    np.testing.assert_array_equal(el1, el2)
    np.testing.assert_array_equal(az1, az2)
    assert not np.allclose(el1, el3)
    assert len(el1) == len(az1) == 21
    assert az1[-1] == 0.0  # conditioning frame last
    assert np.all(np.diff(az1[:-1]) > 0) and az1[-2] < 360  # monotone orbit, under one turn
    assert np.abs(el1).max() < 90


def test_uniform_and_keyframed():
    el, az = cameras.uniform_orbit(4, [0, 30])
    assert el.tolist() == [0, 0, 0, 0, 30, 30, 30, 30]
    assert az.tolist() == [0, 90, 180, 270] * 2
    el, az = cameras.keyframed_orbit([(0, 0, 0), (4, 40, 360)], 5)
    np.testing.assert_allclose(el, [0, 10, 20, 30, 40])
    np.testing.assert_allclose(az, [0, 90, 180, 270, 0])
    with pytest.raises(ValueError, match="keyframe"):
        cameras.keyframed_orbit([], 5)


def test_hi3d_interpolation_cameras_lie_between_neighbours():
    c = cameras.make_orbit_cameras(*cameras.sv3d_static_orbit(10.0), 2.0, 33.8, 64, 64)
    mid = cameras.interpolate_orbit(c, 3)
    assert len(mid) == 21 * 3
    # first gap: 17.14 -> 34.29 in quarters; the closing gap 0 -> 17.14 comes from the last camera
    np.testing.assert_allclose(mid.azimuth[:3].numpy(),
                               17.142857 + 17.142857 * np.array([1, 2, 3]) / 4, atol=1e-3)
    np.testing.assert_allclose(mid.azimuth[-3:].numpy(), 17.142857 * np.array([1, 2, 3]) / 4,
                               atol=1e-3)
    assert torch.allclose(mid.elevation, torch.tensor(10.0))
    # wrap-around the short way: 350 -> 10 passes through 0, not 180
    c2 = cameras.make_orbit_cameras([0, 0], [350, 10], 2.0, 30, 8, 8)
    m2 = cameras.interpolate_orbit(c2, 1, closed=False)
    az0 = float(m2.azimuth[0])
    assert az0 == pytest.approx(0.0, abs=1e-3) or az0 == pytest.approx(360.0, abs=1e-3)


def test_cameras_json_roundtrip_and_subset(tmp_path):
    c = cameras.make_orbit_cameras([0, 10], [0, 45], 2.0, 33.8, 48, 32)
    p = tmp_path / "c.json"
    c.save_json(str(p))
    d = cameras.Cameras.load_json(str(p))
    assert torch.allclose(d.viewmats, c.viewmats) and (d.width, d.height) == (48, 32)
    s = c[[1]]
    assert len(s) == 1 and float(s.azimuth[0]) == pytest.approx(45)
    r = c.resized(96, 64)
    assert torch.allclose(r.fov, c.fov, atol=1e-4) and r.Ks[0, 0, 2] == 48


def test_bad_cameras_are_refused():
    with pytest.raises(ValueError, match="elevation"):
        cameras.make_orbit_cameras([100], [0], 2.0, 30, 8, 8)
    with pytest.raises(ValueError, match="radius"):
        cameras.make_orbit_cameras([0], [0], -1.0, 30, 8, 8)
    inside = cameras.make_orbit_cameras([0], [0], 0.2, 30, 8, 8)
    with pytest.raises(ValueError, match="inside the object"):
        cameras.check_cameras_see_object(inside)
    away = cameras.make_orbit_cameras([0], [0], 2.0, 30, 8, 8)
    away.viewmats[0, :3, :3] = away.viewmats[0, :3, :3] @ torch.diag(torch.tensor([-1.0, 1.0,
                                                                                   -1.0]))
    away.viewmats[0, :3, 3] = -(away.viewmats[0, :3, :3] @ torch.tensor([0.0, 0.0, 2.0]))
    with pytest.raises(ValueError, match="look away"):
        cameras.check_cameras_see_object(away)


# ---------------------------------------------------------------------------- rays and projection
def test_project_follows_camera_convention():
    from orbitforge.kernels.geometry.cameras import make_orbit_cameras, project

    cams = make_orbit_cameras([0.0], [0.0], 2.0, 33.8, 64, 48)  # on +z looking at -z
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.0, 0.0], [0.0, 0.2, 0.0], [0.0, 0.0, 3.0]])
    uv, z = project(pts, cams.viewmats, cams.Ks)
    assert uv.shape == (1, 4, 2) and z.shape == (1, 4)
    assert torch.allclose(uv[0, 0], torch.tensor([32.0, 24.0]), atol=1e-4)
    assert uv[0, 1, 0] > 32  # +x is image right seen from the front
    assert uv[0, 2, 1] < 24  # +y (up) is towards image row 0
    assert z[0, 0] == pytest.approx(2.0, abs=1e-5)
    assert z[0, 3] < 0  # behind the camera
    assert torch.isfinite(uv).all()  # behind the camera: finite, callers mask by z


def test_backproject_project_and_rays_agree():
    """A pixel's depth back-projected, then projected again, lands on that pixel centre in its own
    camera and on the same point in the others (per-camera and shared points); the world rays
    reach the same points at t = depth."""
    from orbitforge.kernels.geometry.cameras import (
        backproject,
        camera_rays,
        make_orbit_cameras,
        pixel_rays,
        project,
    )

    cams = make_orbit_cameras([10.0, -20.0, 35.0], [0.0, 120.0, 250.0], 2.5, 40.0, 12, 8)
    vm, Ks = cams.viewmats.double(), cams.Ks.double()
    depth = 1.5 + torch.rand(3, 8, 12, 1, dtype=torch.float64)
    X = backproject(depth, vm, Ks)  # [3, 8, 12, 3]
    uv, z = project(X, vm, Ks)
    j, i = torch.meshgrid(torch.arange(12.0) + 0.5, torch.arange(8.0) + 0.5, indexing="xy")
    assert torch.allclose(uv[..., 0], j.double().expand(3, -1, -1), atol=1e-9)
    assert torch.allclose(uv[..., 1], i.double().expand(3, -1, -1), atol=1e-9)
    assert torch.allclose(z, depth[..., 0], atol=1e-12)
    uv_all, z_all = project(X[0].reshape(-1, 3), vm, Ks)  # view 0's points in every camera
    uv_1, z_1 = project(X[0:1].expand(3, -1, -1, -1), vm, Ks)
    assert torch.allclose(uv_all, uv_1.reshape(3, -1, 2)) and torch.allclose(z_all,
                                                                             z_1.reshape(3, -1))
    o, d = camera_rays(vm, Ks, 8, 12)
    assert torch.allclose(o[:, None, None] + d * depth, X, atol=1e-12)
    assert torch.allclose(pixel_rays(Ks, 8, 12)[..., 2], torch.ones(3, 8, 12, dtype=torch.float64))
    with pytest.raises(ValueError, match="points"):
        project(torch.zeros(5, 2), vm, Ks)


def test_look_at_with_per_camera_up_and_at_the_pole():
    from orbitforge.kernels.geometry.cameras import camera_centers, look_at

    eye = torch.tensor([[0.0, 0.0, 2.0], [2.0, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=torch.float64)
    up = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    M = look_at(eye, torch.zeros(3, dtype=torch.float64), up)
    assert M.dtype == torch.float64
    R = M[:, :3, :3]
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(3, -1,
                                                                                          -1))
    assert torch.allclose(torch.det(R), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(camera_centers(M), eye)
    assert torch.allclose(-R[0, 1], up[0])  # image up (-y) is the given up
    assert torch.allclose(R[:, 2], -eye / 2)  # forward looks at the target
    assert torch.allclose(look_at(eye[:2]), look_at(eye[:2], None, up[1]))  # default: +y up
