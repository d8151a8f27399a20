"""Our MESH / SPLAT / FILE_3D values through ComfyUI's own core 3D nodes, and theirs through ours.

Needs a ComfyUI checkout in ``COMFYUI_PATH`` (skipped otherwise). The core nodes are the host's
classes, called the way its executor calls them (``PREPARE_CLASS_CLONE`` + ``execute`` with every
widget at its schema default). v0.33 has SPLAT, the mesh post-processing nodes and File3D;
v0.3.64 only MESH + SaveGLB (``comfy_extras.nodes_hunyuan3d``): tests of what a host lacks skip.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import os

import numpy as np
import pytest
import torch

from comfy_host import require_comfyui

pytestmark = pytest.mark.comfyui


def _core(module: str):
    require_comfyui()
    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.skip(f"this ComfyUI has no {module}")


def _defaults(node_cls) -> dict:
    """Every widget of a V3 node at its schema default (dynamic combos: first option)."""
    info = node_cls.GET_NODE_INFO_V1()["input"]
    out = {}
    for name, spec in info.get("required", {}).items():
        typ, opts = spec[0], (spec[1] if len(spec) > 1 else {})
        if typ == "COMFY_DYNAMICCOMBO_V3":
            first = opts["options"][0]
            out[name] = {name: first["key"]}
            for sub, sspec in first["inputs"].get("required", {}).items():
                out[name][sub] = sspec[1].get("default")
        elif typ == "COMBO":
            out[name] = opts.get("default", opts["options"][0])
        elif isinstance(typ, list):
            out[name] = typ[0]
        elif "default" in opts:
            out[name] = opts["default"]
    return out


def run(node_cls, **kwargs):
    """Call a core V3 node as the executor does; returns its NodeOutput."""
    args = _defaults(node_cls)
    args.update(kwargs)
    clone = node_cls.PREPARE_CLASS_CLONE({"hidden_inputs": {}})
    out = clone.execute(**args)
    if asyncio.iscoroutine(out):
        out = asyncio.run(out)
    return out


@pytest.fixture
def out_dir(tmp_path, monkeypatch):
    require_comfyui()
    import folder_paths

    monkeypatch.setenv("ORBITFORGE_OUTPUT", str(tmp_path))
    old = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(tmp_path))
    yield tmp_path
    folder_paths.set_output_directory(old)


# -- our meshes -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sdf_meshes():
    """SDF Mesh node outputs (vertex colours, and a baked texture) of a red/blue sphere."""
    require_comfyui()
    from orbitforge.nodes.mesh import SDFMesh

    from test_visual_hull import ring_cams, sphere_views

    cams = ring_cams(8, 48)
    masks, _, rgb = sphere_views(cams, radius=0.3, colors=((0.9, 0.1, 0.1), (0.1, 0.1, 0.9)))
    args = dict(cameras=cams, resolution=40, mode="fast", min_background_views=1,
                watertight=True, target_faces=1500, smooth_iterations=2, color="vertex",
                texture_size=128, images=rgb, masks=masks, polish_steps=0)
    with torch.inference_mode():
        vertex = SDFMesh().build(**args)[0]
        args["color"] = "texture"
        textured = SDFMesh().build(**args)[0]
    return vertex, textured


def test_our_mesh_is_the_hosts_mesh_class(sdf_meshes):
    from orbitforge.nodes.host import geometry

    vertex, textured = sdf_meshes
    host_cls = geometry._host_class("MESH")
    if host_cls is None:
        pytest.skip("this ComfyUI has no core MESH class")
    assert type(vertex) is host_cls and type(textured) is host_cls
    assert vertex.normals is not None and vertex.vertex_colors is not None
    assert textured.uvs is not None and textured.texture is not None


def _glb_attribute(path: str, name: str) -> np.ndarray:
    """One vertex attribute (e.g. COLOR_0) of a single-primitive GLB, read from its buffers."""
    import json
    import struct

    data = open(path, "rb").read()
    n = struct.unpack_from("<I", data, 12)[0]
    js = json.loads(data[20:20 + n])
    binary = data[20 + n + 8:]
    acc = js["accessors"][js["meshes"][0]["primitives"][0]["attributes"][name]]
    view = js["bufferViews"][acc["bufferView"]]
    width = {"VEC2": 2, "VEC3": 3, "VEC4": 4}[acc["type"]]
    dtype = {5126: "<f4", 5121: "u1", 5123: "<u2"}[acc["componentType"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    arr = np.frombuffer(binary, dtype, acc["count"] * width, start).reshape(-1, width)
    return arr / {"<f4": 1.0, "u1": 255.0, "<u2": 65535.0}[dtype]


def test_save_glb_writes_our_vertex_colours(sdf_meshes, out_dir):
    import trimesh

    mod = _core("comfy_extras.nodes_save_3d")
    vertex, _ = sdf_meshes
    res = run(mod.SaveGLB, mesh=vertex, filename_prefix="core/ours")
    (item,) = res.ui["3d"]
    path = os.path.join(out_dir, item["subfolder"], item["filename"])
    tm = trimesh.load(path, force="mesh", process=False)
    assert len(tm.vertices) == vertex.vertices.shape[1]
    assert len(tm.faces) == vertex.faces.shape[1]
    got = _glb_attribute(path, "COLOR_0")[:, :3]
    want = vertex.vertex_colors[0].numpy()  # linear, as glTF COLOR_0
    assert np.abs(got - want).max() < 1e-6
    assert (want[:, 0] > 0.6).mean() > 0.3  # the red half survived
    assert _glb_attribute(path, "NORMAL").shape == (len(want), 3)


def _save_glb():
    """Core SaveGLB (``comfy_extras.nodes_save_3d`` since v0.33, ``nodes_hunyuan3d`` before) and
    whether it is a V3 node."""
    try:
        mod = importlib.import_module("comfy_extras.nodes_save_3d")
    except ImportError:
        mod = importlib.import_module("comfy_extras.nodes_hunyuan3d")
    return mod.SaveGLB, hasattr(mod.SaveGLB, "PREPARE_CLASS_CLONE")


def _ui(res) -> dict:
    """The ui part of a node's result as the executor sends it to the frontend."""
    ui = res["ui"] if isinstance(res, dict) else res.ui
    return ui.as_dict() if hasattr(ui, "as_dict") else dict(ui)


def _shape(ui: dict) -> dict:
    return {k: [sorted(item) for item in v] for k, v in ui.items()}


def test_save_nodes_ui_matches_core_save_glb(sdf_meshes, out_dir):
    """The frontend's SaveGLB viewer reads ui["3d"][0] = {filename, subfolder, type}: Save Mesh
    (from a MESH) and Save Gaussians (its PLY through SaveGLB's File3D path) return the same."""
    require_comfyui()
    from orbitforge.nodes.gaussians import SaveGaussians
    from orbitforge.nodes.host import geometry
    from orbitforge.nodes.mesh import SaveMesh

    node, v3 = _save_glb()
    save = (lambda m, p: run(node, mesh=m, filename_prefix=p)) if v3 else \
        (lambda m, p: node().save(m, p))
    vertex, _ = sdf_meshes
    core_mesh = _ui(save(vertex, "ui/core"))
    ours_mesh = _ui(SaveMesh().save(vertex, "ui/ours", "glb"))
    assert list(core_mesh) == list(ours_mesh) == ["3d"]
    assert _shape(ours_mesh) == _shape(core_mesh)
    uis = [core_mesh, ours_mesh]
    ours_splat_res = SaveGaussians().save(geometry.make_splat(_two_colour_scene()), "ui/splat")
    uis.append(_ui(ours_splat_res))
    assert _shape(uis[-1]) == _shape(core_mesh)
    if geometry._host_class("File3D") is not None:  # v0.33: SaveGLB also saves 3D files
        uis.append(_ui(save(ours_splat_res["result"][1], "ui/core_splat")))
        assert _shape(uis[-1]) == _shape(uis[-2])
    for ui in uis:
        (item,) = ui["3d"]
        assert item["type"] == "output"
        assert os.path.isfile(os.path.join(out_dir, item["subfolder"], item["filename"]))
    assert ours_mesh["3d"][0]["subfolder"] == core_mesh["3d"][0]["subfolder"] == "ui"
    # all are output nodes (the frontend shows the results of output nodes)
    assert (node.GET_NODE_INFO_V1()["output_node"] if v3 else node.OUTPUT_NODE)
    assert SaveMesh.OUTPUT_NODE and SaveGaussians.OUTPUT_NODE


def test_core_save_glb_and_save_mesh_agree_on_colour_bytes(sdf_meshes, out_dir):
    """Same MESH through core SaveGLB and our Save Mesh: the same linear COLOR_0 values, the same
    positions; and our loader reads either file back to the mesh's sRGB colours."""
    from orbitforge.kernels.mesh.gltf import linear_to_srgb
    from orbitforge.kernels.mesh.render import load_mesh
    from orbitforge.nodes.mesh import SaveMesh

    mod = _core("comfy_extras.nodes_save_3d")
    vertex, _ = sdf_meshes
    (core_item,) = _ui(run(mod.SaveGLB, mesh=vertex, filename_prefix="agree/core"))["3d"]
    (ours_item,) = _ui(SaveMesh().save(vertex, "agree/ours", "glb"))["3d"]
    paths = [os.path.join(out_dir, i["subfolder"], i["filename"]) for i in (core_item, ours_item)]
    core_c, ours_c = (_glb_attribute(p, "COLOR_0")[:, :3] for p in paths)
    np.testing.assert_allclose(ours_c, core_c, atol=1e-6)
    np.testing.assert_allclose(_glb_attribute(paths[1], "POSITION"),
                               _glb_attribute(paths[0], "POSITION"), atol=1e-6)
    srgb = np.round(linear_to_srgb(vertex.vertex_colors[0]).numpy() * 255)
    for p in paths:
        got = np.asarray(load_mesh(p).visual.vertex_colors)[:, :3].astype(float)
        assert np.abs(got - srgb).max() <= 1.0, p


_MESH_NODES = [  # (node, extra kwargs) over our vertex-coloured mesh
    ("GetMeshInfo", {}), ("RotateMesh", {}), ("MeshToFile3D", {}),
    ("DecimateMesh", {"target_face_count": 500}), ("RemeshMesh", {"resolution": 48}),
    ("WeldVertices", {}), ("MeshSmoothNormals", {}), ("FillHoles", {}),
    ("RenderMesh", {"width": 64, "height": 64}), ("UnwrapMesh", {"segmenter": "adaptive",
                                                                 "resolution": 256}),
]


@pytest.mark.parametrize("name, extra", _MESH_NODES, ids=[n for n, _ in _MESH_NODES])
def test_core_mesh_nodes_run_on_our_mesh(sdf_meshes, out_dir, name, extra):
    save3d = _core("comfy_extras.nodes_save_3d")
    post = _core("comfy_extras.nodes_mesh_postprocess")
    node = getattr(save3d, name, None) or getattr(post, name)
    vertex, _ = sdf_meshes
    res = run(node, mesh=vertex, **extra)
    out = res.args[0]
    if name == "GetMeshInfo":
        assert f"{vertex.vertices.shape[1]:,}" in res.args[1]
        assert "vertex_colors" in res.args[1] and "normals" in res.args[1]
    elif name == "MeshToFile3D":
        assert out.format == "glb" and out.get_bytes()[:4] == b"glTF"
    elif name == "RenderMesh":
        assert out.shape == (1, 64, 64, 3) and float(out.std()) > 0.01
    else:
        assert out.vertices.shape[0] == 1 and out.faces.shape[1] > 0


def test_core_texture_nodes_run_on_our_textured_mesh(sdf_meshes):
    post = _core("comfy_extras.nodes_mesh_postprocess")
    _, textured = sdf_meshes
    (img,) = run(post.MeshTextureToImage, mesh=textured).args[:1]
    assert img.shape[1:] == textured.texture.shape[1:]
    atlas = run(post.RenderUVAtlas, mesh=textured, resolution=128).args[0]
    assert atlas.shape[1:3] == (128, 128)
    re = run(post.ApplyTextureToMesh, mesh=textured, base_color=textured.texture).args[0]
    assert re.texture is not None


# -- core meshes into our nodes --------------------------------------------------------------------

def _core_meshes():
    """Core-made meshes: plain, RGBA-coloured, textured (uvs + texture), and a padded batch of an
    8-vertex box and a 42-vertex sphere (``pack_variable_mesh_batch``)."""
    import trimesh

    mod = _core("comfy_extras.nodes_save_3d")
    box = trimesh.creation.box(extents=(0.5, 0.5, 0.5))
    sph = trimesh.creation.icosphere(subdivisions=1, radius=0.3)
    t = lambda a, d=torch.float32: torch.as_tensor(np.asarray(a), dtype=d)  # noqa: E731
    bv, bf = t(box.vertices), t(box.faces, torch.int64)
    sv, sf = t(sph.vertices), t(sph.faces, torch.int64)
    M = mod.Types.MESH
    rgba = torch.cat([torch.rand(8, 3), torch.ones(8, 1)], 1)
    return {
        "plain": (M(bv[None], bf[None]), [(8, 12)]),
        "rgba": (M(bv[None], bf[None], vertex_colors=rgba[None]), [(8, 12)]),
        "textured": (M(bv[None], bf[None], uvs=torch.rand(1, 8, 2),
                       texture=torch.rand(1, 16, 16, 3)), [(8, 12)]),
        "padded": (mod.pack_variable_mesh_batch([bv, sv], [bf, sf]), [(8, 12), (42, 80)]),
    }


@pytest.mark.parametrize("kind", ["plain", "rgba", "textured", "padded"])
def test_core_meshes_into_save_mesh_and_turntable(kind, out_dir):
    import trimesh

    from orbitforge.nodes.mesh import MeshTurntable, SaveMesh

    mesh, counts = _core_meshes()[kind]
    res = SaveMesh().save(mesh, f"in/{kind}", "glb")
    got = []
    for item in res["ui"]["3d"]:
        tm = trimesh.load(os.path.join(out_dir, item["subfolder"], item["filename"]),
                          force="mesh", process=False)
        got.append((len(tm.vertices), len(tm.faces)))
    assert got == counts
    if kind == "textured":
        tm = trimesh.load(os.path.join(out_dir, res["result"][0]), force="mesh", process=False)
        assert isinstance(tm.visual, trimesh.visual.TextureVisuals)
    if kind == "padded":
        with pytest.raises(ValueError, match="mesh holds a batch of 2"):
            MeshTurntable().render(mesh, 1, 15.0, 32, 2.0, 40.0)
    else:
        (frames,) = MeshTurntable().render(mesh, 2, 15.0, 32, 2.0, 40.0)
        assert frames.shape == (2, 32, 32, 3) and float(frames.min()) < 0.9


def test_save_mesh_file3d_feeds_core_preview3d(sdf_meshes, out_dir):
    load3d = _core("comfy_extras.nodes_load_3d")
    from orbitforge.nodes.host import geometry
    from orbitforge.nodes.mesh import SaveMesh

    if geometry._host_class("File3D") is None:
        pytest.skip("this ComfyUI has no File3D: its Preview3D takes a path only")

    vertex, _ = sdf_meshes
    path, f3d = SaveMesh().save(vertex, "p/mesh", "glb")["result"]
    res = run(load3d.Preview3D, model_file=f3d)
    shown = res.ui.as_dict()["result"][0]
    assert os.path.isfile(os.path.join(out_dir, shown))
    assert open(os.path.join(out_dir, shown), "rb").read() == f3d.get_bytes()


# -- SPLAT -----------------------------------------------------------------------------------------

def _two_colour_scene():
    """A ball of Gaussians, red above y = 0 and blue below (OrbitForge's y-up world)."""
    from orbitforge.kernels.splat.gaussians import Gaussians, rgb_to_sh0

    g = torch.Generator().manual_seed(0)
    n = 400
    p = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * 0.3
    rgb = torch.where(p[:, 1:2] > 0, torch.tensor([[0.9, 0.1, 0.1]]),
                      torch.tensor([[0.1, 0.1, 0.9]]))
    sh = torch.zeros(n, 4, 3)
    sh[:, 0] = rgb_to_sh0(rgb)
    return Gaussians(p, torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                     torch.full((n, 3), math.log(0.05)), torch.full((n,), 3.0), sh)


def _upper_half_is_red(img: torch.Tensor) -> bool:
    h = img.shape[1]
    top, bottom = img[0, : h // 2], img[0, h // 2:]
    return float(top[..., 0].mean()) > float(top[..., 2].mean()) and \
        float(bottom[..., 2].mean()) > float(bottom[..., 0].mean())


def test_our_splat_renders_upright_in_core_render_splat():
    gs = _core("comfy_extras.nodes_gaussian_splat")
    from orbitforge.nodes.host import geometry

    splat = geometry.make_splat(_two_colour_scene())
    assert type(splat) is gs.Types.SPLAT
    cam = gs._lookat_camera_info([0.0, 0.0, 2.5], [0.0, 0.0, 0.0], 35.0, torch.device("cpu"))
    img, mask = run(gs.RenderSplat, splat=splat, width=64, height=64, camera_info=cam,
                    background="#ffffff").args
    assert float(mask.mean()) > 0.1
    assert _upper_half_is_red(img)
    # the default auto-framed camera (core's 3/4 view from above) too
    img, _ = run(gs.RenderSplat, splat=splat, width=64, height=64).args
    assert _upper_half_is_red(img)


def test_gaussian_reconstruct_output_through_core_splat_nodes(out_dir):
    gs = _core("comfy_extras.nodes_gaussian_splat")
    from orbitforge.nodes.gaussians import GaussianReconstruct, GaussianRender, SaveGaussians
    from orbitforge.nodes.mesh import SaveMesh

    from test_node_contracts import _tiny_scene

    img, msk, cams = _tiny_scene()
    with torch.inference_mode():
        splat, _ = GaussianReconstruct().reconstruct(img, cams, 3, 0, 1, 3, mask=msk)
    n = splat.positions.shape[1]
    assert run(gs.GetSplatCount, splat=splat).args[1] == n
    # file round trip through core's writer and reader is exact
    f3d = run(gs.SplatToFile3D, splat=splat, format="ply").args[0]
    back = run(gs.File3DToSplat, model_3d=f3d).args[0]
    for a in ("positions", "scales", "rotations", "opacities", "sh"):
        torch.testing.assert_close(getattr(back, a), getattr(splat, a), atol=1e-6, rtol=1e-5)
    # our Save Gaussians file loads in core exactly as the SPLAT
    _, ours_f3d = SaveGaussians().save(splat, "s/splat")["result"]
    core = run(gs.File3DToSplat, model_3d=ours_f3d).args[0]
    torch.testing.assert_close(core.positions, splat.positions)
    torch.testing.assert_close(core.sh, splat.sh)
    moved = run(gs.TransformSplat, splat=splat, translate_x=0.1).args[0]
    merged = run(gs.MergeSplat, splats={"splat0": splat, "splat1": moved}).args[0]
    assert merged.positions.shape[1] == 2 * n
    # core SPLATs back into our nodes
    for s in (moved, merged, back):
        rgb, alpha, _ = GaussianRender().render(s, cams, "median", "1, 1, 1")
        assert rgb.shape == img.shape and float(alpha.mean()) > 0.05
    mesh = run(gs.SplatToMesh, splat=splat, resolution=64, min_component=0).args[0]
    res = SaveMesh().save(mesh, "s/core_mesh", "ply")
    assert len(res["ui"]["3d"]) == 1


@pytest.mark.parametrize("fmt", ["ply", "spz", "ksplat", "splat"])
def test_core_splat_files_feed_our_nodes(fmt, out_dir):
    gs = _core("comfy_extras.nodes_gaussian_splat")
    from orbitforge.kernels.geometry.cameras import make_orbit_cameras
    from orbitforge.nodes.gaussians import GaussianRender, SaveGaussians
    from orbitforge.nodes.host import geometry
    from orbitforge.nodes.mesh import SDFMesh

    splat = geometry.make_splat(_two_colour_scene())
    if fmt == "splat":  # core has a reader, no writer: antimatter15's 32-byte records
        p = splat.positions[0].numpy()
        rec = np.zeros(len(p), np.dtype([("xyz", "<f4", 3), ("scale", "<f4", 3),
                                         ("rgba", "u1", 4), ("quat", "u1", 4)]))
        rec["xyz"], rec["scale"] = p, splat.scales[0].numpy()
        rgb = (splat.sh[0, :, 0].numpy() * 0.28209479177387814 + 0.5).clip(0, 1)
        rec["rgba"][:, :3] = (rgb * 255).round()
        rec["rgba"][:, 3] = (splat.opacities[0, :, 0].numpy() * 255).round()
        rec["quat"] = (splat.rotations[0].numpy() * 128 + 128).clip(0, 255).round()
        from io import BytesIO

        f3d = gs.Types.File3D(BytesIO(rec.tobytes()), file_format="splat")
    else:
        f3d = run(gs.SplatToFile3D, splat=splat, format=fmt).args[0]
    core = run(gs.File3DToSplat, model_3d=f3d).args[0]
    cams = make_orbit_cameras([0.0], [0.0], 2.5, 35.0, 48, 48)
    img, alpha, _ = GaussianRender().render(core, cams, "median", "1, 1, 1")
    assert float(alpha.mean()) > 0.1 and _upper_half_is_red(img)
    rel, _ = SaveGaussians().save(core, f"f/{fmt}")["result"]
    assert os.path.isfile(os.path.join(out_dir, rel))
    if fmt == "ply":  # SDF Mesh from a core SPLAT alone (its renders stand in for the views)
        ring = make_orbit_cameras([20.0] * 6, [i * 60.0 for i in range(6)], 2.5, 35.0, 48, 48)
        mesh = SDFMesh().build(ring, 40, "fast", 1, True, 1000, 2, "vertex", 64,
                               depth_source="gaussians", gaussians=core, polish_steps=0)[0]
        assert mesh.faces.shape[1] > 100
        top = mesh.vertices[0, :, 1] > 0.1
        col = mesh.vertex_colors[0]
        assert float(col[top, 0].mean()) > float(col[top, 2].mean())


def test_sequence_frame_is_a_core_splat():
    gs = _core("comfy_extras.nodes_gaussian_splat")
    from orbitforge.kernels.dynamic.fit4d import GaussianSequence
    from orbitforge.nodes.gaussians4d import GaussianSequenceFrame

    g = _two_colour_scene()
    (s,) = GaussianSequenceFrame().pick(GaussianSequence([g, g], torch.tensor([0.0, 1.0])), 1)
    assert run(gs.GetSplatCount, splat=s).args[1] == len(g)


def test_old_save_glb_takes_our_mesh(sdf_meshes, out_dir):
    """v0.3.64 keeps SaveGLB in nodes_hunyuan3d (v0.33 moved it to nodes_save_3d)."""
    require_comfyui()
    try:
        mod = importlib.import_module("comfy_extras.nodes_save_3d")
    except ImportError:
        mod = importlib.import_module("comfy_extras.nodes_hunyuan3d")
    import trimesh

    vertex, _ = sdf_meshes
    node = mod.SaveGLB
    if hasattr(node, "PREPARE_CLASS_CLONE"):
        ui = run(node, mesh=vertex, filename_prefix="old/ours").ui
    else:
        ui = node().save(vertex, "old/ours")["ui"]
    (item,) = ui["3d"]
    tm = trimesh.load(os.path.join(out_dir, item["subfolder"], item["filename"]), force="mesh",
                      process=False)
    assert len(tm.faces) == vertex.faces.shape[1]
