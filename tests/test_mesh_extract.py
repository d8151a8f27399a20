"""Marching cubes, finishing, TSDF fusion + hull combination, colours, the fast path."""

import numpy as np
import pytest
import torch
import trimesh

from orbitforge.kernels.geometry.visual_hull import hull_sdf, voxel_grid
from orbitforge.kernels.mesh.color import bake_texture, vertex_colors
from orbitforge.kernels.mesh.extract import (
    decimate,
    field_to_mesh,
    finish_mesh,
    keep_largest_components,
    marching_cubes,
    reconstruct_fast,
)
from orbitforge.kernels.mesh.tsdf import combine_hull_tsdf, tsdf_fuse

from test_visual_hull import ring_cams, sphere_views


def sphere_field(res=48, r=0.3, c=(0.0, 0.0, 0.0)):
    return (voxel_grid(res) - torch.tensor(c)).norm(dim=-1) - r


def test_marching_cubes_sphere_is_closed_and_accurate():
    v, f = marching_cubes(sphere_field())
    m = trimesh.Trimesh(v, f)
    assert m.is_watertight and m.volume > 0  # outward normals
    assert np.abs(np.linalg.norm(v, axis=1) - 0.3).max() < 0.01
    assert m.volume == pytest.approx(4 / 3 * np.pi * 0.3 ** 3, rel=0.03)


def test_surface_touching_the_box_is_closed():
    v, f = marching_cubes(sphere_field(32, 0.7))  # sphere larger than the box
    assert trimesh.Trimesh(v, f).is_watertight


def test_empty_field_raises():
    with pytest.raises(ValueError, match="empty"):
        marching_cubes(torch.ones(16, 16, 16))
    with pytest.raises(ValueError, match="empty"):
        finish_mesh(np.zeros((0, 3)), np.zeros((0, 3), int))


def test_finishing_keeps_largest_component_decimates_smooths():
    f = torch.minimum(sphere_field(48, 0.25, (-0.15, 0, 0)), sphere_field(48, 0.08, (0.35, 0.3, 0)))
    v, fa = marching_cubes(f)
    assert len(trimesh.Trimesh(v, fa).split(only_watertight=False)) == 2
    m = finish_mesh(v, fa, keep_components=1, watertight=True, target_faces=2000,
                    smooth_iterations=5)
    assert len(m.split(only_watertight=False)) == 1
    assert m.is_watertight
    assert len(m.faces) <= 2200
    assert np.linalg.norm(m.vertices - [-0.15, 0, 0], axis=1).max() < 0.28  # the big sphere
    both = keep_largest_components(trimesh.Trimesh(v, fa), keep=0)
    assert len(both.split(only_watertight=False)) == 2


def test_decimate_reaches_target():
    m = field_to_mesh(sphere_field(48), watertight=False)
    d = decimate(m, 500)
    assert len(d.faces) <= 550 and d.is_watertight


def test_tsdf_fusion_of_sphere_depth():
    cams = ring_cams(8, 48)
    masks, depth, _ = sphere_views(cams, radius=0.3)
    tsdf, w = tsdf_fuse(depth, cams, masks, resolution=32)
    g = voxel_grid(32)
    true = g.norm(dim=-1) - 0.3
    assert (tsdf[(true > 0.02) & (w > 0)] > 0).all() and (tsdf[(true < -0.02) & (w > 0)] < 0).all()
    v, _ = marching_cubes(tsdf)  # the zero crossing is on the sphere
    assert np.abs(np.linalg.norm(v, axis=1) - 0.3).mean() < 0.01
    assert (tsdf[g.norm(dim=-1) < 0.1] < 0).all()  # never observed -> inside


def test_depth_carves_concavity_but_cannot_punch_holes():
    # hull of a sphere, but depth says a notch at +z is empty (a concavity the hull cannot see)
    res = 32
    cams = ring_cams(8, 48)
    masks, depth, _ = sphere_views(cams, radius=0.3)
    hull = hull_sdf(masks, cams, res)
    g = voxel_grid(res)
    notch = (g - torch.tensor([0.0, 0.0, 0.3])).norm(dim=-1) < 0.1
    tsdf = torch.where(notch, torch.full_like(hull, 0.05), hull)
    w = torch.full_like(hull, 5.0)
    out = combine_hull_tsdf(hull, tsdf, w, min_weight=3, max_carve=0.5)
    assert (out[notch] > 0).all() and (out[~notch] == hull[~notch]).all()
    # one noisy view (weight 1) saying "empty" deep inside changes nothing
    deep = g.norm(dim=-1) < 0.1
    noisy = torch.where(deep, torch.full_like(hull, 0.05), hull)
    out2 = combine_hull_tsdf(hull, noisy, torch.where(deep, 1.0, 5.0) * torch.ones_like(hull))
    assert (out2[deep] < 0).all()
    # nor can many views carve deeper than max_carve under the hull surface
    out3 = combine_hull_tsdf(hull, noisy, w, max_carve=0.1)
    assert (out3[g.norm(dim=-1) < 0.15] < 0).all()


def test_fast_path_and_vertex_colours():
    cams = ring_cams(8, 64)
    masks, _, rgb = sphere_views(cams, radius=0.3, colors=((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)))
    mesh = reconstruct_fast(masks, cams, 40, watertight=True, target_faces=3000)
    assert mesh.is_watertight
    r = np.linalg.norm(mesh.vertices, axis=1)
    assert np.abs(r - 0.3).mean() < 0.02
    vc = vertex_colors(mesh, rgb, cams, masks).numpy()
    x = mesh.vertices[:, 0]
    right, left = x > 0.05, x < -0.05
    assert (vc[right, 0] > 0.8).mean() > 0.95 and (vc[left, 2] > 0.8).mean() > 0.95
    v, f, uv, tex = bake_texture(mesh, rgb, cams, masks, texture_size=128)
    assert tex.shape == (128, 128, 3) and uv.shape == (v.shape[0], 2)
    assert len(f) == len(mesh.faces)
    # the baked texture looked up at a vertex on the right is red
    i = int(np.argmax(v[:, 0].numpy()))
    px = (uv[i].numpy() * 128).astype(int).clip(0, 127)
    assert tex[127 - px[1], px[0], 0] > 0.7


def test_fast_mode_polish_sharpens_the_hull_and_can_be_switched_off():
    """mode fast ends with a photometric polish (on by default with images): from 9 views the
    visual hull of a ball is a faceted shape up to 0.04 outside it, which the polish pulls in;
    polish_steps=0 is exactly the fused field's mesh (with the same finishing)."""
    from orbitforge.kernels.mesh.pipeline import reconstruct_mesh

    cams = ring_cams(3, 64, (0.0, 40.0, -40.0))
    masks, _, rgb = sphere_views(cams, radius=0.3, colors=((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)))
    kw = dict(images=rgb, depth_source="none", watertight=True)
    off = reconstruct_mesh(masks, cams, 40, polish_steps=0, **kw)
    hull = reconstruct_fast(masks, cams, 40, watertight=True, feature_smooth=10)
    assert np.array_equal(off.vertices, hull.vertices)
    tm = {}
    on = reconstruct_mesh(masks, cams, 40, polish_steps=30, timings=tm, **kw)
    assert "polish_s" in tm and on.is_watertight
    err = lambda m: float(np.abs(np.linalg.norm(m.vertices, axis=1) - 0.3).mean())
    assert err(on) < 0.8 * err(off), (err(on), err(off))
    with pytest.raises(ValueError, match="polish_steps"):
        reconstruct_mesh(masks, cams, 40, polish_steps=-1, **kw)


def test_fast_path_bad_masks():
    cams = ring_cams(4, 32, (0.0,))
    with pytest.raises(ValueError, match="empty"):
        reconstruct_fast(torch.zeros(4, 32, 32), cams, 16)
    with pytest.raises(ValueError, match="full"):
        reconstruct_fast(torch.ones(4, 32, 32), cams, 16)
    with pytest.raises(ValueError, match="GiB"):
        reconstruct_fast(torch.ones(4, 32, 32), cams, 4096, max_bytes=2**30)


def test_finishing_retries_when_decimation_breaks_watertightness(monkeypatch):
    """A decimation that opens holes (simulated: it drops faces) must not reach the user: the
    finishing step retries with a larger target and finally skips decimation."""
    from orbitforge.kernels.mesh.extract import decimate, finish_mesh

    v, f = marching_cubes(sphere_field(40))
    real = decimate
    calls = []

    def broken(mesh, target):
        calls.append(target)
        out = real(mesh, target)
        if target > 0:  # every decimation tears the surface open beyond repair
            out = trimesh.Trimesh(out.vertices, out.faces[: len(out.faces) // 2], process=True)
        return out

    monkeypatch.setattr("orbitforge.kernels.mesh.extract.decimate", broken)
    m = finish_mesh(v, f, watertight=True, target_faces=1000)
    assert m.is_watertight and m.volume > 0
    assert calls[0] == 1000 and calls[-1] == 0 and len(calls) >= 3
    # without watertight the (open but manifold) decimated mesh is accepted at once
    calls.clear()
    m2 = finish_mesh(v, f, watertight=False, target_faces=1000)
    assert calls == [1000] and len(m2.faces) > 0


def test_non_manifold_result_is_a_clear_error():
    from orbitforge.kernels.mesh.extract import _check_manifold

    # three triangles sharing one edge
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]], float)
    m = trimesh.Trimesh(v, [[0, 1, 2], [1, 0, 3], [0, 1, 4]], process=False)
    with pytest.raises(ValueError, match="non-manifold"):
        _check_manifold(m)


def test_depth_normal_weight_is_the_viewing_cosine():
    from orbitforge.kernels.geometry.cameras import make_orbit_cameras
    from orbitforge.kernels.mesh.tsdf import depth_normal_weight

    cams = make_orbit_cameras([0.0], [0.0], 2.0, 40.0, 64, 64)
    K = cams.Ks[0]
    jj, ii = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="xy")
    x = (jj - K[0, 2]) / K[0, 0]
    # a plane through (0, 0, 2) (camera frame) tilted by 60 degrees about the camera's y axis:
    # points with z = 2 + tan(60) * X, i.e. along the ray z = 2 / (1 - tan(60) x)
    t = np.tan(np.radians(60.0))
    z = 2.0 / (1.0 - t * x)
    d = torch.where((z > 0) & (z < 6), z, torch.zeros_like(z))[None]
    w = depth_normal_weight(d, cams)[0]
    ray = torch.nn.functional.normalize(torch.stack([x, (ii - K[1, 2]) / K[1, 1],
                                                     torch.ones_like(x)], -1), dim=-1)
    n = torch.tensor([-np.sin(np.radians(60.0)), 0.0, np.cos(np.radians(60.0))]).float()
    expect = (ray @ n).abs()
    inner = (d[0] > 0)[2:-2, 2:-2] & (w[2:-2, 2:-2] > 0)
    assert inner.float().mean() > 0.5
    assert torch.allclose(w[2:-2, 2:-2][inner], expect[2:-2, 2:-2][inner], atol=0.02)
    # a fronto-parallel plane: cos ~ 1 at the image centre; no depth -> weight 0
    w2 = depth_normal_weight(torch.full((1, 64, 64), 2.0), cams)[0]
    assert w2[32, 32] > 0.99
    assert depth_normal_weight(torch.zeros(1, 64, 64), cams).abs().max() == 0

