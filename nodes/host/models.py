"""Host code for the Hi3D stage-2 refiner: the models folder, a model config ComfyUI does not
detect by itself (SVD video UNet with in_channels 17 and a 512-d vector), building a core MODEL
(ModelPatcher) from a state dict, conditioning, chunked VAE calls and the anchored sampler.

How the pieces reach the UNet (ComfyUI ``model_base.BaseModel._apply_model``): the sampler's
``x`` is scaled by c_in and concatenated with ``c_concat`` along channels, so ``c_concat`` =
``[depth 9 | condition latent 4]`` gives the official ``[x 4 | depth 9 | latent 4]`` input; ``y``
(the vector) = ``[emb256(elevation) | emb256(cond_aug)]`` per frame, ComfyUI's ``Timestep``
embedding (cos first, the ``timestep_embedding`` the official ``ConcatTimestepEmbedderND`` uses).

Every ComfyUI import is inside a function.
"""

from __future__ import annotations

import functools
import os
from typing import Optional

import torch

from ...kernels.diffusion.depth_condition import (
    DEPTH_CHANNELS,
    HI3D_COND_AUG,
    LATENT_CHANNELS,
    STAGE2_IN_CHANNELS,
    sample_anchored,
)
from ...kernels.diffusion.guidance import cfg_x0, linear_scales
from ...kernels.diffusion.hi3d_checkpoint import load_stage2_unet, validate_stage2
from . import check_interrupt, intermediate_device, register_model_folder
from .family import require

REFINER_FOLDER = "orbitforge_refiner"
EXTENSIONS = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")


# ----------------------------------------------------------------------------------------------
# Models folder
# ----------------------------------------------------------------------------------------------


def refiner_files() -> list:
    """Files in ``models/orbitforge_refiner`` (registered on first use)."""
    try:
        import folder_paths  # noqa: PLC0415
    except Exception:
        return []
    register_model_folder(REFINER_FOLDER, EXTENSIONS)
    return folder_paths.get_filename_list(REFINER_FOLDER)


def refiner_path(name: str) -> str:
    if os.path.isabs(name) and os.path.isfile(name):
        return name
    import folder_paths  # noqa: PLC0415

    register_model_folder(REFINER_FOLDER, EXTENSIONS)
    path = folder_paths.get_full_path(REFINER_FOLDER, name)
    if path is None:
        raise ValueError(f"refiner checkpoint {name!r} not found in models/{REFINER_FOLDER}/; put "
                         "Hi3D's second_stage.pt (or its convert-hi3d safetensors) there")
    return path


# ----------------------------------------------------------------------------------------------
# Model config and BaseModel subclass (built lazily: they subclass ComfyUI classes)
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def stage2_classes():
    import comfy.conds  # noqa: PLC0415
    import comfy.utils  # noqa: PLC0415
    from comfy import model_base  # noqa: PLC0415
    from comfy import supported_models  # noqa: PLC0415

    class Hi3DStage2(model_base.SVD_img2vid):
        """SVD video UNet, 17 input channels, vector = [elevation 256 | cond_aug 256]."""

        ORBITFORGE_FAMILY = "hi3d_stage2"  # what family.family() reports for it

        def encode_adm(self, **kwargs):
            noise = kwargs.get("noise", None)
            n = noise.shape[0] if noise is not None else 1
            elev = torch.as_tensor(kwargs.get("elevation", 0.0), dtype=torch.float32).flatten()
            aug = torch.as_tensor(kwargs.get("augmentation_level", HI3D_COND_AUG),
                                  dtype=torch.float32).flatten()
            out = [comfy.utils.resize_to_batch_size(self.embedder(v), n) for v in (elev, aug)]
            return torch.cat(out, dim=1)  # [F, 512]

        def extra_conds(self, **kwargs):
            out = {}
            noise = kwargs.get("noise", None)
            out["y"] = comfy.conds.CONDRegular(self.encode_adm(**kwargs))
            f, _, h, w = noise.shape
            depth = kwargs.get("concat_depth", None)
            latent = kwargs.get("concat_latent_image", None)
            if depth is None:
                depth = torch.zeros((f, DEPTH_CHANNELS, h, w), dtype=noise.dtype)
            if latent is None:
                latent = torch.zeros((f, LATENT_CHANNELS, h, w), dtype=noise.dtype)
            depth = comfy.utils.resize_to_batch_size(depth, f)
            latent = comfy.utils.resize_to_batch_size(latent, f)
            if depth.shape[-2:] != (h, w) or latent.shape[-2:] != (h, w):
                raise ValueError(f"refiner conditions {tuple(depth.shape)}/{tuple(latent.shape)} "
                                 f"do not match the latent {h}x{w}")
            out["c_concat"] = comfy.conds.CONDNoiseShape(torch.cat([depth.to(latent.dtype), latent],
                                                                   1))
            cross_attn = kwargs.get("cross_attn", None)
            if cross_attn is not None:
                out["c_crossattn"] = comfy.conds.CONDCrossAttn(cross_attn)
            out["num_video_frames"] = comfy.conds.CONDConstant(f)
            return out

    class Hi3DStage2Config(supported_models.SVD_img2vid):
        unet_config = {
            "model_channels": 320,
            "in_channels": STAGE2_IN_CHANNELS,
            "use_linear_in_transformer": True,
            "context_dim": 1024,
            "adm_in_channels": 512,
            "use_temporal_attention": True,
            "use_temporal_resblock": True,
        }

        def get_model(self, state_dict, prefix="", device=None):
            return Hi3DStage2(self, device=device)

    return Hi3DStage2, Hi3DStage2Config


def build_refiner_model(unet_sd: dict):
    """A core MODEL (ModelPatcher) from a validated stage-2 UNet state dict (UNet-relative keys),
    the way ComfyUI's own diffusion-model loader does it (dtype choice, manual cast, offload)."""
    import comfy.model_detection  # noqa: PLC0415
    import comfy.model_patcher  # noqa: PLC0415
    import comfy.utils  # noqa: PLC0415
    from comfy import model_management  # noqa: PLC0415

    validate_stage2(unet_sd)
    _, Config = stage2_classes()
    unet_config = comfy.model_detection.detect_unet_config(unet_sd, "")
    config = Config(unet_config)
    load_device = model_management.get_torch_device()
    params = comfy.utils.calculate_parameters(unet_sd)
    weight_dtype = comfy.utils.weight_dtype(unet_sd)
    dtypes = list(config.supported_inference_dtypes)
    unet_dtype = model_management.unet_dtype(model_params=params, supported_dtypes=dtypes,
                                             weight_dtype=weight_dtype)
    manual_cast = model_management.unet_manual_cast(unet_dtype, load_device,
                                                    config.supported_inference_dtypes)
    config.set_inference_dtype(unet_dtype, manual_cast)
    model = config.get_model(unet_sd, "")
    model.load_model_weights(unet_sd, "")
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device,
                                            offload_device=model_management.unet_offload_device())


def load_refiner(name_or_path: str):
    """Read (weights only) + validate + build: the stage-2 MODEL."""
    unet, _ = load_stage2_unet(refiner_path(name_or_path))
    return build_refiner_model(unet)


# ----------------------------------------------------------------------------------------------
# Model introspection
# ----------------------------------------------------------------------------------------------


def model_kind(model) -> str:
    """'hi3d_stage2', 'sv3d_p', 'sv3d_u', 'svd' for a MODEL; ValueError for anything else (the
    family detector's ``require(model, "video")``)."""
    return require(model, "video")


def latent_scale_in(model, z: torch.Tensor) -> torch.Tensor:
    """Raw VAE latent -> the model's latent space (SD1.5 format: x 0.18215)."""
    return model.model.latent_format.process_in(z)


# ----------------------------------------------------------------------------------------------
# VAE / CLIP in chunks
# ----------------------------------------------------------------------------------------------


def vae_encode_chunked(vae, images: torch.Tensor, chunk: int) -> torch.Tensor:
    """``images`` [F,H,W,3] 0..1 -> raw latents [F,4,H/8,W/8] (encoder mode), ``chunk`` at a
    time."""
    out = []
    for i in range(0, images.shape[0], max(1, chunk)):
        check_interrupt()
        out.append(vae.encode(images[i:i + chunk, :, :, :3]).to(intermediate_device(),
                                                                torch.float32))
    return torch.cat(out)


def vae_decode_chunked(vae, latents: torch.Tensor, chunk: int) -> torch.Tensor:
    """Raw latents [F,4,h,w] -> IMAGE [F,H,W,3], ``chunk`` frames at a time."""
    out = []
    for i in range(0, latents.shape[0], max(1, chunk)):
        check_interrupt()
        img = vae.decode(latents[i:i + chunk])
        if img.ndim == 5:  # video VAEs return [B,T,H,W,C]
            img = img.reshape((-1,) + tuple(img.shape[-3:]))
        out.append(img.to(intermediate_device(), torch.float32).clamp(0, 1))
    return torch.cat(out)


def clip_image_embed(clip_vision, image: torch.Tensor) -> torch.Tensor:
    """Pooled CLIP image embedding ``[1, 1, D]`` of ``image`` [1,H,W,3] (SVD/SV3D convention)."""
    out = clip_vision.encode_image(image[:, :, :, :3])
    return out.image_embeds.unsqueeze(0)


# ----------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------


def per_frame_cfg_model(model, cfg_min: float, cfg_max: float):
    """Clone of ``model`` whose CFG is ``uncond + s_f (cond - uncond)`` with ``s_f`` linear from
    ``cfg_min`` (frame 0) to ``cfg_max`` (last frame), the official LinearPredictionGuider."""
    m = model.clone()

    def cfg_fn(args):
        cond, uncond = args["cond"], args["uncond"]
        frames = cond.shape[0]
        scales = linear_scales(frames, cfg_min, cfg_max).to(cond.device, cond.dtype)
        return cfg_x0(uncond, cond, scales, frames)

    m.set_model_sampler_cfg_function(cfg_fn, disable_cfg1_optimization=True)
    return m


def anchored_sampler(z_anchor: Optional[torch.Tensor], eps: torch.Tensor, alphas):
    """A core SAMPLER running :func:`depth_condition.sample_anchored` (Euler-EDM + anchoring);
    ``z_anchor`` in the model's latent space, ``eps`` the unscaled start noise."""
    import comfy.samplers  # noqa: PLC0415

    def fn(model, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = extra_args or {}
        s_in = x.new_ones([x.shape[0]])

        def denoise(xx, sigma):
            return model(xx, sigma * s_in, **extra_args)

        def cb(i, xx, den, sigma):
            if callback is not None:
                callback({"x": xx, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": den})

        z = None if z_anchor is None else z_anchor.to(x.device, x.dtype)
        return sample_anchored(denoise, x, sigmas, z, eps.to(x.device, x.dtype), alphas, cb)

    return comfy.samplers.KSAMPLER(fn)


def run_guided(model, positive, negative, cfg_max: float, noise: torch.Tensor, sigmas: torch.Tensor,
               sampler, callback=None, seed: int = 0) -> torch.Tensor:
    """Sample with core's CFGGuider (model loading/offloading, cond batching) -> raw latents."""
    import comfy.samplers  # noqa: PLC0415

    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg_max)
    latent = torch.zeros_like(noise)

    def cb(step, x0, x, total):
        if callback is not None:
            callback(step, x0, x, total)

    out = guider.sample(noise, latent, sampler, sigmas, callback=cb, disable_pbar=True, seed=seed)
    return out.to(intermediate_device(), torch.float32)
