"""Every reader against seeded malformed inputs: a correct load or a ValueError naming the file
(or input) and the problem; never another exception, never memory beyond 4x the file + 100 MB,
never a pickle executed. Generators live in ``tests/fuzz.py``."""

from __future__ import annotations

import pytest

import fuzz

MIN_CASES = 200


def _assert_contract(outcomes, reader: str):
    assert len(outcomes) >= MIN_CASES, f"{reader}: only {len(outcomes)} cases"
    bad = fuzz.failures(outcomes)
    assert not bad, f"{reader}: {len(bad)} of {len(outcomes)} cases break the contract:\n" + \
        "\n".join(bad[:40])


@pytest.mark.parametrize("reader", [r for r in fuzz.READERS if r != "hi3d-stage2-layout"])
def test_fuzz_reader(tmp_path, reader):
    """3DGS PLY, mesh files, cameras.json, workflow JSON, Hi3D checkpoints (a malicious pickle
    must not run), IMAGE/MASK inputs of nodes: >= 200 seeded malformed variants each."""
    _assert_contract(fuzz.READERS[reader](str(tmp_path)), reader)


def test_fuzz_hi3d_stage2_layout(tmp_path):
    """The refiner loader's validation (what Load Hi3D Refiner runs before building the MODEL):
    wrong keys, shapes and dtypes are a CheckpointError (a ValueError) naming the file."""
    outcomes = fuzz.fuzz_stage2_layout(str(tmp_path))
    bad = fuzz.failures(outcomes)
    assert not bad, "\n".join(bad[:40])


def test_torch_allocations_stay_bounded():
    """Peak RSS of a fresh process running the checkpoint and image cases (torch allocates
    outside tracemalloc's view) grows by less than 4 x the largest file + 100 MB."""
    import json
    import os
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([sys.executable, os.path.join(here, "fuzz.py"), "hi3d-checkpoint",
                          "images-masks"], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout)
    for name, r in res.items():
        assert not r["failures"], (name, r["failures"][:5])
        assert r["rss_growth_mb"] < 100 + 4 * 1, (name, r)  # every fuzz file is < 1 MB


def test_big_images_are_checked_without_a_copy():
    """16k x 16k IMAGE / MASK inputs (stride-0 views): validation runs in slices."""
    from orbitforge.kernels.geometry.cameras import make_orbit_cameras
    from orbitforge.kernels.inputs import check_mask
    from orbitforge.kernels.splat.fit import check_views

    cams = make_orbit_cameras([0.0], [0.0], 2.0, 33.8, fuzz.BIG, fuzz.BIG)
    big = fuzz.big_image_cases()
    out = fuzz.run_inputs(lambda v: check_views(v, cams), big[:2], ["views"])
    out += fuzz.run_inputs(lambda m: check_mask(m, "mask"), big[2:], ["mask"])
    assert [o.kind for o in out] == ["ok", "valueerror", "ok"], out


def test_nonfinite_items_slices(monkeypatch):
    """The sliced finiteness test finds a NaN in any slice, including the last partial one."""
    import torch

    from orbitforge.kernels import inputs

    monkeypatch.setattr(inputs, "_CHUNK", 7 * 3)  # 7 pixels per slice
    t = torch.rand(3, 10, 5, 3)
    assert inputs.nonfinite_items(t) == []
    for b, r in ((0, 0), (1, 9), (2, 6)):
        u = t.clone()
        u[b, r, 4, 2] = float("nan")
        assert inputs.nonfinite_items(u) == [b]
