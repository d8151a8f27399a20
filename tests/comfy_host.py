"""Load a real ComfyUI (from ``$COMFYUI_PATH``) headless on the CPU for integration tests.

Tests that need the host call :func:`require_comfyui` and are skipped when ``COMFYUI_PATH`` is
unset. ComfyUI imports ``torchvision`` at module level in a few model files; on machines with no
working torchvision build (CPU-only torch from a local wheel), a minimal stand-in module is
installed for the test process only -- none of the code paths we exercise use it.
"""

from __future__ import annotations

import importlib
import os
import sys
import types

import pytest

_LOADED = None


def _stub_torchvision():
    try:
        import torchvision  # noqa: F401

        return
    except Exception:
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]

    def missing(*_a, **_k):
        raise RuntimeError("torchvision is not installed in this test environment")

    def getattr_(name):
        if name.startswith("__"):
            raise AttributeError(name)
        return missing  # any transform or op: fails only when used

    import importlib.machinery

    tv = types.ModuleType("torchvision")
    tr = types.ModuleType("torchvision.transforms")
    for m in (tv, tr):
        m.__spec__ = importlib.machinery.ModuleSpec(m.__name__, None)
    tr.__getattr__ = getattr_
    tv.__getattr__ = getattr_
    tv.transforms = tr
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.transforms"] = tr


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
    if path not in sys.path:
        sys.path.insert(0, path)
    _stub_torchvision()
    saved_argv = sys.argv
    sys.argv = [sys.argv[0], "--cpu"]
    try:
        import comfy.cli_args

        comfy.cli_args.args.cpu = True
        mm = importlib.import_module("comfy.model_management")
    finally:
        sys.argv = saved_argv
    # import now every ComfyUI module that needs torchvision at import time, then hide the
    # stand-in again so libraries probing for torchvision later (transformers, diffusers) see
    # none instead of a fake one
    for name in ("comfy.model_base", "comfy.sd", "comfy.supported_models", "comfy.samplers",
                 "comfy.clip_vision", "comfy.ldm.cascade.stage_c_coder",
                 "comfy.ldm.cascade.controlnet", "comfy.ldm.cosmos.model",
                 "comfy.ldm.cosmos.predict2", "comfy.ldm.ace.vae.music_dcae_pipeline"):
        try:
            importlib.import_module(name)
        except Exception:  # optional model families (e.g. audio without torchaudio)
            pass
    _hide_stub()
    _LOADED = mm
    return mm


def _hide_stub():
    stub = [k for k, m in sys.modules.items()
            if (k == "torchvision" or k.startswith("torchvision."))
            and getattr(m, "__file__", None) is None]
    for k in stub:
        del sys.modules[k]
    if stub and "transformers.utils.import_utils" in sys.modules:
        iu = sys.modules["transformers.utils.import_utils"]
        cached = getattr(iu, "is_torchvision_available", None)
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()
