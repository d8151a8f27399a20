"""Atomic file writes: a temp file in the target folder, then ``os.replace``.

A reader (or ComfyUI's file browser) never sees a half-written file, and a failure or interrupt
leaves no partial file behind. The result gets the usual ``0o666 & ~umask`` permissions (temp
files are created private).
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable, Union


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str, data: Union[bytes, str, Callable[[str], None]]) -> str:
    """Write ``data`` (bytes, text, or a ``writer(tmp_path)`` callable) to ``path`` atomically."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"output folder {folder!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=os.path.splitext(path)[1], dir=folder)
    try:
        if callable(data):
            os.close(fd)
            data(tmp)
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
