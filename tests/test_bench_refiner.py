"""The depth-consistency metrics of ``bench/refiner.py`` on analytic scenes seen by an orbit of
cameras, depth ray-cast in closed form: a plane (nothing occluded) and a sphere (self-occlusion:
``reprojection_error``'s ``occlusion_tol`` and ``condition_disagreement`` test visibility)."""

import pytest
import torch

from orbitforge.bench.refiner import condition_disagreement
from orbitforge.kernels.diffusion.depth_condition import (
    normalize_per_frame,
    reprojection_error,
    to_disparity,
)
from orbitforge.kernels.geometry.cameras import camera_rays, intrinsics_from_fov, make_orbit_cameras

SIZE = 48
RADIUS = 0.45  # sphere at the origin


def _plane_depth(cams):
    """Exact camera-z depth of the world plane z = 0 (every pixel hits it)."""
    out = []
    for k in range(len(cams)):
        o, dw = _rays(cams, k)
        out.append(-o[2] / dw[..., 2])
    return torch.stack(out)


def _rays(cams, k):
    o, d = camera_rays(cams.viewmats[k:k + 1].double(), cams.Ks[k:k + 1].double(), SIZE, SIZE)
    return o[0], d[0]  # camera centre, world directions with camera z = 1 (t = z)


def _sphere_depth(cams):
    """Exact camera-z depth of the sphere |x| = RADIUS for every pixel centre, 0 on a miss."""
    n = len(cams)
    out = torch.zeros(n, SIZE, SIZE, dtype=torch.float64)
    for k in range(n):
        o, dw = _rays(cams, k)  # world direction with camera z component 1 (ray parameter = z)
        a = (dw * dw).sum(-1)
        b = 2 * (dw @ o)
        c = o @ o - RADIUS ** 2
        disc = b * b - 4 * a * c
        z = (-b - disc.clamp_min(0).sqrt()) / (2 * a)
        out[k] = torch.where(disc > 0, z, torch.zeros_like(z))
    return out


@pytest.fixture(scope="module")
def plane():
    cams = make_orbit_cameras(10.0, [-20.0, -10.0, 0.0, 10.0, 20.0], 2.0, 33.8, SIZE, SIZE)
    return cams, _plane_depth(cams)


@pytest.fixture(scope="module")
def scene():
    cams = make_orbit_cameras(10.0, [0.0, 30.0, 60.0, 90.0, 120.0], 2.0, 33.8, SIZE, SIZE)
    return cams, _sphere_depth(cams)


def test_exact_depth_is_consistent(plane):
    cams, depth = plane
    err = reprojection_error(depth, cams.viewmats, cams.Ks, closed=False)
    assert err.shape == (4,) and not torch.isnan(err).any()
    # nearest-pixel sampling of a slanted plane: small, not exactly 0
    assert float(err.max()) < 5e-3


def test_error_grows_with_per_frame_scale_error(plane):
    cams, depth = plane
    errs = []
    for s in (0.0, 0.05, 0.15, 0.3):
        scale = torch.tensor([1.0 + s * (-1) ** k for k in range(len(cams))], dtype=torch.float64)
        errs.append(float(reprojection_error(depth * scale[:, None, None], cams.viewmats, cams.Ks,
                                                closed=False).mean()))
    assert errs[0] < 5e-3
    assert all(b > a for a, b in zip(errs, errs[1:])), errs
    # a +-5 % per-frame scale is a ~10 % relative disagreement between neighbours
    assert 0.05 < errs[1] < 0.2, errs


def test_exact_zero_for_fronto_parallel_plane():
    # two cameras translated along x looking at a plane z = 2: constant depth, exact sampling
    Kk = intrinsics_from_fov(40.0, SIZE, SIZE, 2)
    V = torch.eye(4).repeat(2, 1, 1)
    V[1, 0, 3] = -0.1
    depth = torch.full((2, SIZE, SIZE), 2.0)
    err = reprojection_error(depth, V, Kk, closed=False)
    assert float(err[0]) == 0.0
    err2 = reprojection_error(depth * torch.tensor([1.0, 1.1])[:, None, None], V, Kk, closed=False)
    assert float(err2[0]) == pytest.approx(0.1, rel=1e-5)  # |2 - 2.2| / 2


def test_condition_disagreement(scene):
    cams, depth = scene
    disp = to_disparity(depth.float(), "metric")
    same = condition_disagreement(depth, disp, cams.viewmats, cams.Ks, closed=False)
    assert float(same.max()) < 0.08 * float(disp.max())  # same point, similar distance
    # a per-frame offset of the compared values shows up one to one
    shifted = disp + torch.tensor([0.0, 0.1, 0.0, 0.1, 0.0])[:, None, None] * (depth > 0)
    d2 = condition_disagreement(depth, shifted, cams.viewmats, cams.Ks, closed=False)
    assert float((d2 - same).min()) > 0.05 and float(d2.max()) < 0.1 + float(same.max())
    # per-frame min-max normalisation of exact depth is NOT consistent between views
    cond = normalize_per_frame(disp)
    err = condition_disagreement(depth, cond, cams.viewmats, cams.Ks, closed=False)
    assert float(err.mean()) > 0.01


def test_occlusion_test_removes_self_occlusion_but_not_errors(scene):
    cams, depth = scene
    plain = reprojection_error(depth, cams.viewmats, cams.Ks, closed=False)
    hidden = []
    vis = reprojection_error(depth, cams.viewmats, cams.Ks, closed=False, occlusion_tol=0.05,
                                occluded=hidden)
    # 30 degrees apart on a sphere: the limb of view i is behind the sphere in view i+1
    assert len(hidden) == 4 and all(0.0 < h < 0.3 for h in hidden), hidden
    assert float(vis.max()) < 0.7 * float(plain.min()), (vis, plain)
    assert float(vis.max()) < 5e-3  # exact depth: only nearest-pixel sampling error remains
    # a frame 10 % too near: its points land in front of the next view's surface (an error,
    # never "occluded"), and it hides the previous view's points -- which the occluded fraction
    # reports, so the bench can show it
    bad = depth.clone()
    bad[1] *= 0.9
    hidden = []
    err = reprojection_error(bad, cams.viewmats, cams.Ks, closed=False, occlusion_tol=0.05,
                                occluded=hidden)
    assert float(err[1]) > 0.05
    assert hidden[0] > 0.5 and hidden[2] < 0.3, hidden
