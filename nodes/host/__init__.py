"""The host layer: the only code that talks to the ComfyUI host (``comfy``, ``folder_paths``,
``server``).

This package is the pack's single host layer. Modules beside this one (e.g. ``guiders.py``) hold
code that must subclass host classes; they too import ComfyUI only inside functions.

Every import of the host happens lazily inside a function, so the pack (and its tests) import
without ComfyUI. Outside ComfyUI each helper falls back to something sane
(helper: inside ComfyUI / outside):

- ``torch_device()``: ``comfy.model_management.get_torch_device()`` / cuda if available, else cpu
- ``intermediate_device()``: ``comfy.model_management.intermediate_device()`` / cpu
- ``Progress``: ``comfy.utils.ProgressBar`` (previews, interrupt) / an optional callback
- ``check_interrupt()``: ``throw_exception_if_processing_interrupted()`` / the pack's own flag
  (below)
- ``request_interrupt()``: ``interrupt_current_processing()`` / sets the pack's own flag
- ``output_directory()``: ``folder_paths.get_output_directory()`` / ./output
  (``$ORBITFORGE_OUTPUT`` overrides both)
- ``oom_exceptions()``: ``comfy.model_management.OOM_EXCEPTION`` / ``torch.OutOfMemoryError``
- ``geometry.*_class()``: core ``MESH`` / ``SPLAT`` / ``File3D`` (v0.33) / stand-ins, same
  attributes
"""

from __future__ import annotations

import os
import threading
from typing import Callable, Optional

import torch

from ...kernels import interrupt as _kernel_interrupt


def _comfy_model_management():
    try:
        from comfy import model_management  # noqa: PLC0415 - lazy host import by design

        return model_management
    except Exception:  # ComfyUI absent (or broken): fall back
        return None


def in_comfyui() -> bool:
    return _comfy_model_management() is not None


def torch_device() -> torch.device:
    model_management = _comfy_model_management()
    if model_management is not None:
        return model_management.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def intermediate_device() -> torch.device:
    model_management = _comfy_model_management()
    if model_management is not None:
        return model_management.intermediate_device()
    return torch.device("cpu")


class ProcessingInterrupted(BaseException):
    """Outside ComfyUI, what :func:`check_interrupt` raises after :func:`request_interrupt`.

    Like ComfyUI's ``comfy.model_management.InterruptProcessingException`` it derives from
    ``BaseException``, so ``except Exception`` clean-up code does not swallow it.
    """


_FALLBACK_FLAG = threading.Event()  # the interrupt flag outside ComfyUI


def request_interrupt(value: bool = True) -> None:
    """Raise (``value=True``) or clear the interrupt flag: ComfyUI's own
    (``interrupt_current_processing``, what the Cancel button sets) inside the host, the pack's
    thread-safe fallback flag outside (scripts, benchmarks, tests)."""
    model_management = _comfy_model_management()
    if model_management is not None:
        model_management.interrupt_current_processing(bool(value))
    elif value:
        _FALLBACK_FLAG.set()
    else:
        _FALLBACK_FLAG.clear()


def check_interrupt() -> None:
    """Raise when the interrupt flag is set, clearing it (ComfyUI's semantics): ComfyUI's
    ``InterruptProcessingException`` inside the host, :class:`ProcessingInterrupted` outside."""
    model_management = _comfy_model_management()
    if model_management is not None:
        model_management.throw_exception_if_processing_interrupted()
    elif _FALLBACK_FLAG.is_set():
        _FALLBACK_FLAG.clear()
        raise ProcessingInterrupted("processing interrupted")


# long kernel loops (hull, stereo, fusion, renders, colouring, ...) check the flag between
# chunks through this hook (kernels never import the host)
_kernel_interrupt.set_interrupt_hook(check_interrupt)


def interrupt_exceptions() -> tuple:
    """The exception types :func:`check_interrupt` raises (to catch them in scripts and tests)."""
    model_management = _comfy_model_management()
    exc = None
    if model_management is not None:
        exc = getattr(model_management, "InterruptProcessingException", None)
    return (ProcessingInterrupted,) + ((exc,) if exc is not None else ())


def interrupt_mechanism() -> str:
    """Which flag :func:`request_interrupt` / :func:`check_interrupt` use: ``"comfyui"`` or
    ``"fallback"``."""
    return "comfyui" if _comfy_model_management() is not None else "fallback"


def soft_empty_cache() -> None:
    model_management = _comfy_model_management()
    if model_management is not None:
        model_management.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


def oom_exceptions() -> tuple:
    model_management = _comfy_model_management()
    excs = [torch.OutOfMemoryError] if hasattr(torch, "OutOfMemoryError") else []
    if getattr(model_management, "OOM_EXCEPTION", None) is not None:
        excs.append(model_management.OOM_EXCEPTION)
    return tuple(excs) or (RuntimeError,)


def output_directory() -> str:
    """ComfyUI's output folder; ``$ORBITFORGE_OUTPUT`` overrides it (also inside ComfyUI)."""
    override = os.environ.get("ORBITFORGE_OUTPUT")
    if override:
        return override
    try:
        import folder_paths  # noqa: PLC0415

        return folder_paths.get_output_directory()
    except Exception:
        return os.path.abspath("output")


def prepare_output_folder(prefix: str) -> tuple:
    """Validate a node's ``filename_prefix`` and create its folder inside the output folder.

    Returns ``(folder, subfolder, base)``: the absolute folder, its path relative to the output
    folder ("" at the top) and the file-name part. ``ValueError`` for prefixes that leave the
    output folder, have no name part, or folders that cannot be created or written.
    """
    prefix = prefix.strip().replace("\\", "/")
    root = os.path.abspath(output_directory())
    sub, base = os.path.split(prefix)
    folder = os.path.abspath(os.path.join(root, sub))
    if not prefix or prefix.startswith("/") or ".." in prefix.split("/") \
            or os.path.commonpath([root, folder]) != root:
        raise ValueError(f"filename_prefix must be a relative name inside the output folder "
                         f"(no '..'), got {prefix!r}")
    if not base:
        raise ValueError(f"filename_prefix {prefix!r} has no file name part (e.g. "
                         "'orbitforge/splat')")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create output folder {folder!r}: {e}; choose a writable "
                         "location") from None
    if not os.access(folder, os.W_OK):
        raise ValueError(f"output folder {folder!r} is not writable; choose another "
                         "filename_prefix or fix its permissions")
    rel = os.path.relpath(folder, root).replace(os.sep, "/")
    return folder, ("" if rel == "." else rel), base


def register_model_folder(name: str, extensions: tuple[str, ...] = (".safetensors", ".pt")) -> None:
    """Register ``models/<name>`` with ComfyUI's folder_paths (no-op outside ComfyUI)."""
    try:
        import folder_paths  # noqa: PLC0415
    except Exception:
        return
    path = os.path.join(folder_paths.models_dir, name)
    if name in folder_paths.folder_names_and_paths:
        folder_paths.add_model_folder_path(name, path)
    else:
        folder_paths.folder_names_and_paths[name] = ([path], set(extensions))


class Progress:
    """Progress for long loops: ComfyUI's progress bar (which also shows previews and checks
    interrupts) inside the host, an optional plain callback outside.

    ``update(value, preview=None)`` takes an absolute step and an optional preview IMAGE
    ``[H,W,3]`` 0..1 (converted to the PIL preview ComfyUI's UI expects).
    """

    def __init__(self, total: int, callback: Optional[Callable[[int, int], None]] = None):
        self.total = max(int(total), 1)
        self.callback = callback
        self._bar = None
        try:
            import comfy.utils  # noqa: PLC0415

            self._bar = comfy.utils.ProgressBar(self.total)
        except Exception:
            self._bar = None

    def update(self, value: int, preview: Optional[torch.Tensor] = None) -> None:
        check_interrupt()
        if self._bar is not None:
            pil = None
            if preview is not None:
                pil = ("JPEG", _to_pil(preview), 512)
            self._bar.update_absolute(value, self.total, pil)
        if self.callback is not None:
            self.callback(value, self.total)


def kernel_progress(preview_every: int = 0) -> Callable:
    """A ``progress(step, total[, preview_fn])`` callback for a kernel that reports its own
    total: a :class:`Progress` made on the first call; with ``preview_every`` every that many
    steps (and the last) ``preview_fn()`` gives the preview IMAGE."""
    bar = []

    def update(step: int, total: int, preview_fn: Optional[Callable] = None) -> None:
        if not bar:
            bar.append(Progress(total))
        show = preview_fn is not None and preview_every > 0 and (
            step % preview_every == 0 or step == total)
        bar[0].update(step, preview_fn() if show else None)

    return update


def _to_pil(image: torch.Tensor):
    from PIL import Image  # noqa: PLC0415

    arr = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(arr[..., :3])
