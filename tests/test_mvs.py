"""Hull-bounded plane-sweep stereo: recovers a concavity the silhouettes cannot see; noisy depth
never punches holes; input validation."""

import os

import numpy as np
import pytest
import torch
import trimesh

from orbitforge.kernels.geometry.cameras import make_orbit_cameras, uniform_orbit
from orbitforge.kernels.geometry.visual_hull import DEFAULT_BBOX, hull_sdf
from orbitforge.kernels.mesh import mvs
from orbitforge.kernels.mesh.pipeline import reconstruct_mesh
from orbitforge.kernels.mesh.render import render_mesh
from orbitforge.kernels.mesh.tsdf import combine_hull_tsdf, tsdf_fuse

PIT_DEPTH = 0.12


def pit_box():
    """A 0.6 box with a 0.3 x 0.3 pit, PIT_DEPTH deep, in its top face; random face colours
    (strong texture, view-independent)."""
    import manifold3d

    box = trimesh.creation.box((0.6, 0.6, 0.6))
    pit = trimesh.creation.box((0.3, PIT_DEPTH * 2, 0.3))
    pit.apply_translation((0, 0.3, 0))
    a = manifold3d.Manifold(manifold3d.Mesh(box.vertices.astype(np.float32),
                                            box.faces.astype(np.uint32)))
    b = manifold3d.Manifold(manifold3d.Mesh(pit.vertices.astype(np.float32),
                                            pit.faces.astype(np.uint32)))
    out = (a - b).to_mesh()
    m = trimesh.Trimesh(np.asarray(out.vert_properties)[:, :3], np.asarray(out.tri_verts))
    for _ in range(2):  # faces of a few pixels: texture without aliasing
        m = m.subdivide()
    rng = np.random.default_rng(0)
    m.visual = trimesh.visual.ColorVisuals(m, face_colors=rng.integers(40, 255, (len(m.faces), 4)))
    return m


@pytest.fixture(scope="module")
def scene():
    el, az = uniform_orbit(10, (25.0, 50.0, 75.0))
    cams = make_orbit_cameras(el, az, 2.0, 33.8, 96, 96)
    v = render_mesh(pit_box(), cams, smooth=False)
    return cams, v["rgb"], v["mask"], v["depth"]


def surface_height(mesh, x=0.0, z=0.0):
    """y of the first surface hit going down from above at (x, z)."""
    loc, _, _ = mesh.ray.intersects_location([[x, 1.0, z]], [[0.0, -1.0, 0.0]])
    return float(loc[:, 1].max())


def test_plane_sweep_recovers_pit_that_hull_cannot_see(scene):
    cams, rgb, masks, gt_depth = scene
    field = hull_sdf(masks, cams, 64)
    hd = mvs.hull_depth_maps(field, cams, DEFAULT_BBOX)
    d, score = mvs.plane_sweep_depth(rgb, masks, cams, hd, depth_range=0.3, n_planes=40)
    in_pit = (gt_depth > hd + 0.08) & (masks > 0.5) & (hd > 0)  # looking into the pit
    assert in_pit.sum() > 50
    got = in_pit & (d > 0)
    assert got.sum() > 0.1 * in_pit.sum()  # a part of the pit gets depth (visibility is hard)
    err = (d - gt_depth)[got].abs()
    assert err.median() < 0.02
    # elsewhere the depth stays on the hull surface (or is absent)
    flat = (masks > 0.5) & (gt_depth > 0) & ((gt_depth - hd).abs() < 0.01) & (d > 0)
    assert ((d - gt_depth)[flat].abs() < 0.03).float().mean() > 0.9


def test_mvs_mesh_is_deeper_in_the_pit_than_hull(scene):
    cams, rgb, masks, _ = scene
    # polish_steps=0: this is about what stereo depth carves, before any photometric polish
    kw = dict(keep_components=1, watertight=True, polish_steps=0,
              mvs_options=dict(depth_range=0.3, n_planes=40))
    hull = reconstruct_mesh(masks, cams, 64, images=rgb, depth_source="none", **kw)
    carved = reconstruct_mesh(masks, cams, 64, images=rgb, depth_source="mvs", max_carve=0.3,
                              **kw)
    assert carved.is_watertight
    top = surface_height(hull)
    assert top > 0.29  # the hull is closed over the pit
    assert surface_height(carved) < top - 0.06  # depth carved into the pit
    # outside the pit the depth does not carve through the top face
    assert surface_height(carved, 0.22, 0.22) > 0.28


def test_noisy_depth_never_punches_holes(scene):
    cams, _, masks, gt_depth = scene
    field = hull_sdf(masks, cams, 48)
    g = torch.Generator().manual_seed(0)
    noisy = gt_depth + (torch.rand(gt_depth.shape, generator=g) - 0.5) * 1.0  # +-0.5 noise
    noisy = torch.where(gt_depth > 0, noisy.clamp_min(0.01), gt_depth)
    tsdf, w = tsdf_fuse(noisy, cams, masks, 48)
    out = combine_hull_tsdf(field, tsdf, w, min_weight=3, max_carve=0.1)
    assert bool((out >= field).all())  # depth only carves
    mesh = reconstruct_mesh(masks, cams, 48, depths=noisy, depth_source="depth",
                            keep_components=1, watertight=True)
    assert mesh.is_watertight and len(mesh.split(only_watertight=False)) == 1
    # carving stops max_carve (0.1) below the hull: the core of the box is intact
    core = np.array([[x, y, z] for x in (-0.17, 0.17) for y in (-0.17, 0.05)
                     for z in (-0.17, 0.17)] + [[0.0, 0.0, 0.0]])
    assert mesh.contains(core).all()


def test_mvs_refuses_bad_input(scene):
    cams, rgb, masks, _ = scene
    hd = torch.ones_like(masks)
    with pytest.raises(ValueError, match="must agree"):
        mvs.plane_sweep_depth(rgb[:3], masks, cams, hd)
    with pytest.raises(ValueError, match="odd window"):
        mvs.plane_sweep_depth(rgb, masks, cams, hd, window=4)
    with pytest.raises(ValueError, match="needs the images"):
        reconstruct_mesh(masks, cams, 32, depth_source="mvs")
    with pytest.raises(ValueError, match="depth_source"):
        reconstruct_mesh(masks, cams, 32, images=rgb, depth_source="stereo")


def test_mesh_file_written_atomically_with_colours(scene, tmp_path):
    from orbitforge.kernels.mesh.views_to_mesh import gaussians_to_mesh_file

    cams, rgb, masks, _ = scene
    path = gaussians_to_mesh_file(None, rgb, masks, cams, str(tmp_path / "out.glb"),
                                  resolution=48)
    assert path.endswith("out.glb")
    assert sorted(os.listdir(tmp_path)) == ["out.glb"]  # no temp file left behind
    from orbitforge.kernels.mesh.render import load_mesh

    # read by our loader: COLOR_0 beside a matte material is what trimesh files as a texture
    # visual's vertex attribute
    m = load_mesh(path)
    assert len(m.faces) > 100 and m.visual.kind == "vertex"
    with pytest.raises(ValueError, match="glb"):
        gaussians_to_mesh_file(None, rgb, masks, cams, str(tmp_path / "out.stl"))
