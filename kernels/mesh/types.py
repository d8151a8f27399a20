"""``ColoredMesh``: OrbitForge's mesh inside its kernels and nodes.

Between nodes meshes travel as ComfyUI's ``MESH`` (``kernels/mesh/core_mesh.py`` converts both ways;
``nodes/host/geometry.py`` picks the host's class). ``ColoredMesh`` has ``.vertices`` ``[B, N, 3]``
and ``.faces`` ``[B, M, 3]`` like it (B = 1 for everything OrbitForge makes), plus optional extras:

* ``vertex_colors`` ``[B, N, 3]`` float 0..1 (linear-free sRGB, as the views);
* ``uv`` ``[B, N, 2]`` per-vertex texture coordinates (vertices are split along UV seams) and
  ``texture`` ``[B, T, T, 3]`` float 0..1 (row 0 is the top of the image, OpenGL-style ``v``
  grows upwards, as glTF/trimesh expect after their flip).

Vertices are in the OrbitForge world frame (y-up, object at the origin, unit box).
"""

from __future__ import annotations

import numpy as np
import torch


class ColoredMesh:
    """Batched triangle mesh with optional vertex colours / UV texture (see module doc)."""

    def __init__(self, vertices: torch.Tensor, faces: torch.Tensor,
                 vertex_colors: torch.Tensor | None = None, uv: torch.Tensor | None = None,
                 texture: torch.Tensor | None = None):
        if vertices.ndim == 2:
            vertices = vertices[None]
        if faces.ndim == 2:
            faces = faces[None]
        if vertex_colors is not None and vertex_colors.ndim == 2:
            vertex_colors = vertex_colors[None]
        if uv is not None and uv.ndim == 2:
            uv = uv[None]
        if texture is not None and texture.ndim == 3:
            texture = texture[None]
        if vertices.ndim != 3 or vertices.shape[-1] != 3:
            raise ValueError(f"vertices must be [B, N, 3], got {tuple(vertices.shape)}")
        if faces.ndim != 3 or faces.shape[-1] != 3 or faces.shape[0] != vertices.shape[0]:
            raise ValueError(f"faces must be [B, M, 3] with B = {vertices.shape[0]}, got "
                             f"{tuple(faces.shape)}")
        n = vertices.shape[1]
        if vertex_colors is not None and vertex_colors.shape != (vertices.shape[0], n, 3):
            raise ValueError(f"vertex_colors must be [B, {n}, 3], got {tuple(vertex_colors.shape)}")
        if uv is not None and uv.shape != (vertices.shape[0], n, 2):
            raise ValueError(f"uv must be [B, {n}, 2], got {tuple(uv.shape)}")
        if (uv is None) != (texture is None):
            raise ValueError("uv and texture go together: give both or neither")
        self.vertices = vertices  # [B, N, 3]
        self.faces = faces  # [B, M, 3] int64
        self.vertex_colors = vertex_colors  # [B, N, 3] or None
        self.uv = uv  # [B, N, 2] or None
        self.texture = texture  # [B, T, T, 3] or None

    def __len__(self) -> int:
        return self.vertices.shape[0]

    def __repr__(self) -> str:
        extra = []
        if self.vertex_colors is not None:
            extra.append("vertex colours")
        if self.texture is not None:
            extra.append(f"texture {self.texture.shape[2]}x{self.texture.shape[1]}")
        return (f"ColoredMesh(batch={len(self)}, vertices={self.vertices.shape[1]}, "
                f"faces={self.faces.shape[1]}{', ' + ', '.join(extra) if extra else ''})")

    # -- trimesh round trip ------------------------------------------------------------------
    def to_trimesh(self, index: int = 0):
        """One batch item as a ``trimesh.Trimesh`` (texture or vertex colours attached)."""
        import trimesh

        v = self.vertices[index].detach().cpu().double().numpy()
        f = self.faces[index].detach().cpu().long().numpy()
        mesh = trimesh.Trimesh(v, f, process=False)
        if self.texture is not None:
            from PIL import Image

            tex = (self.texture[index].detach().cpu().float().clamp(0, 1).numpy() * 255
                   ).round().astype(np.uint8)
            mat = trimesh.visual.material.PBRMaterial(
                baseColorTexture=Image.fromarray(tex), metallicFactor=0.0, roughnessFactor=1.0)
            mesh.visual = trimesh.visual.TextureVisuals(
                uv=self.uv[index].detach().cpu().double().numpy(), material=mat)
        elif self.vertex_colors is not None:
            c = (self.vertex_colors[index].detach().cpu().float().clamp(0, 1).numpy() * 255
                 ).round().astype(np.uint8)
            mesh.visual = trimesh.visual.ColorVisuals(
                mesh, vertex_colors=np.concatenate([c, np.full((len(c), 1), 255, np.uint8)], 1))
        return mesh

    @staticmethod
    def from_trimesh(mesh, device=None) -> ColoredMesh:
        v = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32, device=device)
        f = torch.as_tensor(np.asarray(mesh.faces), dtype=torch.int64, device=device)
        colors = None
        vis = getattr(mesh, "visual", None)
        if vis is not None and getattr(vis, "kind", None) == "vertex":
            vc = np.asarray(vis.vertex_colors)[:, :3].astype(np.float32) / 255.0
            colors = torch.as_tensor(vc, device=device)
        return ColoredMesh(v, f, colors)
