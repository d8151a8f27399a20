"""Diffusion² matrix sampler (host-free): compose a multi-view model (columns) and a video model
(rows) into one sampler of a V × F matrix of latents (views × time).

Layout: the matrix ``x`` is ``[V, F, *rest]`` (for latents ``[V, F, C, h, w]``); row ``v`` is the
video seen from view ``v`` (F frames), column ``t`` is the orbit at time ``t`` (V views). Flattened
image batches are **view-major**: image ``v * F + t`` is view ``v`` at frame ``t``
(:func:`flatten_matrix` / :func:`unflatten_matrix`).

What the official code (``fudan-zvg/diffusion-square`` ``main.py``) does, restated:

* every pass evaluates the multi-view model on each column (F sequences of V frames) and the video
  model on each row (V sequences of F frames), each with its own classifier-free guidance in x0
  space, then combines in x0 space (equal to combining scores since score = (D - x)/sigma^2)::

      D = [1 - w_v + w_v * lam_i] * D_mv + [w_v * (1 - lam_i)] * D_video

  with view weights ``w_v`` (:func:`view_weights`) and the multi-view weight ``lam_i`` of step i
  (:func:`lambda_schedule`). The two coefficients sum to 1 for every view and step.
* Euler step ``d = (x - D)/sigma; x += (sigma_next - sigma) d`` on the shared EDM sigmas.
* VRS: during the first ``vrs_steps`` (10) steps each step is taken twice; between the two passes
  the result is re-noised by ``|sigma_next - sigma| * eps`` and the step is redone from sigma
  (``renoise="official"``). ``renoise="variance"`` re-noises by ``sqrt(sigma^2 - sigma_next^2)``
  instead, which puts the marginal noise level back at exactly sigma.

Cost: each pass makes exactly F column sequence evaluations and V row sequence evaluations per
guidance branch (:class:`MatrixStats` counts them); chunking only changes how many sequences go
into one batched call. Chunks are halved and retried on out-of-memory errors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..diffusion.edm import euler_step
from ..interrupt import check_interrupt

# Official defaults (fudan-zvg/diffusion-square main.py)
OFFICIAL_LAMBDA = 0.6  # sv3d_scale, constant schedule
OFFICIAL_LOGISTIC = {"s0": 0.6, "k": 15.0}  # code defaults for the logistic schedule
PAPER_LOGISTIC = {"s0": 0.5, "k": 20.0}  # paper text (ablation, Fig. 5)
OFFICIAL_MIN_VIEW_WEIGHT = 0.25  # 1 - 0.75
OFFICIAL_VRS_STEPS = 10
LAMBDA_SCHEDULES = ("constant", "logistic", "linear", "cosine")
RENOISE_MODES = ("official", "variance")
MAX_VIDEO_FRAMES = 25  # SVD-XT was trained on 25 frames

# column_fn(x_cols [n, V, *rest], sigma 0-d, frames [n] long) -> x0 [n, V, *rest]
# row_fn(x_rows [n, F, *rest], sigma 0-d, views [n] long) -> x0 [n, F, *rest]
SequenceDenoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------------------------
# Weights and schedules
# ----------------------------------------------------------------------------------------------


PROMPTS = ("image", "video", "orbit")


@dataclass
class MatrixSettings:
    """The numbers of one Diffusion² run (the sampler and guider nodes' widgets): V views x F
    frames at ``size``; CFG per model (SV3D constant, SVD linear over the frames); SVD's fps /
    motion bucket; the noise augmentation of each model's reference images; Euler steps, VRS
    steps, seed; most sequences per model call (0 = by free memory) and frames per decode."""

    views: int
    frames: int
    size: int
    multiview_cfg: float = 2.5
    video_cfg_min: float = 1.5
    video_cfg_max: float = 3.0
    motion_bucket_id: int = 127
    fps: int = 25
    video_cond_aug: float = 0.02
    multiview_cond_aug: float = 1e-5
    steps: int = 50
    vrs_steps: int = OFFICIAL_VRS_STEPS
    seed: int = 0
    max_chunk: int = 0
    decode_chunk: int = 8

    def __post_init__(self):
        for k in ("views", "frames", "size", "motion_bucket_id", "fps", "steps", "vrs_steps",
                  "seed", "max_chunk", "decode_chunk"):
            setattr(self, k, int(getattr(self, k)))
        for k in ("multiview_cfg", "video_cfg_min", "video_cfg_max", "video_cond_aug",
                  "multiview_cond_aug"):
            setattr(self, k, float(getattr(self, k)))
        if self.frames > MAX_VIDEO_FRAMES or self.frames < 2:
            raise ValueError(f"frames={self.frames}: SVD-XT samples 2..{MAX_VIDEO_FRAMES} frames")
        if self.size % 8:
            raise ValueError(f"size={self.size} must be a multiple of 8")
        if self.video_cfg_max < self.video_cfg_min:
            raise ValueError(f"video_cfg_max={self.video_cfg_max} < "
                             f"video_cfg_min={self.video_cfg_min}")


def check_prompt(prompt: torch.Tensor, prompt_type: str, s: MatrixSettings, cameras=None) -> None:
    """``ValueError`` naming the problem for a prompt (IMAGE ``[B, H, W, 3|4]``: one image, a
    video of at least F frames, or an orbit of V views) or CAMERAS that do not fit ``s``."""
    V, F = s.views, s.frames
    if prompt_type not in PROMPTS:
        raise ValueError(f"prompt_type={prompt_type!r}: use one of {list(PROMPTS)}")
    if prompt.ndim != 4 or prompt.shape[-1] not in (3, 4):
        raise ValueError(f"prompt must be an IMAGE [B,H,W,3|4], got {tuple(prompt.shape)}")
    if cameras is not None and len(cameras) != V:
        raise ValueError(f"CAMERAS has {len(cameras)} cameras but views={V}: make them equal")
    if prompt_type == "image" and prompt.shape[0] != 1:
        raise ValueError(f"prompt_type 'image' takes one image, got a batch of {prompt.shape[0]}")
    if prompt_type == "video" and prompt.shape[0] < F:
        raise ValueError(f"the prompt video has {prompt.shape[0]} frames, shorter than frames={F}; "
                         f"lower frames or give a longer video")
    if prompt_type == "orbit" and prompt.shape[0] != V:
        raise ValueError(f"the prompt orbit has {prompt.shape[0]} views but views={V}; they must "
                         "match")


def view_weights(views: int, min_weight: float = OFFICIAL_MIN_VIEW_WEIGHT, periods: float = 2.0,
                 dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """Per-view weight of the video model ``w_v`` ``[V]`` (official formula).

    ``w_v = 1 - (1 - min_weight) * (1 - (1 + cos(2 pi periods (v + 1) / V)) / 2)``; for V = 21,
    periods = 2 this is the official table ``cos(2 pi (v + 1) / 10.5)``: 1 at the reference view
    (the last one, v = V - 1, azimuth 360 in SV3D's orbit), about 1 at the back, ``min_weight``
    at the sides.
    """
    if views < 1:
        raise ValueError(f"views={views}: need at least one view")
    if not 0.0 <= min_weight <= 1.0:
        raise ValueError(f"min_weight={min_weight}: must be in [0, 1]")
    v = torch.arange(views, dtype=torch.float64)
    c = 0.5 * (1.0 + torch.cos(2.0 * math.pi * periods * (v + 1.0) / views))
    return (1.0 - (1.0 - min_weight) * (1.0 - c)).to(device=device, dtype=dtype)


def view_weights_from_azimuths(azimuths_deg, reference_azimuth_deg: float = 0.0,
                               min_weight: float = OFFICIAL_MIN_VIEW_WEIGHT,
                               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The same weights from camera azimuths: ``c = (1 + cos(2 (az - az_ref))) / 2``.

    Equals :func:`view_weights` (periods 2) on SV3D's static orbit, where view v sits at
    ``(v + 1) * 360 / V`` from the reference; for other orbits it keeps "1 front and back,
    ``min_weight`` at the sides".
    """
    az = torch.as_tensor(azimuths_deg, dtype=torch.float64).flatten()
    d = torch.deg2rad(az - float(reference_azimuth_deg))
    c = 0.5 * (1.0 + torch.cos(2.0 * d))
    return (1.0 - (1.0 - min_weight) * (1.0 - c)).to(dtype)


def lambda_schedule(steps: int, kind: str = "constant", value: float = OFFICIAL_LAMBDA,
                    lmin: float = 0.0, lmax: float = 1.0, k: float = OFFICIAL_LOGISTIC["k"],
                    dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Multi-view weight ``lam_i`` for each step ``i`` ``[steps]`` (official ``ScaleScheduler``).

    * ``constant``: ``value`` (official default 0.6);
    * ``logistic``: ``x = i / (steps - 1)``,
      ``lmin + (1 - 1 / (1 + exp(-k (x - value)))) (lmax - lmin)`` with ``value`` the midpoint s0 --
      decreasing: the multi-view model dominates early, the video model late (code s0 0.6 / k 15,
      paper s0 0.5 / k 20);
    * ``linear``: from ``lmax`` down to ``lmin``; ``cosine``: half cosine from ``lmax`` to ``lmin``.
    """
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps={steps}: need at least 1 step")
    if kind not in LAMBDA_SCHEDULES:
        raise ValueError(f"lambda schedule {kind!r} is unknown; use one of {LAMBDA_SCHEDULES}")
    i = torch.arange(steps, dtype=torch.float64)
    x = i / (steps - 1) if steps > 1 else torch.zeros(1, dtype=torch.float64)
    if kind == "constant":
        lam = torch.full((steps,), float(value), dtype=torch.float64)
    elif kind == "logistic":
        lam = lmin + (1.0 - 1.0 / (1.0 + torch.exp(-float(k) * (x - float(value))))) * (lmax - lmin)
    elif kind == "linear":
        lam = lmax + x * (lmin - lmax)
    else:  # cosine
        lam = lmin + (torch.cos(x * math.pi) + 1.0) / 2.0 * (lmax - lmin)
    return lam.to(dtype)


def composition_weights(w: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Coefficients ``(a_v, b_v)`` of ``D = a_v D_mv + b_v D_video``: ``a = 1 - w + w lam``,
    ``b = w (1 - lam)`` (so ``a + b = 1``)."""
    lam = float(lam)
    return 1.0 - w + w * lam, w * (1.0 - lam)


def compose(d_mv: torch.Tensor, d_video: torch.Tensor, w: torch.Tensor, lam: float) -> torch.Tensor:
    """Diffusion² composition in x0 space for matrices ``[V, F, *rest]`` and view weights
    ``[V]``."""
    if d_mv.shape != d_video.shape:
        raise ValueError(f"denoised shapes differ: {tuple(d_mv.shape)} vs {tuple(d_video.shape)}")
    a, b = composition_weights(w.to(d_mv), lam)
    shape = (-1,) + (1,) * (d_mv.ndim - 1)
    return a.reshape(shape) * d_mv + b.reshape(shape) * d_video


def cfg_combine(d_uncond: torch.Tensor, d_cond: torch.Tensor, scale) -> torch.Tensor:
    """Per-frame classifier-free guidance in x0 space for sequences ``[n, L, *rest]``:
    ``D_u + s_l (D_c - D_u)`` with ``scale`` a number or ``[L]``."""
    s = torch.as_tensor(scale, dtype=d_cond.dtype, device=d_cond.device)
    if s.ndim == 1:
        if s.shape[0] != d_cond.shape[1]:
            raise ValueError(f"{s.shape[0]} guidance scales for sequences of {d_cond.shape[1]} "
                             "frames")
        s = s.reshape((1, -1) + (1,) * (d_cond.ndim - 2))
    return d_uncond + s * (d_cond - d_uncond)


# ----------------------------------------------------------------------------------------------
# Layout helpers
# ----------------------------------------------------------------------------------------------


def flatten_matrix(x: torch.Tensor) -> torch.Tensor:
    """``[V, F, *rest]`` -> ``[V * F, *rest]`` view-major (index ``v * F + t``)."""
    return x.reshape((x.shape[0] * x.shape[1],) + tuple(x.shape[2:]))


def unflatten_matrix(x: torch.Tensor, views: int, frames: int) -> torch.Tensor:
    """Inverse of :func:`flatten_matrix`."""
    if x.shape[0] != views * frames:
        raise ValueError(f"batch of {x.shape[0]} is not {views} views x {frames} frames")
    return x.reshape((views, frames) + tuple(x.shape[1:]))


def frame_times(frames: int, fps: float) -> torch.Tensor:
    """Time in seconds of each frame ``[F]`` (frame t at ``t / fps``)."""
    if fps <= 0:
        raise ValueError(f"fps={fps}: must be positive")
    return torch.arange(frames, dtype=torch.float32) / float(fps)


# ----------------------------------------------------------------------------------------------
# The sampler
# ----------------------------------------------------------------------------------------------


@dataclass
class MatrixStats:
    """What the sampler evaluated: sequences (rows/columns) and batched calls, per pass."""

    passes: int = 0
    column_sequences: list = field(default_factory=list)  # per pass
    row_sequences: list = field(default_factory=list)  # per pass
    column_calls: int = 0
    row_calls: int = 0
    oom_retries: int = 0
    column_chunk: int = 0  # final chunk sizes (after any OOM halving)
    row_chunk: int = 0


def _eval_chunked(fn: SequenceDenoiser, seqs: Callable[[int, int], torch.Tensor], n: int,
                  sigma: torch.Tensor, chunk: int, oom: tuple, stats: MatrixStats, kind: str,
                  write: Callable[[int, int, torch.Tensor], None], device) -> int:
    """Evaluate ``fn`` on sequences ``[i, j)`` in chunks, halving the chunk on OOM. Returns the
    chunk size that worked."""
    i = 0
    while i < n:
        check_interrupt()
        j = min(n, i + chunk)
        idx = torch.arange(i, j, device=device)
        try:
            out = fn(seqs(i, j), sigma, idx)
        except oom:  # type: ignore[misc]
            if chunk <= 1:
                raise
            chunk = max(1, chunk // 2)
            stats.oom_retries += 1
            continue
        expect = seqs(i, j).shape
        if tuple(out.shape) != tuple(expect):
            raise ValueError(f"{kind} denoiser returned {tuple(out.shape)} for input "
                             f"{tuple(expect)}")
        write(i, j, out)
        if kind == "column":
            stats.column_calls += 1
            stats.column_sequences[-1] += j - i
        else:
            stats.row_calls += 1
            stats.row_sequences[-1] += j - i
        i = j
    return chunk


def denoise_matrix(x: torch.Tensor, sigma: torch.Tensor, column_fn: SequenceDenoiser,
                   row_fn: SequenceDenoiser, w: torch.Tensor, lam: float,
                   column_chunk: int, row_chunk: int, oom: tuple = (),
                   stats: MatrixStats | None = None) -> tuple[torch.Tensor, MatrixStats]:
    """One composed x0 estimate of the whole matrix ``[V, F, *rest]``: F column and V row
    sequence evaluations, combined with :func:`compose` (accumulated in place: one buffer)."""
    V, F = x.shape[0], x.shape[1]
    stats = stats if stats is not None else MatrixStats()
    stats.passes += 1
    stats.column_sequences.append(0)
    stats.row_sequences.append(0)
    a, b = composition_weights(w.to(device=x.device, dtype=x.dtype), lam)
    bshape = (-1,) + (1,) * (x.ndim - 1)
    a, b = a.reshape(bshape), b.reshape(bshape)
    out = torch.empty_like(x)

    def cols(i, j):  # [n, V, *rest]
        return x[:, i:j].transpose(0, 1).contiguous()

    def write_cols(i, j, d):
        out[:, i:j] = d.transpose(0, 1).to(out.dtype) * a

    def rows(i, j):  # [n, F, *rest]
        return x[i:j]

    def write_rows(i, j, d):
        out[i:j] += d.to(out.dtype) * b[i:j]

    stats.column_chunk = _eval_chunked(column_fn, cols, F, sigma, max(1, int(column_chunk)), oom,
                                       stats, "column", write_cols, x.device)
    stats.row_chunk = _eval_chunked(row_fn, rows, V, sigma, max(1, int(row_chunk)), oom, stats,
                                    "row", write_rows, x.device)
    return out, stats


def sample_matrix(
    x: torch.Tensor,
    sigmas: torch.Tensor,
    column_fn: SequenceDenoiser,
    row_fn: SequenceDenoiser,
    view_weight: torch.Tensor,
    lambdas: torch.Tensor,
    vrs_steps: int = OFFICIAL_VRS_STEPS,
    renoise: str = "official",
    column_chunk: int | None = None,
    row_chunk: int | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[int, int, int, torch.Tensor, torch.Tensor], None] | None = None,
    oom_exceptions: Sequence[type] = (),
    stats: MatrixStats | None = None,
) -> torch.Tensor:
    """Sample the V × F matrix from the scaled initial noise ``x`` ``[V, F, *rest]``.

    ``sigmas``: ``[steps + 1]`` descending, ending in 0 (``edm.edm_sigmas``); ``lambdas``:
    ``[steps]`` (:func:`lambda_schedule`); ``view_weight``: ``[V]`` (:func:`view_weights`).
    ``column_fn`` / ``row_fn``: guided x0 denoisers on batches of columns / rows (see
    ``SequenceDenoiser``). ``callback(pass, total_passes, step, x, denoised)`` runs after every
    pass (progress, previews; raising from it interrupts cleanly -- ``x`` is never modified in
    place, so nothing partial escapes). Returns the final matrix (a new tensor).
    """
    if x.ndim < 2:
        raise ValueError(f"matrix must be [V, F, ...], got shape {tuple(x.shape)}")
    V, F = x.shape[0], x.shape[1]
    steps = len(sigmas) - 1
    if steps < 1:
        raise ValueError("sigmas must hold at least 2 values (steps + 1, ending in 0)")
    if lambdas.shape[0] != steps:
        raise ValueError(f"{lambdas.shape[0]} lambdas for {steps} steps")
    if view_weight.shape[0] != V:
        raise ValueError(f"{view_weight.shape[0]} view weights for {V} views")
    if renoise not in RENOISE_MODES:
        raise ValueError(f"renoise={renoise!r}: use one of {RENOISE_MODES}")
    vrs_steps = max(0, min(int(vrs_steps), steps))
    column_chunk = F if column_chunk is None else int(column_chunk)
    row_chunk = V if row_chunk is None else int(row_chunk)
    oom = tuple(oom_exceptions)
    stats = stats if stats is not None else MatrixStats()
    sigmas = sigmas.to(device=x.device, dtype=torch.float64)
    total = steps + vrs_steps
    gdev = generator.device if generator is not None else x.device
    k = 0
    for i in range(steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        sig = sigma.to(x.dtype)
        reps = 2 if i < vrs_steps else 1
        for r in range(reps):
            d, stats = denoise_matrix(x, sig, column_fn, row_fn, view_weight, float(lambdas[i]),
                                      column_chunk, row_chunk, oom, stats)
            column_chunk, row_chunk = stats.column_chunk, stats.row_chunk
            x_new = euler_step(x, d, sigma.to(x.dtype), sigma_next.to(x.dtype))
            if r < reps - 1:
                if renoise == "official":
                    amp = (sigma - sigma_next).abs()
                else:
                    amp = (sigma**2 - sigma_next**2).clamp_min(0).sqrt()
                eps = torch.randn(x.shape, generator=generator, device=gdev, dtype=x.dtype)
                eps = eps.to(x.device)
                x_new = x_new + eps * amp.to(x.dtype)
            x = x_new
            k += 1
            if callback is not None:
                callback(k, total, i, x, d)
    return x


def count_forwards(views: int, frames: int, steps: int, vrs_steps: int = OFFICIAL_VRS_STEPS,
                   branches: int = 2) -> dict:
    """Sequence evaluations the sampler makes: per pass F columns and V rows per branch."""
    passes = steps + max(0, min(vrs_steps, steps))
    return {"passes": passes, "column_per_pass": frames * branches,
            "row_per_pass": views * branches,
            "total_sequences": passes * (frames + views) * branches,
            "total_frames": passes * 2 * views * frames * branches}
