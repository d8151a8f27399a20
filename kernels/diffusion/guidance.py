"""Per-frame CFG schedules and HarmonyView decomposed guidance in x0 space (host-free).

Branch protocol
---------------
A *branch denoiser* is a callable ``denoiser(x, sigma, branches) -> x0`` where ``x`` is the
branch-major stack of the current latent, ``[n * B * F, C, h, w]`` (``n = len(branches)``, the
latent repeated once per branch), ``sigma`` a 0-d tensor, and ``branches`` a tuple of branch
names. It returns the denoised x0 of the same shape, evaluated in ONE batched forward. Branches:

- ``"full"``     -- all conditions (CLIP image embedding, concat latent, camera vector).
- ``"no_input"`` -- the input image removed: CLIP embedding and concat latent zeroed, camera
  vector kept. This is both SV3D's unconditional CFG branch (official
  ``force_uc_zero_embeddings=["cond_frames", "cond_frames_without_noise"]``) and HarmonyView's
  ``s_uc1``.
- ``"no_views"`` -- HarmonyView's ``s_uc2``: the cross-view interaction removed (frames evaluated
  without temporal mixing), input kept, concat latent multiplied by ``concat_scale`` (4 in the
  official HarmonyView code), camera vector kept.

Guidance (all in x0 space, as the official SV3D guiders):

- CFG: branches ``("no_input", "full")`` (official chunk order ``[uc, c]``),
  ``D = D_u + s_f (D_c - D_u)`` with a per-frame scale ``s_f``.
- HarmonyView: branches ``("full", "no_input", "no_views")``,
  ``D = s + s1 (s - s_uc1) + s2 (s - s_uc2)``; s1, s2 scalars or per-frame ``[F]``.
  With ``s2 = 0`` and ``s1 = s_f - 1`` it equals CFG with scale ``s_f``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, Union

import torch

FULL = "full"
NO_INPUT = "no_input"
NO_VIEWS = "no_views"
BRANCHES = (FULL, NO_INPUT, NO_VIEWS)

Scale = Union[float, torch.Tensor]


# --------------------------------------------------------------------------- schedules
def triangle_scales(frames: int, min_scale: float = 1.0, max_scale: float = 2.5,
                    period: float = 1.0) -> torch.Tensor:
    """Official ``TrianglePredictionGuider``: ``v = linspace(0,1,F)``,
    ``tri = 2|v/p - floor(v/p + .5)|``, ``s = min + (max - min) tri`` -> ``[F]`` (1 at f=0, 2.5 at
    f=10, 1 at f=20 for F=21)."""
    _check_frames(frames)
    v = torch.linspace(0, 1, frames)
    tri = 2 * (v / period - torch.floor(v / period + 0.5)).abs()
    return tri * (max_scale - min_scale) + min_scale  # [F]


def linear_scales(frames: int, min_scale: float = 1.0, max_scale: float = 2.5) -> torch.Tensor:
    """Official ``LinearPredictionGuider``: ``linspace(min, max, F)`` -> ``[F]``."""
    _check_frames(frames)
    return torch.linspace(min_scale, max_scale, frames)


def constant_scales(frames: int, scale: float = 2.5) -> torch.Tensor:
    """Same scale on every frame (official ``VanillaCFG``) -> ``[F]``."""
    _check_frames(frames)
    return torch.full((frames,), float(scale))


def make_scales(kind: str, frames: int, min_scale: float = 1.0,
                max_scale: float = 2.5) -> torch.Tensor:
    """``kind`` in {"triangle", "linear", "constant"} (constant uses ``max_scale``)."""
    if kind == "triangle":
        return triangle_scales(frames, min_scale, max_scale)
    if kind == "linear":
        return linear_scales(frames, min_scale, max_scale)
    if kind == "constant":
        return constant_scales(frames, max_scale)
    raise ValueError(f"schedule={kind!r}: choose 'triangle', 'linear' or 'constant'")


def _check_frames(frames: int) -> None:
    if int(frames) < 1:
        raise ValueError(f"frames={frames}: need at least one frame")


def _per_frame(scale: Scale, x: torch.Tensor, frames: int) -> torch.Tensor:
    """Broadcast a scalar or ``[F]`` scale to ``x`` ``[B*F, ...]`` (frames fastest, as
    ``(b t)``)."""
    s = torch.as_tensor(scale, device=x.device, dtype=x.dtype)
    if s.ndim == 0:
        return s
    if s.ndim != 1 or s.shape[0] != frames:
        raise ValueError(f"per-frame scale has shape {tuple(s.shape)}; expected [{frames}] (one "
                         "per frame)")
    if x.shape[0] % frames:
        raise ValueError(f"per-frame scale for {frames} frames does not fit a batch of "
                         f"{x.shape[0]} latents")
    b = x.shape[0] // frames
    return s.repeat(b).reshape((x.shape[0],) + (1,) * (x.ndim - 1))


# --------------------------------------------------------------------------- combinations
def cfg_x0(d_uncond: torch.Tensor, d_cond: torch.Tensor, scale: Scale,
           frames: int | None = None) -> torch.Tensor:
    """``D_u + s_f (D_c - D_u)``; ``d_*``: ``[B*F, ...]``; scale scalar or ``[F]``."""
    if frames is None:
        frames = scale.shape[0] if torch.is_tensor(scale) and scale.ndim else d_cond.shape[0]
    s = _per_frame(scale, d_cond, frames)
    return d_uncond + s * (d_cond - d_uncond)


def harmonyview_x0(
    s: torch.Tensor, s_uc1: torch.Tensor, s_uc2: torch.Tensor, s1: Scale = 2.0, s2: Scale = 1.0,
    frames: int | None = None
) -> torch.Tensor:
    """HarmonyView: ``s + s1 (s - s_uc1) + s2 (s - s_uc2)`` (x0 space; s1/s2 scalar or ``[F]``)."""
    if frames is None:
        frames = s.shape[0]
        for v in (s1, s2):
            if torch.is_tensor(v) and v.ndim:
                frames = v.shape[0]
    a = _per_frame(s1, s, frames)
    b = _per_frame(s2, s, frames)
    return s + a * (s - s_uc1) + b * (s - s_uc2)


@dataclass
class Guidance:
    """What to evaluate (``branches``) and how to combine it (``combine(outs)`` with ``outs`` a
    tuple of ``[B*F, ...]`` x0 per branch, in ``branches`` order)."""

    branches: tuple
    combine: Callable[[Sequence[torch.Tensor]], torch.Tensor]
    name: str = ""


def cfg_guidance(scales: Scale, frames: int) -> Guidance:
    return Guidance((NO_INPUT, FULL), lambda o: cfg_x0(o[0], o[1], scales, frames), "cfg")


def harmonyview_guidance(frames: int, s1: Scale = 2.0, s2: Scale = 1.0) -> Guidance:
    return Guidance((FULL, NO_INPUT, NO_VIEWS),
                    lambda o: harmonyview_x0(o[0], o[1], o[2], s1, s2, frames), "harmonyview")


def no_guidance() -> Guidance:
    return Guidance((FULL,), lambda o: o[0], "none")


def make_guidance(kind: str, frames: int, min_scale: float = 1.0, max_scale: float = 2.5,
                  s1: Scale = 2.0, s2: Scale = 1.0, harmony_schedule: str = "constant") -> Guidance:
    """``kind``: "triangle" | "linear" | "constant" (CFG) | "harmonyview" | "none".

    ``harmony_schedule="triangle"`` multiplies s1 and s2 by the official triangle wave
    (0 at the ends, 1 in the middle), i.e. the HarmonyView analogue of triangle CFG.
    """
    if kind in ("triangle", "linear", "constant"):
        return cfg_guidance(make_scales(kind, frames, min_scale, max_scale), frames)
    if kind == "harmonyview":
        if harmony_schedule == "triangle":
            w = triangle_scales(frames, 0.0, 1.0)
            s1 = w * torch.as_tensor(s1, dtype=torch.float32)
            s2 = w * torch.as_tensor(s2, dtype=torch.float32)
        elif harmony_schedule != "constant":
            raise ValueError(f"harmony_schedule={harmony_schedule!r}: choose 'constant' or "
                             "'triangle'")
        return harmonyview_guidance(frames, s1, s2)
    if kind == "none":
        return no_guidance()
    raise ValueError(f"guidance={kind!r}: choose 'triangle', 'linear', 'constant', 'harmonyview' "
                     "or 'none'")


def guided_denoiser(branch_denoiser: Callable,
                    guidance: Guidance) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Turn a branch denoiser into ``fn(x, sigma) -> guided x0``: all branches in ONE batched
    call."""
    n = len(guidance.branches)

    def fn(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        xs = torch.cat([x] * n) if n > 1 else x  # [n*B*F, C, h, w]
        out = branch_denoiser(xs, sigma, guidance.branches)
        if out.shape != xs.shape:
            raise RuntimeError(f"branch denoiser returned {tuple(out.shape)}, expected "
                               f"{tuple(xs.shape)}")
        return guidance.combine(out.chunk(n))

    return fn
