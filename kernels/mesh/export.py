"""Mesh files: the one place that writes a :class:`.types.ColoredMesh` as GLB, OBJ or PLY.

* GLB -- one file, vertex colours (linear ``COLOR_0``, as glTF 2.0 defines vertex colours) or
  the baked texture embedded, PBR maps of a core MESH kept
  (metallic-roughness, normal, emissive on the glTF material);
* OBJ -- ``.obj`` + ``.mtl`` + ``.png`` when textured (``trimesh.exchange.obj.export_obj``), vertex
  colours as the common ``v x y z r g b`` extension otherwise;
* PLY -- vertex colours (a texture is baked to vertex colours: PLY has none).
"""

from __future__ import annotations

import os

import torch

from ..atomic import atomic_write_all
from .types import ColoredMesh

MESH_FORMATS = ("glb", "obj", "ply")


def check_mesh_format(fmt: str, what: str = "format") -> str:
    """``fmt`` (case-insensitive, leading dot allowed) as one of :data:`MESH_FORMATS`."""
    f = str(fmt).lower().lstrip(".")
    if f not in MESH_FORMATS:
        raise ValueError(f"{what} must be one of {list(MESH_FORMATS)}, got {fmt!r}")
    return f


def _attach_pbr(tm, pbr) -> None:
    """PBR maps of a core MESH (metallic-roughness, normal, emissive ``[1, H, W, 3]``) onto the
    trimesh material of a textured mesh, so a GLB keeps them."""
    mat = getattr(getattr(tm, "visual", None), "material", None)
    if not pbr or mat is None or not hasattr(mat, "metallicRoughnessTexture"):
        return
    from PIL import Image

    def img(t):
        a = (t[0, ..., :3].detach().cpu().float().clamp(0, 1).numpy() * 255).round()
        return Image.fromarray(a.astype("uint8"))

    for key, attr in (("metallic_roughness", "metallicRoughnessTexture"),
                      ("normal_map", "normalTexture"), ("emissive", "emissiveTexture")):
        t = pbr.get(key)
        if isinstance(t, torch.Tensor) and t.ndim == 4:
            setattr(mat, attr, img(t))
    if "metallic_roughness" in pbr:
        mat.metallicFactor, mat.roughnessFactor = 1.0, 1.0
    if "emissive" in pbr:
        mat.emissiveFactor = [1.0, 1.0, 1.0]


def export_mesh_bytes(mesh: ColoredMesh, fmt: str, stem: str) -> dict:
    """``{filename: bytes}`` for batch item 0 of ``mesh`` in ``fmt``: the mesh file first (a
    textured OBJ adds its MTL and PNG)."""
    fmt = check_mesh_format(fmt)
    pbr = getattr(mesh, "pbr", None)
    if fmt == "glb":  # vertex colours as linear COLOR_0, as glTF defines them (and core writes)
        from .core_mesh import glb_bytes

        return {f"{stem}.glb": glb_bytes(mesh, 0, prepare=lambda t: _attach_pbr(t, pbr))}
    tm = mesh.to_trimesh(0)
    _attach_pbr(tm, pbr)
    if fmt == "ply":
        if mesh.texture is not None:  # PLY has no texture: bake the texture to vertex colours
            tm.visual = tm.visual.to_color()
        return {f"{stem}.ply": tm.export(file_type="ply")}
    from trimesh.exchange.obj import export_obj

    if mesh.texture is not None:
        text, files = export_obj(tm, include_texture=True, return_texture=True,
                                 mtl_name=f"{stem}.mtl")
        out = {f"{stem}.obj": text.encode()}
        for name, data in files.items():
            out[name] = data
        return out
    return {f"{stem}.obj": export_obj(tm, include_color=True).encode()}


def write_mesh(mesh: ColoredMesh, path: str) -> str:
    """Write ``mesh`` to ``path`` (format from its extension) and its companion files beside it,
    all atomically and together; returns ``path``."""
    fmt = check_mesh_format(os.path.splitext(path)[1], f"the extension of {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    stem = os.path.splitext(os.path.basename(path))[0]
    files = export_mesh_bytes(mesh, fmt, stem)
    atomic_write_all([(os.path.join(folder, name), data) for name, data in files.items()])
    return path
