"""SPLAT / MESH / FILE_3D interop with ComfyUI's core 3D types, without ComfyUI.

The maths (frame map, SH rotation, padded-batch slicing, checks) is host-free; the classes fall back
to stand-ins with the same attributes. tests/test_core_types_comfyui.py runs the same values
through the real core nodes.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from orbitforge.kernels.geometry.cameras import Cameras, make_orbit_cameras
from orbitforge.kernels.mesh.core_mesh import core_mesh_fields, mesh_items
from orbitforge.kernels.mesh.gltf import linear_to_srgb, srgb_to_linear
from orbitforge.kernels.mesh.types import ColoredMesh
from orbitforge.kernels.splat.fit import render_gaussians
from orbitforge.kernels.splat.frame import (
    gaussians_to_splat_fields,
    sh_rotation_matrix,
    splat_fields_to_gaussians,
    to_splat_frame,
)
from orbitforge.kernels.splat.gaussians import Gaussians, quat_to_rotmat
from orbitforge.kernels.splat.sh import eval_sh
from orbitforge.nodes.host import geometry

M = torch.diag(torch.tensor([1.0, -1.0, -1.0]))


def _scene(n=60, degree=2, seed=0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2
    sh = torch.randn(n, k, 3, generator=g) * 0.3
    return Gaussians(torch.rand(n, 3, generator=g) * 0.6 - 0.3, torch.randn(n, 4, generator=g),
                     torch.rand(n, 3, generator=g) * 1.5 - 4.0, torch.randn(n, generator=g) + 1.0,
                     sh)


def _random_rotation(seed=1) -> torch.Tensor:
    q = torch.nn.functional.normalize(torch.randn(4, generator=torch.Generator().manual_seed(seed)),
                                      dim=0)
    return quat_to_rotmat(q.double())


# -- SH rotation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("degree", [1, 2, 3])
def test_sh_rotation_keeps_the_colour_seen_from_each_direction(degree):
    k = (degree + 1) ** 2
    sh = torch.randn(5, k, 3, dtype=torch.float64)
    for rot in (M.double(), _random_rotation(degree)):
        d = sh_rotation_matrix(rot, degree)
        sh_new = torch.einsum("jk,nkc->njc", d, sh)
        dirs = torch.nn.functional.normalize(torch.randn(5, 3, dtype=torch.float64), dim=-1)
        before = eval_sh(degree, dirs, sh)
        after = eval_sh(degree, dirs @ rot.T, sh_new)
        torch.testing.assert_close(after, before, atol=1e-10, rtol=0)


def test_frame_map_sh_rotation_is_a_sign_per_coefficient():
    d = sh_rotation_matrix(M, 3)
    torch.testing.assert_close(d, torch.diag(torch.diagonal(d)), atol=1e-12, rtol=0)
    signs = torch.diagonal(d)
    torch.testing.assert_close(signs.abs(), torch.ones(16, dtype=torch.float64), atol=1e-12,
                               rtol=0)
    # 3DGS basis: band 1 is (-y, z, -x): y and z flip, x stays
    assert signs[1:4].round().tolist() == [-1.0, -1.0, 1.0]


# -- frame map against rendering -----------------------------------------------------------------

def test_frame_map_equals_rotating_the_rendered_view():
    """The mapped scene seen by the mapped cameras is the same image (SH degree 2 included), and
    differs from the unmapped view: the map is a real rotation, not the identity."""
    g = _scene(degree=2)
    cams = make_orbit_cameras([20.0, -10.0], [30.0, 200.0], 2.0, 40.0, 48, 48)
    m4 = torch.eye(4)
    m4[:3, :3] = M
    mapped_cams = Cameras(cams.viewmats @ m4, cams.Ks, cams.width, cams.height)  # x_w = M x_s
    s = to_splat_frame(g)
    ref, a_ref, _, _ = render_gaussians(g, cams, backend="torch")
    out, a_out, _, _ = render_gaussians(s, mapped_cams, backend="torch")
    assert a_ref.mean() > 0.05  # the scene is in view
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=0)
    torch.testing.assert_close(a_out, a_ref, atol=2e-5, rtol=0)
    wrong, _, _, _ = render_gaussians(s, cams, backend="torch")
    assert (wrong - ref).abs().max() > 0.1


def test_splat_frame_is_y_down():
    g = _scene()
    g = Gaussians(torch.tensor([[0.0, 0.4, 0.1]]), torch.tensor([[1.0, 0, 0, 0]]),
                  torch.zeros(1, 3), torch.zeros(1), torch.zeros(1, 1, 3))
    f = gaussians_to_splat_fields(g)
    assert f["positions"][0, 0].tolist() == pytest.approx([0.0, -0.4, -0.1])
    # identity rotation becomes R_x(180): wxyz (0, 1, 0, 0)
    assert f["rotations"][0, 0].tolist() == pytest.approx([0.0, 1.0, 0.0, 0.0])


def test_splat_round_trip_is_exact():
    g = _scene(degree=3)
    f = gaussians_to_splat_fields(g)
    assert f["positions"].shape == (1, 60, 3) and f["sh"].shape == (1, 60, 16, 3)
    assert f["opacities"].shape == (1, 60, 1)
    assert (f["scales"] > 0).all() and ((f["opacities"] >= 0) & (f["opacities"] <= 1)).all()
    torch.testing.assert_close(f["rotations"].norm(dim=-1), torch.ones(1, 60))
    (back,) = splat_fields_to_gaussians(**f)
    torch.testing.assert_close(back.means, g.means, atol=0, rtol=0)
    torch.testing.assert_close(back.sh, g.sh, atol=0, rtol=0)
    torch.testing.assert_close(back.log_scales, g.log_scales, atol=1e-6, rtol=0)
    torch.testing.assert_close(back.opacity_logits, g.opacity_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(quat_to_rotmat(back.quats), quat_to_rotmat(g.quats), atol=1e-6,
                               rtol=0)


def test_make_splat_has_core_attributes_and_reads_back():
    g = _scene(degree=1)
    s = geometry.make_splat(g)
    for a in ("positions", "scales", "rotations", "opacities", "sh", "counts"):
        assert hasattr(s, a)
    back = geometry.read_splat(s, "gaussians")
    torch.testing.assert_close(back.means, g.means)
    torch.testing.assert_close(back.sh, g.sh)


def test_padded_splat_batch_is_sliced_by_counts():
    a, b = _scene(n=10, degree=0), _scene(n=4, degree=0, seed=3)
    fa, fb = gaussians_to_splat_fields(a), gaussians_to_splat_fields(b)
    pad = {k: torch.cat([fa[k], torch.cat([fb[k], torch.zeros_like(fa[k][:, :6])], 1)])
           for k in ("positions", "scales", "rotations", "opacities", "sh")}
    pad["scales"][1, 4:] = 0.0  # padding rows are zeros: must be ignored, not refused
    pad["rotations"][1, 4:] = 0.0
    s = geometry.Splat(**pad, counts=torch.tensor([10, 4]))
    items = geometry.read_splat(s, "gaussians", single=False)
    assert [len(x) for x in items] == [10, 4]
    torch.testing.assert_close(items[1].means, b.means)
    with pytest.raises(ValueError, match="gaussians holds a batch of 2"):
        geometry.read_splat(s, "gaussians")


def _broken_splat_fields(kind: str) -> dict:
    """Core SPLAT fields of a small scene (no counts) with one thing wrong: ``kind``."""
    f = gaussians_to_splat_fields(_scene(n=8, degree=0))
    f.pop("counts")
    if kind == "nan":
        f["positions"][0, 3, 1] = float("nan")
    elif kind == "zero_scale":
        f["scales"][0, 2, 0] = 0.0
    elif kind == "neg_scale":
        f["scales"][0, 5, 2] = -0.01
    elif kind == "opacity":
        f["opacities"][0, 1, 0] = 1.5
    elif kind == "sh":
        f["sh"] = torch.zeros(1, 8, 5, 3)
    elif kind == "batch":
        f = {k: torch.cat([v, v]) for k, v in f.items()}
    return f


@pytest.mark.parametrize("breakage, message", [
    ("nan", "NaN"), ("zero_scale", "scales of item 0 must be positive"),
    ("neg_scale", "must be positive"), ("counts", "exceed the padded size"),
    ("opacity", r"opacities of item 0 must lie in \[0, 1\]"), ("sh", "SH degree 0-3"),
])
def test_bad_splat_is_refused_naming_the_input(breakage, message):
    f = _broken_splat_fields(breakage)
    counts = torch.tensor([9]) if breakage == "counts" else None
    s = geometry.Splat(**f, counts=counts)
    with pytest.raises(ValueError, match=message) as e:
        geometry.read_splat(s, "gaussians")
    assert str(e.value).startswith("gaussians")


def test_read_splat_refuses_other_values():
    with pytest.raises(ValueError, match="gaussians must be a SPLAT"):
        geometry.read_splat(torch.zeros(3), "gaussians")


# -- MESH ----------------------------------------------------------------------------------------

def _box(colors=True) -> ColoredMesh:
    import trimesh

    tm = trimesh.creation.box(extents=(0.5, 0.5, 0.5))
    v = torch.as_tensor(tm.vertices, dtype=torch.float32)
    f = torch.as_tensor(tm.faces, dtype=torch.int64)
    c = torch.rand(len(v), 3, generator=torch.Generator().manual_seed(0)) if colors else None
    return ColoredMesh(v, f, c)


def test_core_mesh_fields_fill_everything_core_reads():
    box = _box()
    m = geometry.make_mesh(box)
    for a in ("vertices", "faces", "uvs", "vertex_colors", "normals", "texture",
              "metallic_roughness", "vertex_counts", "face_counts", "unlit", "tangents",
              "normal_map", "occlusion_in_mr", "material", "emissive"):
        assert hasattr(m, a), a
    assert m.vertices.shape == (1, 8, 3) and m.faces.shape == (1, 12, 3)
    assert m.normals.shape == (1, 8, 3)
    torch.testing.assert_close(m.normals.norm(dim=-1), torch.ones(1, 8))
    # box corner normals point away from the centre
    assert ((m.normals[0] * m.vertices[0]).sum(-1) > 0).all()
    # linear colours (glTF COLOR_0), back to the same sRGB
    torch.testing.assert_close(m.vertex_colors, srgb_to_linear(box.vertex_colors))
    (back,) = mesh_items(m)
    torch.testing.assert_close(back.vertex_colors, box.vertex_colors, atol=1e-5, rtol=0)
    torch.testing.assert_close(back.vertices, box.vertices)
    assert torch.equal(back.faces, box.faces)


def test_srgb_transfer_round_trip():
    x = torch.linspace(0, 1, 101)
    torch.testing.assert_close(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-6, rtol=0)
    assert float(srgb_to_linear(torch.tensor(0.5))) == pytest.approx(0.214, abs=1e-3)


def _padded_batch():
    """A core-style padded batch: an 8-vertex box and a 42-vertex icosphere-ish mesh."""
    import trimesh

    box = _box()
    sph = trimesh.creation.icosphere(subdivisions=1, radius=0.3)  # 42 vertices, 80 faces
    vs = [box.vertices[0], torch.as_tensor(sph.vertices, dtype=torch.float32)]
    fs = [box.faces[0], torch.as_tensor(sph.faces, dtype=torch.int64)]
    n, m = max(len(v) for v in vs), max(len(f) for f in fs)
    V = torch.zeros(2, n, 3)
    F = torch.zeros(2, m, 3, dtype=torch.int64)
    C = torch.zeros(2, n, 4)
    for i, (v, f) in enumerate(zip(vs, fs)):
        V[i, :len(v)], F[i, :len(f)], C[i, :len(v)] = v, f, torch.tensor([0.2, 0.4, 0.6, 1.0])
    return geometry.Mesh(V, F, vertex_colors=C, vertex_counts=torch.tensor([8, 42]),
                         face_counts=torch.tensor([12, 80]))


def test_padded_core_batch_is_sliced_and_rgba_kept_as_rgb():
    items = mesh_items(_padded_batch(), "mesh")
    assert [(x.vertices.shape[1], x.faces.shape[1]) for x in items] == [(8, 12), (42, 80)]
    assert items[0].vertex_colors.shape == (1, 8, 3)
    torch.testing.assert_close(items[0].vertex_colors[0, 0],
                               linear_to_srgb(torch.tensor([0.2, 0.4, 0.6])))


def test_textured_core_mesh_keeps_uvs_texture_and_pbr():
    box = _box(colors=False)
    uvs = torch.rand(1, 8, 2)
    tex = torch.rand(1, 16, 16, 3)
    mr = torch.rand(1, 16, 16, 3)
    m = geometry.Mesh(box.vertices, box.faces, uvs=uvs, texture=tex, metallic_roughness=mr)
    (cm,) = mesh_items(m)
    torch.testing.assert_close(cm.uv, uvs)
    torch.testing.assert_close(cm.texture, tex)
    torch.testing.assert_close(cm.pbr["metallic_roughness"], mr)
    out = core_mesh_fields(cm)
    torch.testing.assert_close(out["uvs"], uvs)
    torch.testing.assert_close(out["metallic_roughness"], mr)


@pytest.mark.parametrize("breakage, message", [
    ("counts", "exceed the padded size"), ("faces", "faces indexing vertex 8"),
    ("one_count", "only one of vertex_counts"), ("tex_no_uv", "texture but no uvs"),
    ("nan", "NaN"),
])
def test_bad_mesh_is_refused_naming_the_input(breakage, message):
    box = _box()
    kw = {}
    v, f = box.vertices.clone(), box.faces.clone()
    if breakage == "counts":
        kw = {"vertex_counts": torch.tensor([9]), "face_counts": torch.tensor([12])}
    elif breakage == "faces":
        f[0, 3, 1] = 8
    elif breakage == "tex_no_uv":
        kw = {"texture": torch.rand(1, 4, 4, 3)}
    elif breakage == "nan":
        v[0, 2, 0] = float("nan")
    m = geometry.Mesh(v, f, **kw)
    if breakage == "one_count":
        m.vertex_counts = torch.tensor([8])
    with pytest.raises(ValueError, match=message) as e:
        mesh_items(m, "mesh")
    assert str(e.value).startswith("mesh")


# -- nodes ---------------------------------------------------------------------------------------

@pytest.fixture
def out_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ORBITFORGE_OUTPUT", str(tmp_path))
    return tmp_path


def test_save_mesh_saves_each_padded_item_with_its_own_counts(out_dir):
    import trimesh

    from orbitforge.nodes.mesh import SaveMesh

    res = SaveMesh().save(_padded_batch(), "t/mesh", "ply")
    files = [r["filename"] for r in res["ui"]["3d"]]
    assert len(files) == 2
    counts = []
    for name in files:
        tm = trimesh.load(os.path.join(out_dir, "t", name), process=False)
        counts.append((len(tm.vertices), len(tm.faces)))
    assert counts == [(8, 12), (42, 80)]
    path, f3d = res["result"]
    assert path == f"t/{files[0]}"
    assert f3d.format == "ply" and f3d.get_bytes()[:3] == b"ply"


def test_mesh_turntable_refuses_a_batch_naming_the_input():
    from orbitforge.nodes.mesh import MeshTurntable

    with pytest.raises(ValueError, match="mesh holds a batch of 2 meshes"):
        MeshTurntable().render(_padded_batch(), 1, 15.0, 32, 2.0, 40.0)


def test_save_gaussians_writes_the_3dgs_frame_and_load_reads_it_back(out_dir):
    from orbitforge.kernels.splat.ply import read_ply
    from orbitforge.nodes.gaussians import LoadGaussians, SaveGaussians

    g = _scene(degree=1)
    s = geometry.make_splat(g)
    res = SaveGaussians().save(s, "t/splat")
    rel, f3d = res["result"]
    assert f3d.format == "ply"
    on_disk = read_ply(os.path.join(out_dir, rel))
    # the file holds the splat frame, i.e. exactly the SPLAT's fields
    torch.testing.assert_close(on_disk.means, s.positions[0])
    torch.testing.assert_close(on_disk.sh, s.sh[0])
    (loaded,) = LoadGaussians().load(rel)
    back = geometry.read_splat(loaded, "gaussians")
    torch.testing.assert_close(back.means, g.means)
    torch.testing.assert_close(back.sh, g.sh)
    # an OrbitForge 0.1 file (y-up) read with file_frame y-up gives the same scene
    from orbitforge.kernels.splat.ply import write_ply

    write_ply(os.path.join(out_dir, "old.ply"), g)
    (old,) = LoadGaussians().load("old.ply", "y-up")
    torch.testing.assert_close(geometry.read_splat(old, "gaussians").means, g.means)


def test_gaussian_render_takes_a_splat_and_matches_the_scene():
    from orbitforge.nodes.gaussians import GaussianRender

    g = _scene(degree=1)
    cams = make_orbit_cameras([15.0], [40.0], 2.0, 40.0, 32, 32)
    img, alpha, _ = GaussianRender().render(geometry.make_splat(g), cams, "median", "1, 1, 1")
    ref, _, _, _ = render_gaussians(g, cams, (1.0, 1.0, 1.0))
    torch.testing.assert_close(img, ref, atol=1e-4, rtol=0)
    assert math.isfinite(float(alpha.sum()))


def test_ply_matches_core_ply_layout_for_the_same_splat(out_dir):
    """The bytes core's SplatToFile3D writes for a SPLAT and what Save Gaussians writes carry the
    same numbers (same property order; core normalises quaternions, which the file allows)."""
    from orbitforge.nodes.gaussians import SaveGaussians

    s = geometry.make_splat(_scene(n=5, degree=1))
    rel, _ = SaveGaussians().save(s, "t/cmp")["result"]
    data = open(os.path.join(out_dir, rel), "rb").read()
    body = data[data.index(b"end_header\n") + 11:]
    arr = np.frombuffer(body, "<f4").reshape(5, -1)
    np.testing.assert_allclose(arr[:, :3], s.positions[0].numpy(), atol=0)
    np.testing.assert_allclose(arr[:, 6:9], s.sh[0, :, 0].numpy(), atol=0)


# -- GLB colours (glTF COLOR_0 is linear) ---------------------------------------------------------

def _glb_colour_accessor(data: bytes) -> tuple[dict, np.ndarray]:
    """The COLOR_0 accessor of a one-primitive GLB and its values as stored."""
    from orbitforge.kernels.mesh.gltf import glb_chunks

    js, binary = glb_chunks(data)
    (prim,) = js["meshes"][0]["primitives"]
    acc = js["accessors"][prim["attributes"]["COLOR_0"]]
    view = js["bufferViews"][acc["bufferView"]]
    assert acc["componentType"] == 5126 and acc["type"] == "VEC3"
    vals = np.frombuffer(binary, "<f4", acc["count"] * 3,
                         view.get("byteOffset", 0) + acc.get("byteOffset", 0))
    return js, vals.reshape(-1, 3)


def test_save_mesh_glb_writes_linear_colours_and_load_mesh_reads_srgb(out_dir):
    from orbitforge.kernels.mesh.render import load_mesh
    from orbitforge.nodes.mesh import SaveMesh

    box = _box()
    # 8-bit sRGB colours incl. the darkest shades, where 8-bit linear would lose them
    c = torch.randint(0, 256, (8, 3), generator=torch.Generator().manual_seed(2)).float() / 255
    c[0], c[1] = torch.tensor([0.0, 1 / 255, 2 / 255]), torch.tensor([3 / 255, 5 / 255, 1.0])
    box.vertex_colors = c[None]
    rel, _ = SaveMesh().save(geometry.make_mesh(box), "t/lin", "glb")["result"]
    data = open(os.path.join(out_dir, rel), "rb").read()
    js, stored = _glb_colour_accessor(data)
    np.testing.assert_allclose(stored, srgb_to_linear(c).numpy(), atol=1e-6)
    # a matte material: glTF's default one is fully metallic
    (mat,) = js["materials"]
    assert mat["pbrMetallicRoughness"]["metallicFactor"] == 0.0
    assert "NORMAL" in js["meshes"][0]["primitives"][0]["attributes"]
    # our loader gives back the same 8-bit sRGB colours, darks included
    tm = load_mesh(os.path.join(out_dir, rel))
    assert tm.visual.kind == "vertex"
    got = np.asarray(tm.visual.vertex_colors)[:, :3].astype(int)
    assert np.array_equal(got, np.round(c.numpy() * 255).astype(int))
    (back,) = geometry.read_mesh(geometry.make_mesh(ColoredMesh.from_trimesh(tm)), "mesh")
    torch.testing.assert_close(back.vertex_colors[0], c, atol=1e-5, rtol=0)


def test_load_mesh_reads_byte_colours_of_other_writers_as_linear(tmp_path):
    """A GLB with normalised unsigned-byte COLOR_0 (as trimesh writes): the bytes mean linear
    values, so the loader's sRGB colours are brighter than the bytes."""
    import trimesh

    from orbitforge.kernels.mesh.gltf import glb_vertex_colors
    from orbitforge.kernels.mesh.render import load_mesh

    tm = trimesh.creation.box()
    byte = np.tile(np.array([[64, 128, 255, 255]], np.uint8), (len(tm.vertices), 1))
    tm.visual = trimesh.visual.ColorVisuals(tm, vertex_colors=byte)
    p = tmp_path / "u8.glb"
    p.write_bytes(tm.export(file_type="glb"))
    lin = glb_vertex_colors(p.read_bytes())
    np.testing.assert_allclose(lin[:, :3], np.tile([64 / 255, 128 / 255, 1.0], (len(lin), 1)))
    got = np.asarray(load_mesh(str(p)).visual.vertex_colors)[0, :3]
    want = np.round(linear_to_srgb(torch.tensor([64 / 255, 128 / 255, 1.0])).numpy() * 255)
    assert np.array_equal(got, want)


def test_textured_glb_keeps_the_texture_and_writes_no_colours(out_dir):
    from orbitforge.kernels.mesh.gltf import glb_chunks
    from orbitforge.kernels.mesh.render import load_mesh
    from orbitforge.nodes.mesh import SaveMesh

    box = _box(colors=False)
    m = geometry.Mesh(box.vertices, box.faces, uvs=torch.rand(1, 8, 2),
                      texture=torch.rand(1, 16, 16, 3))
    rel, _ = SaveMesh().save(m, "t/tex", "glb")["result"]
    data = open(os.path.join(out_dir, rel), "rb").read()
    js, _ = glb_chunks(data)
    attrs = js["meshes"][0]["primitives"][0]["attributes"]
    assert "COLOR_0" not in attrs and "TEXCOORD_0" in attrs
    assert load_mesh(os.path.join(out_dir, rel)).visual.kind == "texture"


# -- bad input at the nodes ----------------------------------------------------------------------

def _bad_splat(kind: str):
    return geometry.Splat(**_broken_splat_fields(kind))


def _bad_mesh(kind: str):
    box = _box()
    if kind == "batch":
        return _padded_batch()
    v, f, kw = box.vertices.clone(), box.faces.clone(), {}
    if kind == "counts":
        kw = {"vertex_counts": torch.tensor([8]), "face_counts": torch.tensor([13])}
    elif kind == "faces":
        f[0, 5, 2] = 11
    return geometry.Mesh(v, f, vertex_colors=srgb_to_linear(box.vertex_colors), **kw)


def _run_splat_node(node: str, s):
    from orbitforge.nodes.gaussians import GaussianRender, SaveGaussians
    from orbitforge.nodes.mesh import SDFMesh

    cams = make_orbit_cameras([0.0], [0.0], 2.0, 40.0, 16, 16)
    if node == "GaussianRender":
        return GaussianRender().render(s, cams, "median", "1, 1, 1")
    if node == "SaveGaussians":
        return SaveGaussians().save(s, "bad/splat")
    return SDFMesh().build(cams, 16, "fast", 1, True, 100, 0, "vertex", 64,
                           depth_source="gaussians", gaussians=s, polish_steps=0)


def _run_mesh_node(node: str, m):
    from orbitforge.nodes.mesh import MeshTurntable, SaveMesh

    if node == "SaveMesh":
        return SaveMesh().save(m, "bad/mesh", "glb")
    return MeshTurntable().render(m, 1, 15.0, 16, 2.0, 40.0)


@pytest.mark.parametrize("node", ["GaussianRender", "SaveGaussians", "SDFMesh"])
@pytest.mark.parametrize("kind, message", [
    ("nan", "NaN"), ("zero_scale", "must be positive"), ("neg_scale", "must be positive"),
    ("batch", "holds a batch of 2"),
])
def test_bad_splat_input_is_refused_by_each_node_before_work(node, kind, message, out_dir):
    with pytest.raises(ValueError, match=message) as e:
        _run_splat_node(node, _bad_splat(kind))
    assert str(e.value).startswith("gaussians")
    assert not any(out_dir.rglob("*.*"))  # nothing written


@pytest.mark.parametrize("node, kind, message", [
    (node, kind, message) for node in ("SaveMesh", "MeshTurntable")
    for kind, message in (("counts", "exceed the padded size"),
                          ("faces", "faces indexing vertex 11"), ("batch", "holds a batch of 2"))
    if not (node == "SaveMesh" and kind == "batch")  # Save Mesh takes batches: a file per item
])
def test_bad_mesh_input_is_refused_by_each_node_before_work(node, kind, message, out_dir):
    with pytest.raises(ValueError, match=message) as e:
        _run_mesh_node(node, _bad_mesh(kind))
    assert str(e.value).startswith("mesh")
    assert not any(out_dir.rglob("*.*"))
