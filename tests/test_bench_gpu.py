"""The GPU check's code, run at tiny size on the CPU (``--device cpu --tiny``); without CUDA the
real check skips cleanly. (Its numbers are benchmarks, not asserted here.)"""

import json

import pytest
import torch

from orbitforge.bench import gpu


def _run(capsys, argv) -> dict:
    assert gpu.main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_skips_cleanly_without_cuda(capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the real check would run")
    out = _run(capsys, ["--json"])
    assert out["bench"] == "gpu" and "no CUDA device" in out["skipped"]


def test_cpu_smoke_rasteriser_and_fit(capsys):
    out = _run(capsys, ["--device", "cpu", "--tiny", "--parts", "raster,fit", "--json"])
    r, f = out["parts"]["raster"], out["parts"]["fit"]
    assert "error" not in r and "error" not in f, out
    assert r["torch_fwd_bwd_s_per_view"] > 0 and "needs CUDA" in r["gsplat"]
    assert f["train_views"] == 18 and f["held_out"] == [6, 13, 20]
    assert f["psnr_train_db"] > 18 and f["psnr_held_out_db"] > 15  # a real fit, not noise
    assert f["gaussians"] > 100


def test_cpu_smoke_models_without_comfyui_are_skipped(capsys, monkeypatch):
    monkeypatch.delenv("COMFYUI_PATH", raising=False)
    out = _run(capsys, ["--device", "cpu", "--tiny", "--parts", "sv3d_p,refiner", "--json"])
    if out["comfyui"]:
        pytest.skip("ComfyUI already imported in this process")
    assert all("needs ComfyUI" in out["parts"][p]["skipped"] for p in ("sv3d_p", "refiner"))


def test_refuses_full_size_on_the_cpu():
    with pytest.raises(SystemExit, match="--tiny"):
        gpu.main(["--device", "cpu"])
