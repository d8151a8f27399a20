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
from .cameras import Cameras, camera_rays, project

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


def _check_common(resolution: int, min_background_views: int, n_views: int, bbox,
                  tolerance_px: float = 0.0) -> None:
    if not math.isfinite(float(tolerance_px)) or float(tolerance_px) < 0:
        raise ValueError(f"tolerance_px must be >= 0 pixels, got {tolerance_px}")
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


def _seen(uv: torch.Tensor, z: torch.Tensor, W: int, H: int) -> torch.Tensor:
    """Projections ``uv [C, P, 2]`` at depth ``z [C, P]`` that land in front of the camera and
    inside its ``W x H`` image ``[C, P]`` bool (only those views vote)."""
    return (z > 0) & (uv[..., 0] >= 0) & (uv[..., 0] <= W) & (uv[..., 1] >= 0) & (uv[..., 1] <= H)


def hull_sdf(masks: torch.Tensor, cams: Cameras, resolution: int = 128,
             min_background_views: int = 1, bbox: BBox = DEFAULT_BBOX, threshold: float = 0.5,
             truncation: float | None = None, chunk: int = 1 << 18,
             points: torch.Tensor | None = None, narrow_band: bool = True,
             tolerance_px: float = 0.0) -> torch.Tensor:
    """Signed distance-like field of the visual hull, ``[R, R, R]`` float (or ``[P]`` for given
    ``points`` ``[P, 3]``), negative inside, in world units, clamped to ``±truncation``.

    Per view: the mask's pixel signed distance sampled bilinearly at the voxel's projection,
    times ``z / f`` (pixel -> world at that depth). The field is the k-th largest per-view value
    over the views that see the voxel (k = min_background_views): with k = 1 the maximum, the
    usual "outside if any view says outside". Voxels no camera sees get ``-truncation``.
    ``tolerance_px`` > 0 forgives views that disagree (:func:`silhouette_disagreement`): a voxel
    that only k views put outside must lie more than ``tolerance_px`` pixels outside the k-th
    one's silhouette (the field is ``max(d_(k+1), d_k - tolerance)``), while what k + 1 views
    carve is carved as before; 0 = the exact hull.
    ``narrow_band`` (grids of 64^3 and more): evaluate exactly only near the surface, found from
    a 4x coarser grid (same result up to voxels far from the surface; 256^3 several times
    faster).
    """
    masks = _check_masks_cams(masks, cams)
    _check_common(resolution, min_background_views, masks.shape[0], bbox, tolerance_px)
    r = int(resolution)
    device = masks.device
    cams = cams.to(device=device, dtype=torch.float32)
    lo = torch.as_tensor(bbox[0], dtype=torch.float32)
    hi = torch.as_tensor(bbox[1], dtype=torch.float32)
    if truncation is None:
        truncation = float(4.0 * (hi - lo).max() / r)
    sd = mask_signed_distance(masks, threshold)  # [C, H, W] pixels
    if points is None and narrow_band and r >= 64:
        return _hull_sdf_banded(sd, cams, r, min_background_views, bbox, truncation, chunk,
                                tolerance_px)[0]
    if points is None:
        pts = voxel_grid(r, bbox[0], bbox[1], device=device).reshape(-1, 3)
    else:
        pts = points.to(device=device, dtype=torch.float32)
    out = _hull_sdf_points(sd, cams, pts, min_background_views, truncation, chunk, tolerance_px)
    return out.reshape(r, r, r) if points is None else out


def _hull_sdf_points(sd: torch.Tensor, cams: Cameras, pts: torch.Tensor, k: int,
                     truncation: float, chunk: int, tolerance_px: float = 0.0) -> torch.Tensor:
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
        scale = z.clamp_min(1e-6) / f[:, None]  # [C, P] world units per pixel
        d = _sample_bilinear(sd, uv) * scale  # [C, P] world units
        d = torch.where(_seen(uv, z, W, H), d, torch.full_like(d, -math.inf))
        if tolerance_px > 0:
            top, arg = torch.topk(d, min(k + 1, C), dim=0)  # [k+1, P]
            kth = top[k - 1] - tolerance_px * scale.gather(0, arg[k - 1:k])[0]
            if k < C:
                kth = torch.maximum(kth, top[k])  # what k + 1 views carve stays carved
        else:
            kth = torch.topk(d, k, dim=0).values[-1]  # [P] k-th largest
        kth = torch.where(torch.isfinite(kth), kth, torch.full_like(kth, -truncation))
        out[s:s + chunk] = kth.clamp(-truncation, truncation)
    return out


def _hull_sdf_banded(sd, cams, r, k, bbox, truncation, chunk, tolerance_px=0.0) -> torch.Tensor:
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
    coarse = _hull_sdf_points(sd, cams, pc, k, big, chunk, tolerance_px).reshape(1, 1, rc, rc, rc)
    up = torch.nn.functional.interpolate(coarse, size=(r, r, r), mode="trilinear",
                                         align_corners=False)[0, 0]  # [R, R, R]
    # interpolation/extrapolation error bound: one coarse voxel diagonal
    margin = math.sqrt(3.0) * ext / rc
    near = up.abs() < truncation + margin
    out = torch.where(up > 0, torch.full_like(up, truncation), torch.full_like(up, -truncation))
    idx = near.reshape(-1).nonzero()[:, 0]
    if idx.numel():
        pts = voxel_grid(r, bbox[0], bbox[1], device=device).reshape(-1, 3)[idx]
        out.view(-1)[idx] = _hull_sdf_points(sd, cams, pts, k, truncation, chunk, tolerance_px)
    return out, up


def silhouette_disagreement(masks: torch.Tensor, cams: Cameras, miss_px: float = 1.0,
                             pixels_per_view: int = 1000, samples: int = 128,
                             bbox: BBox = DEFAULT_BBOX, threshold: float = 0.5,
                             seed: int = 0) -> tuple[float, torch.Tensor]:
    """How far the views' silhouettes disagree: ``(fraction, per_view [C])``, the fraction of
    object pixels that the visual hull of the *other* views misses by more than
    ``miss_px`` pixels.

    For each view, ``pixels_per_view`` object pixels (drawn with ``seed``; all of them when
    fewer) are marched along their rays through ``bbox`` (``samples`` points); a point's miss
    distance is the largest signed mask distance (pixels, :func:`mask_signed_distance`) over
    the other views that see it, and the pixel's is the smallest along its ray (<= 0: some point
    on the ray is inside every other silhouette). Silhouettes of one solid seen by exact cameras
    always agree: every object pixel's ray meets the solid, which lies inside every other view's
    cone, so the fraction is 0 up to sampling (clean renders of the benchmark meshes and the
    zoo shapes at 256 px: at most 1.2e-4). Generated orbits, whose views differ in shape, and
    wrong cameras give more (six SV3D outputs at their calibrated cameras: 0.7-10 %).
    """
    masks = _check_masks_cams(masks, cams)
    lo = torch.as_tensor(bbox[0], dtype=torch.float32)
    hi = torch.as_tensor(bbox[1], dtype=torch.float32)
    C, H, W = masks.shape
    if C < 2:
        raise ValueError(f"silhouette disagreement needs at least 2 views, got {C}")
    cams = cams.to(device="cpu", dtype=torch.float32)
    m = masks.detach().cpu()
    sd = mask_signed_distance(m, threshold)  # [C, H, W] pixels
    origins, dirs = camera_rays(cams.viewmats, cams.Ks, H, W)  # [C, 3], [C, H, W, 3]
    gen = torch.Generator().manual_seed(int(seed))
    per = torch.zeros(C)
    for v in range(C):
        check_interrupt()
        idx = (m[v] >= threshold).flatten().nonzero()[:, 0]
        if idx.numel() == 0:
            continue
        if idx.numel() > pixels_per_view:
            idx = idx[torch.randperm(idx.numel(), generator=gen)[:pixels_per_view]]
        d = dirs[v].reshape(-1, 3)[idx]  # [P, 3], t = camera depth
        o = origins[v]
        # the ray's interval inside the box (slab method)
        inv = 1.0 / torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
        t0, t1 = (lo - o) * inv, (hi - o) * inv
        tn = torch.minimum(t0, t1).max(-1).values.clamp_min(1e-6)  # [P]
        tf = torch.maximum(t0, t1).min(-1).values
        u = (torch.arange(samples, dtype=torch.float32) + 0.5) / samples  # [S]
        t = tn[:, None] + (tf - tn).clamp_min(0)[:, None] * u  # [P, S]
        pts = (o + d[:, None] * t[..., None]).reshape(-1, 3)  # [P*S, 3]
        others = [c for c in range(C) if c != v]
        uv, z = project(pts, cams.viewmats[others], cams.Ks[others])  # [C-1, P*S, 2]
        val = _sample_bilinear(sd[others], uv)  # [C-1, P*S] pixels
        val = torch.where(_seen(uv, z, W, H), val, torch.full_like(val, -math.inf))
        miss = val.max(0).values.reshape(idx.numel(), samples).min(-1).values  # [P]
        miss = torch.where(tf > tn, miss, torch.full_like(miss, math.inf))
        per[v] = (miss > miss_px).float().mean()
    return float(per.mean()), per


# Silhouette tolerance chosen by ``resolve_tolerance(..., None)``: views whose silhouettes
# disagree on more than DISAGREEMENT_GATE of their object pixels (by more than a pixel) get a
# hull that forgives AUTO_TOLERANCE_PX. Clean renders of the benchmark meshes and of the zoo
# shapes at exact cameras measure <= 1.2e-4 (cow), SV3D orbits at calibrated cameras 0.007
# (girl) to 0.15 (train); the gate sits 16x above the largest clean value and 3x below the
# smallest generated one. The 1 px tolerance gave the real orbits' held-out mesh silhouette
# IoU what carving with two background votes gives (girl 0.915 -> 0.924, glove 0.833 -> 0.849,
# horse 0.775 -> 0.822) with a smoother surface (horse roughness 9.1 -> 8.5 degrees, not 9.4).
AUTO_TOLERANCE_PX = 1.0
DISAGREEMENT_GATE = 0.002


def resolve_tolerance(masks: torch.Tensor, cams: Cameras, tolerance_px: float | None = None
                      ) -> tuple[float, float | None]:
    """``(tolerance_px, disagreement)``: a given tolerance (>= 0) as is (disagreement None);
    ``None`` = automatic: :data:`AUTO_TOLERANCE_PX` when :func:`silhouette_disagreement`
    exceeds :data:`DISAGREEMENT_GATE`, else 0 (the exact hull)."""
    if tolerance_px is not None:
        if not math.isfinite(float(tolerance_px)) or float(tolerance_px) < 0:
            raise ValueError(f"silhouette tolerance must be >= 0 pixels (or automatic), got "
                             f"{tolerance_px}")
        return float(tolerance_px), None
    if masks.shape[0] < 2:
        return 0.0, None
    disagreement, _ = silhouette_disagreement(masks, cams)
    return (AUTO_TOLERANCE_PX if disagreement > DISAGREEMENT_GATE else 0.0), disagreement


# A fit whose silhouettes overlap a view's mask by less than this (IoU) was not fitted to these
# views at these cameras (another scene, another frame, other cameras): it is not used. SV3D
# orbits' fitted Gaussians overlap their own training masks by 0.75 (train, a dynamic orbit)
# to 0.94.
FIT_MIN_IOU = 0.6


def check_fit_alpha(masks: torch.Tensor, fit_alpha: torch.Tensor) -> None:
    """``ValueError`` unless ``fit_alpha`` is shaped like ``masks`` ``[C, H, W]``."""
    if tuple(fit_alpha.shape) != tuple(masks.shape):
        raise ValueError(f"fit_alpha {tuple(fit_alpha.shape)} must match the masks "
                         f"{tuple(masks.shape)} (the fit rendered at the masks' cameras, one "
                         "per view)")


def add_fit_silhouettes(masks: torch.Tensor, fit_alpha: torch.Tensor, threshold: float = 0.5
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(masks, iou)``: masks ``[C, H, W]`` widened by the silhouettes of a 3D fit of the same
    views at the same cameras (``fit_alpha`` ``[C, H, W]``, e.g. fitted Gaussians' alpha), i.e.
    their union (float), and each view's IoU of the two ``[C]``. When a view's IoU is below
    :data:`FIT_MIN_IOU` the fit does not belong to these views and the masks come back as
    they are.

    A visual hull keeps only what *every* view claims, so views whose shapes disagree (a
    generated orbit's) leave it smaller than each of them: on SV3D orbits the hull's
    silhouette covers only ~87 % of the views' own masks. A fit of all views at once is
    consistent by construction; where it covers a pixel that a view's mask misses, that mask
    is the one that disagrees, so the pixel is kept. (Hi3D, "Hi3D: Pursuing High-Resolution
    Image-to-3D Generation with Video Diffusion Models", 3D reconstruction section, goes
    further: it meshes renders of a 3DGS fitted to the generated views instead of the views.)"""
    check_fit_alpha(masks, fit_alpha)
    m, a = masks.float() > threshold, fit_alpha.float() > threshold
    iou = (m & a).flatten(1).sum(1) / (m | a).flatten(1).sum(1).clamp_min(1)  # [C]
    if float(iou.min()) < FIT_MIN_IOU:
        return masks.float(), iou
    return torch.maximum(masks.float(), a.float()), iou


def hull_sdf_and_depth(masks: torch.Tensor, cams: Cameras, resolution: int = 128,
                       min_background_views: int = 1, bbox: BBox = DEFAULT_BBOX,
                       threshold: float = 0.5, truncation: float | None = None,
                       chunk: int = 1 << 18, tolerance_px: float = 0.0
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(field, deep)``: :func:`hull_sdf` (narrow band, truncated) and an untruncated but
    coarse (4x coarser, trilinearly upsampled) version of the same field, ``[R, R, R]`` each;
    ``-deep`` is how far below the hull surface a voxel lies (for
    :func:`.mesh.tsdf.combine_hull_tsdf`'s ``max_carve``)."""
    masks = _check_masks_cams(masks, cams)
    _check_common(resolution, min_background_views, masks.shape[0], bbox, tolerance_px)
    r = max(int(resolution), 16)
    cams = cams.to(device=masks.device, dtype=torch.float32)
    lo = torch.as_tensor(bbox[0], dtype=torch.float32)
    hi = torch.as_tensor(bbox[1], dtype=torch.float32)
    if truncation is None:
        truncation = float(4.0 * (hi - lo).max() / r)
    sd = mask_signed_distance(masks, threshold)
    return _hull_sdf_banded(sd, cams, r, min_background_views, bbox, truncation, chunk,
                            tolerance_px)
