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
    from safetensors.torch import save

    from orbitforge.kernels.hi3d_checkpoint import load_stage2_unet, stage2_from_state_dict

    cases = fuzz.stage2_layout_cases(random.Random(1805))
    src = str(tmp_path / "stage2.safetensors")
    outcomes = fuzz.run_inputs(lambda sd: stage2_from_state_dict(sd, src), cases, [src])
    # the same path from disk, as Load Hi3D Refiner reads it
    files = [fuzz.Case(c.name + "@file", save({k: v.contiguous() for k, v in c.data.items()}),
                       c.expect, c.check) for c in cases[:4] + cases[-3:]]
    outcomes += fuzz.run_cases(load_stage2_unet, files, str(tmp_path), "stage2.safetensors")
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


def _image_outcomes():
    """(views, mask) pairs through the checks each image-taking node runs before its work:
    Gaussian Reconstruct / 4D (``check_views``), SDF Mesh (visual hull ``masks``, colouring
    ``images``), Depth Refiner (square ``views`` and ``depth``)."""
    import torch

    from orbitforge.kernels import mesh_color, visual_hull
    from orbitforge.kernels.cameras import make_orbit_cameras
    from orbitforge.kernels.fit import check_views
    from orbitforge.nodes.refiner import DepthRefiner

    rng = random.Random(1807)
    n, h, w = 3, 24, 32
    cams = make_orbit_cameras([10.0] * n, [0.0, 120.0, 240.0], 2.0, 33.8, w, h)
    good_img = torch.rand(n, h, w, 3)
    good_mask = torch.zeros(n, h, w)
    good_mask[:, 6:18, 8:24] = 1
    imgs, masks = fuzz.image_variants(rng, n, h, w), fuzz.mask_variants(rng, n, h, w)
    for c in masks:  # masks that are valid in shape but hold no object: the fit refuses them
        if c.name in ("mask-empty", "mask-all-0.4", "mask-one-view-empty"):
            c.expect = "error"
    out = []
    out += fuzz.run_inputs(lambda v: check_views(v, cams, good_mask), imgs, ["views"])
    out += fuzz.run_inputs(lambda m: check_views(good_img, cams, m), masks, ["mask"])
    out += fuzz.run_inputs(lambda v: mesh_color._check_views(v, cams, good_mask), imgs, ["images"])
    out += fuzz.run_inputs(lambda m: mesh_color._check_views(good_img, cams, m),
                           fuzz.mask_variants(rng, n, h, w), ["masks"])
    out += fuzz.run_inputs(lambda m: visual_hull._check_masks_cams(m, cams),
                           fuzz.mask_variants(rng, n, h, w), ["masks"])
    sq = fuzz.image_variants(rng, n, w, w)
    out += fuzz.run_inputs(lambda v: DepthRefiner.check("hi3d_stage2", v, torch.rand(n, w, w, 3),
                                                       None, 64, 1.0, 2.0), sq, ["views"])
    out += fuzz.run_inputs(lambda d: DepthRefiner.check("hi3d_stage2", torch.rand(n, w, w, 3), d,
                                                       None, 64, 1.0, 2.0),
                           fuzz.image_variants(rng, n, w, w), ["depth"])
    return out


def test_fuzz_images_and_masks():
    _assert_contract(_image_outcomes(), "images/masks")


def test_big_images_are_checked_without_a_copy():
    """16k x 16k IMAGE / MASK inputs (stride-0 views): validation runs in slices."""
    from orbitforge.kernels.cameras import make_orbit_cameras
    from orbitforge.kernels.fit import check_views
    from orbitforge.kernels.inputs import check_mask

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
