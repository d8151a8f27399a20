"""Mesh nodes: SDF mesh from views, save GLB/OBJ/PLY atomically with the ui entry, turntable."""

import math
import os

import numpy as np
import pytest
import torch
import trimesh

from orbitforge.kernels.mesh.core_mesh import mesh_items
from orbitforge.kernels.mesh.render import load_mesh
from orbitforge.kernels.mesh.types import ColoredMesh
from orbitforge.nodes.mesh import MeshTurntable, SaveMesh, SDFMesh

from test_visual_hull import ring_cams, sphere_views

RED_BLUE = ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0))


@pytest.fixture(scope="module")
def views():
    cams = ring_cams(8, 64)
    masks, _, rgb = sphere_views(cams, radius=0.3, colors=RED_BLUE)
    return cams, masks, rgb


@pytest.fixture(scope="module")
def vmesh(views):
    return build(views)


def build(views, **kw):
    cams, masks, rgb = views
    args = dict(cameras=cams, resolution=40, mode="fast", min_background_views=1, watertight=True,
                target_faces=3000, smooth_iterations=2, color="vertex", texture_size=128,
                images=rgb, masks=masks)
    args.update(kw)
    return SDFMesh().build(**args)[0]


def test_sdf_mesh_node_gives_coloured_watertight_mesh(vmesh):
    core = vmesh  # a core-style MESH: colours linear (glTF), normals filled, no uvs
    assert core.normals.shape == core.vertices.shape and core.uvs is None
    assert core.vertex_counts is None and core.vertex_colors.shape == core.vertices.shape
    mesh = mesh_items(core)[0]
    assert mesh.vertices.ndim == 3 and mesh.faces.ndim == 3 and mesh.vertices.shape[0] == 1
    tm = mesh.to_trimesh()
    assert tm.is_watertight
    assert np.abs(np.linalg.norm(tm.vertices, axis=1) - 0.3).mean() < 0.02
    vc = mesh.vertex_colors[0].numpy()
    x = mesh.vertices[0, :, 0].numpy()
    assert (vc[x > 0.05, 0] > 0.8).mean() > 0.95


def test_sdf_mesh_node_refuses_bad_input(views):
    cams, masks, rgb = views
    with pytest.raises(ValueError, match="no views"):
        build(views, images=None, masks=None)
    with pytest.raises(ValueError, match="frames"):
        build(views, masks=masks[:3])
    with pytest.raises(ValueError, match="empty"):
        build(views, masks=torch.zeros_like(masks))
    with pytest.raises(ValueError, match="GiB"):
        build(views, resolution=1024)
    from orbitforge.kernels.geometry.cameras import Cameras

    vm = cams.viewmats.clone()
    vm[:, :3, 3] *= -1  # object behind every camera
    far = Cameras(vm, cams.Ks.clone(), cams.width, cams.height)
    with pytest.raises(ValueError):
        build(views, cameras=far)


def test_sdf_mesh_forgives_views_that_disagree(views):
    """Generated orbits show a slightly different object in every view: the automatic
    silhouette tolerance keeps the shape the views share instead of their intersection, and
    leaves views that agree (renders) with the exact hull."""
    from orbitforge.kernels.mesh.pipeline import reconstruct_mesh

    cams, masks, rgb = views
    clean = reconstruct_mesh(masks, cams, 40, depth_source="none", polish_steps=0)
    assert clean.metadata["silhouette_tolerance_px"] == 0.0
    assert clean.metadata["silhouette_disagreement"] < 0.002
    g = torch.Generator().manual_seed(1)
    scale = 1 + (torch.rand(len(cams), generator=g) * 2 - 1) * 0.12
    differ = torch.cat([sphere_views(cams[i:i + 1], radius=0.3 * float(scale[i]))[0]
                        for i in range(len(cams))])
    auto = reconstruct_mesh(differ, cams, 40, depth_source="none", polish_steps=0)
    exact = reconstruct_mesh(differ, cams, 40, depth_source="none", polish_steps=0,
                             silhouette_tolerance=0.0)
    assert auto.metadata["silhouette_tolerance_px"] == 1.0
    assert exact.metadata["silhouette_disagreement"] is None  # given, not measured
    # the exact hull is the smallest view's sphere; the tolerant one is closer to the mean
    assert auto.volume > 1.05 * exact.volume
    assert abs(auto.volume - clean.volume) < abs(exact.volume - clean.volume)
    node = build(views, masks=differ, polish_steps=0, depth_source="none")
    assert mesh_items(node)[0].to_trimesh().volume == pytest.approx(auto.volume, rel=0.05)
    with pytest.raises(ValueError, match="silhouette_tolerance"):
        build(views, silhouette_tolerance=-0.5)


@pytest.mark.parametrize("fmt", ["glb", "obj", "ply"])
def test_save_mesh_formats(vmesh, tmp_path, monkeypatch, fmt):
    monkeypatch.setenv("ORBITFORGE_OUTPUT", str(tmp_path))
    mesh = vmesh
    out = SaveMesh().save(mesh, "meshes/test", fmt)
    entry = out["ui"]["3d"][0]
    assert entry == {"filename": f"test_00001_.{fmt}", "subfolder": "meshes", "type": "output"}
    assert out["result"][0] == f"meshes/test_00001_.{fmt}"
    assert out["result"][1].format == fmt  # FILE_3D for Preview3D by link
    assert out["result"][1].get_bytes() == (tmp_path / "meshes" / entry["filename"]).read_bytes()
    path = tmp_path / "meshes" / entry["filename"]
    loaded = load_mesh(str(path))  # our loader: GLB colours are linear, it returns sRGB
    assert len(loaded.faces) == mesh.faces.shape[1]
    vis = loaded.visual
    vis = vis.to_color() if hasattr(vis, "to_color") else vis
    cols = np.asarray(vis.vertex_colors)[:, :3]
    assert cols.max() > 200 and (cols[:, 0] > 200).any() and (cols[:, 2] > 200).any()
    assert not [f for f in os.listdir(tmp_path / "meshes") if f.startswith(".tmp_")]
    again = SaveMesh().save(mesh, "meshes/test", fmt)
    assert again["ui"]["3d"][0]["filename"] == f"test_00002_.{fmt}"


def test_save_textured_glb(views, tmp_path, monkeypatch):
    monkeypatch.setenv("ORBITFORGE_OUTPUT", str(tmp_path))
    mesh = build(views, color="texture")
    assert mesh.texture is not None and mesh.uvs is not None
    out = SaveMesh().save(mesh, "tex", "glb")
    loaded = trimesh.load(str(tmp_path / out["result"][0]), force="mesh")
    assert isinstance(loaded.visual, trimesh.visual.TextureVisuals)


def test_save_mesh_refuses_unwritable_and_empty(tmp_path, monkeypatch, vmesh):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the output folder should be")
    monkeypatch.setenv("ORBITFORGE_OUTPUT", str(blocker))
    with pytest.raises(ValueError, match="cannot create|writable"):
        SaveMesh().save(vmesh, "x/mesh", "glb")
    monkeypatch.setenv("ORBITFORGE_OUTPUT", str(tmp_path))
    empty = ColoredMesh(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        SaveMesh().save(empty, "e", "glb")
    with pytest.raises(ValueError, match="output folder"):
        SaveMesh().save(vmesh, "../escape", "glb")
    assert not (tmp_path.parent / "escape_00001_.glb").exists()


def test_turntable_and_core_mesh_compat(vmesh):
    mesh = vmesh
    frames = MeshTurntable().render(mesh, 4, 15.0, 48, 2.0, 33.8)[0]
    assert frames.shape == (4, 48, 48, 3)
    centre = frames[:, 20:28, 20:28]
    assert (centre.mean((1, 2)) < 0.95).any()  # the object is in the middle, not background

    class CoreMESH:  # the shape of comfy_extras.nodes_hunyuan3d.MESH
        def __init__(self, v, f):
            self.vertices, self.faces = v, f

    core = CoreMESH(mesh.vertices, mesh.faces)
    frames2 = MeshTurntable().render(core, 1, 0.0, 32, 2.0, 33.8)[0]
    assert frames2.shape == (1, 32, 32, 3)
    # occlusion and shadows only darken, and only on the object
    shaded = MeshTurntable().render(mesh, 4, 15.0, 48, 2.0, 33.8, True)[0]
    obj = (frames < 0.999).any(-1)  # pixels, not channels: a red object has R = 1.0
    assert bool((shaded <= frames + 1e-6).all()) and bool((shaded[~obj] == frames[~obj]).all())


def test_core_saveglb_accepts_colored_mesh(vmesh, tmp_path):
    from comfy_host import require_comfyui

    require_comfyui()
    try:  # v0.33 moved save_glb (v0.3.64: nodes_hunyuan3d)
        from comfy_extras.nodes_save_3d import save_glb
    except ImportError:
        from comfy_extras.nodes_hunyuan3d import save_glb

    mesh = vmesh
    p = tmp_path / "core.glb"
    save_glb(mesh.vertices[0], mesh.faces[0], str(p))
    assert len(trimesh.load(str(p), force="mesh").faces) == mesh.faces.shape[1]


def test_sdf_mesh_node_neural_mode(views):
    """mode neural runs the NeuS-style refinement after the fast path and still gives a closed,
    coloured mesh of the right size; it refuses to run without the views' colours."""
    steps = []
    from orbitforge.nodes import host

    orig = host.Progress.update

    def spy(self, value, preview=None):
        steps.append((value, self.total))
        return orig(self, value, preview)

    host.Progress.update = spy
    try:
        mesh = build(views, mode="neural", neural_iterations=15)
    finally:
        host.Progress.update = orig
    tm = mesh_items(mesh)[0].to_trimesh()
    assert tm.is_watertight
    assert np.abs(np.linalg.norm(tm.vertices, axis=1) - 0.3).mean() < 0.02
    assert steps[-1] == (4 + 15, 4 + 15) and len(steps) > 15  # progress through the fit
    with pytest.raises(ValueError, match="neural"):
        build(views, mode="neural", images=None)
    with pytest.raises(ValueError, match="mode"):
        build(views, mode="slow")
    with pytest.raises(ValueError, match="GiB"):  # fine for the fused field, too big to refine
        build(views, mode="neural", resolution=512)
    with pytest.raises(ValueError, match="polish_steps to 0"):  # the same for the polish
        build(views, resolution=512)


def sphere_gaussians(radius=0.3, n=3000):
    """Small opaque red Gaussians on a sphere (a stand-in for a fitted scene)."""
    from orbitforge.kernels.splat.gaussians import Gaussians

    g = torch.Generator().manual_seed(0)
    p = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * radius
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(n, 4).clone()
    sh = torch.zeros(n, 1, 3)
    sh[:, 0, 0] = 1.5  # red through the SH DC term
    return Gaussians(p, quats, torch.full((n, 3), math.log(0.02)), torch.full((n,), 4.0), sh)


def test_sdf_mesh_renders_gaussians_once(views, monkeypatch):
    """depth_source gaussians with no images/masks: masks, colours and depth all come from one
    render of the scene, and the mesh is the sphere the Gaussians sit on."""
    from orbitforge.kernels.splat import fit

    calls = []
    real = fit.render_gaussians

    def counting(g, cams, *a, **kw):
        calls.append(len(cams))
        return real(g, cams, *a, **kw)

    monkeypatch.setattr(fit, "render_gaussians", counting)
    cams, _, _ = views
    mesh = build(views, images=None, masks=None, gaussians=sphere_gaussians(),
                 depth_source="gaussians", polish_steps=0, resolution=32)
    assert calls == [len(cams)]
    v = mesh_items(mesh)[0].vertices[0]
    assert abs(float(v.norm(dim=-1).mean()) - 0.3) < 0.04


def test_sdf_mesh_keeps_what_connected_gaussians_cover_when_views_disagree(views):
    """A generated orbit's views disagree, so their hull is smaller than each of them; a scene
    fitted to all of them (the Gaussians the workflows connect) covers the shape they share,
    and with it the mesh keeps that shape. Views that agree ignore the scene."""
    cams, masks, rgb = views
    sphere = sphere_gaussians(radius=0.27)  # its alpha: a sphere of ~0.32 at 64 px
    g = torch.Generator().manual_seed(1)
    scale = 1 - torch.rand(len(cams), generator=g) * 0.12  # every view a smaller sphere
    differ = torch.cat([sphere_views(cams[i:i + 1], radius=0.3 * float(scale[i]))[0]
                        for i in range(len(cams))])
    kw = dict(polish_steps=0, depth_source="none")
    clean = mesh_items(build(views, **kw))[0].to_trimesh()  # the hull of the true sphere
    alone = mesh_items(build(views, masks=differ, **kw))[0].to_trimesh()
    widened = mesh_items(build(views, masks=differ, gaussians=sphere, **kw))[0].to_trimesh()
    fit = mesh_items(build(views, images=None, masks=None, gaussians=sphere, **kw))[0]
    assert alone.volume < 0.85 * clean.volume  # the intersection: the smallest view's sphere
    assert widened.volume > 0.98 * fit.to_trimesh().volume  # what the fit covers is kept
    # a scene that is not these views' (here: the sphere moved off centre) is not used
    moved = sphere_gaussians(radius=0.27)
    moved.means = moved.means + torch.tensor([0.25, 0.0, 0.0])
    other = mesh_items(build(views, masks=differ, gaussians=moved, **kw))[0].to_trimesh()
    assert other.volume == pytest.approx(alone.volume, rel=1e-6)
    # renders that agree: the exact hull, whatever is connected
    with_g = mesh_items(build(views, gaussians=sphere, **kw))[0].to_trimesh()
    assert with_g.volume == pytest.approx(clean.volume, rel=1e-6)


def test_fit_silhouettes_widen_masks_and_refuse_other_shapes():
    from orbitforge.kernels.geometry.visual_hull import add_fit_silhouettes
    from orbitforge.kernels.mesh.pipeline import reconstruct_mesh

    m = torch.zeros(2, 8, 8)
    m[:, 2:5, 2:5] = 1  # 9 pixels
    a = torch.zeros(2, 8, 8)
    a[:, 2:5, 2:6] = 0.9  # 12 pixels, the 9 among them: IoU 0.75, the fit belongs to the views
    u, iou = add_fit_silhouettes(m, a)
    assert float(u.sum()) == 2 * 12 and iou.tolist() == [0.75, 0.75]
    a[1] = 0
    a[1, 6:, 6:] = 1  # one view the fit does not explain: another scene or other cameras
    u, iou = add_fit_silhouettes(m, a)
    assert torch.equal(u, m) and float(iou[1]) == 0
    with pytest.raises(ValueError, match="must match the masks"):
        add_fit_silhouettes(m, a[:, :4])
    with pytest.raises(ValueError, match="fit_alpha"):
        reconstruct_mesh(m, ring_cams(2, 8), 16, fit_alpha=a[:1], depth_source="none")
