"""IPSM geometry regularisers for sparse-view 3DGS fits (host-free; IPSM, NeurIPS 2024, "How to
Use Diffusion Priors under Sparse Views?"; ideas only from the official code GeorgeNum7/IPSM).

The pieces a fit loop calls each iteration (all pure functions of tensors, no diffusion model):

1. :func:`perturb_cameras` -- pseudo cameras: training poses with Gaussian noise on the camera
   position and on the look-at point, standard deviation ``sigma`` (annealed 0.01 -> 0.05 by
   :func:`pseudo_sigma`). ``sigma`` is a fraction of each camera's distance to its look-at point
   (IPSM works in scene units where the near bound is ~1; our cameras sit ~2 units from a unit
   object, so a relative sigma keeps the same angular size whatever the radius).
2. :func:`inverse_warp` -- back-project every pseudo-view pixel with the **rendered pseudo
   depth**, transform it into the closest training view, and sample (nearest) that view's image
   and its rendered depth. ``mask_warp`` = lands inside the training image.
3. :func:`depth_masks` -- min-max normalise both depths (over the valid pixels, each map by its
   own range) and threshold the difference: ``mask_depth = |d| < 0.3``, ``strict = |d| < 0.1``,
   ``inpaint = not (mask_warp and mask_depth)``.
4. :func:`geometry_consistency_loss` -- L1 between the pseudo render and the (detached) warped
   image inside ``mask_warp & strict``.
5. :func:`pearson_depth_loss` -- ``1 - Pearson(rendered depth, monocular depth)`` (global and/or
   per patch), for a monocular depth that is metric-like ("depth") or inverse ("disparity").

:func:`ipsm_geometry` chains 2-4 for a batch of pseudo views.

Depth convention everywhere: camera-space z (the OpenCV camera's forward axis), 0 (or anything
<= 0) where no surface was rendered -- what ``rasterize(...).depth`` and ``render_mesh`` return.
Pixel ``(i, j)`` is centred at ``(j + 0.5, i + 0.5)`` (:mod:`.geometry.cameras`).

The ideas follow the IPSM paper and its public code (non-commercial licence: nothing copied).
Two deliberate, documented choices: the depth masks compare, by default, the rendered pseudo
depth with the warped training depth as IPSM does (``compare="pseudo"``); ``compare="source"``
instead compares, in the training camera, the z of the back-projected pseudo point with the
training depth sampled there -- an exact occlusion test. Both ignore pixels with no surface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..geometry.cameras import Cameras, backproject, camera_centers, look_at, project

# IPSM's defaults (paper and GeorgeNum7/IPSM): pseudo-pose noise 0.01 -> 0.05, depth masks on
# min-max normalised depths: consistent |Δ| < 0.3, strict |Δ| < 0.1
SIGMA_START = 0.01
SIGMA_END = 0.05
DEPTH_THRESHOLD = 0.3
STRICT_THRESHOLD = 0.1


# ----------------------------------------------------------------------------------------------
# Pseudo cameras
# ----------------------------------------------------------------------------------------------


def pseudo_sigma(step: int, total: int, start: float = SIGMA_START, end: float = SIGMA_END,
                 hold: float = 0.2) -> float:
    """IPSM's annealed perturbation size: ``end * max(hold, (step + 1) / total)``.

    With the defaults it holds ``start`` (= 0.2 * 0.05 = 0.01) for the first 20 % of ``total``
    and grows linearly to ``end`` at the last step. ``start`` is honoured even when it is not
    ``hold * end`` (the hold fraction is then ``start / end``).
    """
    if total < 1:
        raise ValueError(f"total must be >= 1, got {total}")
    if not (0 <= start <= end):
        raise ValueError(f"need 0 <= start <= end, got start={start}, end={end}")
    frac = min(max((step + 1) / total, 0.0), 1.0)
    lo = start / end if end > 0 else hold
    return float(end * max(lo, frac))


def look_at_points(viewmats: torch.Tensor, distance: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The point each camera looks at ``[N, 3]``: along its forward axis, at ``distance`` (default:
    the distance at which the axis passes closest to the world origin, i.e. the orbit centre for
    cameras made by :func:`.geometry.cameras.make_orbit_cameras`; at least 1e-3)."""
    c = camera_centers(viewmats)
    fwd = viewmats[:, 2, :3]  # camera +z in world
    if distance is None:
        distance = (-(c * fwd).sum(-1)).clamp_min(1e-3)
    return c + fwd * distance.unsqueeze(-1)


def perturb_cameras(cams: Cameras, sigma: float, count: Optional[int] = None,
                    source: Optional[torch.Tensor] = None,
                    generator: Optional[torch.Generator] = None):
    """Pseudo cameras around training cameras (IPSM's annealed random poses).

    Picks ``count`` training cameras at random (or the indices ``source``), adds
    ``N(0, (sigma * dist)^2)`` noise to the camera centre and, independently, to its look-at point
    (``dist`` = distance from the camera to that point, :func:`look_at_points`), and rebuilds the
    pose keeping the training camera's own up direction. Intrinsics and image size are copied.

    Returns ``(pseudo Cameras [P], source indices [P] (long))``.
    """
    n = len(cams)
    if n == 0:
        raise ValueError("perturb_cameras needs at least one training camera")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    vm = cams.viewmats
    dev = vm.device
    if source is None:
        count = n if count is None else int(count)
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        source = torch.randint(0, n, (count,), generator=generator, device="cpu").to(dev)
    else:
        source = torch.as_tensor(source, dtype=torch.long, device=dev).flatten()
        if source.numel() == 0 or int(source.min()) < 0 or int(source.max()) >= n:
            raise ValueError(f"source indices must be in [0, {n}), got {source.tolist()}")
    v = vm[source].to(torch.float64)  # [P, 4, 4]
    eye = camera_centers(v)  # [P, 3]
    target = look_at_points(v)
    dist = (target - eye).norm(dim=-1, keepdim=True)  # [P, 1]
    up = -v[:, 1, :3]  # camera -y (image up) in world
    noise = torch.randn(2, source.numel(), 3, generator=generator, dtype=torch.float64)
    noise = noise.to(dev)
    eye_p = eye + noise[0] * sigma * dist
    target_p = target + noise[1] * sigma * dist
    vm_p = look_at(eye_p, target_p, up).to(vm.dtype)
    pseudo = Cameras(vm_p, cams.Ks[source].clone(), cams.width, cams.height)
    return pseudo, source


def closest_views(pseudo_viewmats: torch.Tensor, train_viewmats: torch.Tensor,
                  angle_weight: float = 0.0) -> torch.Tensor:
    """Index ``[P]`` of the training camera closest to each pseudo camera (centre distance, plus
    ``angle_weight * (1 - cos)`` between the viewing directions when > 0)."""
    cp, ct = camera_centers(pseudo_viewmats), camera_centers(train_viewmats)
    d = torch.cdist(cp.to(torch.float64), ct.to(torch.float64))  # [P, N]
    if angle_weight > 0:
        fp, ft = pseudo_viewmats[:, 2, :3], train_viewmats[:, 2, :3]
        d = d + angle_weight * (1 - fp.to(torch.float64) @ ft.to(torch.float64).T)
    return d.argmin(dim=1)


# ----------------------------------------------------------------------------------------------
# Back-projection and the inverse warp
# ----------------------------------------------------------------------------------------------


@dataclass
class Warp:
    """Result of :func:`inverse_warp` (all in the pseudo view's pixel grid)."""

    image: torch.Tensor  # [P, H, W, Ch] training image sampled (nearest), 0 outside mask_warp
    depth: torch.Tensor  # [P, H, W, 1] training rendered depth sampled there, 0 outside
    proj_depth: torch.Tensor  # [P, H, W, 1] z of the back-projected pseudo point, training camera
    mask_warp: torch.Tensor  # [P, H, W, 1] bool: pseudo surface pixel lands in the training image
    pseudo_valid: torch.Tensor  # [P, H, W, 1] bool: pseudo pixel has a surface (depth > 0, alpha)


def inverse_warp(src_image: torch.Tensor, src_depth: torch.Tensor, pseudo_depth: torch.Tensor,
                 src_viewmats: torch.Tensor, pseudo_viewmats: torch.Tensor, src_Ks: torch.Tensor,
                 pseudo_Ks: Optional[torch.Tensor] = None,
                 pseudo_alpha: Optional[torch.Tensor] = None,
                 alpha_threshold: float = 0.5) -> Warp:
    """Inverse-warp the training (source) views into the pseudo views.

    Args:
        src_image: ``[P, Hs, Ws, Ch]`` the training image paired with each pseudo view (any
            channels: RGB, RGBA, features).
        src_depth: ``[P, Hs, Ws, 1]`` the depth **rendered** from the Gaussians in that training
            view (camera z, <= 0 where empty).
        pseudo_depth: ``[P, H, W, 1]`` the depth rendered in the pseudo view.
        src_viewmats / pseudo_viewmats: ``[P, 4, 4]`` world -> camera (OpenCV).
        src_Ks / pseudo_Ks: ``[P, 3, 3]`` pixel intrinsics (pseudo defaults to the source ones).
        pseudo_alpha: optional ``[P, H, W, 1]`` rendered opacity; pixels below
            ``alpha_threshold`` count as empty (expected depth is unreliable there).

    Nothing here is differentiable on purpose: the warp is a *target* (callers detach inputs).
    """
    if src_image.ndim != 4 or src_depth.ndim != 4 or pseudo_depth.ndim != 4:
        raise ValueError("inverse_warp expects src_image [P,Hs,Ws,Ch], src_depth [P,Hs,Ws,1] and "
                         f"pseudo_depth [P,H,W,1]; got {tuple(src_image.shape)}, "
                         f"{tuple(src_depth.shape)}, {tuple(pseudo_depth.shape)}")
    P, H, W, _ = pseudo_depth.shape
    _, Hs, Ws, _ = src_image.shape
    if src_depth.shape[:3] != src_image.shape[:3] or src_image.shape[0] != P:
        raise ValueError(f"src_image {tuple(src_image.shape)}, src_depth {tuple(src_depth.shape)} "
                         f"and pseudo_depth {tuple(pseudo_depth.shape)} must share the batch size "
                         "and the source image size")
    if pseudo_Ks is None:
        pseudo_Ks = src_Ks
    with torch.no_grad():
        pd = pseudo_depth.detach().to(torch.float32 if pseudo_depth.dtype != torch.float64
                                      else torch.float64)
        valid = pd > 0
        if pseudo_alpha is not None:
            valid = valid & (pseudo_alpha.detach() >= alpha_threshold)
        pts = backproject(pd, pseudo_viewmats, pseudo_Ks)  # [P, H, W, 3]
        uv, z = project(pts, src_viewmats, src_Ks)  # [P, H, W, 2], [P, H, W]
        z = z.unsqueeze(-1)  # [P, H, W, 1]
        # nearest pixel = the one whose cell [j, j+1) x [i, i+1) contains (u, v)
        inb = (uv[..., 0] >= 0) & (uv[..., 0] < Ws) & (uv[..., 1] >= 0) & (uv[..., 1] < Hs)
        mask_warp = inb.unsqueeze(-1) & (z > 1e-6) & valid  # [P, H, W, 1]
        jj = uv[..., 0].floor().clamp(0, Ws - 1).long()
        ii = uv[..., 1].floor().clamp(0, Hs - 1).long()
        flat = (ii * Ws + jj).reshape(P, H * W)  # [P, H*W]
        img = src_image.detach().reshape(P, Hs * Ws, -1)
        dep = src_depth.detach().reshape(P, Hs * Ws, 1)
        warped = torch.gather(img, 1, flat[..., None].expand(-1, -1, img.shape[-1]))
        wdep = torch.gather(dep, 1, flat[..., None])
        m = mask_warp.reshape(P, H * W, 1)
        warped = (warped * m).reshape(P, H, W, -1)
        wdep = (wdep * m).reshape(P, H, W, 1).to(pseudo_depth.dtype)
        proj = (z * mask_warp).to(pseudo_depth.dtype)
    return Warp(warped, wdep, proj, mask_warp, valid)


# ----------------------------------------------------------------------------------------------
# Depth masks
# ----------------------------------------------------------------------------------------------


def minmax_normalize(depth: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per image ``[C, H, W, 1]`` min-max normalisation over the ``valid`` pixels to 0..1 (0
    outside ``valid``; a constant image maps to 0)."""
    C = depth.shape[0]
    d = depth.reshape(C, -1)
    v = valid.reshape(C, -1)
    big = torch.finfo(d.dtype).max
    lo = torch.where(v, d, torch.full_like(d, big)).amin(1, keepdim=True)
    hi = torch.where(v, d, torch.full_like(d, -big)).amax(1, keepdim=True)
    none = ~v.any(1, keepdim=True)
    lo = torch.where(none, torch.zeros_like(lo), lo)
    hi = torch.where(none, torch.ones_like(hi), hi)
    rng = (hi - lo).clamp_min(1e-12)
    out = torch.where(v, (d - lo) / rng, torch.zeros_like(d))
    return out.reshape(depth.shape)


@dataclass
class DepthMasks:
    mask_depth: torch.Tensor  # [P, H, W, 1] bool  |normalised depth difference| < threshold
    strict: torch.Tensor  # [P, H, W, 1] bool   ... < strict threshold
    mask: torch.Tensor  # [P, H, W, 1] bool    mask_warp & mask_depth (trusted warped pixels)
    geo: torch.Tensor  # [P, H, W, 1] bool     mask_warp & strict (geometry-consistency region)
    inpaint: torch.Tensor  # [P, H, W, 1] bool  ~(mask_warp & mask_depth): for the inpainting prior
    diff: torch.Tensor  # [P, H, W, 1] float   |normalised difference| (inf where not comparable)


def depth_masks(pseudo_depth: torch.Tensor, warped_depth: torch.Tensor, mask_warp: torch.Tensor,
                threshold: float = DEPTH_THRESHOLD, strict: float = STRICT_THRESHOLD,
                proj_depth: Optional[torch.Tensor] = None, compare: str = "pseudo") -> DepthMasks:
    """IPSM's depth-difference masks.

    ``compare="pseudo"`` (IPSM): min-max normalise the rendered pseudo depth and the warped
    training depth (each over the pixels where both are defined: inside ``mask_warp`` with a
    positive warped depth) and threshold ``|difference|``. ``compare="source"``: the same with the
    z of the pseudo points in the training camera (``proj_depth``, from :func:`inverse_warp`) in
    place of the pseudo depth, both normalised with the *same* range, so the test is an exact
    occlusion test up to the threshold. Pixels outside ``mask_warp`` or where the training view saw
    nothing are never in ``mask_depth``.
    """
    if not (0 < strict <= threshold):
        raise ValueError(f"need 0 < strict <= threshold, got strict={strict}, "
                         f"threshold={threshold}")
    if compare not in ("pseudo", "source"):
        raise ValueError(f"compare must be 'pseudo' or 'source', got {compare!r}")
    with torch.no_grad():
        ok = mask_warp.bool() & (warped_depth > 0)
        if compare == "pseudo":
            a = minmax_normalize(pseudo_depth.detach(), ok)
            b = minmax_normalize(warped_depth.detach(), ok)
        else:
            if proj_depth is None:
                raise ValueError("compare='source' needs proj_depth (Warp.proj_depth)")
            both = torch.cat([proj_depth.detach(), warped_depth.detach()], -1)  # [P,H,W,2]
            okb = ok.expand_as(both)
            C = both.shape[0]
            flat = both.reshape(C, -1)
            fo = okb.reshape(C, -1)
            big = torch.finfo(flat.dtype).max
            lo = torch.where(fo, flat, torch.full_like(flat, big)).amin(1)
            hi = torch.where(fo, flat, torch.full_like(flat, -big)).amax(1)
            none = ~fo.any(1)
            lo = torch.where(none, torch.zeros_like(lo), lo)
            rng = torch.where(none, torch.ones_like(hi), hi - lo).clamp_min(1e-12)
            lo, rng = lo.view(C, 1, 1, 1), rng.view(C, 1, 1, 1)
            a = (proj_depth.detach() - lo) / rng
            b = (warped_depth.detach() - lo) / rng
        diff = torch.where(ok, (a - b).abs(), torch.full_like(a, float("inf")))
        md = diff < threshold
        ms = diff < strict
        mw = mask_warp.bool()
        return DepthMasks(md, ms, mw & md, mw & ms, ~(mw & md), diff)


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean ``|pred - target|`` over the masked pixels (all channels); 0 (with a graph) when the
    mask is empty. ``mask`` ``[..., 1]`` broadcasts over channels."""
    m = mask.to(pred.dtype)
    denom = (m.sum() * pred.shape[-1]).clamp_min(1.0)
    return ((pred - target).abs() * m).sum() / denom


def geometry_consistency_loss(pseudo_rgb: torch.Tensor, warped_rgb: torch.Tensor,
                              mask: torch.Tensor) -> torch.Tensor:
    """IPSM's geometry-consistency term: L1 between the pseudo render ``[P, H, W, 3]`` and the
    warped training image (a detached target) inside ``mask`` (``mask_warp & strict``)."""
    return masked_l1(pseudo_rgb, warped_rgb.detach()[..., : pseudo_rgb.shape[-1]], mask)


def _pearson(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, eps: float = 1e-8):
    """Weighted Pearson correlation along the last dim (``w`` 0/1 weights). Returns (r, n)."""
    n = w.sum(-1)
    ns = n.clamp_min(1.0)
    mx = (x * w).sum(-1) / ns
    my = (y * w).sum(-1) / ns
    dx = (x - mx[..., None]) * w
    dy = (y - my[..., None]) * w
    cov = (dx * dy).sum(-1)
    vx = (dx * dx).sum(-1)
    vy = (dy * dy).sum(-1)
    return cov / torch.sqrt(vx * vy + eps), n


def pearson_depth_loss(depth: torch.Tensor, mono: torch.Tensor, mask: Optional[torch.Tensor] = None,
                       kind: str = "disparity", patch: int = 0,
                       min_pixels: int = 16) -> torch.Tensor:
    """Depth-correlation loss ``1 - Pearson(depth, f(mono))`` (DNGaussian/FSGS/IPSM style).

    Args:
        depth: ``[C, H, W, 1]`` rendered depth (differentiable).
        mono: ``[C, H, W, 1]`` monocular estimate (e.g. a depth IMAGE channel), any affine scale.
        mask: optional ``[C, H, W, 1]`` pixels to use (e.g. the object mask).
        kind: how ``mono`` relates to depth: ``"depth"`` (larger = farther; f = identity),
            ``"disparity"`` (larger = nearer, as MiDaS / Depth Anything output; f = -mono),
            ``"auto"``: the smaller loss of both (sign-agnostic).
        patch: 0 = one global correlation per image; ``p > 0`` = mean over non-overlapping
            ``p x p`` patches (local correlation; patches with < ``min_pixels`` masked pixels are
            skipped; remainder rows/columns are dropped).

    Returns the mean loss over images (and patches), in [0, 2].
    """
    if depth.shape != mono.shape or depth.ndim != 4 or depth.shape[-1] != 1:
        raise ValueError(f"depth and mono must both be [C,H,W,1], got {tuple(depth.shape)} and "
                         f"{tuple(mono.shape)}")
    if kind not in ("depth", "disparity", "auto"):
        raise ValueError(f"kind must be 'depth', 'disparity' or 'auto', got {kind!r}")
    C, H, W, _ = depth.shape
    m = torch.ones_like(depth) if mask is None else mask.to(depth.dtype).expand_as(depth)
    mono = mono.detach().to(depth.dtype)
    if patch and patch > 0:
        p = int(patch)
        hp, wp = H // p, W // p
        if hp == 0 or wp == 0:
            raise ValueError(f"patch {p} is larger than the image {H}x{W}")

        def tiles(t):
            t = t[:, : hp * p, : wp * p, 0].reshape(C, hp, p, wp, p)
            return t.permute(0, 1, 3, 2, 4).reshape(C, hp * wp, p * p)

        x, y, w = tiles(depth), tiles(mono), tiles(m)
    else:
        x, y, w = depth.reshape(C, 1, -1), mono.reshape(C, 1, -1), m.reshape(C, 1, -1)

    def loss_for(target):
        r, n = _pearson(x, target, w)
        use = (n >= min_pixels).to(depth.dtype)
        return ((1 - r) * use).sum() / use.sum().clamp_min(1.0), use.sum()

    if kind == "depth":
        loss, _ = loss_for(y)
    elif kind == "disparity":
        loss, _ = loss_for(-y)
    else:
        l1, _ = loss_for(y)
        l2, _ = loss_for(-y)
        loss = torch.minimum(l1, l2)
    return loss


# ----------------------------------------------------------------------------------------------
# One call for the fit loop
# ----------------------------------------------------------------------------------------------


@dataclass
class IPSMGeometry:
    warp: Warp
    masks: DepthMasks
    loss_geo: torch.Tensor  # scalar, differentiable in the pseudo render


def ipsm_geometry(pseudo_rgb: torch.Tensor, pseudo_depth: torch.Tensor,
                  pseudo_viewmats: torch.Tensor, pseudo_Ks: torch.Tensor,
                  src_image: torch.Tensor, src_depth: torch.Tensor,
                  src_viewmats: torch.Tensor, src_Ks: torch.Tensor,
                  pseudo_alpha: Optional[torch.Tensor] = None,
                  threshold: float = DEPTH_THRESHOLD, strict: float = STRICT_THRESHOLD,
                  compare: str = "pseudo") -> IPSMGeometry:
    """Warp + masks + geometry-consistency loss for a batch of pseudo views.

    ``pseudo_rgb`` ``[P, H, W, 3]`` (with grad) and ``pseudo_depth`` ``[P, H, W, 1]`` are the
    pseudo renders; ``src_image`` ``[P, Hs, Ws, 3]`` the *ground-truth* images of the paired
    training views and ``src_depth`` their *rendered* depths (detached here). The inpainting mask
    for the diffusion prior is ``result.masks.inpaint`` and its conditioning image
    ``result.warp.image``.
    """
    w = inverse_warp(src_image, src_depth, pseudo_depth, src_viewmats, pseudo_viewmats, src_Ks,
                     pseudo_Ks, pseudo_alpha)
    masks = depth_masks(pseudo_depth, w.depth, w.mask_warp, threshold, strict,
                        proj_depth=w.proj_depth, compare=compare)
    loss = geometry_consistency_loss(pseudo_rgb, w.image, masks.geo)
    return IPSMGeometry(w, masks, loss)


# ----------------------------------------------------------------------------------------------
# Cross-view photometric consistency (ours, built on the warp above; not in IPSM)
# ----------------------------------------------------------------------------------------------


def cross_view_loss(depth: torch.Tensor, alpha: torch.Tensor, image: torch.Tensor,
                    mask: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor,
                    nb_images: torch.Tensor, nb_masks: torch.Tensor, nb_depths: torch.Tensor,
                    nb_viewmats: torch.Tensor, nb_Ks: torch.Tensor, tol: float = 0.02,
                    alpha_threshold: float = 0.5, min_pixels: int = 16,
                    max_residual: float = 0.0) -> torch.Tensor:
    """Photometric consistency of a *training* view with its neighbouring training views,
    differentiable in the rendered depth.

    Every pixel of the training view (ground truth ``image`` ``[H, W, 3]``, ``mask`` ``[H, W]``)
    is back-projected with the **rendered** ``depth`` ``[H, W, 1]`` (with grad), projected into
    each neighbour (``nb_*``: ``[B, ...]``) and the neighbour's ground-truth image is sampled
    there (bilinear, so the gradient reaches the depth through the sampling position). The loss
    is the mean L1 to ``image`` over the pixels that are visible in the neighbour: rendered
    ``alpha`` above ``alpha_threshold``, on both masks, inside the neighbour's image and within
    ``tol`` (relative) of the neighbour's rendered depth ``nb_depths`` ``[B, H, W, 1]`` (no grad;
    an occlusion test). Both images are fixed targets, so only the geometry moves: where the
    rendered surface is at the wrong depth the two views disagree, and the gradient moves it.

    IPSM's own geometry term (:func:`geometry_consistency_loss`) detaches the warp and pulls a
    pseudo render's *colours* towards it; this term fixes *where* the surface is, which is what
    a sparse fit gets wrong (measured in ``bench priors``). Returns a scalar (0 with a graph when
    no neighbour sees enough pixels).
    """
    H, W = depth.shape[:2]
    if depth.shape != (H, W, 1) or alpha.shape != (H, W, 1) or image.shape[:2] != (H, W) \
            or mask.shape != (H, W):
        raise ValueError(f"depth {tuple(depth.shape)} / alpha {tuple(alpha.shape)} must be "
                         f"[H, W, 1], image {tuple(image.shape)} [H, W, 3], mask "
                         f"{tuple(mask.shape)} [H, W]")
    B = nb_images.shape[0]
    if nb_masks.shape != (B, H, W) or nb_depths.shape != (B, H, W, 1) \
            or nb_images.shape[1:3] != (H, W):
        raise ValueError(f"neighbour images {tuple(nb_images.shape)}, masks "
                         f"{tuple(nb_masks.shape)} and depths {tuple(nb_depths.shape)} must be "
                         f"[B, {H}, {W}, 3], [B, {H}, {W}] and [B, {H}, {W}, 1]")
    zero = depth.sum() * 0
    if B == 0:
        return zero
    valid = (alpha.detach() > alpha_threshold) & (mask[..., None] > 0.5) & (depth.detach() > 0)
    X = backproject(depth[None], viewmat[None], K[None]).expand(B, -1, -1, -1)  # [B, H, W, 3]
    uv, z = project(X, nb_viewmats, nb_Ks)  # [B, H, W, 2], [B, H, W]
    z = z.unsqueeze(-1)  # [B, H, W, 1]
    grid = torch.stack([uv[..., 0] / W * 2 - 1, uv[..., 1] / H * 2 - 1], -1).to(nb_images.dtype)
    src = torch.cat([nb_images[..., :3], nb_masks[..., None], nb_depths.detach()], -1)
    s = torch.nn.functional.grid_sample(src.permute(0, 3, 1, 2), grid, mode="bilinear",
                                        padding_mode="zeros", align_corners=False)
    s = s.permute(0, 2, 3, 1)  # [B, H, W, 5]
    warped, wm, wd = s[..., :3], s[..., 3:4].detach(), s[..., 4:5].detach()
    zd = z.detach()
    vis = valid[None] & (wm > 0.99) & (zd > 1e-6) & ((wd - zd).abs() < tol * zd)  # [B,H,W,1]
    diff = (warped - image[None, ..., :3]).abs().mean(-1, keepdim=True)  # [B, H, W, 1]
    if max_residual > 0:  # robust: residuals this large are occlusions / other surfaces
        vis = vis & (diff.detach() < max_residual)
    n = vis.flatten(1).sum(1)  # [B]
    use = n >= min_pixels
    if not bool(use.any()):
        return zero
    per = (diff * vis).flatten(1).sum(1) / n.clamp_min(1)  # [B]
    return per[use].mean()
