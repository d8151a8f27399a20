"""Interrupt checks inside long kernel loops, without the kernels knowing the host.

Long loops (per view, per chunk of voxels or points, per finishing stage) call
:func:`check_interrupt` where one pass can take a noticeable time, so that Cancel stops them
within about a second. The check is whatever hook is installed: the pack's host layer installs
its own check when the pack is imported (ComfyUI's interrupt flag inside ComfyUI, the pack's
fallback flag outside), so the nodes stop promptly; kernels used on their own check nothing.
A hook stops the work by raising (and whatever the loop built is dropped with the exception).
"""

from __future__ import annotations

from typing import Callable, Optional

_HOOK: Optional[Callable[[], None]] = None


def set_interrupt_hook(fn: Optional[Callable[[], None]]) -> None:
    """Install the check every :func:`check_interrupt` call runs (None: no checks)."""
    global _HOOK
    _HOOK = fn


def check_interrupt() -> None:
    """Run the installed check (it raises to stop); no-op when none is installed."""
    hook = _HOOK
    if hook is not None:
        hook()
