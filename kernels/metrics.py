"""Reconstruction metrics: image PSNR / SSIM and mesh Chamfer / F-score / volume IoU.

Mesh metrics follow the protocol of SyncDreamer's ``eval_mesh.py`` (liuyuan-pal/SyncDreamer), also
used by EscherNet: both meshes in the ground
truth's normalised frame (largest bounding-box extent 1, centred); Chamfer distance = (mean
nearest-neighbour distance pred->gt + gt->pred) / 2, unsquared L2, on >= 100k surface samples;
volume IoU of inside/outside at a 64³ grid; F-score at tau = 0.01.

Inside test (volume IoU): **majority vote of ray parity** over 7 fixed, non-axis-aligned ray
directions (Embree ray casting, counting every crossing). For a closed mesh every direction
agrees and this is the exact inside; for an open mesh (the Stanford bunny's holes in its base,
UV-split seams) a ray leaving through a hole gets the wrong parity, but a point is only
misclassified when most of the 7 directions escape through holes, so small holes do not flood
the inside or outside. (A point exactly on the surface may go either way.)
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch
import trimesh
from scipy.spatial import cKDTree

from .mesh.render import HAVE_EMBREE, normalize_mesh

if HAVE_EMBREE:
    from embreex import rtcore_scene as _rtcs
    from embreex.mesh_construction import TriangleMesh as _EmbreeTriangleMesh

MeshOrPoints = Union[trimesh.Trimesh, np.ndarray, torch.Tensor]

# 7 fixed unit directions, none parallel to an axis or to a grid diagonal
_PARITY_DIRS = np.array([
    [0.5377, 0.8338, 0.1249], [-0.8089, 0.2113, 0.5487], [0.2318, -0.6113, 0.7567],
    [-0.3013, -0.4416, -0.8451], [0.7906, -0.3322, -0.5143], [-0.6317, 0.7392, -0.2335],
    [0.1234, 0.1712, -0.9775]])
_PARITY_DIRS = _PARITY_DIRS / np.linalg.norm(_PARITY_DIRS, axis=1, keepdims=True)


# ----------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------


def _as_batch(x: torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise ValueError(f"{name} must be an image [H,W,C] or a batch [N,H,W,C], got "
                         f"{tuple(x.shape)}")
    return x


def psnr(a: torch.Tensor, b: torch.Tensor, mask: Optional[torch.Tensor] = None,
         reduction: str = "mean") -> torch.Tensor:
    """PSNR in dB of images in 0..1, ``[H,W,C]`` or ``[N,H,W,C]``.

    Computed per image (MSE over its pixels, or over the pixels weighted by ``mask`` ``[N,H,W]``
    / ``[H,W]``), then averaged over the batch (``reduction="mean"``) or returned per image
    (``"none"``, shape ``[N]``). Identical images give ``inf``.
    """
    a, b = _as_batch(a, "a"), _as_batch(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"psnr needs images of the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    se = (a.double() - b.double()).pow(2).mean(-1)  # [N, H, W]
    if mask is None:
        mse = se.flatten(1).mean(1)
    else:
        m = torch.as_tensor(mask).to(se)
        m = m.unsqueeze(0) if m.ndim == 2 else m
        if m.shape != se.shape:
            raise ValueError(f"mask must be [N,H,W] = {tuple(se.shape)}, got {tuple(m.shape)}")
        w = m.flatten(1).sum(1)
        if (w <= 0).any():
            raise ValueError("psnr mask is empty for at least one image")
        mse = (se * m).flatten(1).sum(1) / w
    out = (10 * torch.log10(1.0 / mse)).float()
    return out.mean() if reduction == "mean" else out


def ssim(a: torch.Tensor, b: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """Mean SSIM (kornia, Gaussian window 11, data range 1) of ``[H,W,C]`` / ``[N,H,W,C]``
    images."""
    import kornia

    a, b = _as_batch(a, "a"), _as_batch(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"ssim needs images of the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    x = a.permute(0, 3, 1, 2).float()
    y = b.permute(0, 3, 1, 2).float().to(x.device)
    return kornia.metrics.ssim(x, y, window_size, max_val=1.0).mean()


# ----------------------------------------------------------------------------------------------
# Meshes
# ----------------------------------------------------------------------------------------------


def sample_surface(mesh: trimesh.Trimesh, n: int, seed: int = 0) -> np.ndarray:
    """``n`` points ``[n, 3]`` uniformly (area-weighted) on the surface, deterministic per seed."""
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ValueError("sample_surface needs a non-empty trimesh.Trimesh, got "
                         f"{type(mesh).__name__}")
    if n < 1:
        raise ValueError(f"number of surface samples must be >= 1, got {n}")
    tris = np.asarray(mesh.triangles, dtype=np.float64)  # [F, 3, 3]
    area = 0.5 * np.linalg.norm(np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]), axis=-1)
    if area.sum() <= 0:
        raise ValueError("cannot sample the surface of a mesh with zero area")
    rng = np.random.default_rng(seed)
    f = rng.choice(len(tris), size=n, p=area / area.sum())
    r1 = np.sqrt(rng.random(n))
    r2 = rng.random(n)
    w = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], -1)  # uniform barycentrics
    return (tris[f] * w[:, :, None]).sum(1)


def _points(x: MeshOrPoints, n: int, seed: int, name: str) -> np.ndarray:
    if isinstance(x, trimesh.Trimesh):
        return sample_surface(x, n, seed)
    p = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if p.ndim != 2 or p.shape[1] != 3 or len(p) == 0:
        raise ValueError(f"{name} must be a trimesh.Trimesh or points [N,3], got shape {p.shape}")
    return p.astype(np.float64)


def _nn_dists(pred: MeshOrPoints, gt: MeshOrPoints, n: int):
    p = _points(pred, n, 1, "pred")
    g = _points(gt, n, 2, "gt")
    d_pg = cKDTree(g).query(p, k=1, workers=-1)[0]  # pred -> gt
    d_gp = cKDTree(p).query(g, k=1, workers=-1)[0]  # gt -> pred
    return d_pg, d_gp


def chamfer(pred: MeshOrPoints, gt: MeshOrPoints, n: int = 100_000) -> float:
    """(mean NN distance pred->gt + mean NN distance gt->pred) / 2, unsquared L2.

    Meshes are sampled with ``n`` surface points each (fixed seeds); point arrays are used as given.
    """
    d_pg, d_gp = _nn_dists(pred, gt, n)
    return float((d_pg.mean() + d_gp.mean()) / 2)


def fscore(pred: MeshOrPoints, gt: MeshOrPoints, tau: float = 0.01, n: int = 100_000) -> float:
    """F-score at distance ``tau``: harmonic mean of precision (pred points within tau of gt)
    and recall (gt points within tau of pred); 0 when both are 0."""
    if tau <= 0:
        raise ValueError(f"fscore tau must be positive, got {tau}")
    d_pg, d_gp = _nn_dists(pred, gt, n)
    prec = float((d_pg < tau).mean())
    rec = float((d_gp < tau).mean())
    return 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)


def _all_hits(mesh: trimesh.Trimesh, origins: np.ndarray, dirs: np.ndarray, max_hits: int = 256):
    """Every surface crossing (t > 0) of rays ``origins [R,3]`` + t ``dirs [R,3]``.

    Returns ``(ray index [K], t [K])`` (t in units of the direction's length)."""
    n = len(origins)
    if not HAVE_EMBREE:
        rmi = trimesh.ray.ray_triangle.RayMeshIntersector(mesh)
        _, ray_idx, loc = rmi.intersects_id(origins, dirs, multiple_hits=True,
                                             return_locations=True)
        dd = dirs[ray_idx]
        t = ((loc - origins[ray_idx]) * dd).sum(-1) / (dd * dd).sum(-1)
        return ray_idx.astype(np.int64), t
    scene = _rtcs.EmbreeScene()
    _EmbreeTriangleMesh(scene=scene, vertices=np.asarray(mesh.vertices, dtype=np.float32),
                        indices=np.asarray(mesh.faces, dtype=np.int32))
    eps = 1e-5 * max(1.0, float(np.abs(mesh.bounds).max()))
    active = np.arange(n)
    travelled = np.zeros(n)
    org = origins.astype(np.float64).copy()
    idx_out, t_out = [], []
    for _ in range(max_hits):
        if len(active) == 0:
            break
        res = scene.run(org[active].astype(np.float32), dirs[active].astype(np.float32), output=1)
        hit = np.asarray(res["primID"]) >= 0
        t = np.asarray(res["tfar"], dtype=np.float64)
        active, t = active[hit], t[hit]
        idx_out.append(active)
        t_out.append(travelled[active] + t)
        travelled[active] += t + eps
        org[active] += dirs[active] * (t + eps)[:, None]
    if not idx_out:
        return np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(idx_out), np.concatenate(t_out)


def _crossings(mesh: trimesh.Trimesh, origins: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Number of surface crossings ``[R]`` of rays ``origins [R,3]`` + t ``dirs [R,3]``, t > 0."""
    idx, _ = _all_hits(mesh, origins, dirs)
    return np.bincount(idx, minlength=len(origins))


def inside_mesh(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """Robust inside test ``[P] bool``: majority of 7 ray-parity votes (see module doc)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    k = len(_PARITY_DIRS)
    origins = np.repeat(pts, k, axis=0)  # [P*k, 3]
    dirs = np.tile(_PARITY_DIRS, (len(pts), 1))
    votes = (_crossings(mesh, origins, dirs) % 2).reshape(-1, k).sum(1)
    return votes * 2 > k


def inside_grid(mesh: trimesh.Trimesh, axes) -> np.ndarray:
    """Inside test on a regular grid ``[X, Y, Z] bool`` (``axes``: 3 sorted 1-D coordinate arrays).

    Scanline ray parity: one ray per grid line along +x, +y and +z from outside the mesh
    collects all crossings, and each grid point gets two parity votes per axis (crossings
    before it, from the -axis side, and after it, from the +axis side): 6 votes, exact for a
    closed mesh. Ties (3-3, from holes) are settled by :func:`inside_mesh` (7 oblique rays).
    The lines are offset by a tiny irrational amount so axis-aligned meshes are not hit on edges.
    """
    axes = [np.asarray(x, dtype=np.float64) for x in axes]
    shape = tuple(len(x) for x in axes)
    lo = np.minimum(mesh.bounds[0], [x.min() for x in axes])
    hi = np.maximum(mesh.bounds[1], [x.max() for x in axes])
    ext = float((hi - lo).max())
    jitter = ext * np.array([1.2345e-6, 2.3456e-6, 3.1416e-6])
    votes = np.zeros(shape, np.int64)
    for a in range(3):
        b, c = [i for i in range(3) if i != a]
        gb, gc = np.meshgrid(axes[b], axes[c], indexing="ij")  # [Nb, Nc]
        n_lines = gb.size
        origins = np.zeros((n_lines, 3))
        origins[:, a] = lo[a] - 0.01 * ext
        origins[:, b] = gb.ravel() + jitter[b]
        origins[:, c] = gc.ravel() + jitter[c]
        d = np.zeros(3)
        d[a] = 1.0
        lines, pos = _all_hits(mesh, origins, np.broadcast_to(d, origins.shape).copy())
        pos = pos + origins[lines, a]
        hist = np.zeros((n_lines, shape[a] + 1), np.int64)
        np.add.at(hist, (lines, np.searchsorted(axes[a], pos)), 1)
        before = np.cumsum(hist, 1)[:, :shape[a]]  # [lines, Na] crossings before each point
        total = hist.sum(1, keepdims=True)
        v = before % 2 + (total - before) % 2  # [lines, Na]
        v = v.reshape(shape[b], shape[c], shape[a])
        votes += np.moveaxis(v, 2, a)  # back to [X, Y, Z]
    inside = votes > 3
    tie = np.argwhere(votes == 3)
    if len(tie):
        pts = np.stack([axes[i][tie[:, i]] for i in range(3)], -1)
        inside[tuple(tie.T)] = inside_mesh(mesh, pts)
    return inside


def volume_iou(pred: trimesh.Trimesh, gt: trimesh.Trimesh, res: int = 64) -> float:
    """Volume IoU of the insides at ``res``³ cell centres over the union bounding box."""
    for name, m in (("pred", pred), ("gt", gt)):
        if not isinstance(m, trimesh.Trimesh) or len(m.faces) == 0:
            raise ValueError(f"volume_iou: {name} must be a non-empty trimesh.Trimesh")
    if res < 2:
        raise ValueError(f"volume_iou resolution must be >= 2, got {res}")
    lo = np.minimum(pred.bounds[0], gt.bounds[0])
    hi = np.maximum(pred.bounds[1], gt.bounds[1])
    axes = [lo[i] + (np.arange(res) + 0.5) * (hi[i] - lo[i]) / res for i in range(3)]
    a = inside_grid(pred, axes)
    b = inside_grid(gt, axes)
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def evaluate_mesh(pred: trimesh.Trimesh, gt: trimesh.Trimesh, n: int = 100_000, res: int = 64,
                  tau: float = 0.01, normalize: bool = True) -> dict:
    """Chamfer, volume IoU and F-score@tau of ``pred`` against ``gt`` (the protocol of
    SyncDreamer's ``eval_mesh.py``).

    ``pred`` must already be in the same frame as ``gt`` (no alignment is done). With
    ``normalize`` both are mapped by **the GT's** normalisation (GT bbox centred at the origin,
    largest extent 1); a GT that is already normalised (e.g. ``load_sample_mesh()``) is unchanged.
    Returns ``{"chamfer", "iou", "fscore_001"}`` (the F-score key names tau=0.01; with another
    tau it is still stored under ``fscore_001`` and ``tau`` is reported).
    """
    if not isinstance(pred, trimesh.Trimesh) or len(pred.faces) == 0:
        raise ValueError("evaluate_mesh: pred must be a non-empty trimesh.Trimesh "
                         "(did mesh extraction return an empty mesh?)")
    if not isinstance(gt, trimesh.Trimesh) or len(gt.faces) == 0:
        raise ValueError("evaluate_mesh: gt must be a non-empty trimesh.Trimesh")
    if normalize:
        gt, center, scale = normalize_mesh(gt)
        p = pred.copy()
        p.vertices = (np.asarray(pred.vertices, dtype=np.float64) - center) * scale
        pred = p
    d_pg, d_gp = _nn_dists(pred, gt, n)
    prec, rec = float((d_pg < tau).mean()), float((d_gp < tau).mean())
    return {
        "chamfer": float((d_pg.mean() + d_gp.mean()) / 2),
        "iou": volume_iou(pred, gt, res),
        "fscore_001": 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec),
        "tau": tau,
    }


def roughness_deg(mesh: trimesh.Trimesh, radius: float = 0.03, n_faces: int = 4000,
                  seed: int = 0) -> float:
    """Surface roughness in degrees: how far face normals stray from their neighbourhood.

    The mesh is scaled so its largest bounding-box extent is 1. ``n_faces`` faces are drawn with
    probability proportional to their area (``numpy.random.default_rng(seed)``); for each, the
    angle between its normal and the area-weighted mean normal of all faces whose centres lie
    within ``radius`` of its centre. Returns the mean angle. A finely meshed smooth surface gives
    well under a degree (an icosphere of 20k faces: 0.14°), the same sphere with vertex noise of
    0.3 % of its size 8°, a pitted or bumpy surface tens of degrees; sharp edges and thin parts
    (faces of the other side within ``radius``) add to it, so compare with the ground truth's
    own value.
    """
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ValueError(f"roughness_deg needs a non-empty trimesh.Trimesh, got "
                         f"{type(mesh).__name__}")
    if radius <= 0 or n_faces < 1:
        raise ValueError(f"roughness_deg needs radius > 0 and n_faces >= 1, got {radius}, "
                         f"{n_faces}")
    v = np.asarray(mesh.vertices, dtype=np.float64)
    extent = float((v.max(0) - v.min(0)).max())
    if not np.isfinite(extent) or extent <= 0:
        raise ValueError(f"roughness_deg: mesh has bounding-box extent {extent}")
    tris = v[np.asarray(mesh.faces)] / extent  # [F, 3, 3]
    cross = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])  # [F, 3]
    dbl_area = np.linalg.norm(cross, axis=-1)  # [F]
    keep = dbl_area > 0
    if not keep.any():
        raise ValueError("roughness_deg: every face of the mesh has zero area")
    tris, cross, dbl_area = tris[keep], cross[keep], dbl_area[keep]
    normals = cross / dbl_area[:, None]  # [F, 3]
    centres = tris.mean(1)  # [F, 3]
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(tris), size=n_faces, p=dbl_area / dbl_area.sum())
    tree = cKDTree(centres)
    angles = np.empty(n_faces)
    for i, f in enumerate(pick):
        nb = tree.query_ball_point(centres[f], radius)
        mean = cross[nb].sum(0)  # area-weighted (|cross| = 2 * area)
        norm = np.linalg.norm(mean)
        cos = 1.0 if norm == 0 else float(np.clip(normals[f] @ mean / norm, -1.0, 1.0))
        angles[i] = np.degrees(np.arccos(cos))
    return float(angles.mean())


def genus(mesh: trimesh.Trimesh) -> int:
    """Total genus (number of handles / through-holes) of a closed mesh, from its Euler
    characteristic: for ``c`` closed connected components, V - E + F = 2c - 2g.

    Vertices are merged first (UV seams split them); a mesh that is not watertight has no
    genus and raises ``ValueError``.
    """
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ValueError(f"genus needs a non-empty trimesh.Trimesh, got {type(mesh).__name__}")
    m = trimesh.Trimesh(np.asarray(mesh.vertices), np.asarray(mesh.faces), process=True)
    if not m.is_watertight:
        raise ValueError("genus: the mesh is not watertight (open boundary or non-manifold "
                         "edges), so it has no genus")
    c = len(m.split(only_watertight=False))
    return int(round(c - m.euler_number / 2))
