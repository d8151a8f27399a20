"""Image and mesh reconstruction metrics (the mesh protocol of SyncDreamer's ``eval_mesh.py``)."""

import math

import numpy as np
import pytest
import torch
import trimesh

from orbitforge.kernels.metrics import (
    chamfer,
    evaluate_mesh,
    fscore,
    inside_mesh,
    psnr,
    sample_surface,
    ssim,
    volume_iou,
)


def _sphere(r, center=(0.0, 0.0, 0.0)):
    s = trimesh.creation.icosphere(subdivisions=5, radius=r)
    s.apply_translation(center)
    return s


def test_psnr_values_and_mask():
    a = torch.full((2, 8, 8, 3), 0.5)
    b = a + 0.1  # mse 0.01 -> 20 dB
    assert psnr(a, b).item() == pytest.approx(20.0, abs=1e-4)
    assert math.isinf(psnr(a, a).item())
    c = b.clone()
    c[1] = a[1] + 0.01  # per-image: 20 dB and 40 dB -> mean 30
    assert psnr(a, c, reduction="none").tolist() == pytest.approx([20.0, 40.0], abs=1e-4)
    assert psnr(a, c).item() == pytest.approx(30.0, abs=1e-4)
    # mask: errors outside the mask are ignored
    d = a.clone()
    d[:, :4] = 0.0
    mask = torch.zeros(2, 8, 8)
    mask[:, 4:] = 1
    e = d.clone()
    e[:, 4:] += 0.1
    assert psnr(d, e, mask=mask).item() == pytest.approx(20.0, abs=1e-4)
    assert psnr(a[0], b[0]).item() == pytest.approx(20.0, abs=1e-4)  # single [H,W,C]
    with pytest.raises(ValueError, match="same shape"):
        psnr(a, b[:, :4])
    with pytest.raises(ValueError, match="empty"):
        psnr(a, b, mask=torch.zeros(2, 8, 8))


def test_ssim():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 32, 32, 3, generator=g)
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-5)
    noisy = (a + 0.2 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    s = ssim(a, noisy).item()
    assert 0.0 < s < 0.9
    assert ssim(a, (a + 0.05 * torch.randn(a.shape, generator=g)).clamp(0, 1)).item() > s


def test_sample_surface_uniform_and_on_surface():
    s = _sphere(0.5)
    p = sample_surface(s, 20_000, seed=3)
    assert p.shape == (20_000, 3)
    assert np.allclose(np.linalg.norm(p, axis=1), 0.5, atol=2e-3)
    assert np.allclose(p.mean(0), 0.0, atol=0.01)  # area-uniform: no bias towards a side
    assert np.array_equal(p, sample_surface(s, 20_000, seed=3))  # deterministic
    box = trimesh.creation.box((2.0, 1.0, 1.0))  # the two 2x1 faces hold 4/10 of the area
    q = sample_surface(box, 50_000)
    on_y = np.isclose(np.abs(q[:, 1]), 0.5).mean()
    assert on_y == pytest.approx(0.4, abs=0.02)


def test_chamfer():
    s, s2 = _sphere(0.5), _sphere(0.51)
    n = 50_000
    # self: only the sampling noise of two independent samples
    assert chamfer(s, s, n=n) < 0.005
    # concentric spheres 0.01 apart: every NN distance is >= 0.01 (+ sampling spacing)
    d = chamfer(s, s2, n=n)
    assert 0.0095 < d < 0.012
    # symmetric, and accepts point arrays
    assert chamfer(s2, s, n=n) == pytest.approx(d, rel=0.05)
    assert chamfer(sample_surface(s2, n), s, n=n) == pytest.approx(d, rel=0.05)
    # a shifted copy scores far worse than the concentric pair
    assert chamfer(s, _sphere(0.5, (0.1, 0, 0)), n=20_000) > 0.04


def test_fscore_limits():
    s = _sphere(0.5)
    assert fscore(s, s, n=50_000) > 0.98  # sampling noise only
    far = _sphere(0.52)
    assert fscore(s, far, tau=0.01, n=20_000) == 0.0  # all 0.02 apart
    assert fscore(s, far, tau=0.03, n=20_000) == pytest.approx(1.0, abs=1e-3)
    # half of the points matched: a hemisphere vs the sphere -> precision 1, recall ~0.5
    pts = sample_surface(s, 50_000)
    half = pts[pts[:, 0] > 0]
    assert fscore(half, s, n=50_000) == pytest.approx(2 * 0.5 / 1.5, abs=0.02)
    with pytest.raises(ValueError, match="tau"):
        fscore(s, s, tau=0)


def test_volume_iou_boxes():
    box = trimesh.creation.box((1.0, 1.0, 1.0))
    assert volume_iou(box, box, res=32) == 1.0
    half = trimesh.creation.box((0.5, 1.0, 1.0))
    half.apply_translation((-0.25, 0, 0))
    assert volume_iou(half, box, res=32) == pytest.approx(0.5, abs=1e-6)
    other = trimesh.creation.box((1.0, 1.0, 1.0))
    other.apply_translation((2.0, 0, 0))
    assert volume_iou(box, other, res=32) == 0.0
    # spheres: IoU = (r1/r2)^3 for concentric ones
    assert volume_iou(_sphere(0.4), _sphere(0.5), res=32) == pytest.approx(0.512, abs=0.03)


def test_inside_robust_for_open_and_split_meshes():
    box = trimesh.creation.box((1.0, 1.0, 1.0))
    open_box = box.copy()
    keep = np.ones(len(box.faces), bool)
    keep[np.nonzero(box.face_normals[:, 1] < -0.9)[0]] = False  # remove the bottom face
    open_box.update_faces(keep)
    assert not open_box.is_watertight
    pts = np.random.default_rng(0).uniform(-0.6, 0.6, (20_000, 3))
    truth = (np.abs(pts) < 0.5).all(1)
    got = inside_mesh(open_box, pts)
    assert (got == truth).mean() > 0.97  # one ray direction would fail on ~1/2 of the inside
    assert volume_iou(open_box, box, res=32) > 0.9
    # vertices split along seams (as a UV-mapped OBJ) give the same inside
    split = trimesh.Trimesh(box.triangles.reshape(-1, 3), np.arange(36).reshape(12, 3),
                            process=False)
    assert (inside_mesh(split, pts) == truth).mean() > 0.999


def test_evaluate_mesh_uses_gt_normalisation():
    # a GT of extent 10 away from the origin: its normalisation scales by 1/10
    gt = _sphere(5.0, (10.0, -3.0, 2.0))
    pred = _sphere(5.1, (10.0, -3.0, 2.0))  # 0.1 too big = 0.01 after normalisation
    r = evaluate_mesh(pred, gt, n=30_000, res=32)
    assert set(r) >= {"chamfer", "iou", "fscore_001"}
    assert 0.0095 < r["chamfer"] < 0.012
    assert r["iou"] == pytest.approx((5.0 / 5.1) ** 3, abs=0.03)
    assert r["fscore_001"] < 0.6
    same = evaluate_mesh(gt, gt, n=30_000, res=24)
    assert same["iou"] == 1.0 and same["fscore_001"] > 0.9 and same["chamfer"] < 0.006
    with pytest.raises(ValueError, match="pred"):
        evaluate_mesh(trimesh.Trimesh(), gt)


def test_inside_without_embree(monkeypatch):
    box = trimesh.creation.box((1.0, 1.0, 1.0))
    half = trimesh.creation.box((0.5, 1.0, 1.0))
    half.apply_translation((-0.25, 0, 0))
    fast = volume_iou(half, box, res=12)
    monkeypatch.setattr("orbitforge.kernels.metrics.HAVE_EMBREE", False)
    assert volume_iou(half, box, res=12) == pytest.approx(fast, abs=1e-9)
    assert fast == pytest.approx(0.5, abs=1e-9)
    pts = np.array([[0.0, 0.0, 0.0], [0.7, 0.0, 0.0], [0.2, -0.3, 0.4]])
    assert inside_mesh(box, pts).tolist() == [True, False, True]
