"""OrbitForge meshes <-> the fields of ComfyUI's ``MESH`` (host-free; the classes live in the host
layer).

ComfyUI's ``MESH`` (v0.33, ``comfy_api/latest/_util/geometry_types.py``) holds a batch:
vertices ``[B, N, 3]``, faces ``[B, M, 3]``, optional ``uvs [B, N, 2]``, ``vertex_colors
[B, N, 3|4]``, ``normals [B, N, 3]``, ``texture [B, H, W, 3]``, PBR maps (``metallic_roughness``,
``normal_map``, ``emissive`` ``[B, H, W, 3]``, ``tangents [B, N, 4]``, ``material``, ``unlit``,
``occlusion_in_mr``), and for zero-padded batches of different sizes ``vertex_counts`` /
``face_counts`` ``[B]``. Both frames are y-up (glTF), so vertices pass unchanged.

Colours: core ``SaveGLB`` writes ``vertex_colors`` as glTF ``COLOR_0``, which glTF defines as
linear, and core producers (e.g. ``SplatToMesh``) store linear values; OrbitForge's
:class:`.types.ColoredMesh` keeps display (sRGB) values like the views they come from. The
conversion applies the sRGB transfer function (IEC 61966-2-1) each way. Textures are images and
stay sRGB in both (glTF baseColorTexture is sRGB). The same holds for GLB files:
:func:`.gltf.glb_add_vertex_colors` writes linear ``COLOR_0`` (as core ``SaveGLB`` does: float32
VEC3) and :func:`.gltf.glb_vertex_colors` reads it back for the loader, which returns sRGB.
"""

from __future__ import annotations

import numpy as np
import torch

from .gltf import glb_add_vertex_colors, linear_to_srgb, srgb_to_linear
from .types import ColoredMesh

PBR_FIELDS = ("metallic_roughness", "normal_map", "emissive", "tangents", "material", "unlit",
              "occlusion_in_mr")


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals ``[N, 3]`` (UV-seam copies of a vertex share one)."""
    import trimesh

    from .render import smooth_vertex_normals

    tm = trimesh.Trimesh(vertices.detach().cpu().double().numpy(),
                         faces.detach().cpu().long().numpy(), process=False)
    n = smooth_vertex_normals(tm)
    return torch.as_tensor(np.asarray(n), dtype=vertices.dtype, device=vertices.device)


def core_mesh_fields(mesh: ColoredMesh) -> dict:
    """Keyword arguments for ``MESH(...)`` from one OrbitForge mesh (batch 1): vertices, faces,
    linear vertex colours, normals, uvs + texture when baked, and any PBR fields it carries."""
    v = mesh.vertices.float()
    f = mesh.faces.long()
    fields = {"vertices": v, "faces": f, "uvs": mesh.uv, "texture": mesh.texture,
              "vertex_colors": None if mesh.vertex_colors is None else
              srgb_to_linear(mesh.vertex_colors.float()),
              "normals": torch.stack([vertex_normals(v[b], f[b]) for b in range(v.shape[0])])}
    extras = getattr(mesh, "pbr", None) or {}
    for k in PBR_FIELDS:
        if k in extras:
            fields[k] = extras[k]
    return fields


def glb_bytes(mesh: ColoredMesh, index: int = 0, prepare=None) -> bytes:
    """One item of an OrbitForge mesh as GLB bytes, with the vertex normals of
    :func:`vertex_normals` (the ones its ``MESH`` carries): a texture goes in as the sRGB
    ``baseColorTexture``, vertex colours as linear ``COLOR_0``
    (:func:`.gltf.glb_add_vertex_colors`).
    ``prepare(trimesh)`` may edit the mesh (e.g. add PBR maps) before it is written."""
    colored = mesh.texture is None and mesh.vertex_colors is not None
    src = ColoredMesh(mesh.vertices[index:index + 1], mesh.faces[index:index + 1]) if colored \
        else mesh
    tm = src.to_trimesh(0 if colored else index)
    tm.vertex_normals = vertex_normals(mesh.vertices[index].float(),
                                       mesh.faces[index].long()).double().numpy()
    if prepare is not None:
        prepare(tm)
    data = tm.export(file_type="glb", include_normals=True)
    return glb_add_vertex_colors(data, mesh.vertex_colors[index]) if colored else data


def mesh_items(value, name: str = "mesh") -> list:
    """Any MESH value -> a list of :class:`ColoredMesh` (batch 1 each, sRGB colours).

    Accepts OrbitForge meshes and core ``MESH``: padded batches are sliced by ``vertex_counts`` /
    ``face_counts``; RGBA colours keep RGB; linear colours become sRGB; uvs + texture stay
    together (uvs without a texture are dropped, a texture without uvs is refused); PBR maps ride
    along in ``.pbr``. ``ValueError`` naming ``name`` for counts beyond the padded size, faces
    indexing past the vertices, non-finite vertices or wrong shapes."""
    if not hasattr(value, "vertices") or not hasattr(value, "faces"):
        raise ValueError(f"{name} must be a MESH (with .vertices and .faces), got "
                         f"{type(value).__name__}")
    ours = isinstance(value, ColoredMesh)
    v, f = value.vertices, value.faces
    if not isinstance(v, torch.Tensor) or not isinstance(f, torch.Tensor):
        raise ValueError(f"{name}: MESH vertices/faces must be tensors, got "
                         f"{type(v).__name__}/{type(f).__name__}")
    if v.ndim == 2:
        v, f = v[None], f[None]
    if v.ndim != 3 or v.shape[-1] != 3 or f.ndim != 3 or f.shape[-1] != 3 \
            or f.shape[0] != v.shape[0]:
        raise ValueError(f"{name}: MESH vertices must be [B, N, 3] and faces [B, M, 3], got "
                         f"{list(v.shape)} and {list(f.shape)}")
    b, n, m = v.shape[0], v.shape[1], f.shape[1]

    def batched(attr, alias=None):
        t = getattr(value, attr, None)
        if t is None and alias:
            t = getattr(value, alias, None)
        if t is not None and t.ndim in (2, 3) and attr in ("vertex_colors", "uvs", "normals"):
            t = t if t.ndim == 3 else t[None]
        return t

    vc = batched("vertex_colors")
    uv = batched("uv" if ours else "uvs", "uvs" if ours else "uv")
    tex = getattr(value, "texture", None)
    if tex is not None and tex.ndim == 3:
        tex = tex[None]
    vcount, fcount = getattr(value, "vertex_counts", None), getattr(value, "face_counts", None)
    if (vcount is None) != (fcount is None):
        raise ValueError(f"{name}: MESH has only one of vertex_counts / face_counts; give both "
                         "or neither")
    if vcount is not None:
        vcount = [int(x) for x in torch.as_tensor(vcount).reshape(-1).tolist()]
        fcount = [int(x) for x in torch.as_tensor(fcount).reshape(-1).tolist()]
        if len(vcount) != b or len(fcount) != b:
            raise ValueError(f"{name}: MESH counts have {len(vcount)}/{len(fcount)} entries for "
                             f"a batch of {b}")
        if any(not 0 <= c <= n for c in vcount) or any(not 0 <= c <= m for c in fcount):
            raise ValueError(f"{name}: MESH vertex_counts {vcount} / face_counts {fcount} exceed "
                             f"the padded size ({n} vertices, {m} faces); the mesh is malformed")
    else:
        vcount, fcount = [n] * b, [m] * b
    for attr, t, cols in (("vertex_colors", vc, (3, 4)), ("uvs", uv, (2,))):
        if t is not None and (t.shape[0] != b or t.shape[1] != n or t.shape[2] not in cols):
            raise ValueError(f"{name}: MESH {attr} must be [{b}, {n}, {'|'.join(map(str, cols))}]"
                             f", got {list(t.shape)}")
    if tex is not None and uv is None:
        raise ValueError(f"{name}: MESH has a texture but no uvs; it cannot be mapped")
    if tex is not None and (tex.ndim != 4 or tex.shape[-1] < 3):
        raise ValueError(f"{name}: MESH texture must be [B, H, W, 3], got {list(tex.shape)}")

    extras = {}
    if ours:
        extras = dict(getattr(value, "pbr", None) or {})
    else:
        for k in PBR_FIELDS:
            x = getattr(value, k, None)
            if x is not None and x is not False:
                extras[k] = x
    out = []
    for i in range(b):
        vi, fi = v[i, :vcount[i]].float(), f[i, :fcount[i]].long()
        if not torch.isfinite(vi).all():
            raise ValueError(f"{name}: MESH item {i} has NaN/inf vertices")
        if fi.numel() and (int(fi.min()) < 0 or int(fi.max()) >= vcount[i]):
            raise ValueError(f"{name}: MESH item {i} has faces indexing vertex {int(fi.max())} "
                             f"but only {vcount[i]} vertices; the mesh is malformed")
        ci = None
        if vc is not None:
            ci = vc[i, :vcount[i], :3].float()
            ci = ci.clamp(0, 1) if ours else linear_to_srgb(ci)
        ui = ti = None
        if uv is not None and tex is not None:
            ui = uv[i, :vcount[i]].float()
            ti = tex[min(i, tex.shape[0] - 1), ..., :3].float()
        cm = ColoredMesh(vi, fi, ci, ui, ti)
        if extras:
            cm.pbr = {k: (x[min(i, x.shape[0] - 1)][None] if isinstance(x, torch.Tensor)
                          and x.ndim == 4 else
                          x[i, :vcount[i]][None] if isinstance(x, torch.Tensor) and x.ndim == 3
                          else x) for k, x in extras.items()}
        out.append(cm)
    return out
