"""ComfyUI's own 3D value classes (``MESH``, ``SPLAT``, ``File3D``), or host-free stand-ins.

Since ComfyUI v0.33 ``comfy_api.latest._util.geometry_types`` defines ``MESH`` (vertices, faces,
uvs, vertex colours, textures, PBR maps, padded batches with ``vertex_counts``/``face_counts``),
``SPLAT`` (activated Gaussians in the 3DGS splat frame, padded batches with ``counts``) and
``File3D`` (a 3D file on disk or in memory). Core nodes read those attributes directly, so the
pack's outputs are instances of those classes whenever the host has them. Elsewhere (older hosts,
tests, scripts) the classes below stand in: same constructor, same attributes, same defaults.

The conversions themselves (frame map, SH rotation, padded-batch slicing, checks) are host-free
maths in :mod:`...kernels.splat.frame` and :mod:`...kernels.mesh.core_mesh`.
"""

from __future__ import annotations

import os
import shutil
from io import BytesIO


def _host_class(name: str):
    try:
        from comfy_api.latest import _util  # noqa: PLC0415 - lazy host import by design

        return getattr(_util, name, None)
    except Exception:  # ComfyUI absent, or older than v0.33
        return None


class Mesh:
    """Stand-in for ComfyUI's ``MESH`` (same constructor and attributes)."""

    def __init__(self, vertices, faces, uvs=None, vertex_colors=None, texture=None,
                 metallic_roughness=None, vertex_counts=None, face_counts=None, unlit=False,
                 normals=None, tangents=None, normal_map=None, occlusion_in_mr=False,
                 material=None, emissive=None):
        if (vertex_counts is None) != (face_counts is None):
            raise ValueError("vertex_counts and face_counts must be given together")
        self.vertices = vertices  # [B, N, 3]
        self.faces = faces  # [B, M, 3]
        self.uvs = uvs  # [B, N, 2]
        self.vertex_colors = vertex_colors  # [B, N, 3|4]
        self.normals = normals  # [B, N, 3]
        self.texture = texture  # [B, H, W, 3]
        self.metallic_roughness = metallic_roughness  # [B, H, W, 3]
        self.vertex_counts = vertex_counts  # [B] or None
        self.face_counts = face_counts  # [B] or None
        self.unlit = unlit
        self.tangents = tangents  # [B, N, 4]
        self.normal_map = normal_map  # [B, H, W, 3]
        self.occlusion_in_mr = occlusion_in_mr
        self.material = material
        self.emissive = emissive  # [B, H, W, 3]

    def __repr__(self) -> str:
        return (f"MESH(batch={self.vertices.shape[0]}, vertices={self.vertices.shape[1]}, "
                f"faces={self.faces.shape[1]})")


class Splat:
    """Stand-in for ComfyUI's ``SPLAT`` (same constructor and attributes)."""

    def __init__(self, positions, scales, rotations, opacities, sh, counts=None):
        self.positions = positions  # [B, N, 3] splat frame (y-down)
        self.scales = scales  # [B, N, 3] linear
        self.rotations = rotations  # [B, N, 4] wxyz, normalised
        self.opacities = opacities  # [B, N, 1] in [0, 1]
        self.sh = sh  # [B, N, K, 3]
        self.counts = counts  # [B] or None

    def __repr__(self) -> str:
        return (f"SPLAT(batch={self.positions.shape[0]}, gaussians={self.positions.shape[1]}, "
                f"sh_coeffs={self.sh.shape[2]})")


class File3D:
    """Stand-in for ComfyUI's ``File3D``: a 3D file on disk (path) or in memory (bytes)."""

    def __init__(self, source, file_format: str = ""):
        self._source = source
        if not file_format and isinstance(source, str):
            file_format = os.path.splitext(source)[1]
        self._format = file_format.lstrip(".").lower()

    @property
    def format(self) -> str:
        return self._format

    @property
    def is_disk_backed(self) -> bool:
        return isinstance(self._source, str)

    def get_source(self):
        if not isinstance(self._source, str) and hasattr(self._source, "seek"):
            self._source.seek(0)
        return self._source

    def get_bytes(self) -> bytes:
        if isinstance(self._source, str):
            with open(self._source, "rb") as f:
                return f.read()
        self._source.seek(0)
        return self._source.read()

    def get_data(self) -> BytesIO:
        return BytesIO(self.get_bytes())

    def save_to(self, path: str) -> str:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if isinstance(self._source, str):
            if os.path.abspath(self._source) != os.path.abspath(path):
                shutil.copy2(self._source, path)
        else:
            with open(path, "wb") as f:
                f.write(self.get_bytes())
        return path

    def __repr__(self) -> str:
        return f"File3D({self._source!r}, format={self._format!r})"


def mesh_class():
    """The host's ``MESH`` class (ComfyUI >= v0.33), else :class:`Mesh`."""
    return _host_class("MESH") or Mesh


def splat_class():
    """The host's ``SPLAT`` class (ComfyUI >= v0.33), else :class:`Splat`."""
    return _host_class("SPLAT") or Splat


def file3d_class():
    """The host's ``File3D`` class (ComfyUI >= v0.33), else :class:`File3D`."""
    return _host_class("File3D") or File3D


# -- OrbitForge values <-> core values ----------------------------------------------------------

def make_splat(gaussians):
    """:class:`Gaussians` (OrbitForge frame) -> a ``SPLAT`` (batch 1, splat frame)."""
    from ...kernels.splat.frame import gaussians_to_splat_fields  # noqa: PLC0415

    f = gaussians_to_splat_fields(gaussians.detach())
    return splat_class()(f["positions"], f["scales"], f["rotations"], f["opacities"], f["sh"])


def read_splat(value, input_name: str, single: bool = True):
    """Any ``SPLAT`` (core or ours; an OrbitForge :class:`Gaussians` passes as is) -> Gaussians in
    OrbitForge's frame: one scene if ``single`` (a batch is refused, naming ``input_name``), else
    a list."""
    from ...kernels.splat.frame import splat_fields_to_gaussians  # noqa: PLC0415
    from ...kernels.splat.gaussians import Gaussians  # noqa: PLC0415

    if isinstance(value, Gaussians):
        items = [value]
    else:
        need = ("positions", "scales", "rotations", "opacities", "sh")
        if not all(hasattr(value, a) for a in need):
            raise ValueError(f"{input_name} must be a SPLAT (3D Gaussians, e.g. from Gaussian "
                             f"Reconstruct or Get Splat), got {type(value).__name__}")
        items = splat_fields_to_gaussians(value.positions, value.scales, value.rotations,
                                          value.opacities, value.sh,
                                          getattr(value, "counts", None), name=input_name)
    if not single:
        return items
    if len(items) != 1:
        raise ValueError(f"{input_name} holds a batch of {len(items)} splats; this input takes "
                         "one scene: connect a single splat")
    return items[0]


def make_mesh(colored):
    """:class:`ColoredMesh` -> a ``MESH`` with every field core reads filled (vertex colours,
    per-vertex normals, uvs + texture when baked)."""
    from ...kernels.mesh.core_mesh import core_mesh_fields  # noqa: PLC0415

    return mesh_class()(**core_mesh_fields(colored))


def read_mesh(value, input_name: str, single: bool = False):
    """Any ``MESH`` (core, padded batch, RGBA colours, uvs + texture, PBR maps; or ours) -> list
    of :class:`ColoredMesh` with batch 1 (one item if ``single``; a batch is then refused)."""
    from ...kernels.mesh.core_mesh import mesh_items  # noqa: PLC0415

    items = mesh_items(value, input_name)
    if single and len(items) != 1:
        raise ValueError(f"{input_name} holds a batch of {len(items)} meshes; this input takes "
                         "one mesh: connect a single mesh")
    return items


def make_file3d(path: str):
    """A disk-backed ``File3D`` for a file the pack wrote (format from the extension)."""
    return file3d_class()(path, os.path.splitext(path)[1].lstrip(".").lower())

