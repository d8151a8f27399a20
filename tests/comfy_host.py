"""Load a real ComfyUI (from ``$COMFYUI_PATH``) headless on the CPU for integration tests.

Tests that need the host call :func:`require_comfyui` and are skipped when ``COMFYUI_PATH`` is
unset. ComfyUI imports ``torchvision`` and (v0.33) ``torchaudio`` at module level in model and
node files (``torchvision.ops`` for SAM3, ``torchaudio`` for the LTX audio VAE); on machines with no
working build of them (CPU-only torch from a local wheel, beside which the registry's CUDA wheels
fail to import), stand-in modules are served for the test process only -- none of the code paths
we exercise use them.
"""

from __future__ import annotations

import os

import pytest

_LOADED = None


def _stub_torchvision():
    """Stand-ins for torchvision/torchaudio where they do not import (see bench/host_stubs.py)."""
    from orbitforge.bench import host_stubs

    host_stubs.install()


def require_comfyui():
    """Import ComfyUI from ``$COMFYUI_PATH`` in CPU mode, or skip the calling test."""
    global _LOADED
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        pytest.skip("COMFYUI_PATH is unset: ComfyUI integration test skipped")
    if _LOADED is not None:
        return _LOADED
    path = os.path.abspath(path)
    if not os.path.isfile(os.path.join(path, "comfy", "model_management.py")):
        pytest.skip(f"COMFYUI_PATH={path} is not a ComfyUI checkout")
    from orbitforge.bench.host_stubs import import_comfyui

    model_management = import_comfyui(path)
    _LOADED = model_management
    return model_management


def tiny_host(folder, size: int = 64, context_dim: int = 1024, **models) -> dict:
    """Tiny random-weight models in ComfyUI's own classes (``bench/tiny_comfy.py``) for node
    tests: each keyword ``name=(kind, seed)`` a video model (``"sv3d_p"``, ``"svd"``, ...), plus
    ``"clip_vision"`` (projection ``context_dim``, its files in ``folder``) and ``"vae"`` at
    ``size``. Skips the calling test without ComfyUI."""
    require_comfyui()
    from orbitforge.bench.tiny_comfy import tiny_clip_vision, tiny_vae, tiny_video_model

    host = {name: tiny_video_model(kind, seed=seed, context_dim=context_dim)
            for name, (kind, seed) in models.items()}
    host["clip_vision"] = tiny_clip_vision(str(folder), projection_dim=context_dim)
    host["vae"] = tiny_vae(size)
    return host
