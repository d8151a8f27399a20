"""The mesh path on shapes with holes, flat faces and thin parts (bench/zoo.py), and the zoo's
bad-input errors. Small views / grids so the suite stays fast; no shared files."""

import numpy as np
import pytest
import trimesh

from orbitforge.bench.zoo import SHAPES, check_volume, load_or_make, make_shape
from orbitforge.kernels.geometry.cameras import make_orbit_cameras
from orbitforge.kernels.mesh.pipeline import reconstruct_mesh
from orbitforge.kernels.mesh.render import normalize_mesh, render_mesh
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


def test_seen_through_hole_stays_open():
    """A block with a round through-hole, on an orbit whose low ring looks along the hole: the
    hull carves it, the fusion and the polish must not clog it (genus 1, not 0 or more)."""
    gt, _, _ = normalize_mesh(make_shape("box_hole"))
    assert genus(gt) == 1
    mesh = _reconstruct(gt, _orbit(), polish_steps=20)
    assert mesh.is_watertight
    assert genus(mesh) == 1


def test_cube_faces_come_out_flat():
    """A cube's flat faces stay flat: roughness of our mesh within 3 degrees of the ground
    truth's (finely meshed, so its edges count the same way), and its faces away from the edges
    under 2 degrees."""
    from orbitforge.bench.zoo import fine_copy

    gt = trimesh.creation.box((0.6, 0.6, 0.6))
    grid = 96
    mesh = _reconstruct(gt, _orbit(), grid=grid, polish_steps=20)
    rough, rough_gt = roughness_deg(mesh), roughness_deg(fine_copy(gt, 1.0 / grid))
    assert rough <= rough_gt + 3.0, (rough, rough_gt)
    c = np.abs(mesh.triangles_center)  # [F, 3]
    # face interiors: on one face (one coordinate ~0.3), 0.08 away from its edges
    interior = (np.sort(c, 1)[:, 1] < 0.3 - 0.08)
    sub = mesh.submesh([np.nonzero(interior)[0]], append=True)
    assert roughness_deg(sub) < 2.0, roughness_deg(sub)


def test_thin_plate_keeps_its_thickness():
    """A plate 0.05 thick (about 5 voxels at grid 96), edge-on in two views: its thickness at
    the centre comes out within one voxel, neither eaten by smoothing nor bloated."""
    th, grid = 0.05, 96
    gt = trimesh.creation.box((0.8, 0.6, th))
    mesh = _reconstruct(gt, _orbit(), grid=grid, polish_steps=20)
    xs, ys = np.meshgrid(np.linspace(-0.25, 0.25, 5), np.linspace(-0.18, 0.18, 5))
    o = np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, 1.0)], 1)
    d = np.tile([0.0, 0.0, -1.0], (len(o), 1))
    loc, idx, _ = mesh.ray.intersects_location(o, d, multiple_hits=True)
    thick = [np.ptp(loc[idx == i, 2]) for i in range(len(o)) if (idx == i).sum() >= 2]
    assert len(thick) == len(o)
    assert abs(float(np.median(thick)) - th) < 1.0 / grid, np.median(thick)


def test_degraded_views_not_much_rougher_than_clean():
    """Views that disagree the way generated orbits do (per-view camera error, colour drift,
    warp, low resolution, palette, thresholded masks; bench/degrade.py) must not make the mesh
    more than 1.3x as rough as the same mesh path on clean views. On the gear (clean roughness
    ~6 degrees, like the benchmark's organic meshes; measured 6.2 -> 6.8). A shape whose clean
    mesh is nearly perfectly smooth (the sphere-cube, 2 degrees) does not meet the ratio: the
    camera errors alone leave seams in the hull (2.0 -> 2.7 degrees, hull only)."""
    from dataclasses import replace

    from orbitforge.bench.degrade import preset, render_degraded

    gt, _, _ = normalize_mesh(make_shape("gear"))
    cams = _orbit(16, 128)
    clean = _reconstruct(gt, cams, polish_steps=20)
    imgs, masks, nominal = render_degraded(gt, cams, 0, replace(preset("generated"),
                                                                render_res=256),
                                           occlusion=True, shadows=True)
    deg = reconstruct_mesh(masks, nominal, 96, images=imgs, keep_components=1, watertight=True,
                           polish_steps=20)
    rc, rd = roughness_deg(clean), roughness_deg(deg)
    assert rd <= 1.3 * rc, (rd, rc)


def test_seen_bound_tells_what_the_orbit_cannot_show():
    """The depth hull of the ground truth (bench's seen_bound): a box seen all round is almost
    exactly recovered, the inside of a mug that no view looks into stays filled (so a low IoU
    there is the orbit's limit, not the method's)."""
    from orbitforge.bench.mesh_zoo import seen_bound

    ring = make_orbit_cameras(np.zeros(12), np.arange(12) * 30.0, 2.2, 33.8, 96, 96)
    box, _, _ = normalize_mesh(make_shape("sphere_cube"))
    assert seen_bound(box, ring, 64)["iou"] > 0.9
    mug, _, _ = normalize_mesh(make_shape("mug"))
    assert seen_bound(mug, ring, 64)["iou"] < 0.6


def test_paint_noise_keeps_the_geometry():
    from orbitforge.bench.zoo import paint_noise

    gt, _, _ = normalize_mesh(make_shape("box_hole"))
    painted = paint_noise(gt, seed=1)
    assert np.allclose(painted.bounds, gt.bounds) and abs(painted.volume - gt.volume) < 1e-6
    col = np.asarray(painted.visual.vertex_colors)[:, :3].astype(float)
    assert col.std(0).min() > 20  # a texture, not one colour
    again = paint_noise(gt, seed=1)
    assert np.array_equal(np.asarray(again.visual.vertex_colors), painted.visual.vertex_colors)


def test_depth_carving_opens_what_silhouettes_cannot():
    """carve_visual_hull with depth maps (space carving): the upper inside of a cup seen from
    above is free, while silhouettes alone keep the cup filled; depth never carves the wall."""
    from orbitforge.kernels.geometry.visual_hull import carve_visual_hull, voxel_grid

    mug, _, _ = normalize_mesh(make_shape("mug"))
    cams = make_orbit_cameras(np.full(8, 60.0), np.arange(8) * 45.0, 2.2, 33.8, 96, 96)
    v = render_mesh(mug, cams)
    grid = 48
    hull = carve_visual_hull(v["mask"], cams, grid)
    space = carve_visual_hull(v["mask"], cams, grid, depths=v["depth"], depth_margin=1.0 / grid)
    assert bool((space <= hull).all())  # depth only carves
    pts = voxel_grid(grid).reshape(-1, 3).numpy()
    top = float(mug.bounds[1][1])
    i_in = np.argmin(np.linalg.norm(pts - [0.0, top - 0.1, 0.0], axis=1))  # inside the cup
    assert bool(hull.reshape(-1)[i_in]) and not bool(space.reshape(-1)[i_in])
    # the cup's wall stays (a point inside the wall, halfway up)
    cx = float(mug.bounds[0][0]) + 0.03  # the wall opposite the handle
    i_wall = np.argmin(np.linalg.norm(pts - [cx, 0.0, 0.0], axis=1))
    assert bool(space.reshape(-1)[i_wall])
