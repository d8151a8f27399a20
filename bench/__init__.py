"""Benchmarks: ``python -m orbitforge.bench <name> ...`` prints one JSON object."""


def pick(csv: str, allowed, what: str, where: str = "") -> list:
    """The names of a comma-separated command-line list, in order; ``SystemExit`` naming the
    unknown ones (``what``: e.g. ``"part"``; ``where``: e.g. the folder) and the choices,
    before any work."""
    names = [s.strip() for s in str(csv).split(",") if s.strip()]
    bad = [s for s in names if s not in allowed]
    if bad:
        raise SystemExit(f"unknown {what}(s) {bad}{where}; choose from {list(allowed)}")
    return names
