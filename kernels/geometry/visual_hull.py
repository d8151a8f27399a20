"""Visual hull: voxel grids, point projection and silhouette carving with soft voting.

Conventions are those of :mod:`.cameras` (y-up world, viewmats world->camera OpenCV, Ks in
pixels, pixel ``(i, j)`` centred at ``(j + 0.5, i + 0.5)``). Voxel grids are ``[R, R, R, ...]``
indexed ``'ij'`` over ``(x, y, z)``: ``grid[i, j, k]`` is the voxel at
``(x_i, y_j, z_k)``.

Carving rule (generated views have imperfect masks, so carve by soft voting; a hard "any view
says background" rule eats the object wherever one generated mask is wrong): a voxel
is empty when at least ``min_background_views`` cameras see it *inside their image* and on
background (mask < threshold). A camera whose image the voxel projects outside of (or that has
the voxel behind it) does not vote, so a voxel no camera observes stays *inside*.

Besides the boolean hull, :func:`hull_sdf` gives a signed distance-like field with sub-voxel
accuracy: for every view the signed distance (in pixels) of the voxel's projection to the mask
boundary (from Euclidean distance transforms of the mask), converted to world units at the
voxel's depth; the field is the k-th largest of those per-view values (k = min_background_views),
i.e. the soft-voting analogue of "outside if any view says outside". Its zero level set, fed to
marching cubes, lands between voxels where the silhouettes put it, instead of on voxel centres.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..inputs import check_mask
from ..interrupt import check_interrupt
from .cameras import Cameras, project

BBox = tuple[Sequence[float], Sequence[float]]
DEFAULT_BBOX = ((-0.5, -0.5, -0.5), (0.5, 0.5, 0.5))


def voxel_grid(resolution: int, bbox_min=(-0.5, -0.5, -0.5), bbox_max=(0.5, 0.5, 0.5),
               device=None, dtype=torch.float32) -> torch.Tensor:
    """Voxel centres ``[R, R, R, 3]`` of an ``R^3`` grid over the box, ``'ij'`` over x, y, z.

    Voxel ``i`` along an axis spans ``[min + i*s, min + (i+1)*s]`` with ``s = (max-min)/R`` and
    its centre is at ``min + (i + 0.5)*s``.
    """
    r = int(resolution)
    if r < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    lo = torch.as_tensor(bbox_min, dtype=torch.float64)
    hi = torch.as_tensor(bbox_max, dtype=torch.float64)
    if lo.shape != (3,) or hi.shape != (3,) or not bool((hi > lo).all()):
        raise ValueError(f"bbox must be two 3-vectors with max > min, got {bbox_min}, {bbox_max}")
    axes = [(lo[a] + (torch.arange(r, dtype=torch.float64) + 0.5) * (hi[a] - lo[a]) / r)
            for a in range(3)]
    g = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)  # [R, R, R, 3]
    return g.to(device=device, dtype=dtype)


def _check_masks_cams(masks: torch.Tensor, cams: Cameras) -> torch.Tensor:
    if isinstance(masks, torch.Tensor) and masks.ndim == 3 and masks.shape[0] == 0:
        raise ValueError("no views: masks has 0 frames; give at least one masked view")
    check_mask(masks, "masks")
    if masks.shape[0] != len(cams):
        raise ValueError(f"{masks.shape[0]} masks but {len(cams)} cameras; give one camera per "
                         "mask")
    if (masks.shape[1], masks.shape[2]) != (cams.height, cams.width):
        raise ValueError(f"masks are {masks.shape[2]}x{masks.shape[1]} but the cameras are "
                         f"{cams.width}x{cams.height}; resize the masks or the cameras "
                         "(Cameras.resized)")
    return masks.float()


def _check_common(resolution: int, min_background_views: int, n_views: int, bbox) -> None:
    if int(resolution) < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    if int(min_background_views) < 1:
        raise ValueError(f"min_background_views must be >= 1, got {min_background_views}")
    if int(min_background_views) > n_views:
        raise ValueError(f"min_background_views={min_background_views} exceeds the number of "
                         f"views ({n_views}); use at most {n_views}")
    lo, hi = bbox
    if len(lo) != 3 or len(hi) != 3 or any(float(h) <= float(l) for l, h in zip(lo, hi)):
        raise ValueError(f"bbox must be (min[3], max[3]) with max > min, got {bbox}")


def carve_visual_hull(masks: torch.Tensor, cams: Cameras, resolution: int = 128,
                      min_background_views: int = 1, bbox: BBox = DEFAULT_BBOX,
                      threshold: float = 0.5, chunk: int = 1 << 18,
                      depths: torch.Tensor | None = None, depth_margin: float = 0.0
                      ) -> torch.Tensor:
    """Silhouette carving: occupancy ``[R, R, R]`` bool (True = inside), ``'ij'`` over x, y, z.

    masks ``[C, H, W]`` float 0..1 (1 = object). A voxel (tested at its centre) is carved when
    at least ``min_background_views`` cameras see it in front of them, inside their image, on
    background (mask < threshold). Voxels outside a camera's image do not vote; voxels no camera
    sees stay inside. Cameras are applied one after the other to the voxels not yet carved (so
    later cameras test only the shrinking remainder), ``chunk`` voxels at a time (memory about
    ``chunk * 64`` bytes beyond the ``R^3 * 24``-byte grid).

    ``depths`` ``[C, H, W]`` (camera z, 0 = none) carves space carving's way as well: a voxel
    more than ``depth_margin`` in front of a view's depth is seen free by that view (the depth
    hull; with exact depth, everything the views can show).
    """
    masks = _check_masks_cams(masks, cams)
    _check_common(resolution, min_background_views, masks.shape[0], bbox)
    r = int(resolution)
    device = masks.device
    cams = cams.to(device=device, dtype=torch.float32)
    bg = (masks < threshold).to(torch.uint8)  # [C, H, W]
    pts = voxel_grid(r, bbox[0], bbox[1], device=device).reshape(-1, 3)  # [R^3, 3]
    k = int(min_background_views)
    chunk = max(int(chunk), 1)
    # Camera by camera over the voxels still alive: once a voxel has k background votes it is
    # carved and never projected again, so later cameras test only the shrinking remainder.
    alive = torch.arange(pts.shape[0], device=device)  # indices of voxels not yet carved
    votes = torch.zeros(pts.shape[0], dtype=torch.int16, device=device)
    C, H, W = bg.shape
    bg_flat = bg.reshape(C, H * W)
    if depths is not None:
        if tuple(depths.shape) != (C, H, W):
            raise ValueError(f"depths {tuple(depths.shape)} must match masks {(C, H, W)}")
        d_flat = depths.to(device=device, dtype=torch.float32).reshape(C, H * W)
    for c in range(C):
        keep_parts = []
        for s in range(0, alive.shape[0], chunk):
            check_interrupt()
            idx = alive[s:s + chunk]
            p = pts[idx]
            uv, z = project(p, cams.viewmats[c:c + 1], cams.Ks[c:c + 1])  # [1, P, 2], [1, P]
            j, i, z = uv[0, :, 0].floor(), uv[0, :, 1].floor(), z[0]
            inside = (z > 0) & (j >= 0) & (j < W) & (i >= 0) & (i < H)
            lin = (i.clamp(0, H - 1) * W + j.clamp(0, W - 1)).long()
            vote = inside & (bg_flat[c][lin] > 0)
            if depths is not None:
                d = d_flat[c][lin]
                vote = vote | (inside & (d > 0) & (z < d - depth_margin))
            v = votes[idx] + vote.to(torch.int16)
            votes[idx] = v
            keep_parts.append(idx[v < k])
        alive = torch.cat(keep_parts) if keep_parts else alive[:0]
    out = torch.zeros(pts.shape[0], dtype=torch.bool, device=device)
    out[alive] = True
    return out.reshape(r, r, r)


# Gaussian blur (pixels) of the silhouette signed distance: the distance transform of a binary
# mask is a pixel staircase along every slanted boundary, which the hull turns into grooves on
# flat faces seen at grazing angles (box, zoo: hull roughness 8.7 -> 6.1 degrees, spurious
# tunnels 20 -> 2); a blur of one pixel straightens the staircase and rounds true corners by
# about a pixel.
SD_SMOOTH_PX = 1.0


def mask_signed_distance(masks: torch.Tensor, threshold: float = 0.5,
                         smooth_px: float | None = None) -> torch.Tensor:
    """Signed distance in pixels ``[C, H, W]`` to the silhouette boundary: negative inside the
    object, positive on background, |value| ~ distance to the nearest pixel of the other class
    (boundary at half a pixel between the two), Gaussian-blurred by ``smooth_px`` pixels
    (default :data:`SD_SMOOTH_PX`; 0 = the raw pixel staircase)."""
    from scipy import ndimage

    smooth_px = SD_SMOOTH_PX if smooth_px is None else float(smooth_px)

    m = (masks.detach().float().cpu().numpy() >= threshold)
    out = np.empty(m.shape, dtype=np.float32)
    for c in range(m.shape[0]):
        check_interrupt()
        fg = m[c]
        if fg.all():
            d_out = np.zeros(fg.shape)
            d_in = np.full(fg.shape, float(max(fg.shape)))
        elif not fg.any():
            d_out = np.full(fg.shape, float(max(fg.shape)))
            d_in = np.zeros(fg.shape)
        else:
            d_out = ndimage.distance_transform_edt(~fg)  # bg pixels: distance to nearest fg
            d_in = ndimage.distance_transform_edt(fg)  # fg pixels: distance to nearest bg
        out[c] = np.where(fg, -(d_in - 0.5), d_out - 0.5)
        if smooth_px > 0:
            out[c] = ndimage.gaussian_filter(out[c], smooth_px, mode="nearest")
    return torch.from_numpy(out).to(masks.device)


def _sample_bilinear(img: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup with border clamping: img ``[C, H, W]``, uv ``[C, P, 2]`` pixels ->
    ``[C, P]``."""
    C, H, W = img.shape
    grid = torch.stack([uv[..., 0] / W * 2 - 1, uv[..., 1] / H * 2 - 1], -1)  # [C, P, 2]
    out = torch.nn.functional.grid_sample(img[:, None], grid[:, None], mode="bilinear",
                                          padding_mode="border", align_corners=False)
    return out[:, 0, 0]  # [C, P]


def hull_sdf(masks: torch.Tensor, cams: Cameras, resolution: int = 128,
             min_background_views: int = 1, bbox: BBox = DEFAULT_BBOX, threshold: float = 0.5,
             truncation: float | None = None, chunk: int = 1 << 18,
             points: torch.Tensor | None = None, narrow_band: bool = True) -> torch.Tensor:
    """Signed distance-like field of the visual hull, ``[R, R, R]`` float (or ``[P]`` for given
    ``points`` ``[P, 3]``), negative inside, in world units, clamped to ``±truncation``.

    Per view: the mask's pixel signed distance sampled bilinearly at the voxel's projection,
    times ``z / f`` (pixel -> world at that depth). The field is the k-th largest per-view value
    over the views that see the voxel (k = min_background_views): with k = 1 the maximum, the
    usual "outside if any view says outside". Voxels no camera sees get ``-truncation``.
    ``narrow_band`` (grids of 64^3 and more): evaluate exactly only near the surface, found from
    a 4x coarser grid (same result up to voxels far from the surface; 256^3 several times
    faster).
    """
    masks = _check_masks_cams(masks, cams)
    _check_common(resolution, min_background_views, masks.shape[0], bbox)
    r = int(resolution)
    device = masks.device
    cams = cams.to(device=device, dtype=torch.float32)
    lo = torch.as_tensor(bbox[0], dtype=torch.float32)
    hi = torch.as_tensor(bbox[1], dtype=torch.float32)
    if truncation is None:
        truncation = float(4.0 * (hi - lo).max() / r)
    sd = mask_signed_distance(masks, threshold)  # [C, H, W] pixels
    if points is None and narrow_band and r >= 64:
        return _hull_sdf_banded(sd, cams, r, min_background_views, bbox, truncation, chunk)[0]
    if points is None:
        pts = voxel_grid(r, bbox[0], bbox[1], device=device).reshape(-1, 3)
    else:
        pts = points.to(device=device, dtype=torch.float32)
    out = _hull_sdf_points(sd, cams, pts, min_background_views, truncation, chunk)
    return out.reshape(r, r, r) if points is None else out


def _hull_sdf_points(sd: torch.Tensor, cams: Cameras, pts: torch.Tensor, k: int,
                     truncation: float, chunk: int) -> torch.Tensor:
    """:func:`hull_sdf` at given points ``[P, 3]`` from the mask distances ``sd [C, H, W]``."""
    device = sd.device
    f = cams.Ks[:, 1, 1]  # [C]
    out = torch.empty(pts.shape[0], dtype=torch.float32, device=device)
    k = int(k)
    C, H, W = sd.shape
    chunk = max(int(chunk), 1)
    for s in range(0, pts.shape[0], chunk):
        check_interrupt()
        p = pts[s:s + chunk]
        uv, z = project(p, cams.viewmats, cams.Ks)
        d = _sample_bilinear(sd, uv) * (z.clamp_min(1e-6) / f[:, None])  # [C, P] world units
        seen = (z > 0) & (uv[..., 0] >= 0) & (uv[..., 0] <= W) & (uv[..., 1] >= 0) & \
            (uv[..., 1] <= H)
        d = torch.where(seen, d, torch.full_like(d, -math.inf))
        kth = torch.topk(d, k, dim=0).values[-1]  # [P] k-th largest
        kth = torch.where(torch.isfinite(kth), kth, torch.full_like(kth, -truncation))
        out[s:s + chunk] = kth.clamp(-truncation, truncation)
    return out


def _hull_sdf_banded(sd, cams, r, k, bbox, truncation, chunk) -> torch.Tensor:
    """Coarse-to-fine :func:`hull_sdf`: the field at ``r/4`` (untruncated), trilinearly
    upsampled; only voxels whose upsampled value is within ``truncation`` + the interpolation
    error bound of zero are evaluated exactly, the rest get ``±truncation`` by the coarse sign.
    Per view the field is a (scaled) distance to the silhouette cone, so the k-th largest is
    close to 1-Lipschitz and the coarse sign is reliable that far from the surface."""
    device = sd.device
    rc = max(r // 4, 16)
    lo = torch.as_tensor(bbox[0], dtype=torch.float32)
    hi = torch.as_tensor(bbox[1], dtype=torch.float32)
    ext = float((hi - lo).max())
    big = 10.0 * ext
    pc = voxel_grid(rc, bbox[0], bbox[1], device=device).reshape(-1, 3)
    coarse = _hull_sdf_points(sd, cams, pc, k, big, chunk).reshape(1, 1, rc, rc, rc)
    up = torch.nn.functional.interpolate(coarse, size=(r, r, r), mode="trilinear",
                                         align_corners=False)[0, 0]  # [R, R, R]
    # interpolation/extrapolation error bound: one coarse voxel diagonal
    margin = math.sqrt(3.0) * ext / rc
    near = up.abs() < truncation + margin
    out = torch.where(up > 0, torch.full_like(up, truncation), torch.full_like(up, -truncation))
    idx = near.reshape(-1).nonzero()[:, 0]
    if idx.numel():
        pts = voxel_grid(r, bbox[0], bbox[1], device=device).reshape(-1, 3)[idx]
        out.view(-1)[idx] = _hull_sdf_points(sd, cams, pts, k, truncation, chunk)
    return out, up


def hull_sdf_and_depth(masks: torch.Tensor, cams: Cameras, resolution: int = 128,
                       min_background_views: int = 1, bbox: BBox = DEFAULT_BBOX,
                       threshold: float = 0.5, truncation: float | None = None,
                       chunk: int = 1 << 18) -> tuple[torch.Tensor, torch.Tensor]:
    """``(field, deep)``: :func:`hull_sdf` (narrow band, truncated) and an untruncated but
    coarse (4x coarser, trilinearly upsampled) version of the same field, ``[R, R, R]`` each;
    ``-deep`` is how far below the hull surface a voxel lies (for
    :func:`.mesh.tsdf.combine_hull_tsdf`'s ``max_carve``)."""
    masks = _check_masks_cams(masks, cams)
    _check_common(resolution, min_background_views, masks.shape[0], bbox)
    r = max(int(resolution), 16)
    cams = cams.to(device=masks.device, dtype=torch.float32)
    lo = torch.as_tensor(bbox[0], dtype=torch.float32)
    hi = torch.as_tensor(bbox[1], dtype=torch.float32)
    if truncation is None:
        truncation = float(4.0 * (hi - lo).max() / r)
    sd = mask_signed_distance(masks, threshold)
    return _hull_sdf_banded(sd, cams, r, min_background_views, bbox, truncation, chunk)
