"""Hi3D stage 2 (3D-aware depth-conditioned video-to-video refiner): depth packing, latent
anchoring schedule and the anchored Euler-EDM sampling loop. Host-free.

What the official code does (yanghb22-fdu/Hi3D-Official, read for this module):

* ``vtdm/encoders.py`` ``DepthEmbedder`` (``shuffle_size 3``): depth of each condition frame is
  resized (bilinear, ``align_corners=False``) to ``(3H/8, 3W/8)``, then **per frame** shifted by
  its minimum and divided by ``max(max, 1e-6)`` (min-max to [0, 1]), then pixel-unshuffled 3x3
  (channel index ``c*9 + 3*dy + dx``, the ``'b c (h h0) (w w0) -> b (c h0 w0) h w'`` layout, the
  same as ``torch.nn.functional.pixel_unshuffle``) -> 9 channels at the latent size ``H/8``.
  The depth network is MiDaS DPT-Hybrid, whose output is relative inverse depth: **near is
  large**. Our packer takes any depth map and converts it to that "near is large" convention
  first (see :func:`to_disparity`).
* ``configs/inference-v02.yaml``: the conditioner's concat outputs are, in embedder order,
  depth (9) then the VAE latent of the condition frames (4); the UNet input is
  ``[noisy latent 4 | depth 9 | condition latent 4]`` = 17 channels. Vector = elevation (256)
  then cond_aug (256).
* ``pipeline_i2v_eval_v02.py`` ``denoising``: ``alpha_i = (0.5 (1 + cos(i / num_steps)))**40``
  (cosine of ``i/25`` in radians, not ``pi i/25``), and *before* Euler step ``i`` every frame is
  blended ``x <- (1 - alpha_i) x + alpha_i (z + sigma_i eps)`` where ``z`` is the scaled
  (x0.18215) VAE latent of the upsampled stage-1 frame and ``eps`` the *same* N(0,1) draw the
  start latent was made from (start = ``eps * sqrt(1 + sigma_0^2)``). alpha_0 == 1, so the first
  step starts from ``z + sigma_0 eps`` exactly.

``strength`` (ours) multiplies alpha_i: 1 = the official schedule, 0 = no anchoring.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from ..geometry.cameras import backproject, project
from . import edm

SHUFFLE = 3  # Hi3D DepthEmbedder shuffle_size
DEPTH_CHANNELS = SHUFFLE * SHUFFLE  # 9
LATENT_CHANNELS = 4
STAGE2_IN_CHANNELS = LATENT_CHANNELS + DEPTH_CHANNELS + LATENT_CHANNELS  # 17
ANCHOR_POWER = 40.0  # alpha_pow in the official pipeline
HI3D_STEPS = 25
HI3D_COND_AUG = 0.02
HI3D_CFG = (1.0, 2.0)  # LinearPredictionGuider min_scale, max_scale
NORM_EPS = 1e-6  # official max(max, 1e-6)

DEPTH_KINDS = ("near_bright", "far_bright", "metric")


# ----------------------------------------------------------------------------------------------
# Depth packing
# ----------------------------------------------------------------------------------------------


def to_disparity(depth: torch.Tensor, kind: str = "near_bright") -> torch.Tensor:
    """Bring a depth map into MiDaS's convention (larger = nearer, background small).

    * ``near_bright``: already like MiDaS / Depth Anything / ComfyUI depth preprocessors -> as is.
    * ``far_bright``: a depth image where far is bright and 0 marks "no surface" (background):
      foreground ``1 + max - d`` (so every surface point is above the background), background 0.
    * ``metric``: camera distance / z-depth (e.g. rendered from our Gaussians), 0 or negative =
      background: ``1/d`` on the surface, 0 elsewhere (true inverse depth, what MiDaS predicts up
      to scale and shift).

    ``depth``: ``[F, H, W]``. Returns float ``[F, H, W]``.
    """
    if kind not in DEPTH_KINDS:
        raise ValueError(f"depth kind {kind!r} is not one of {DEPTH_KINDS}")
    d = depth.float()
    if kind == "near_bright":
        return d
    fg = d > 0
    if kind == "far_bright":
        dmax = d.flatten(1).amax(1).view(-1, 1, 1)
        return torch.where(fg, 1.0 + dmax - d, torch.zeros_like(d))
    return torch.where(fg, 1.0 / d.clamp_min(1e-12), torch.zeros_like(d))


def normalize_per_frame(d: torch.Tensor) -> torch.Tensor:
    """Official per-frame min-max: ``d -= min(d); d /= max(max(d), 1e-6)``. ``[F, ...]``."""
    flat = d.flatten(1)
    lo = flat.amin(1)
    shifted = flat - lo[:, None]
    hi = shifted.amax(1).clamp_min(NORM_EPS)
    return (shifted / hi[:, None]).view_as(d)


def pack_depth(depth: torch.Tensor, latent_h: int, latent_w: int, kind: str = "near_bright"
               ) -> torch.Tensor:
    """The 9-channel depth condition of Hi3D stage 2.

    ``depth``: ``[F, H, W]`` or ``[F, 1, H, W]`` any resolution. Returns ``[F, 9, latent_h,
    latent_w]`` in [0, 1]: to disparity (``kind``), bilinear resize to ``(3 latent_h,
    3 latent_w)``, per-frame min-max, 3x3 pixel-unshuffle.
    """
    if depth.ndim == 4:
        if depth.shape[1] != 1:
            raise ValueError(f"depth must be [F,H,W] or [F,1,H,W], got {tuple(depth.shape)}")
        depth = depth[:, 0]
    if depth.ndim != 3:
        raise ValueError(f"depth must be [F,H,W] or [F,1,H,W], got {tuple(depth.shape)}")
    if latent_h < 1 or latent_w < 1:
        raise ValueError(f"latent size {latent_h}x{latent_w} must be positive")
    d = to_disparity(depth, kind)[:, None]  # [F, 1, H, W]
    size = (SHUFFLE * int(latent_h), SHUFFLE * int(latent_w))
    if tuple(d.shape[-2:]) != size:
        d = F.interpolate(d, size=size, mode="bilinear", align_corners=False)
    d = normalize_per_frame(d)  # [F, 1, 3h, 3w]
    return F.pixel_unshuffle(d, SHUFFLE)  # [F, 9, h, w]


def unpack_depth(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of the unshuffle: ``[F, 9, h, w]`` -> ``[F, 3h, 3w]`` (for previews and tests)."""
    if packed.ndim != 4 or packed.shape[1] != DEPTH_CHANNELS:
        raise ValueError(f"packed depth must be [F,9,h,w], got {tuple(packed.shape)}")
    return F.pixel_shuffle(packed, SHUFFLE)[:, 0]


def depth_from_image(image: torch.Tensor) -> torch.Tensor:
    """A depth IMAGE ``[B, H, W, C]`` (grey or RGB) -> ``[B, H, W]`` (channel mean)."""
    if image.ndim == 3:
        return image.float()
    if image.ndim != 4:
        raise ValueError(f"depth image must be [B,H,W,C] or [B,H,W], got {tuple(image.shape)}")
    return image[..., :3].float().mean(-1)


# ----------------------------------------------------------------------------------------------
# Latent anchoring
# ----------------------------------------------------------------------------------------------


def anchor_alphas(steps: int = HI3D_STEPS, strength: float = 1.0, power: float = ANCHOR_POWER
                  ) -> torch.Tensor:
    """``alpha_i = strength * [0.5 (1 + cos(i / steps))]**power`` for i = 0..steps-1 (float64).

    With ``steps = 25`` this is the official ``cos(i/25)`` schedule (alpha_0 = 1, alpha_24 ~ 7e-5).
    """
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps={steps}: need at least 1 step")
    if not (0.0 <= strength <= 1.0):
        raise ValueError(f"anchor strength {strength} must be in [0, 1]")
    i = torch.arange(steps, dtype=torch.float64)
    return float(strength) * (0.5 * (1.0 + torch.cos(i / steps))) ** float(power)


def anchor(x: torch.Tensor, z: torch.Tensor, eps: torch.Tensor, sigma,
           alpha: float) -> torch.Tensor:
    """One anchoring blend: ``(1 - alpha) x + alpha (z + sigma eps)``."""
    if alpha == 0.0:
        return x
    return x * (1.0 - alpha) + (z + eps * sigma) * alpha


def sample_anchored(
    denoise_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigmas: torch.Tensor,
    z_anchor: Optional[torch.Tensor],
    eps: torch.Tensor,
    alphas: Optional[Sequence[float]],
    callback: Optional[Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]] = None,
) -> torch.Tensor:
    """Euler-EDM with Hi3D's latent anchoring before every step.

    ``denoise_fn(x, sigma)`` returns the guided denoised x0 (sigma 0-d tensor); ``x`` is the start
    latent (``eps * sqrt(1 + sigma_0^2)`` for the official start); ``z_anchor`` the scaled latent of
    the upsampled low-res views ``[F, 4, h, w]`` (None or ``alphas`` None = plain Euler); ``eps``
    the fixed N(0,1) draw; ``alphas`` one per step (:func:`anchor_alphas`). ``callback(i, x,
    denoised, sigma)`` after each step.
    """
    sigmas = sigmas.to(device=x.device)
    steps = len(sigmas) - 1
    if alphas is not None and len(alphas) < steps:
        raise ValueError(f"{len(alphas)} anchoring alphas for {steps} steps")
    if z_anchor is not None and z_anchor.shape != x.shape:
        raise ValueError(f"anchor latent {tuple(z_anchor.shape)} != latent {tuple(x.shape)}")
    if eps.shape != x.shape:
        raise ValueError(f"anchor noise {tuple(eps.shape)} != latent {tuple(x.shape)}")
    z = None if z_anchor is None else z_anchor.to(device=x.device, dtype=x.dtype)
    e = eps.to(device=x.device, dtype=x.dtype)
    for i in range(steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        if z is not None and alphas is not None:
            x = anchor(x, z, e, sigma.to(x.dtype), float(alphas[i]))
        denoised = denoise_fn(x, sigma)
        x = edm.euler_step(x, denoised, sigma, sigma_next)
        if callback is not None:
            callback(i, x, denoised, sigma)
    return x


def refine_latents(
    denoise_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    z_anchor: torch.Tensor,
    steps: int = HI3D_STEPS,
    strength: float = 1.0,
    generator: Optional[torch.Generator] = None,
    sigma_max: float = edm.SIGMA_MAX,
    sigma_min: float = edm.SIGMA_MIN,
    callback=None,
) -> torch.Tensor:
    """The whole official stage-2 loop on a denoiser callable: seeded eps, EDM sigmas, start
    ``eps sqrt(1 + sigma_0^2)``, anchored Euler. Returns the refined scaled latent."""
    eps = edm.initial_noise(z_anchor.shape, 0.0, generator=generator, device=z_anchor.device,
                            dtype=z_anchor.dtype)  # sqrt(1 + 0) = 1: plain N(0,1)
    sigmas = edm.edm_sigmas(steps, sigma_min, sigma_max, device=z_anchor.device)
    x = eps * math.sqrt(1.0 + float(sigmas[0]) ** 2)
    alphas = anchor_alphas(steps, strength).tolist()
    return sample_anchored(denoise_fn, x, sigmas, z_anchor, eps, alphas, callback)


# ----------------------------------------------------------------------------------------------
# Frame order: the refiner expects the input view first
# ----------------------------------------------------------------------------------------------


def reference_index(azimuths: Optional[torch.Tensor], frames: int) -> int:
    """Index of the input view: the camera nearest azimuth 0 (SV3D puts it last, Hi3D first)."""
    if azimuths is None or len(azimuths) == 0:
        return 0
    a = torch.as_tensor(azimuths, dtype=torch.float64) % 360.0
    dist = torch.minimum(a, 360.0 - a)
    return int(torch.argmin(dist))


def roll_to_front(x: torch.Tensor, index: int) -> torch.Tensor:
    """Cyclically shift frames so ``index`` comes first (keeps orbit order)."""
    return torch.roll(x, shifts=-int(index), dims=0)


def roll_back(x: torch.Tensor, index: int) -> torch.Tensor:
    return torch.roll(x, shifts=int(index), dims=0)


def check_refine_inputs(kind: str, views: torch.Tensor, depth, cameras, target_size: int,
                        cfg_min: float, cfg_max: float) -> None:
    """``ValueError`` naming the input and the fix for views / depth / cameras / settings the
    refiner cannot use (``kind``: the model family, ``"hi3d_stage2"`` needs depth), before any
    model work."""
    from ..inputs import check_image, check_mask

    check_image(views, "views")
    if views.shape[1] != views.shape[2]:
        raise ValueError(f"views are {views.shape[2]}x{views.shape[1]}; the refiner needs square "
                         "views (crop or pad them first)")
    if target_size % 64 != 0:
        raise ValueError(f"target_size {target_size} is not a multiple of 64; use e.g. "
                         f"{max(64, round(target_size / 64) * 64)}")
    if cfg_min < 0 or cfg_max < 0:
        raise ValueError("cfg_min and cfg_max must be >= 0")
    if cameras is not None and len(cameras) != views.shape[0]:
        raise ValueError(f"{len(cameras)} cameras for {views.shape[0]} views; connect the cameras "
                         "of these views")
    if kind == "hi3d_stage2":
        if depth is None:
            raise ValueError("the Hi3D stage-2 refiner needs a depth IMAGE (rendered from the "
                             "Gaussians or from a depth node); without depth use an SVD/SV3D MODEL "
                             "(anchored mode)")
        if isinstance(depth, torch.Tensor) and depth.ndim == 3:  # [B,H,W] depth maps
            check_mask(depth, "depth")
        else:
            check_image(depth, "depth", channels=(1, 3, 4))
        if depth.shape[0] != views.shape[0]:
            raise ValueError(f"depth has {depth.shape[0]} images but views has "
                             f"{views.shape[0]}; give one depth map per view")


def square_resize(img: torch.Tensor, size: int) -> torch.Tensor:
    """IMAGE [B,H,W,C] -> [B,size,size,3] (alpha composited on white; bilinear like cv2.resize)."""
    if img.shape[-1] == 4:
        a = img[..., 3:4]
        img = img[..., :3] * a + (1.0 - a)
    x = img[..., :3].movedim(-1, 1).float()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > size)
    return x.movedim(1, -1).clamp(0, 1)


# ----------------------------------------------------------------------------------------------
# Multi-view consistency of a depth condition (benchmark metric)
# ----------------------------------------------------------------------------------------------


def view_pairs(n: int, closed: bool = True) -> list:
    """Adjacent view pairs ``(i, i+1)`` of an orbit of ``n`` views (+ ``(n-1, 0)`` if closed)."""
    return [(i, i + 1) for i in range(n - 1)] + ([(n - 1, 0)] if closed and n > 2 else [])


def reproject_pixels(depth_i: torch.Tensor, m: torch.Tensor, viewmats: torch.Tensor,
                     Ks: torch.Tensor, i: int, j: int):
    """Pixels ``m`` ``[H, W]`` (bool) of view ``i`` at camera z ``depth_i`` ``[H, W]``, seen
    from view ``j``: nearest pixel ``(u [P], v [P])`` (long), camera-``j`` z ``[P]``, and
    ``inside`` ``[P]`` (in front of camera ``j`` and within its ``H x W`` image). float64."""
    h, w = depth_i.shape
    vm, K = viewmats.double(), Ks.double()
    pw = backproject(depth_i.double()[None, ..., None], vm[i:i + 1], K[i:i + 1])[0][m]  # [P, 3]
    uv, z = project(pw, vm[j:j + 1], K[j:j + 1])  # [1, P, 2], [1, P] in camera j
    z = z[0]
    u, v = uv[0, :, 0].floor().long(), uv[0, :, 1].floor().long()
    return u, v, z, (z > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)


def reprojection_error(depth: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor,
                       valid: Optional[torch.Tensor] = None, closed: bool = True,
                       occlusion_tol: Optional[float] = None,
                       occluded: Optional[list] = None) -> torch.Tensor:
    """Mean relative depth disagreement between adjacent views.

    ``depth`` ``[N, H, W]`` z-depth (camera z, OpenCV) with 0 = background; ``viewmats`` world->cam
    ``[N,4,4]``; ``Ks`` ``[N,3,3]``. For each pair (i, i+1): unproject view i's valid pixels,
    project into view i+1, sample its depth (nearest), and compare with the projected z:
    ``|z_proj - D_j| / z_proj`` over points landing on view j's surface. Returns ``[pairs]``.

    ``occlusion_tol`` (relative, e.g. 0.05): points more than that *behind* view j's surface
    (``(z_proj - D_j) / z_proj > occlusion_tol``) are taken as hidden in view j and left out --
    without it, correct depth still scores the occluded points of every pair. As a depth map
    that is too far would hide its own errors that way, the fraction left out per pair is
    appended to the list ``occluded`` when one is given (report it beside the error).
    """
    out = []
    for i, j in view_pairs(depth.shape[0], closed):
        d = depth[i].double()
        m = d > 0 if valid is None else (valid[i] & (d > 0))
        if m.sum() == 0:
            out.append(torch.tensor(float("nan"), dtype=torch.float64))
            continue
        ui, vi, z, inside = reproject_pixels(d, m, viewmats, Ks, i, j)
        dj = torch.zeros_like(z)
        dj[inside] = depth[j].double()[vi[inside], ui[inside]]
        ok = inside & (dj > 0)
        if valid is not None:
            ok2 = torch.zeros_like(ok)
            ok2[inside] = valid[j][vi[inside], ui[inside]]
            ok = ok & ok2
        if occlusion_tol is not None:
            hidden = ok & ((z - dj) / z.clamp_min(1e-12) > float(occlusion_tol))
            if occluded is not None:
                occluded.append(float(hidden.sum()) / max(int(ok.sum()), 1))
            ok = ok & ~hidden
        if ok.sum() == 0:
            out.append(torch.tensor(float("nan"), dtype=torch.float64))
            continue
        out.append(((z[ok] - dj[ok]).abs() / z[ok]).mean())
    return torch.stack(out)


def align_scale_shift(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Least-squares ``s pred + t`` matching ``target`` on ``mask`` per frame (MiDaS evaluation).
    ``[N, H, W]`` each; returns the aligned ``pred``."""
    out = torch.zeros_like(target, dtype=torch.float64)
    for k in range(pred.shape[0]):
        m = mask[k]
        p, t = pred[k][m].double(), target[k][m].double()
        if p.numel() < 2:
            continue
        A = torch.stack([p, torch.ones_like(p)], 1)
        sol = torch.linalg.lstsq(A, t[:, None]).solution[:, 0]
        out[k] = pred[k].double() * sol[0] + sol[1]
    return out
