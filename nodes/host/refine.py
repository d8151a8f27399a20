"""The Hi3D stage-2 refiner run (and its anchored mode on SVD/SV3D models) on ComfyUI models:
views resized to the target, the input view restored, VAE latents as the anchor, conditions
(depth for Hi3D; cameras for SV3D_p), the anchored Euler-EDM loop with per-frame CFG, decoding.
The maths (depth packing, anchoring alphas, frame order) is
:mod:`...kernels.diffusion.depth_condition`."""

from __future__ import annotations

import torch

from ...kernels.diffusion import edm
from ...kernels.diffusion.depth_condition import (
    anchor_alphas,
    depth_from_image,
    pack_depth,
    reference_index,
    roll_back,
    roll_to_front,
    square_resize,
)
from ...kernels.diffusion.sv3d import noisy_cond_pixels
from ...kernels.geometry.cameras import make_orbit_cameras, orbit_cameras
from . import Progress, intermediate_device
from .conditioning import sv3d_conditioning
from .models import (
    anchored_sampler,
    clip_image_embed,
    latent_scale_in,
    per_frame_cfg_model,
    run_guided,
    vae_decode_chunked,
    vae_encode_chunked,
)


def refine_views(model, kind: str, clip_vision, vae, views: torch.Tensor, input_image: torch.Tensor,
                 target_size: int, steps: int, cfg_min: float, cfg_max: float,
                 anchor_strength: float,
                 cond_aug: float, seed: int, elevation: float, depth_kind: str, vae_chunk: int,
                 cameras=None, depth=None):
    """Refined views ``[F, S, S, 3]`` (same order as ``views``) and their CAMERAS at ``S`` =
    ``target_size``; ``kind`` is the model family (:func:`.family.require`), inputs checked by
    :func:`...kernels.diffusion.depth_condition.check_refine_inputs`."""
    n, s = views.shape[0], int(target_size)
    h = w = s // 8
    gen = torch.Generator().manual_seed(int(seed) % (2**63))

    ref = reference_index(cameras.azimuth if cameras is not None else None, n)
    if kind == "hi3d_stage2":
        order_shift = ref  # the refiner was trained with the input view first
    else:
        order_shift = 0
    frames = square_resize(views, s)  # [F,S,S,3]
    frames[ref] = square_resize(input_image[:1], s)[0]
    frames = roll_to_front(frames, order_shift)

    cond_frames = noisy_cond_pixels(frames, cond_aug, gen)  # + cond_aug N(0,1) in [-1,1] units
    z_anchor = latent_scale_in(model, vae_encode_chunked(vae, frames, vae_chunk))
    eps = torch.randn((n, 4, h, w), generator=gen)
    clip = clip_image_embed(clip_vision, frames[:1])
    if cameras is not None:
        elevs = roll_to_front(cameras.elevation.float(), order_shift)
    else:
        elevs = torch.full((n,), float(elevation))

    if kind == "hi3d_stage2":
        lat = vae_encode_chunked(vae, cond_frames, vae_chunk)
        d = roll_to_front(depth_from_image(depth.float()), order_shift)
        d9 = pack_depth(d, h, w, depth_kind)
        elev_int = [float(round(float(elevs[0])))] * n  # official: int degrees
        pos, neg = sv3d_conditioning(clip, lat, cond_aug, elevations=elev_int, concat_depth=d9)
    else:
        lat0 = vae_encode_chunked(vae, cond_frames[ref:ref + 1], 1)
        el = az = None
        if kind == "sv3d_p":
            cams = cameras if cameras is not None else orbit_cameras(
                "sv3d_static", n, elevation, width=s, height=s)
            el, az = cams.elevation.float().tolist(), cams.azimuth.float().tolist()
        pos, neg = sv3d_conditioning(clip, lat0, cond_aug, elevations=el, azimuths=az)

    sigmas = edm.edm_sigmas(steps)
    alphas = anchor_alphas(steps, anchor_strength).tolist()
    progress = Progress(steps)
    m = per_frame_cfg_model(model, cfg_min, cfg_max)
    sampler = anchored_sampler(z_anchor, eps, alphas)
    out = run_guided(m, pos, neg, cfg_max, eps, sigmas, sampler,
                        callback=lambda step, x0, x, total: progress.update(step + 1), seed=seed)
    images = vae_decode_chunked(vae, out, vae_chunk)  # [F,S,S,3]
    images = roll_back(images, order_shift).to(intermediate_device())
    if cameras is not None:
        out_cams = cameras.resized(s, s)
    else:
        out_cams = make_orbit_cameras(elevs.double(),
                                      torch.arange(n, dtype=torch.float64) * 360.0 / n,
                                      width=s, height=s)
    return images, out_cams
