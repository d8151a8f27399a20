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


STUBBED = ("torchvision", "torchaudio")


class _Missing:
    """Stands for any function or class of a stubbed package: importing, subclassing and
    default-argument use work; calling or instantiating raises."""

    def __init__(self, *_a, **_k):
        raise RuntimeError("torchvision/torchaudio are not installed in this test environment")

    def __class_getitem__(cls, _item):
        return cls


def _module_getattr(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _Missing


class _StubFinder:
    """A meta-path finder serving ``torchvision``/``torchaudio`` and every submodule of theirs
    (``torchvision.ops``, ``torchvision.transforms.functional``, ``torchaudio.functional``, ...)
    as empty stand-in modules."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        import importlib.machinery

        if fullname.split(".")[0] not in STUBBED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _StubFinder, is_package=True)

    @staticmethod
    def create_module(spec):
        m = types.ModuleType(spec.name)
        m.__getattr__ = _module_getattr
        m.__path__ = []
        m.__version__ = "0.0.0+stub"
        return m

    @staticmethod
    def exec_module(module):
        parent, _, child = module.__name__.rpartition(".")
        if parent and parent in sys.modules:
            setattr(sys.modules[parent], child, module)


def _broken(name: str) -> bool:
    try:
        importlib.import_module(name)
        return False
    except Exception:  # a CUDA wheel beside CPU torch: "operator torchvision::nms does not exist"
        for k in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[k]
        return True


def _stub_torchvision():
    """Install the stand-ins for torchvision and torchaudio where the real ones do not import
    (what ComfyUI v0.33 imports at start: torchvision.ops, .transforms, .models.optical_flow;
    torchaudio and torchaudio.functional). ``_hide_stub`` removes them again."""
    missing = [n for n in STUBBED if _broken(n)]
    if not missing:
        return
    global STUBBED_NOW
    STUBBED_NOW = tuple(missing)
    if not any(f is _StubFinder for f in sys.meta_path):
        sys.meta_path.insert(0, _StubFinder)


STUBBED_NOW: tuple = ()


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
            if k.split(".")[0] in STUBBED and getattr(m, "__version__", "") == "0.0.0+stub"]
    for k in stub:
        del sys.modules[k]
    sys.meta_path[:] = [f for f in sys.meta_path if f is not _StubFinder]
    if stub and "transformers.utils.import_utils" in sys.modules:
        iu = sys.modules["transformers.utils.import_utils"]
        for fn in ("is_torchvision_available", "is_torchaudio_available"):
            cached = getattr(iu, fn, None)
            if hasattr(cached, "cache_clear"):
                cached.cache_clear()
