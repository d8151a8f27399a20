"""SV3D conditioning maths (host-free): vector embeddings, orbit angles, input image preparation.

Official references (Stability-AI/generative-models):

- ``sgm/modules/diffusionmodules/util.py: timestep_embedding`` -- sinusoidal, ``[cos | sin]``,
  ``freqs = exp(-ln(10000) * arange(half) / half)`` in float32.
- ``sgm/modules/encoders/modules.py: ConcatTimestepEmbedderND`` with ``configs/sv3d_p.yaml``:
  vector = ``[emb256(cond_aug) | emb512(polar_rad) | emb512(azimuth_rad)]`` per frame (1280);
  SV3D_u: ``emb256(cond_aug)`` (256).
- ``scripts/sampling/simple_video_sample.py``: ``polar = deg2rad(90 - elevation)``,
  ``azimuth = deg2rad((a - a_last) % 360)``; cond_aug 1e-5; ``cond_frames = image +
  cond_aug * N(0,1)`` in [-1, 1] (VAE encoder mode, unscaled); input composited on white.

Last-frame azimuth: **0** (not 2*pi). The official sampling script gives the conditioning frame
azimuth ``(a_last - a_last) % 360 = 0``, and ComfyUI's ``SV3D_p.encode_adm`` applies
``fmod(azimuth, 360)`` so a 2*pi could not even be passed through core's model. (The streamlit demo
and Diffusion^2 use 2*pi; ``sv3d_vector(..., last_azimuth_2pi=True)`` reproduces that for the
host-free path only.)
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

COND_AUG = 1e-5
SV3D_SIZE = 576
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI/OpenCLIP image normalisation
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VECTOR_DIMS = {"p": 1280, "u": 256}


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Official sinusoidal embedding: ``[N] -> [N, dim]`` = ``[cos(t f) | sin(t f)]`` (float32)."""
    t = torch.as_tensor(t).reshape(-1)
    half = dim // 2
    k = torch.arange(0, half, dtype=torch.float32)
    freqs = torch.exp(-math.log(max_period) * k / half).to(t.device)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def polar_azimuth_rad(elevations_deg, azimuths_deg, last_azimuth_2pi: bool = False):
    """SV3D angles: ``polar = rad(90 - elevation)``, ``azimuth = rad(a % 360)`` -> two ``[F]``
    float64.

    ``last_azimuth_2pi`` turns an azimuth of exactly 0 on the LAST frame into 2*pi (demo variant).
    """
    e = torch.as_tensor(elevations_deg, dtype=torch.float64).reshape(-1)
    a = torch.as_tensor(azimuths_deg, dtype=torch.float64).reshape(-1)
    if e.numel() == 1 and a.numel() > 1:
        e = e.expand(a.numel())
    if e.numel() != a.numel():
        raise ValueError(f"{e.numel()} elevations for {a.numel()} azimuths: give one or one per "
                         "frame")
    if (e.abs() > 90).any():
        raise ValueError(f"elevation must be within [-90, 90] degrees, got {e.tolist()}")
    polar = torch.deg2rad(90.0 - e)
    az = torch.deg2rad(torch.remainder(a, 360.0))
    if last_azimuth_2pi and az[-1] == 0:
        az = az.clone()
        az[-1] = 2 * math.pi
    return polar, az


def sv3d_vector(variant: str, elevations_deg, azimuths_deg, cond_aug: float = COND_AUG,
                last_azimuth_2pi: bool = False) -> torch.Tensor:
    """Per-frame vector condition: ``[F, 1280]`` (``variant="p"``) or ``[F, 256]`` (``"u"``)."""
    polar, az = polar_azimuth_rad(elevations_deg, azimuths_deg, last_azimuth_2pi)
    n = polar.numel()
    aug = timestep_embedding(torch.full((n,), float(cond_aug), dtype=torch.float64), 256)
    if variant == "u":
        return aug
    if variant != "p":
        raise ValueError(f"variant={variant!r}: 'p' (sv3d_p, cameras) or 'u' (sv3d_u)")
    return torch.cat([aug, timestep_embedding(polar, 512), timestep_embedding(az, 512)], dim=1)


# ------------------------------------------------------------------------------- images
def split_alpha(image: torch.Tensor, mask: Optional[torch.Tensor] = None):
    """``image [H,W,3|4]`` (+ ComfyUI MASK ``[H,W]``, 1 = transparent) ->
    ``(rgb [H,W,3], alpha [H,W] | None)``.

    A MASK wins over an alpha channel (LoadImage gives both, mask = 1 - alpha).
    """
    rgb = image[..., :3]
    alpha = None
    if mask is not None:
        m = mask
        if m.ndim == 3:
            m = m[0]
        if m.shape != image.shape[:2]:
            m = F.interpolate(m[None, None].float(), size=image.shape[:2], mode="bilinear",
                              align_corners=False)[0, 0]
        alpha = (1.0 - m.to(rgb)).clamp(0, 1)
    elif image.shape[-1] == 4:
        alpha = image[..., 3].clamp(0, 1)
    return rgb, alpha


def prepare_input_image(image: torch.Tensor, mask: Optional[torch.Tensor] = None,
                        size: int = SV3D_SIZE, object_scale: float = 0.85, min_side: int = 64):
    """SV3D input view: composite on white, object centred and scaled so its longest bounding-box
    side is ``object_scale`` of the frame (the official ``image_frame_ratio``).

    ``image``: ``[H,W,3|4]`` or ``[1,H,W,C]`` in 0..1; ``mask``: ComfyUI MASK (1 = background).
    Without alpha/mask the whole image is the object (letterboxed on white, not re-centred).
    Returns ``(rgb [size,size,3], alpha [size,size])`` in 0..1.
    """
    if image.ndim == 4:
        if image.shape[0] != 1:
            raise ValueError(f"expected one input image, got a batch of {image.shape[0]}; pick one "
                             "(e.g. ImageFromBatch)")
        image = image[0]
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(f"image must be [H,W,3] or [H,W,4], got {tuple(image.shape)}")
    h, w = image.shape[:2]
    if min(h, w) < min_side:
        raise ValueError(f"image is {w}x{h} px; SV3D needs at least {min_side} px on each side "
                         "(576 recommended)")
    if not (0.05 <= object_scale <= 1.0):
        raise ValueError(f"object_scale={object_scale}: must be in [0.05, 1] (fraction of the "
                         "frame the object spans)")
    rgb, alpha = split_alpha(image.float(), mask)
    if alpha is None:
        alpha = torch.ones(h, w, dtype=rgb.dtype, device=rgb.device)
        y0, y1, x0, x1 = 0, h, 0, w
        scale_to = 1.0
    else:
        ys, xs = torch.nonzero(alpha > (0.5 / 255.0), as_tuple=True)
        if ys.numel() == 0:
            raise ValueError("the input's alpha/mask is empty (fully transparent): give a MASK "
                             "that covers the object (LoadImage's mask is 1 on the background) or "
                             "an RGBA image with the object opaque")
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        scale_to = float(object_scale)
    premult = torch.cat([rgb * alpha[..., None], alpha[..., None]], dim=-1)[y0:y1,
                                                                            x0:x1]  # [h',w',4]
    ch, cw = premult.shape[:2]
    k = size * scale_to / max(ch, cw)
    nh, nw = max(1, min(size, round(ch * k))), max(1, min(size, round(cw * k)))
    t = premult.permute(2, 0, 1)[None]  # [1,4,h',w']
    t = F.interpolate(t, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    t = t.clamp(0, 1)[0]
    canvas = torch.zeros(4, size, size, dtype=t.dtype, device=t.device)
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas[:, top:top + nh, left:left + nw] = t
    a = canvas[3].clamp(0, 1)
    out = (canvas[:3] + (1.0 - a)[None]).clamp(0, 1)  # premultiplied over white
    return out.permute(1, 2, 0).contiguous(), a


def noisy_cond_pixels(rgb01: torch.Tensor, cond_aug: float,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Official ``cond_frames = image + cond_aug * N(0,1)`` with image in [-1,1], returned in the
    0..1 space a ComfyUI VAE expects (``p + cond_aug * N / 2``; not clamped, as the official
    code)."""
    gdev = generator.device if generator is not None else torch.device("cpu")
    n = torch.randn(rgb01.shape, generator=generator, device=gdev, dtype=torch.float32).to(rgb01)
    return rgb01 + 0.5 * float(cond_aug) * n


def clip_preprocess(images: torch.Tensor, size: int = 224) -> torch.Tensor:
    """``[B,H,W,3]`` 0..1 -> ``[B,3,size,size]`` CLIP input (shortest side to ``size`` bicubic with
    antialias, centre crop, OpenAI mean/std), as the official OpenCLIP embedder and ComfyUI."""
    x = images[..., :3].permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    k = size / min(h, w)
    nh, nw = max(size, round(h * k)), max(size, round(w * k))
    x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[:, :, top:top + size, left:left + size].clamp(0, 1)
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def check_frames_and_orbit(frames: int, elevations: Sequence[float],
                           azimuths: Sequence[float]) -> list[str]:
    """Validate an orbit against the frame count; returns warnings (e.g. frames != 21)."""
    warnings = []
    if int(frames) < 1:
        raise ValueError(f"frames={frames}: need at least 1")
    if len(azimuths) != frames or len(elevations) != frames:
        raise ValueError(f"the orbit has {len(azimuths)} cameras but frames={frames}: give one "
                         "camera per frame")
    for e in elevations:
        if not (-90.0 <= float(e) <= 90.0):
            raise ValueError(f"elevation {float(e)} is outside [-90, 90] degrees")
    if frames != 21:
        warnings.append(f"frames={frames}: SV3D was trained on 21 frames; other counts may give "
                        "poor views")
    return warnings


# ------------------------------------------------------------------------------- branches
def branch_conditions(crossattn: torch.Tensor, concat: torch.Tensor, vector: torch.Tensor,
                      branches: Sequence[str], concat_scale_no_views: float = 4.0):
    """Batched conditions for the guidance branches (see :mod:`.guidance`), official SV3D layout.

    ``crossattn [F, 1, D]`` (CLIP embedding repeated per frame), ``concat [F, 4, h, w]`` (VAE
    latent of the input, unscaled), ``vector [F, V]`` (cond_aug/cameras). Returns a dict with
    ``crossattn [n*F,1,D]``, ``concat [n*F,4,h,w]``, ``vector [n*F,V]`` and
    ``image_only_indicator [n, F]`` (1 = frames evaluated without temporal mixing), branch-major:

    - ``full``: everything as given;
    - ``no_input``: crossattn and concat zeroed (official ``force_uc_zero_embeddings``);
    - ``no_views``: as full, concat x ``concat_scale_no_views`` (HarmonyView code: 4), indicator 1.

    The vector (cameras, cond_aug) is identical in every branch.
    """
    from .guidance import (  # noqa: PLC0415 - sibling, avoids a cycle at import
        FULL,
        NO_INPUT,
        NO_VIEWS,
    )

    frames = concat.shape[0]
    ca, cc, vv, ioi = [], [], [], []
    for b in branches:
        if b == FULL:
            ca.append(crossattn); cc.append(concat); ioi.append(torch.zeros(frames))  # noqa: E702
        elif b == NO_INPUT:
            ca.append(torch.zeros_like(crossattn))
            cc.append(torch.zeros_like(concat))
            ioi.append(torch.zeros(frames))
        elif b == NO_VIEWS:
            ca.append(crossattn)
            cc.append(concat * concat_scale_no_views)
            ioi.append(torch.ones(frames))
        else:
            raise ValueError(f"unknown branch {b!r}")
        vv.append(vector)
    return {
        "crossattn": torch.cat(ca),
        "concat": torch.cat(cc),
        "vector": torch.cat(vv),
        "image_only_indicator": torch.stack(ioi).to(concat),
    }
