"""Host folders beyond the output folder (lazy ComfyUI import; sane fallbacks outside)."""

from __future__ import annotations

import os


def input_directory() -> str:
    """ComfyUI's input folder (``folder_paths.get_input_directory()``); outside ComfyUI
    ``$ORBITFORGE_INPUT`` or ./input."""
    try:
        import folder_paths  # noqa: PLC0415 - lazy host import by design

        return folder_paths.get_input_directory()
    except Exception:
        return os.environ.get("ORBITFORGE_INPUT", os.path.abspath("input"))
