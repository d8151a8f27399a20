"""Stand-ins for torchvision and torchaudio while ComfyUI imports (CPU-only machines).

ComfyUI imports ``torchvision`` and (v0.33) ``torchaudio`` at module level in model and node files
(``torchvision.ops`` for SAM3, ``torchvision.transforms``, ``torchaudio`` for the LTX audio VAE).
Beside a CPU-only torch from a local wheel, the registry's torchvision/torchaudio are CUDA builds
that fail to import ("operator torchvision::nms does not exist"). :func:`install` serves every
``torchvision.*`` / ``torchaudio.*`` module as an empty stand-in where the real package does not
import: importing, subclassing and default-argument use work; calling anything raises. Used by
``python -m orbitforge.bench core_schemas`` and ``bench core`` and by the test host
(``tests/comfy_host.py``); none of the code paths they use need these packages.
"""

from __future__ import annotations

import importlib
import os
import sys
import types

STUBBED = ("torchvision", "torchaudio")


class _Missing:
    """Stands for any function or class of a stubbed package: importing, subclassing and
    default-argument use work; calling or instantiating raises."""

    def __init__(self, *_a, **_k):
        raise RuntimeError("torchvision/torchaudio are not installed here (stand-in module)")

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


def install():
    """Install the stand-ins for torchvision and torchaudio where the real ones do not import
    (what ComfyUI v0.33 imports at start: torchvision.ops, .transforms, .models.optical_flow;
    torchaudio and torchaudio.functional). :func:`hide` removes them again."""
    missing = [n for n in STUBBED if _broken(n)]
    if not missing:
        return
    if not any(f is _StubFinder for f in sys.meta_path):
        sys.meta_path.insert(0, _StubFinder)


def hide():
    """Remove the stand-ins (so libraries probing later, e.g. transformers, see none)."""
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


# ComfyUI modules that import torchvision/torchaudio at module level: imported while the
# stand-ins are in place, so that the stand-ins can be hidden again afterwards
_PRELOAD = ("comfy.model_base", "comfy.sd", "comfy.supported_models", "comfy.samplers",
            "comfy.clip_vision", "comfy.ldm.cascade.stage_c_coder",
            "comfy.ldm.cascade.controlnet", "comfy.ldm.cosmos.model",
            "comfy.ldm.cosmos.predict2", "comfy.ldm.ace.vae.music_dcae_pipeline",
            "comfy.ldm.sam3.detector", "comfy.ldm.lightricks.vae.audio_vae",
            "comfy.background_removal.birefnet", "comfy.ldm.mmaudio.vae.autoencoder")


def import_comfyui(path: str, cpu: bool = True, keep_stubs: bool = False):
    """Import ComfyUI from the checkout at ``path`` (its ``--cpu`` mode unless ``cpu=False``),
    with the stand-ins installed where torchvision/torchaudio do not import; returns
    ``comfy.model_management``. The one loader of the test host and the benchmarks.

    Unless ``keep_stubs`` (a process that goes on to import every node module), the model
    modules that need torchvision are imported now and the stand-ins hidden again, so that
    libraries probing for torchvision later (transformers, diffusers) see none instead of a fake.
    """
    path = os.path.abspath(path)
    if not os.path.isfile(os.path.join(path, "comfy", "model_management.py")):
        raise ValueError(f"{path} is not a ComfyUI checkout (no comfy/model_management.py): "
                         "point COMFYUI_PATH (or --comfyui) at one")
    if path not in sys.path:
        sys.path.insert(0, path)
    install()
    saved = sys.argv
    sys.argv = [saved[0]] + (["--cpu"] if cpu else [])
    try:
        import comfy.cli_args

        comfy.cli_args.args.cpu = cpu
        model_management = importlib.import_module("comfy.model_management")
    finally:
        sys.argv = saved
    if not keep_stubs:
        for name in _PRELOAD:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - optional model families (audio without torchaudio)
                pass
        hide()
    return model_management
