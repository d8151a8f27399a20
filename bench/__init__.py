"""Benchmarks: ``python -m orbitforge.bench <name> ...`` prints one JSON object."""

import json
import subprocess
import sys


def print_result(result: dict, compact: bool, indent: int = 2, **dumps_kw) -> None:
    """Prints a benchmark's one JSON object: on one line with ``--json`` (``compact``; scripts and
    :func:`run_child` read the last line of stdout), indented for reading otherwise."""
    print(json.dumps(result, indent=None if compact else indent, **dumps_kw))


def run_child(module: str, *args: str, env: dict | None = None, **fields) -> dict:
    """Runs ``python -m module args...`` in a fresh process (a peak-memory figure needs its own
    process) and returns the JSON object on the last stdout line that starts with ``{``. A child
    that fails or prints no such line gives ``{**fields, "error": ...}`` (exit status and the end
    of its stderr) so that the parent's JSON reports the broken part instead of stopping."""
    p = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                       env=env, check=False)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode == 0 and lines:
        try:
            return json.loads(lines[-1])
        except ValueError:
            pass
    killed = " (killed: out of memory?)" if p.returncode in (-9, 137) else ""
    why = f"exit {p.returncode}" + killed
    return {**fields, "error": f"{why}: {(p.stderr or p.stdout).strip()[-1500:]}"}


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (``ru_maxrss``, KiB on Linux)."""
    import resource  # Unix only: imported where a benchmark measures

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def pick(csv: str, allowed, what: str, where: str = "") -> list:
    """The names of a comma-separated command-line list, in order; ``SystemExit`` naming the
    unknown ones (``what``: e.g. ``"part"``; ``where``: e.g. the folder) and the choices,
    before any work."""
    names = [s.strip() for s in str(csv).split(",") if s.strip()]
    bad = [s for s in names if s not in allowed]
    if bad:
        raise SystemExit(f"unknown {what}(s) {bad}{where}; choose from {list(allowed)}")
    return names
