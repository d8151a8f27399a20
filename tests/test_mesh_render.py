"""CPU mesh renderer: pins the camera convention, depth, shading, texture lookup, loading."""

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from orbitforge.kernels.geometry.cameras import make_orbit_cameras
from orbitforge.kernels.mesh.render import (
    DEFAULT_GREY,
    HAVE_EMBREE,
    LIGHT_DIR,
    ambient_occlusion,
    load_mesh,
    normalize_mesh,
    render_mesh,
)
from orbitforge.kernels.sample import (
    SAMPLE_RADIUS,
    load_sample_mesh,
    load_sample_orbit,
    spot_mesh_path,
)

S = 65  # odd: the centre pixel's centre is exactly the principal point


def _cams(az, el=0.0, r=2.0, size=S, fov=40.0):
    return make_orbit_cameras(el, az, r, fov, size, size)


def _centroid(mask):  # [H, W] -> (row, col) in pixel-centre coordinates
    m = mask.numpy()
    ii, jj = np.nonzero(m > 0.5)
    return ii.mean() + 0.5, jj.mean() + 0.5


def test_sphere_centre_depth_normal():
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=0.5)
    out = render_mesh(sphere, _cams([0.0, 90.0, 200.0], el=[0.0, 30.0, -20.0]))
    assert out["rgb"].shape == (3, S, S, 3) and out["mask"].shape == (3, S, S)
    assert out["depth"].shape == (3, S, S) and out["normals"].shape == (3, S, S, 3)
    c = S // 2
    for k in range(3):
        r, col = _centroid(out["mask"][k])
        assert abs(r - S / 2) < 0.3 and abs(col - S / 2) < 0.3
        assert out["depth"][k, c, c].item() == pytest.approx(1.5, abs=2e-3)
    # empty pixels: depth 0, background white, mask 0
    assert out["depth"][0, 0, 0] == 0 and out["mask"][0, 0, 0] == 0
    assert torch.allclose(out["rgb"][0, 0, 0], torch.ones(3))
    # the centre normal points at the camera (+z for azimuth 0), world space
    assert torch.allclose(out["normals"][0, c, c], torch.tensor([0.0, 0.0, 1.0]), atol=2e-2)


def test_box_depth_exact_and_extent():
    box = trimesh.creation.box((1.0, 1.0, 1.0))
    out = render_mesh(box, _cams(0.0))
    c = S // 2
    assert out["depth"][0, c, c].item() == pytest.approx(1.5, abs=1e-5)
    # the front face (z = 0.5, 1.5 from the camera) spans 1/1.5 of the focal length each side
    f = 0.5 * S / np.tan(np.deg2rad(20.0))
    half = 0.5 / 1.5 * f
    cols = np.nonzero(out["mask"][0, c].numpy() > 0.5)[0]
    assert abs((cols.max() + 1 - cols.min()) - 2 * half) <= 2.0


def test_marker_orientation():
    """+x is on the image right seen from azimuth 0, in the centre from azimuth 90 (camera on +x);
    +y is up in the image."""
    marker = trimesh.creation.icosphere(subdivisions=3, radius=0.1)
    marker.apply_translation((0.6, 0.0, 0.0))
    out = render_mesh(marker, _cams([0.0, 90.0, 180.0]))
    r0, c0 = _centroid(out["mask"][0])
    assert c0 > S / 2 + 8 and abs(r0 - S / 2) < 1  # right side
    r1, c1 = _centroid(out["mask"][1])
    assert abs(c1 - S / 2) < 0.5 and abs(r1 - S / 2) < 0.5  # centre
    assert out["depth"][1, S // 2, S // 2].item() == pytest.approx(2.0 - 0.7, abs=5e-3)
    r2, c2 = _centroid(out["mask"][2])
    assert c2 < S / 2 - 8  # from behind, +x is on the left
    up = trimesh.creation.icosphere(subdivisions=3, radius=0.1)
    up.apply_translation((0.0, 0.6, 0.0))
    r3, c3 = _centroid(render_mesh(up, _cams(0.0))["mask"][0])
    assert r3 < S / 2 - 8 and abs(c3 - S / 2) < 1  # +y is up (small row index)


def test_vertex_colours_and_view_independent_lighting():
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    v = sphere.vertices
    colours = np.where(v[:, :1] > 0, [[255, 0, 0, 255]], [[0, 0, 255, 255]]).astype(np.uint8)
    sphere.visual = trimesh.visual.ColorVisuals(sphere, vertex_colors=colours)
    out = render_mesh(sphere, _cams([0.0, 90.0, 270.0]), background=(0.0, 0.0, 0.0))
    rgb, c = out["rgb"], S // 2
    assert rgb[0, c, c + 15, 0] > 0.3 and rgb[0, c, c + 15, 2] < 0.05  # +x half red, on the right
    assert rgb[0, c, c - 15, 2] > 0.3 and rgb[0, c, c - 15, 0] < 0.05
    assert rgb[1, c, c, 0] > 0.3 and rgb[2, c, c, 2] > 0.3
    assert torch.all(rgb[0, 0, 0] == 0)  # background colour argument
    # the same surface point seen from two cameras gets the same colour (view independent):
    # the point (0.5/sqrt2, 0, 0.5/sqrt2) is the centre pixel of the camera at azimuth 45
    mid = render_mesh(sphere, _cams(45.0))["rgb"][0, c, c]
    pt = np.array([0.5, 0.0, 0.5]) / np.sqrt(2)
    cams = _cams([0.0, 90.0])
    for k in range(2):
        p = cams.viewmats[k, :3, :3].double() @ torch.tensor(pt) + cams.viewmats[k, :3, 3].double()
        uv = cams.Ks[k].double() @ p
        j, i = int(uv[0] / uv[2]), int(uv[1] / uv[2])
        assert torch.allclose(out["rgb"][k, i, j], mid, atol=0.06)
    # shading: ambient .45 + diffuse .55 * n.l, n = +z at the azimuth-0 centre
    light = np.asarray(LIGHT_DIR) / np.linalg.norm(LIGHT_DIR)
    grey = render_mesh(trimesh.creation.icosphere(5, 0.5), _cams(0.0))["rgb"][0, c, c]
    expect = 0.7 * (0.45 + 0.55 * light[2])
    assert torch.allclose(grey, torch.full((3,), float(expect)), atol=0.01)


def _textured_quad(tmp_path=None):
    # a quad in the z=0 plane facing +z, UV (0,0) at bottom-left (-x,-y), (1,1) top-right
    v = np.array([[-0.5, -0.5, 0], [0.5, -0.5, 0], [0.5, 0.5, 0], [-0.5, 0.5, 0]], float)
    f = np.array([[0, 1, 2], [0, 2, 3]])
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    tex = np.zeros((2, 2, 3), np.uint8)
    tex[0, 0] = (255, 0, 0)  # image top-left = UV (0, 1) = world top-left
    tex[0, 1] = (0, 255, 0)  # top-right
    tex[1, 0] = (0, 0, 255)  # bottom-left
    tex[1, 1] = (255, 255, 255)
    img = Image.fromarray(tex).resize((8, 8), Image.NEAREST)  # uniform 4x4-texel quadrants
    mat = trimesh.visual.material.SimpleMaterial(image=img)
    m = trimesh.Trimesh(v, f, process=False)
    m.visual = trimesh.visual.TextureVisuals(uv=uv, material=mat)
    return m


def test_texture_orientation():
    quad = _textured_quad()
    out = render_mesh(quad, _cams(0.0, fov=30.0), smooth=False)
    rgb = out["rgb"][0]
    f = 0.5 * S / np.tan(np.deg2rad(15.0))
    q = round(0.25 / 2.0 * f)  # quadrant centres (UV 0.25 / 0.75)
    c = S // 2
    shade = 0.45 + 0.55 * (np.asarray(LIGHT_DIR) / np.linalg.norm(LIGHT_DIR))[2]
    tl, tr, bl, br = rgb[c - q, c - q], rgb[c - q, c + q], rgb[c + q, c - q], rgb[c + q, c + q]
    assert tl.argmax() == 0 and tr.argmax() == 1 and bl.argmax() == 2
    assert torch.allclose(br, torch.full((3,), float(shade)), atol=0.02)
    # two-sided: the back of the quad is lit with the flipped normal and still textured
    back = render_mesh(quad, _cams(180.0, fov=30.0), smooth=False)["rgb"][0]
    assert back[c - q, c + q].argmax() == 0  # top-left texel now on the right


def test_supersampling_soft_edges():
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    cams = _cams(0.0, size=32)
    a = render_mesh(sphere, cams, ss=1)
    b = render_mesh(sphere, cams, ss=3)
    ma, mb = a["mask"][0], b["mask"][0]
    assert set(np.unique(ma.numpy())) <= {0.0, 1.0}
    frac = ((mb > 0) & (mb < 1)).sum().item()
    assert frac > 10  # fractional coverage on the rim
    assert abs(ma.sum().item() - mb.sum().item()) < 0.03 * mb.sum().item()
    # colour is composited on the background by coverage
    i, j = np.argwhere(((mb > 0.2) & (mb < 0.8)).numpy())[0]
    assert b["rgb"][0, i, j].min() > a["rgb"][0, 16, 16].min()
    n = b["normals"][0]
    norms = n.norm(dim=-1)
    assert torch.allclose(norms[mb > 0], torch.ones_like(norms[mb > 0]), atol=1e-4)


def test_pure_python_fallback_matches_embree(monkeypatch):
    if not HAVE_EMBREE:
        pytest.skip("embreex not installed: the fallback is the only engine")
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    cams = _cams([30.0], size=24)
    fast = render_mesh(sphere, cams)
    monkeypatch.setattr("orbitforge.kernels.mesh.render.HAVE_EMBREE", False)
    slow = render_mesh(sphere, cams)
    assert (fast["mask"] != slow["mask"]).sum() <= 2
    both = (fast["mask"] > 0) & (slow["mask"] > 0)
    assert torch.allclose(fast["depth"][both], slow["depth"][both], atol=1e-4)
    assert torch.allclose(fast["rgb"][both], slow["rgb"][both], atol=1e-3)


def test_normalize_mesh():
    box = trimesh.creation.box((2.0, 4.0, 1.0))
    box.apply_translation((3.0, -1.0, 2.0))
    n, center, scale = normalize_mesh(box)
    assert np.allclose(n.bounds, [[-0.25, -0.5, -0.125], [0.25, 0.5, 0.125]])
    assert np.allclose(center, [3.0, -1.0, 2.0]) and scale == pytest.approx(0.25)
    assert np.allclose(box.bounds[0], [2.0, -3.0, 1.5])  # input untouched


def test_load_glb_scene_and_ply(tmp_path):
    a = trimesh.creation.box((1.0, 1.0, 1.0))
    a.visual.vertex_colors = np.tile([[0, 255, 0, 255]], (len(a.vertices), 1))
    b = a.copy()
    scene = trimesh.Scene()
    scene.add_geometry(a, node_name="a")
    scene.add_geometry(b, node_name="b",
                       transform=trimesh.transformations.translation_matrix((3, 0, 0)))
    p = str(tmp_path / "two.glb")
    scene.export(p)
    m = load_mesh(p)
    assert isinstance(m, trimesh.Trimesh) and len(m.faces) == 24
    assert np.allclose(m.bounds, [[-0.5, -0.5, -0.5], [3.5, 0.5, 0.5]], atol=1e-6)
    out = render_mesh(m, _cams(0.0, r=6.0))
    px = out["rgb"][0][out["mask"][0] > 0]
    assert (px[:, 1] > px[:, 0] + 0.2).all()  # green kept through GLB
    q = str(tmp_path / "one.ply")
    a.export(q)
    assert len(load_mesh(q).faces) == 12


def test_load_spot_textured_and_errors(tmp_path):
    spot = load_mesh(spot_mesh_path())
    assert isinstance(spot.visual, trimesh.visual.TextureVisuals)
    assert spot.visual.material.image.size == (1024, 1024)  # found spot_texture.png
    # textured GLB round trip (PBR baseColorTexture) renders the same
    norm = load_sample_mesh()
    p = str(tmp_path / "spot.glb")
    norm.export(p)
    glb = load_mesh(p)
    cams = _cams([20.0, 200.0], r=2.2, size=48)
    a, b = render_mesh(norm, cams), render_mesh(glb, cams)
    assert torch.equal(a["mask"], b["mask"])
    assert (a["rgb"] - b["rgb"]).abs().max() < 0.02
    with pytest.raises(ValueError, match="not found"):
        load_mesh(str(tmp_path / "missing.obj"))
    with pytest.raises(ValueError, match="ss"):
        render_mesh(spot, _cams(0.0), ss=0)
    with pytest.raises(ValueError, match="background"):
        render_mesh(spot, _cams(0.0), background=(1, 1))


def test_sample_orbit_matches_its_mesh():
    images, masks, cams = load_sample_orbit()
    assert images.shape == (21, 256, 256, 3) and masks.shape == (21, 256, 256)
    assert len(cams) == 21 and cams.width == 256
    assert float(cams.azimuth[-1]) == 0.0 and np.allclose(cams.elevation.numpy(), 10.0)
    assert np.allclose(cams.radius.numpy(), SAMPLE_RADIUS)
    # spot inside every frame, white background
    assert masks[:, 0].max() == 0 and masks[:, -1].max() == 0
    assert masks[:, :, 0].max() == 0 and masks[:, :, -1].max() == 0
    assert torch.all(images[masks == 0] == 1.0)
    # the bundled frames are renders of load_sample_mesh() (the GT for evaluation), front at +z
    mesh = load_sample_mesh()
    assert np.allclose(mesh.extents.max(), 1.0)
    ref = render_mesh(mesh, cams[[20, 5]].resized(128, 128))
    small = torch.nn.functional.avg_pool2d(masks[[20, 5]].unsqueeze(1), 2).squeeze(1)
    inter = ((ref["mask"] > 0.5) & (small > 0.5)).sum()
    union = ((ref["mask"] > 0.5) | (small > 0.5)).sum()
    assert inter / union > 0.97


def test_ambient_occlusion_open_sky_vs_cup_floor():
    # a convex mesh sees the whole sky: no occlusion anywhere
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    ao = ambient_occlusion(sphere, n_rays=32)
    assert ao.shape == (len(sphere.vertices),) and ao.min() == pytest.approx(1.0)
    # the floor inside a deep open box (a cup) is mostly blocked by the walls; outside it is not
    outer = trimesh.creation.box((1.0, 1.0, 1.0))
    inner = trimesh.creation.box((0.6, 1.0, 0.6))
    inner.apply_translation((0, 0.1, 0))  # floor at y = -0.4, open at the top
    try:
        cup = outer.difference(inner)
    except (ImportError, ValueError):  # pragma: no cover - no boolean backend (manifold3d)
        pytest.skip("no mesh boolean backend")
    ao = ambient_occlusion(cup, n_rays=64, max_dist=2.0)
    v = cup.vertices
    floor = (np.abs(v[:, 1] + 0.4) < 1e-6) & (np.abs(v[:, 0]) < 0.31) & (np.abs(v[:, 2]) < 0.31)
    bottom = np.abs(v[:, 1] + 0.5) < 1e-6  # the outside base: convex, nothing below it
    assert floor.any() and bottom.any()
    assert ao[floor].mean() < 0.5  # the walls hide most of the floor's sky
    assert ao[bottom].min() == pytest.approx(1.0)
    # deterministic per seed
    assert np.array_equal(ao, ambient_occlusion(cup, n_rays=64, max_dist=2.0))


def test_cast_shadow_and_default_unchanged():
    # a small sphere floating above a floor, lit from straight above
    floor = trimesh.creation.box((2.0, 0.02, 2.0))
    floor.apply_translation((0, -0.3, 0))
    ball = trimesh.creation.icosphere(subdivisions=3, radius=0.15)
    ball.apply_translation((0, 0.1, 0))
    scene = trimesh.util.concatenate([floor, ball])
    cams = _cams([0.0], el=[60.0], r=2.5, size=97)
    kw = {"light_dir": (0.0, 1.0, 0.0), "ambient": 0.3, "diffuse": 0.7}
    plain = render_mesh(scene, cams, **kw)
    shad = render_mesh(scene, cams, shadows=True, **kw)
    assert torch.equal(plain["mask"], shad["mask"]) and torch.equal(plain["depth"], shad["depth"])
    # project the floor point under the ball and one far from it
    from orbitforge.kernels.geometry.cameras import project

    pts = torch.tensor([[0.0, -0.29, 0.0], [0.7, -0.29, 0.6]])
    uv, _ = project(pts, cams.viewmats, cams.Ks)
    (u0, v0), (u1, v1) = uv[0].long().tolist()
    under, far = shad["rgb"][0, v0, u0, 0].item(), shad["rgb"][0, v1, u1, 0].item()
    grey = DEFAULT_GREY[0]
    assert far == pytest.approx(grey * 1.0, abs=0.02)  # fully lit
    assert under == pytest.approx(grey * 0.3, abs=0.02)  # only ambient: in the shadow
    assert plain["rgb"][0, v0, u0, 0].item() == pytest.approx(grey * 1.0, abs=0.02)
    # nothing gets brighter with shadows or occlusion
    both = render_mesh(scene, cams, shadows=True, occlusion=True, **kw)
    assert bool((both["rgb"] <= plain["rgb"] + 1e-6).all())
    assert bool((both["rgb"] < plain["rgb"] - 0.01).any())
