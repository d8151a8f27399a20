"""Atomic file writes: a temp file in the target folder, then ``os.replace``.

A reader (or ComfyUI's file browser) never sees a half-written file, and a failure or interrupt
leaves no partial file behind. The result gets the usual ``0o666 & ~umask`` permissions (temp
files are created private).

Temp files are named ``.tmp_<random>.part``: hidden, and with an extension no file list
recognises. ComfyUI's lists do not skip hidden files (``folder_paths.recursive_search`` walks
everything; ``filter_files_extensions``, Load 3D's suffix set and ``filter_files_content_types``'
mimetypes then pick by extension), so a temp named ``*.ply`` or ``*.glb`` left by a killed process
would show up there; ``.part`` matches none of them. A process killed mid-write (SIGKILL, power
loss) still leaves its temp behind: :func:`atomic_write` removes such leftovers older than a day
from a folder the first time it writes there.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Callable, Iterable, List, Tuple, Union

TEMP_PREFIX = ".tmp_"
TEMP_SUFFIX = ".part"
STALE_TEMP_S = 24 * 3600

Data = Union[bytes, str, Callable[[str], None]]
_swept: set = set()


def is_temp_name(name: str) -> bool:
    """True for the temp files :func:`atomic_write` creates (listing code must skip them)."""
    base = os.path.basename(name)
    return base.startswith(TEMP_PREFIX) and base.endswith(TEMP_SUFFIX)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _sweep_stale(folder: str) -> None:
    if folder in _swept:
        return
    _swept.add(folder)
    now = time.time()
    try:
        with os.scandir(folder) as it:
            for e in it:
                if is_temp_name(e.name) and e.is_file() and now - e.stat().st_mtime > STALE_TEMP_S:
                    try:
                        os.remove(e.path)
                    except OSError:
                        pass
    except OSError:
        pass


def _stage(path: str, data: Data) -> str:
    """Write ``data`` to a new temp file next to ``path``; returns the temp path."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"output folder {folder!r} does not exist")
    _sweep_stale(folder)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=TEMP_SUFFIX, dir=folder)
    try:
        if callable(data):  # the writer gets a path ending in .part: it must not infer the format
            os.close(fd)
            data(tmp)
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())  # the rename must not land before the data (power loss)
        os.chmod(tmp, 0o666 & ~_umask())
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return tmp


def atomic_write(path: str, data: Data) -> str:
    """Write ``data`` (bytes, text, or a ``writer(tmp_path)`` callable) to ``path`` atomically."""
    tmp = _stage(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_write_all(items: Iterable[Tuple[str, Data]]) -> List[str]:
    """Write several files that belong together (a PLY sequence, an OBJ with its MTL and PNG):
    every file is first written in full to its temp file, then all are renamed in one burst. An
    error or interrupt while writing leaves none of them; each file that appears is complete."""
    items = list(items)
    staged: List[Tuple[str, str]] = []
    try:
        for path, data in items:
            staged.append((_stage(path, data), path))
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.remove(tmp)
        raise
    return [p for p, _ in items]
