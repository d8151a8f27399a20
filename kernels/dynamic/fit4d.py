"""4D reconstruction: V·F frames of a moving object + V orbit cameras -> a sequence of Gaussians.

Frame order (the ONE convention of OrbitForge 4D, shared with :mod:`.diffusion2`)
---------------------------------------------------------------------------------
Image batches of a views × times matrix are **view-major**: image ``v * F + f`` is view ``v``
(camera ``v`` of the V-camera CAMERAS) at time ``f``; so the batch holds all F times of view 0,
then all F times of view 1, ... (:func:`frame_index`, :func:`split_by_time`). View-major is what
Diffusion²'s matrix ``[V, F, ...]`` flattens to (each row, the video of one view, stays
contiguous) and what the Diffusion² sampler nodes output. The V cameras are one orbit shared by
every time step (the object moves, the cameras do not).

Method
------
Frame-by-frame 3D Gaussian Splatting (:func:`.splat.fit.fit_gaussians`) with warm start:

* time 0: the full :class:`.splat.fit.FitConfig` (visual-hull initialisation, densification);
* time f > 0: start from time f-1's Gaussians and run ``warm_iterations`` steps **without
  densification and without the final prune**, at ``warm_lr_scale`` times the means', colours'
  and opacities' learning rates (a short fit must move and recolour Gaussians as far as the
  object moved; transparent Gaussians stay and can reappear when a hidden part turns into view).
  So the parameters stay aligned one-to-one with the previous frame: every scene of the
  sequence has the same N and Gaussian i of time f is Gaussian i of time f-1 (the PLY sequence
  has correspondences). Plus a temporal smoothness term through fit's ``regularizer`` hook::

      temporal_weight * ( mean ||Δmean||² / s² + mean ||Δrgb||² + mean Δopacity² )

  (Δ against the previous frame's fitted values, ``s`` the half-size of the scene box the
  cameras see, so the term is scale-free);
* optional per-image confidence weights (the 4D reconstruction of Diffusion², "Dynamic 3D
  Content Generation via Score Composition of Orthogonal Diffusion Models"; not in the released
  code fudan-zvg/diffusion-square): the paper's loss is
  ``λ_lpips·C_lpips·L_lpips + λ_ssim·C_ssim·L_dssim`` with ``C_ssim = SSIM(gt, render)`` and
  ``C_lpips = 1 - LPIPS`` per image. ``confidence="ssim"`` computes ``C_ssim`` per view from a
  first-pass render of the warm-start scene (time f-1's fit for f > 0; for time 0 its own
  unweighted fit, then refined with the weights for ``warm_iterations`` steps) and scales each
  view's loss by it (normalised to mean 1 over the views of the time step). Note the warm-start
  scene of f > 0 is the *previous* time, so a view that changes a lot with the motion also gets a
  lower confidence. LPIPS needs a pretrained network that is not available offline, so
  ``C_lpips`` is not computed; callers may pass their own per-image ``weights`` (e.g. 1 - LPIPS
  computed elsewhere), which multiply the SSIM confidences. Our loss keeps fit's L1 + D-SSIM +
  mask terms (the paper has no L1).

Nothing here writes files except :func:`write_ply_sequence`, which is all-or-nothing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch

from ..atomic import atomic_write_all
from ..geometry.cameras import Cameras, make_orbit_cameras
from ..splat.fit import (
    FitConfig,
    check_views,
    fit_gaussians,
    masks_from_background,
    render_gaussians,
    scene_bbox,
)
from ..splat.gaussians import SH_C0, Gaussians
from ..splat.ply import ply_bytes

FRAME_ORDER = "view-major"  # image index = v * F + f



# ----------------------------------------------------------------------------------------------
# The GAUSSIANS_SEQUENCE type
# ----------------------------------------------------------------------------------------------


@dataclass
class GaussianSequence:
    """The ``GAUSSIANS_SEQUENCE`` node type: one :class:`Gaussians` scene per time step.

    ``times`` [F] float: the time of each scene in frame units (0, 1, ..., F-1 for a sequence fitted
    from F frames per view).
    """

    gaussians: list[Gaussians]
    times: torch.Tensor

    def __post_init__(self):
        if len(self.gaussians) == 0:
            raise ValueError("a GAUSSIANS_SEQUENCE needs at least one scene")
        self.times = torch.as_tensor(self.times, dtype=torch.float32).flatten()
        if self.times.numel() != len(self.gaussians):
            raise ValueError(f"{len(self.gaussians)} scenes but {self.times.numel()} times")

    def __len__(self) -> int:
        return len(self.gaussians)

    def __getitem__(self, i: int) -> Gaussians:
        return self.gaussians[i]


@dataclass
class Fit4DConfig:
    base: FitConfig = field(default_factory=FitConfig)  # time 0 (and the base of later frames)
    warm_iterations: int = 300  # iterations of each later time step (warm start)
    temporal_weight: float = 0.02  # weight of the smoothness term vs the previous time step
    confidence: str = "none"  # "none" | "ssim"
    warm_densify: bool = False  # densify later frames too (breaks the one-to-one alignment)
    # learning-rate multiplier (means, colours, opacities) of later frames
    warm_lr_scale: float = 5.0

    def __post_init__(self):
        if self.temporal_weight < 0 or not math.isfinite(self.temporal_weight):
            raise ValueError(f"temporal_weight must be >= 0, got {self.temporal_weight}")
        if self.confidence not in ("none", "ssim"):
            raise ValueError(f"confidence must be 'none' or 'ssim', got {self.confidence!r}")
        if self.warm_densify and self.temporal_weight > 0:
            raise ValueError("warm_densify changes the number of Gaussians, so the temporal term "
                             "has no previous parameters to compare with; set temporal_weight to 0")
        if not self.warm_lr_scale > 0:
            raise ValueError(f"warm_lr_scale must be > 0, got {self.warm_lr_scale}")


@dataclass
class Fit4DResult:
    sequence: GaussianSequence
    history: list  # per time step: the fit's history list
    confidences: torch.Tensor | None  # [V*F] view-major per-image weights used, or None


# ----------------------------------------------------------------------------------------------
# Frame order and checks
# ----------------------------------------------------------------------------------------------


def frame_index(view: int, time: int, views: int, times: int) -> int:
    """Batch index of view ``view`` at time ``time`` (view-major: ``view * times + time``)."""
    if not (0 <= view < views and 0 <= time < times):
        raise ValueError(f"view {view} / time {time} outside {views} views x {times} times")
    return view * times + time


def split_by_time(x: torch.Tensor, views: int, times: int) -> torch.Tensor:
    """``[V*F, ...]`` view-major -> ``[F, V, ...]`` (one batch of V views per time step)."""
    if x.shape[0] != views * times:
        raise ValueError(f"expected {views} x {times} = {views * times} items, got {x.shape[0]}")
    return x.reshape((views, times) + tuple(x.shape[1:])).transpose(0, 1)


def merge_times(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`split_by_time`: ``[F, V, ...]`` -> ``[V*F, ...]`` view-major."""
    return x.transpose(0, 1).reshape((x.shape[0] * x.shape[1],) + tuple(x.shape[2:]))


def check_sequence(images: torch.Tensor, cams: Cameras, times: int,
                   masks: torch.Tensor | None = None, weights: torch.Tensor | None = None,
                   background=(1.0, 1.0, 1.0)) -> None:
    """Validate a 4D fit's inputs before any work; ``ValueError`` naming the problem and the fix."""
    if not isinstance(cams, Cameras):
        raise ValueError(f"cameras must be CAMERAS, got {type(cams).__name__}")
    if int(times) != times or times < 1:
        raise ValueError(f"times (frames per view) must be an integer >= 1, got {times}")
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (3, 4):
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
        raise ValueError(f"views must be an IMAGE [V*F,H,W,3], got {got}")
    v = len(cams)
    if images.shape[0] != v * times:
        raise ValueError(
            f"{images.shape[0]} images but {v} cameras x {times} times = {v * times}: give V*F "
            f"images in view-major order (image v*F + f is view v at time f) with one camera per "
            f"view, and set times/frames_per_view to F"
            + (f" (here F would be {images.shape[0] / v:g})" if v else ""))
    h, w = images.shape[1:3]
    if (w, h) != (cams.width, cams.height) and abs(w / h - cams.width / cams.height) > 1e-3:
        raise ValueError(f"views are {w}x{h} but the cameras are {cams.width}x{cams.height} with "
                         "another aspect ratio; resize the views or make matching cameras")
    if masks is not None and (masks.ndim != 3 or masks.shape[0] != images.shape[0]
                              or tuple(masks.shape[1:]) != (h, w)):
        raise ValueError(f"mask must be [V*F,H,W] = [{images.shape[0]},{h},{w}] to match the "
                         f"views, got {list(masks.shape)}")
    if weights is not None:
        weights = torch.as_tensor(weights)
        if weights.ndim != 1 or weights.numel() != images.shape[0]:
            raise ValueError(f"weights must be [V*F] = [{images.shape[0]}] per-image confidences "
                             f"(view-major), got {list(weights.shape)}")
        if not torch.isfinite(weights).all() or (weights < 0).any():
            raise ValueError("weights must be finite and non-negative")
    for f in range(times):
        idx = [frame_index(i, f, v, times) for i in range(v)]
        try:
            check_views(images[idx, ..., :3], cams, None if masks is None else masks[idx])
        except ValueError as e:
            raise ValueError(f"time step {f}: {e}") from None
        m = masks[idx] if masks is not None else masks_from_background(images[idx, ..., :3],
                                                                       background)
        empty = [idx[i] for i in torch.nonzero(m.reshape(v, -1).amax(-1) < 0.5).flatten().tolist()]
        if empty:
            raise ValueError(f"image(s) {empty} (time step {f}) show no object (mask empty / all "
                             f"background {tuple(background)}); give a MASK, the right background "
                             "colour, or remove that time step")


# ----------------------------------------------------------------------------------------------
# Pieces
# ----------------------------------------------------------------------------------------------


def temporal_regularizer(prev: Gaussians, weight: float, length_scale: float) -> Callable:
    """fit's ``regularizer``: pulls means / colours / opacities toward ``prev`` (same N)."""
    prev_means = prev.means.detach()
    prev_rgb = prev.sh[:, 0].detach() * SH_C0
    prev_op = torch.sigmoid(prev.opacity_logits.detach())
    inv_s2 = 1.0 / max(length_scale, 1e-6) ** 2

    def reg(it, params, render_fn):
        if weight <= 0:
            return params["means"].new_zeros(())
        if params["means"].shape[0] != prev_means.shape[0]:
            raise RuntimeError("temporal term needs aligned parameters: densification changed N")
        dm = (params["means"] - prev_means.to(params["means"])).pow(2).sum(-1).mean() * inv_s2
        dc = (params["sh"][:, 0] * SH_C0 - prev_rgb.to(params["sh"])).pow(2).sum(-1).mean()
        do = (torch.sigmoid(params["opacity_logits"]) - prev_op.to(params["means"])).pow(2).mean()
        return weight * (dm + dc + do)

    return reg


def ssim_confidence(g: Gaussians, images: torch.Tensor, cams: Cameras,
                    background=(1.0, 1.0, 1.0), floor: float = 0.05) -> torch.Tensor:
    """Diffusion²'s C_ssim per view ``[V]``: SSIM(gt, render of ``g``), clamped to ``floor``."""
    import kornia

    h, w = images.shape[1:3]
    rgb = render_gaussians(g, cams.resized(w, h), background)[0]  # [V,H,W,3]
    s = kornia.metrics.ssim(rgb.permute(0, 3, 1, 2).float(),
                            images[..., :3].permute(0, 3, 1, 2).float().to(rgb.device), 11,
                            max_val=1.0)
    return s.mean(dim=(1, 2, 3)).clamp_min(floor).cpu()


def _normalised(w: torch.Tensor) -> torch.Tensor:
    return w / w.mean().clamp_min(1e-8)


# ----------------------------------------------------------------------------------------------
# The fit
# ----------------------------------------------------------------------------------------------


def fit_sequence(images: torch.Tensor, cams: Cameras, times: int,
                 masks: torch.Tensor | None = None, config: Fit4DConfig | None = None,
                 weights: torch.Tensor | None = None,
                 progress: Callable[[int, int, Callable[[], torch.Tensor]], None] | None = None
                 ) -> Fit4DResult:
    """Fit one Gaussian scene per time step to ``images`` [V*F,H,W,3] (view-major) seen by the V
    ``cams`` (shared by all times). ``masks`` [V*F,H,W] optional; ``weights`` [V*F] optional
    per-image confidences; ``progress(step, total, preview_fn)`` over all time steps (an
    exception raised there aborts the whole fit; nothing is written by this function)."""
    cfg = config or Fit4DConfig()
    base = cfg.base
    if cfg.warm_iterations < 1 and times > 1:
        raise ValueError(f"warm_iterations must be >= 1, got {cfg.warm_iterations}")
    if base.iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {base.iterations}")
    images = images[..., :3]
    check_sequence(images, cams, times, masks, weights, base.background)
    v = len(cams)
    imgs_t = split_by_time(images, v, times)  # [F,V,H,W,3]
    msks_t = None if masks is None else split_by_time(masks, v, times)  # [F,V,H,W]
    user_w = None if weights is None else split_by_time(torch.as_tensor(weights).float(), v, times)
    use_ssim = cfg.confidence == "ssim"
    refine0 = cfg.warm_iterations if use_ssim else 0
    total = base.iterations + refine0 + (times - 1) * cfg.warm_iterations
    done = [0]

    def sub_progress(step, _total, preview_fn, offset):
        if progress is not None:
            progress(offset + step, total, preview_fn)

    def run(f, config, init, w):
        offset = done[0]
        reg = None
        if init is not None and f > 0:
            reg = temporal_regularizer(init, cfg.temporal_weight, scene_bbox(cams)[1][0])
        res = fit_gaussians(imgs_t[f], cams, None if msks_t is None else msks_t[f], config,
                            init=init, weights=w,
                            progress=lambda s, t, p: sub_progress(s, t, p, offset),
                            regularizer=reg)
        done[0] += config.iterations
        return res

    k = cfg.warm_lr_scale
    # later frames: no densification and no final prune, so every warm frame holds exactly the
    # Gaussians of time 0's fit, one-to-one (index i is the same Gaussian at every time >= 1)
    warm_cfg = replace(base, iterations=max(cfg.warm_iterations, 1), densify=cfg.warm_densify,
                       sh_increase_every=1, lr_means=base.lr_means * k,
                       lr_means_final=base.lr_means_final * k, lr_sh0=base.lr_sh0 * k,
                       lr_opacity=base.lr_opacity * k,
                       densify_cfg=replace(base.densify_cfg, prune_opacity=0.0))
    scenes, history, conf_all = [], [], []
    prev = None
    for f in range(times):
        w = None if user_w is None else user_w[f].clone()
        if f == 0:
            res = run(0, base, None, None if use_ssim else
                      (None if w is None else _normalised(w)))
            hist = list(res.history)
            if use_ssim:
                c = ssim_confidence(res.gaussians, imgs_t[0], cams, base.background)
                w = c if w is None else c * w
                w = _normalised(w)
                refine = replace(base, iterations=max(cfg.warm_iterations, 1), densify=False,
                                 sh_increase_every=1)
                res = run(0, refine, res.gaussians, w)
                hist += res.history
        else:
            if use_ssim:
                c = ssim_confidence(prev, imgs_t[f], cams, base.background)
                w = c if w is None else c * w
            if w is not None:
                w = _normalised(w)
            res = run(f, replace(warm_cfg, seed=base.seed + f), prev, w)
            hist = list(res.history)
        conf_all.append(torch.ones(v) if w is None else w.cpu())
        scenes.append(res.gaussians)
        history.append(hist)
        prev = res.gaussians
    conf = merge_times(torch.stack(conf_all)) if (use_ssim or weights is not None) else None
    seq = GaussianSequence(scenes, torch.arange(times, dtype=torch.float32))
    return Fit4DResult(seq, history, conf)


# ----------------------------------------------------------------------------------------------
# Turntable over time, PLY sequence
# ----------------------------------------------------------------------------------------------


def turntable_cameras(cams: Cameras, frames: int, width: int | None = None,
                      height: int | None = None) -> Cameras:
    """``frames`` cameras going once around the object (from the first camera's azimuth, at the
    orbit's mean elevation and radius, its field of view), one per time step."""
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    az = [float(cams.azimuth[0]) + 360.0 * i / frames for i in range(frames)]
    return make_orbit_cameras(float(cams.elevation.mean()), az, float(cams.radius.mean()),
                              float(cams.fov[0]), width or cams.width, height or cams.height)


def render_turntable(seq: GaussianSequence, cams: Cameras, background=(1.0, 1.0, 1.0),
                     progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """``[F,H,W,3]`` 0..1: scene f rendered from turntable camera f (the camera circles as time
    goes)."""
    tt = turntable_cameras(cams, len(seq))
    out = []
    for f, g in enumerate(seq.gaussians):
        out.append(render_gaussians(g, tt[[f]].to(g.device), background)[0][0])
        if progress is not None:
            progress(f + 1, len(seq))
    return torch.stack(out).clamp(0, 1)


def sequence_paths(folder: str, base: str, times: int) -> list[str]:
    """``folder/base_t000.ply`` ... one per time step."""
    return [os.path.join(folder, f"{base}_t{f:03d}.ply") for f in range(times)]


def write_ply_sequence(paths: Sequence[str], seq: GaussianSequence) -> list[str]:
    """Write scene f to ``paths[f]``, all or nothing: refuses existing paths; every file is
    written in full before any appears (``atomic_write_all``)."""
    if len(paths) != len(seq):
        raise ValueError(f"{len(paths)} paths for {len(seq)} scenes")
    existing = [p for p in paths if os.path.exists(p)]
    if existing:
        raise ValueError(f"refusing to overwrite {existing[:3]}; choose another filename prefix")

    def writer(g):
        def write(tmp):
            with open(tmp, "wb") as f:
                f.write(ply_bytes(g))
                f.flush()
                os.fsync(f.fileno())
        return write

    # every scene goes to a hidden temp file first (one in memory at a time), then all are
    # renamed: a failure, an interrupt or a kill before the renames leaves no sequence file
    return atomic_write_all([(p, writer(g)) for p, g in zip(paths, seq.gaussians)])
