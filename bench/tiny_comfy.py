"""Tiny random-weight models built with ComfyUI's OWN classes, for benchmarks and integration
tests (real weights cannot be downloaded here). ComfyUI must already be importable (see
``tests/comfy_host.py``); every import of ``comfy`` happens inside the functions.

ComfyUI's layer classes skip weight initialisation, so every builder initialises explicitly:
matrices ~ N(0, std), norm weights 1, other vectors small; SVD's learned spatial/temporal blend
(``mix_factor``) at 0.3 so both paths matter.
"""

from __future__ import annotations

import json
import os

import torch

VIDEO_ADM = {"svd": 768, "sv3d_u": 256, "sv3d_p": 1280}


def load_comfyui():
    """Import ComfyUI from ``$COMFYUI_PATH`` (CPU mode without CUDA) and return
    ``comfy.model_management``, or None when the variable is unset. Where no torchvision can be
    imported (CPU torch from a local wheel), the stand-ins of :mod:`.host_stubs` are used."""
    from .host_stubs import import_comfyui

    path = os.environ.get("COMFYUI_PATH")
    if not path:
        return None
    return import_comfyui(path, cpu=not torch.cuda.is_available())


def init_random_(module: torch.nn.Module, std: float = 0.02, bias_std: float = 0.01,
                 mix_factor: float = 0.3) -> torch.nn.Module:
    with torch.no_grad():
        for n, p in module.named_parameters():
            if "mix_factor" in n:
                p.fill_(mix_factor)
            elif p.ndim > 1:
                p.normal_(0, std)
            elif "norm" in n and n.endswith("weight"):
                p.fill_(1.0)
            elif bias_std:
                p.normal_(0, bias_std)
            else:
                p.zero_()
    return module


def _patcher(model):
    import comfy.model_patcher
    from comfy import model_management

    model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=model_management.get_torch_device(),
                                            offload_device=torch.device("cpu"))


def tiny_video_model(kind: str = "sv3d_p", seed: int = 0, context_dim: int = 1024,
                     model_channels: int = 64):
    """A tiny SVD-family MODEL (``svd``, ``sv3d_u`` or ``sv3d_p``) in a ModelPatcher.
    ``model_channels >= 64``: ComfyUI forces 64 channels per attention head."""
    from comfy import supported_models

    unet_config = {
        "use_checkpoint": False, "image_size": 32, "out_channels": 4,
        "use_spatial_transformer": True, "legacy": False, "num_classes": "sequential",
        "adm_in_channels": VIDEO_ADM[kind], "in_channels": 8, "model_channels": model_channels,
        "num_res_blocks": [1, 1], "transformer_depth": [1, 1],
        "transformer_depth_output": [1, 1, 1, 1], "channel_mult": [1, 2],
        "transformer_depth_middle": 1, "use_linear_in_transformer": True,
        "context_dim": context_dim, "extra_ff_mix_layer": True, "use_spatial_context": True,
        "merge_strategy": "learned_with_images", "merge_factor": 0.0,
        "video_kernel_size": [3, 1, 1], "use_temporal_resblock": True,
        "use_temporal_attention": True, "disable_temporal_crossattention": False,
    }
    cls = {"svd": supported_models.SVD_img2vid, "sv3d_u": supported_models.SV3D_u,
           "sv3d_p": supported_models.SV3D_p}[kind]
    cfg = cls(unet_config)
    cfg.set_inference_dtype(torch.float32, None)
    torch.manual_seed(seed)
    model = cfg.get_model({})
    init_random_(model.diffusion_model)
    return _patcher(model)


def tiny_sd15(in_channels: int = 4, seed: int = 0):
    """A tiny SD-1.5 MODEL (``in_channels`` 9 = the inpainting variant)."""
    from comfy import supported_models

    unet_config = {"use_checkpoint": False, "image_size": 32, "out_channels": 4,
                   "use_spatial_transformer": True, "legacy": False, "adm_in_channels": None,
                   "in_channels": in_channels, "model_channels": 32, "num_res_blocks": [1, 1],
                   "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1],
                   "channel_mult": [1, 2], "transformer_depth_middle": 1,
                   "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 2,
                   "use_temporal_attention": False, "use_temporal_resblock": False}
    cfg = supported_models.SD15(unet_config)
    cfg.set_inference_dtype(torch.float32, None)
    torch.manual_seed(seed)
    model = cfg.get_model({})
    init_random_(model.diffusion_model)
    return _patcher(model)


def tiny_clip_vision(folder: str, projection_dim: int = 1024, seed: int = 1):
    """A tiny ``comfy.clip_vision.ClipVisionModel`` (its config JSON is written to ``folder``)."""
    import comfy.clip_vision

    cfg = {"attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "gelu", "hidden_size": 32,
           "image_size": 32, "initializer_factor": 1.0, "initializer_range": 0.02,
           "intermediate_size": 64, "layer_norm_eps": 1e-5, "model_type": "clip_vision_model",
           "num_attention_heads": 2, "num_channels": 3, "num_hidden_layers": 2, "patch_size": 16,
           "projection_dim": projection_dim, "torch_dtype": "float32"}
    p = os.path.join(folder, "tiny_clip_vision.json")
    with open(p, "w") as f:
        json.dump(cfg, f)
    cv = comfy.clip_vision.ClipVisionModel(p)
    torch.manual_seed(seed)
    init_random_(cv.model, std=0.05, bias_std=0.0)
    return cv


def tiny_vae(resolution: int = 64, seed: int = 2):
    """A tiny ``comfy.sd.VAE`` (SD-family AutoencoderKL, 32 channels, 4 levels, 4 latent ch)."""
    import comfy.sd

    dd = {"double_z": True, "z_channels": 4, "resolution": resolution, "in_channels": 3,
          "out_ch": 3, "ch": 32, "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1,
          "attn_resolutions": [], "dropout": 0.0}
    torch.manual_seed(seed)
    vae = comfy.sd.VAE(sd={}, config={"params": {"ddconfig": dd, "embed_dim": 4}})
    init_random_(vae.first_stage_model, std=0.05, bias_std=0.0)
    return vae
