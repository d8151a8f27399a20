"""The GPU check's model parts at tiny size on the CPU inside a real ComfyUI (skipped without
COMFYUI_PATH): the same code paths the full-size run takes (random ComfyUI models, one UNet step
with cond + uncond in one batch, one chunked Diffusion² pass over an 8 x 8 matrix)."""

import json

from orbitforge.bench import gpu

from comfy_host import require_comfyui


def test_model_parts_run_at_tiny_size(capsys):
    require_comfyui()
    assert gpu.main(["--device", "cpu", "--tiny", "--parts", "sv3d_p,refiner,diffusion2"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["parts"]
    for p in ("sv3d_p", "refiner"):
        assert "error" not in out[p], out[p]
        assert out[p]["finite"] and out[p]["batch"] == 2 * out[p]["frames"]
    d = out["diffusion2"]
    assert "error" not in d, d
    assert d["auto"]["finite"] and d["chunk2"]["finite"]
    assert d["chunk2"]["column_chunk"] == 2 and d["chunk2"]["row_chunk"] == 2
