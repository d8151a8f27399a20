"""The core CONDITIONING of the SVD-family image-to-video models (SVD, SV3D_u, SV3D_p and the Hi3D
stage-2 refiner built on SVD), built in one place for every node that needs it.

The scheme is the official one (Stability AI's generative-models,
``scripts/sampling/simple_video_sample.py``, SVD and SV3D): the positive branch carries the CLIP
image embedding (``c_crossattn``), the VAE latent of the noisy conditioning image
(``concat_latent_image``, concatenated to the noisy latent; for Hi3D also the packed depth
``concat_depth``) and the vector conditions ``augmentation_level`` (cond_aug) and, for SV3D_p and
Hi3D, per-frame ``elevation`` / ``azimuth`` in degrees. The unconditional branch
(``force_uc_zero_embeddings=["cond_frames", "cond_frames_without_noise"]``) zeroes the embedding
and the concat latents and keeps the vector conditions. ComfyUI's ``model_base`` (``SVD_img2vid`` /
``SV3D_*`` ``extra_conds`` and ``encode_adm``) reads these keys.

The noisy conditioning image itself (``image + cond_aug * N(0, 1)`` in [-1, 1]) is
:func:`orbitforge.kernels.diffusion.sv3d.noisy_cond_pixels`.
"""

from __future__ import annotations

import torch

ZEROED = ("concat_latent_image", "concat_depth")  # zero in the unconditional branch


def sv3d_conditioning(clip_embed: torch.Tensor, concat_latent: torch.Tensor, cond_aug: float,
                      elevations=None, azimuths=None, concat_depth=None):
    """(positive, negative) CONDITIONING: ``clip_embed`` [1, 1, D], ``concat_latent`` [B, 4, h, w]
    (raw VAE latents), per-frame ``elevations`` / ``azimuths`` in degrees (None for models
    without cameras: SVD, SV3D_u), ``concat_depth`` [F, 9, h, w] (Hi3D stage 2 only)."""
    conds = {"concat_latent_image": concat_latent}
    if concat_depth is not None:
        conds["concat_depth"] = concat_depth
    if elevations is not None:
        conds["elevation"] = [float(e) for e in elevations]
    if azimuths is not None:
        conds["azimuth"] = [float(a) for a in azimuths]
    conds["augmentation_level"] = float(cond_aug)
    positive = [[clip_embed, conds]]
    return positive, unconditional(positive)


def unconditional(positive):
    """The unconditional CONDITIONING of ``positive``: embedding and concat latents zeroed,
    vector conditions (cameras, cond_aug) kept."""
    return [[torch.zeros_like(emb), {k: torch.zeros_like(v) if k in ZEROED else v
                                     for k, v in d.items()}] for emb, d in positive]
