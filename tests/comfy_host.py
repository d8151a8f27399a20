"""Load a real ComfyUI (from ``$COMFYUI_PATH``) headless on the CPU for integration tests.

Tests that need the host call :func:`require_comfyui` and are skipped when ``COMFYUI_PATH`` is
unset. ComfyUI imports ``torchvision`` and (v0.33) ``torchaudio`` at module level in model and
node files (``torchvision.ops`` for SAM3, ``torchaudio`` for the LTX audio VAE); on machines with no
working build of them (CPU-only torch from a local wheel, beside which the registry's CUDA wheels
fail to import), stand-in modules are served for the test process only -- none of the code paths
we exercise use them.
"""

from __future__ import annotations

import importlib
import os
import sys
import types

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

    mm = import_comfyui(path)
    _LOADED = mm
    return mm
