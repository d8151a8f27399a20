"""Every reader against seeded malformed inputs: a correct load or a ValueError naming the file
(or input) and the problem; never another exception, never memory beyond 4x the file + 100 MB,
never a pickle executed. Generators live in ``tests/fuzz.py``."""

from __future__ import annotations

import random

import fuzz
import pytest

from orbitforge.kernels.ply import read_ply

MIN_CASES = 200


def _assert_contract(outcomes, reader: str):
    assert len(outcomes) >= MIN_CASES, f"{reader}: only {len(outcomes)} cases"
    bad = fuzz.failures(outcomes)
    assert not bad, f"{reader}: {len(bad)} of {len(outcomes)} cases break the contract:\n" + \
        "\n".join(bad[:40])


def test_fuzz_3dgs_ply(tmp_path):
    cases = fuzz.ply_cases(random.Random(1801))
    _assert_contract(fuzz.run_cases(read_ply, cases, str(tmp_path), "scene.ply"), "3dgs-ply")


def test_fuzz_cameras_json(tmp_path):
    from orbitforge.nodes.sample import LoadCameras

    cases = fuzz.cameras_cases(random.Random(1802))
    _assert_contract(fuzz.run_cases(lambda p: LoadCameras().load(p)[0], cases, str(tmp_path),
                                    "cameras.json"), "cameras.json")


def test_fuzz_workflow_json(tmp_path):
    """check-workflow reports problems per file (the CLI prints ``FILE: problem``); it never
    crashes on a malformed file."""
    import glob
    import json
    import os

    from orbitforge.nodes.workflow_check import check_files, load_core_schemas

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    docs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(repo, "workflows", "*.json")))]
    core = load_core_schemas()

    def check(path):
        problems = check_files([path], core=core)[path]
        assert isinstance(problems, list) and all(isinstance(p, str) for p in problems)
        if problems:
            raise ValueError(f"{path}: " + "; ".join(problems))
        return problems

    cases = fuzz.workflow_cases(random.Random(1803), docs)
    _assert_contract(fuzz.run_cases(check, cases, str(tmp_path), "workflow.json"), "workflow")


def test_fuzz_hi3d_checkpoint_files(tmp_path):
    """safetensors and torch pickles (zip and legacy): never a pickle executed (a malicious
    ``__reduce__`` would create the marker file)."""
    from orbitforge.kernels.hi3d_checkpoint import read_state_dict

    marker = str(tmp_path / "PWNED")
    cases = fuzz.checkpoint_file_cases(random.Random(1804), marker)
    outcomes = []
    for ext in (".safetensors", ".pt"):
        outcomes += fuzz.run_cases(read_state_dict, [c for e, c in cases if e == ext],
                                   str(tmp_path), "model" + ext)
    assert not (tmp_path / "PWNED").exists(), "a pickled __reduce__ was executed"
    _assert_contract(outcomes, "hi3d-checkpoint")


def test_fuzz_hi3d_stage2_layout(tmp_path):
    """The refiner loader's validation (what Load Hi3D Refiner runs before building the MODEL):
    wrong keys, shapes and dtypes are a CheckpointError (a ValueError) naming the file."""
    from orbitforge.kernels.hi3d_checkpoint import load_stage2_unet

    cases = fuzz.stage2_layout_cases(random.Random(1805))
    outcomes = fuzz.run_cases(load_stage2_unet, cases, str(tmp_path), "stage2.safetensors")
    bad = fuzz.failures(outcomes)
    assert not bad, "\n".join(bad[:40])


def test_fuzz_mesh_files(tmp_path):
    from orbitforge.kernels.mesh_render import load_mesh

    cases = fuzz.mesh_cases(random.Random(1806))
    outcomes = []
    for ext in sorted({e for e, _ in cases}):
        outcomes += fuzz.run_cases(load_mesh, [c for e, c in cases if e == ext], str(tmp_path),
                                   "mesh" + ext)
    _assert_contract(outcomes, "mesh")
