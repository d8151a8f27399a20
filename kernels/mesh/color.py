"""Colours for reconstructed meshes from the views: visibility-aware, viewing-angle-weighted
vertex colours, and an optional UV unwrap (xatlas) with a texture baked from the views.

For a surface point p with normal n, view c contributes its image colour at p's projection when
p is visible from c (p's depth matches the mesh's own depth map rendered from c within
``depth_tol``, p projects inside the image and onto the object's mask) with weight
``max(0, n . (cam_c - p)/|cam_c - p|) ** angle_power``: views that see the surface head-on count
most, grazing views barely. Points no view sees take the colour of the nearest seen point.
"""

from __future__ import annotations

import numpy as np
import torch
import trimesh

from ..geometry.cameras import Cameras, project
from ..inputs import check_image, check_mask
from ..interrupt import check_interrupt


def _bilinear(img: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """img ``[C, H, W, K]``, uv ``[C, P, 2]`` pixels -> ``[C, P, K]`` (border clamped)."""
    C, H, W, K = img.shape
    grid = torch.stack([uv[..., 0] / W * 2 - 1, uv[..., 1] / H * 2 - 1], -1)[:, None]  # [C,1,P,2]
    out = torch.nn.functional.grid_sample(img.permute(0, 3, 1, 2), grid, mode="bilinear",
                                          padding_mode="border", align_corners=False)
    return out[:, :, 0].permute(0, 2, 1)  # [C, P, K]


def mesh_depth_maps(mesh: trimesh.Trimesh, cams: Cameras) -> torch.Tensor:
    """Depth maps ``[C, H, W]`` (camera z, 0 = empty) of ``mesh`` from ``cams`` (ray casting)."""
    from .render import render_mesh

    return render_mesh(mesh, cams)["depth"]


def color_points(points: torch.Tensor, normals: torch.Tensor, images: torch.Tensor,
                 cams: Cameras, depths: torch.Tensor, masks: torch.Tensor | None = None,
                 depth_tol: float = 0.01, angle_power: float = 2.0, chunk: int = 1 << 16
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Colours ``[P, 3]`` and total weights ``[P]`` (0 = seen by no view) for surface points.

    points/normals ``[P, 3]`` world; images ``[C, H, W, 3]``; depths ``[C, H, W]`` the mesh's own
    depth maps (visibility); masks ``[C, H, W]`` optional (only object pixels give colour).
    """
    C, H, W, _ = images.shape
    imgs = images.float()
    dep = depths.float()[..., None]
    msk = None if masks is None else masks.float()[..., None]
    centers = cams.centers.to(points)  # [C, 3]
    cols = torch.zeros(points.shape[0], 3, dtype=torch.float32)
    wsum = torch.zeros(points.shape[0], dtype=torch.float32)
    for s in range(0, points.shape[0], chunk):
        check_interrupt()
        p = points[s:s + chunk].float()
        n = torch.nn.functional.normalize(normals[s:s + chunk].float(), dim=-1)
        uv, z = project(p, cams.viewmats, cams.Ks)  # [C, P, 2], [C, P]
        inside = (z > 0) & (uv[..., 0] >= 0) & (uv[..., 0] < W) & (uv[..., 1] >= 0) & \
            (uv[..., 1] < H)
        # nearest-pixel depth for visibility (bilinear would blend across silhouettes)
        jj = uv[..., 0].floor().clamp(0, W - 1).long()
        ii = uv[..., 1].floor().clamp(0, H - 1).long()
        d = torch.gather(dep[..., 0].reshape(C, -1), 1, ii * W + jj)  # [C, P]
        vis = inside & (d > 0) & ((z - d).abs() < depth_tol)
        if msk is not None:
            vis &= torch.gather(msk[..., 0].reshape(C, -1), 1, ii * W + jj) > 0.5
        to_cam = torch.nn.functional.normalize(centers[:, None] - p[None], dim=-1)  # [C, P, 3]
        cosang = (to_cam * n[None]).sum(-1).clamp_min(0)
        w = cosang.pow(angle_power) * vis  # [C, P]
        rgb = _bilinear(imgs, uv)  # [C, P, 3]
        ws = w.sum(0)
        cols[s:s + chunk] = (w[..., None] * rgb).sum(0) / ws.clamp_min(1e-8)[:, None]
        wsum[s:s + chunk] = ws
    return cols, wsum


def _fill_unseen(points: np.ndarray, cols: np.ndarray, seen: np.ndarray) -> np.ndarray:
    if seen.all():
        return cols
    if not seen.any():
        return np.full_like(cols, 0.5)
    from scipy.spatial import cKDTree

    _, idx = cKDTree(points[seen]).query(points[~seen])
    out = cols.copy()
    out[~seen] = cols[seen][idx]
    return out


def vertex_colors(mesh: trimesh.Trimesh, images: torch.Tensor, cams: Cameras,
                  masks: torch.Tensor | None = None, depth_tol: float | None = None,
                  angle_power: float = 2.0, depths: torch.Tensor | None = None) -> torch.Tensor:
    """Per-vertex colours ``[N, 3]`` 0..1 of ``mesh`` from the views (see module doc)."""
    _check_views(images, cams, masks)
    if depths is None:
        depths = mesh_depth_maps(mesh, cams)
    if depth_tol is None:
        depth_tol = _default_tol(mesh)
    v = torch.tensor(np.array(mesh.vertices), dtype=torch.float32)
    n = torch.tensor(np.array(mesh.vertex_normals), dtype=torch.float32)
    cols, w = color_points(v, n, images, cams, depths, masks, depth_tol, angle_power)
    out = _fill_unseen(v.numpy(), cols.numpy(), (w > 0).numpy())
    return torch.from_numpy(out).clamp(0, 1)


def _default_tol(mesh: trimesh.Trimesh) -> float:
    ext = float(np.max(mesh.extents)) if len(mesh.vertices) else 1.0
    return 0.015 * ext


def _check_views(images: torch.Tensor, cams: Cameras, masks: torch.Tensor | None) -> None:
    check_image(images, "images")
    if images.shape[0] != len(cams):
        raise ValueError(f"{images.shape[0]} images but {len(cams)} cameras")
    if (images.shape[1], images.shape[2]) != (cams.height, cams.width):
        raise ValueError(f"images are {images.shape[2]}x{images.shape[1]} but cameras "
                         f"{cams.width}x{cams.height}")
    if masks is not None:
        check_mask(masks, "masks", images.shape[:3])


def bake_texture(mesh: trimesh.Trimesh, images: torch.Tensor, cams: Cameras,
                 masks: torch.Tensor | None = None, texture_size: int = 1024,
                 depth_tol: float | None = None, angle_power: float = 2.0,
                 padding: int = 4):
    """UV-unwrap ``mesh`` with xatlas and bake a texture from the views.

    Returns ``(vertices [N', 3], faces [M, 3], uv [N', 2], texture [T, T, 3])`` (tensors; the
    vertices are split along UV seams; ``uv`` has v growing upwards, texture row 0 on top).
    """
    import xatlas

    _check_views(images, cams, masks)
    T = int(texture_size)
    if T < 16 or T > 8192:
        raise ValueError(f"texture_size must be in [16, 8192], got {texture_size}")
    if depth_tol is None:
        depth_tol = _default_tol(mesh)
    depths = mesh_depth_maps(mesh, cams)
    vmap, new_faces, uvs = xatlas.parametrize(np.asarray(mesh.vertices, np.float32),
                                              np.asarray(mesh.faces, np.uint32))
    verts = np.asarray(mesh.vertices)[vmap]
    vnorm = np.asarray(mesh.vertex_normals)[vmap]
    faces = new_faces.astype(np.int64)
    # rasterise the triangles in texel space: texel (r, c) centre at uv ((c+.5)/T, 1-(r+.5)/T)
    tuv = torch.as_tensor(uvs[faces], dtype=torch.float64) * T  # [M, 3, 2] texel coords (x, y up)
    lo = tuv.amin(1).floor().clamp(0, T - 1).long()
    hi = tuv.amax(1).ceil().clamp(0, T).long()
    span = (hi - lo).clamp_min(1)
    counts = span[:, 0] * span[:, 1]
    fid = torch.repeat_interleave(torch.arange(len(faces)), counts)
    start = torch.cumsum(counts, 0) - counts
    local = torch.arange(int(counts.sum())) - start[fid]
    x = lo[fid, 0] + local % span[fid, 0]
    y = lo[fid, 1] + local // span[fid, 0]
    px = x.double() + 0.5
    py = y.double() + 0.5
    a, b, c = tuv[fid, 0], tuv[fid, 1], tuv[fid, 2]
    den = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
    den = torch.where(den.abs() < 1e-12, torch.full_like(den, 1e-12), den)
    l0 = ((b[:, 1] - c[:, 1]) * (px - c[:, 0]) + (c[:, 0] - b[:, 0]) * (py - c[:, 1])) / den
    l1 = ((c[:, 1] - a[:, 1]) * (px - c[:, 0]) + (a[:, 0] - c[:, 0]) * (py - c[:, 1])) / den
    l2 = 1 - l0 - l1
    eps = -1e-6
    ins = (l0 >= eps) & (l1 >= eps) & (l2 >= eps)
    fid, x, y = fid[ins], x[ins], y[ins]
    bary = torch.stack([l0[ins], l1[ins], l2[ins]], -1).float()  # [K, 3]
    fv = torch.as_tensor(verts[faces], dtype=torch.float32)  # [M, 3, 3]
    fn = torch.as_tensor(vnorm[faces], dtype=torch.float32)
    pts = (bary[..., None] * fv[fid]).sum(1)
    nrm = (bary[..., None] * fn[fid]).sum(1)
    cols, w = color_points(pts, nrm, images, cams, depths, masks, depth_tol, angle_power)
    cols = torch.from_numpy(_fill_unseen(pts.numpy(), cols.numpy(), (w > 0).numpy()))
    tex = torch.zeros(T, T, 3)
    filled = torch.zeros(T, T, dtype=torch.bool)
    row = (T - 1 - y).long()
    tex[row, x] = cols.float()
    filled[row, x] = True
    tex = _dilate(tex, filled, padding)
    return (torch.as_tensor(verts, dtype=torch.float32), torch.as_tensor(faces),
            torch.as_tensor(uvs, dtype=torch.float32), tex.clamp(0, 1))


def _dilate(tex: torch.Tensor, filled: torch.Tensor, steps: int) -> torch.Tensor:
    """Grow filled texels into empty neighbours ``steps`` times (seam padding for filtering);
    the rest of the empty texels get the mean colour."""
    t = tex.permute(2, 0, 1)[None]  # [1, 3, T, T]
    f = filled[None, None].float()
    k = torch.ones(1, 1, 3, 3)
    for _ in range(int(steps)):
        s = torch.nn.functional.conv2d(t * f, k.expand(3, 1, 3, 3), padding=1, groups=3)
        cnt = torch.nn.functional.conv2d(f, k, padding=1)
        grow = (cnt > 0) & (f == 0)
        t = torch.where(grow, s / cnt.clamp_min(1), t)
        f = torch.maximum(f, grow.float())
    out = t[0].permute(1, 2, 0)
    mask = f[0, 0] > 0
    if mask.any():
        out[~mask] = out[mask].mean(0)
    return out
