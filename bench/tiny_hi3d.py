"""Tiny Hi3D stage-2 UNets for tests and benchmarks: a small config with the stage-2 structure
and random weights in the real key layout of
:func:`orbitforge.kernels.diffusion.hi3d_checkpoint.unet_layout` (host-free: plain state dicts, no
ComfyUI)."""

from __future__ import annotations

from typing import Dict

import torch

from ..kernels.diffusion.hi3d_checkpoint import UNetConfig, unet_layout


def tiny_config(model_channels: int = 64, in_channels: int = 17, adm_in_channels: int = 512,
                context_dim: int = 64) -> UNetConfig:
    """A small model with the stage-2 structure (for tests and benchmarks)."""
    return UNetConfig(in_channels=in_channels, model_channels=model_channels, channel_mult=(1, 2),
                      num_res_blocks=1, attention_levels=(True, False), context_dim=context_dim,
                      adm_in_channels=adm_in_channels)


def random_unet_state_dict(cfg: UNetConfig, seed: int = 0, dtype=torch.float32,
                           scale: float = 0.02) -> Dict[str, torch.Tensor]:
    """Random weights in the real key layout (norm weights 1, mix factors 0): tiny test models."""
    g = torch.Generator().manual_seed(int(seed))
    sd = {}
    for k, shape in unet_layout(cfg).items():
        if k.endswith("mix_factor"):
            t = torch.zeros(shape)
        elif len(shape) == 1 and (".norm" in k or "_layers.0." in k or k.startswith("out.0")
                                  or ".norm_in." in k):
            t = torch.ones(shape) if k.endswith("weight") else torch.zeros(shape)
        else:
            t = torch.randn(shape, generator=g) * scale
        sd[k] = t.to(dtype)
    return sd
