"""Benchmarks: ``python -m orbitforge.bench <name> ...`` prints one JSON object."""
