"""``python -m orbitforge check-workflow``: the workflow checker on the command line."""

from __future__ import annotations

import json
import sys

from .api import ui_to_api
from .check import check_files
from .schema import load_core_schemas


def check_workflow_main(argv) -> int:
    """``python -m orbitforge check-workflow [--core FILE] [--api] FILE [FILE...]``.

    Prints ``FILE: problem`` lines, or ``OK FILE``; with ``--api`` also the API format of each valid
    file as JSON. Exit status 1 when any file has problems, 2 on usage errors."""
    argv = list(argv)
    core_path, show_api, files = None, False, []
    it = iter(argv)
    for a in it:
        if a in ("-h", "--help"):
            print(check_workflow_main.__doc__.strip().replace("``", ""))
            return 0
        if a == "--core":
            core_path = next(it, None)
            if core_path is None:
                print("--core needs a file", file=sys.stderr)
                return 2
        elif a == "--api":
            show_api = True
        else:
            files.append(a)
    if not files:
        print("usage: python -m orbitforge check-workflow [--core FILE] [--api] FILE [FILE...]",
              file=sys.stderr)
        return 2
    core = load_core_schemas(core_path) if core_path else None
    bad = 0
    for path, probs in check_files(files, core=core).items():
        if probs:
            bad += 1
            for p in probs:
                print(f"{path}: {p}")
        else:
            print(f"OK {path}")
            if show_api:
                with open(path, encoding="utf-8") as f:
                    print(json.dumps(ui_to_api(json.load(f), core=core), indent=1))
    return 1 if bad else 0
