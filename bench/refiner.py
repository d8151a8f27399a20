"""``python -m orbitforge.bench refiner [--json] [--frames F] [--sizes 256,512]``

1. Time per sampling step (cond + uncond in one batch) of a tiny random Hi3D stage-2 UNet built
   through the real loading path, at each size, and peak memory (CUDA allocator, else process
   RSS). Needs ComfyUI (its VideoUNet): set COMFYUI_PATH; otherwise this part is skipped.
2. Multi-view consistency of depth rendered from geometry (spot, ray cast; the same quantity our
   3DGS render produces): reprojection error between adjacent views of the 21-view SV3D orbit,
   and the disagreement of the *per-frame min-max normalised* condition at corresponding pixels
   (what per-frame normalisation does to even a perfect depth).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _comfy():
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        return None
    if path not in sys.path:
        sys.path.insert(0, path)
    import torch

    saved = sys.argv
    sys.argv = [saved[0]] + ([] if torch.cuda.is_available() else ["--cpu"])
    try:
        try:
            import torchvision  # noqa: F401
        except Exception:  # CPU torch without torchvision: the test host's minimal stand-in
            sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tests"))
            from comfy_host import _stub_torchvision

            _stub_torchvision()
        import comfy.cli_args

        comfy.cli_args.args.cpu = not torch.cuda.is_available()
        import comfy.model_management as mm
    finally:
        sys.argv = saved
    return mm


def bench_steps(sizes, frames, repeats=2):
    import torch

    from ..kernels import hi3d_checkpoint as CK
    from ..nodes.host import models as HM

    mm = _comfy()
    if mm is None:
        return {"skipped": "COMFYUI_PATH unset (the UNet is ComfyUI's VideoUNet)"}
    sd = CK.random_unet_state_dict(CK.tiny_config(), seed=0)
    m = HM.build_refiner_model(sd)
    mm.load_models_gpu([m])
    base = m.model
    dev = mm.get_torch_device()
    out = {"device": str(dev), "frames": frames, "config": "tiny (64 ch, mult 1,2)", "sizes": {}}
    for s in sizes:
        h = s // 8
        x = torch.randn(2 * frames, 4, h, h, device=dev)
        c = {"c_concat": torch.rand(2 * frames, 13, h, h, device=dev),
             "c_crossattn": torch.randn(2 * frames, 1, 64, device=dev),
             "y": torch.randn(2 * frames, 512, device=dev), "num_video_frames": frames}
        sigma = torch.full((2 * frames,), 10.0, device=dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode():
            base.apply_model(x, sigma, **c)  # warm-up
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(repeats):
                base.apply_model(x, sigma, **c)
            if dev.type == "cuda":
                torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / repeats
        peak = (torch.cuda.max_memory_allocated() / 2**20) if dev.type == "cuda" else _rss_mb()
        out["sizes"][str(s)] = {"s_per_step": round(dt, 4), "peak_mb": round(peak, 1),
                                "peak_kind": "cuda_allocated" if dev.type == "cuda" else "process_rss"}
    if len(sizes) >= 2:
        a, b = out["sizes"][str(sizes[0])], out["sizes"][str(sizes[-1])]
        out["time_ratio"] = round(b["s_per_step"] / max(a["s_per_step"], 1e-9), 2)
        out["pixel_ratio"] = (sizes[-1] / sizes[0]) ** 2
    return out


def bench_consistency(size=96):
    import torch

    from ..kernels import cameras as K
    from ..kernels import depth_condition as DC
    from ..kernels.mesh_render import render_mesh
    from ..kernels.sample import load_sample_mesh

    el, az = K.sv3d_static_orbit(10.0, 21)
    cams = K.make_orbit_cameras(el, az, K.DEFAULT_RADIUS, K.SV3D_FOV_DEG, size, size)
    t0 = time.perf_counter()
    r = render_mesh(load_sample_mesh(), cams)
    depth = r["depth"].float()  # [21, H, W] camera z, 0 = background
    err = DC.reprojection_error(depth, cams.viewmats, cams.Ks)
    # per-frame normalised condition (MiDaS convention) at corresponding pixels
    cond = DC.normalize_per_frame(DC.to_disparity(depth, "metric"))
    disagreement = _condition_disagreement(depth, cond, cams)
    return {"views": 21, "size": size, "render_s": round(time.perf_counter() - t0, 2),
            "rendered_depth_reprojection_rel_err_mean": round(float(err.nanmean()), 5),
            "rendered_depth_reprojection_rel_err_max": round(float(err[~err.isnan()].max()), 5),
            "normalised_condition_abs_diff_adjacent_mean": round(disagreement, 5),
            "note": "per-frame monocular depth not measured: no depth network offline"}


def _condition_disagreement(depth, cond, cams) -> float:
    """Mean |c_i(p) - c_j(p')| over pixels p of view i landing on the surface in view j."""
    import torch

    n, h, w = depth.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5,
                            torch.arange(w, dtype=torch.float64) + 0.5, indexing="ij")
    diffs = []
    for i in range(n):
        j = (i + 1) % n
        d = depth[i].double()
        m = d > 0
        Ki, Kj = cams.Ks[i].double(), cams.Ks[j].double()
        pc = torch.stack([(xs[m] - Ki[0, 2]) / Ki[0, 0] * d[m], (ys[m] - Ki[1, 2]) / Ki[1, 1] * d[m],
                          d[m], torch.ones_like(d[m])])
        pj = cams.viewmats[j].double() @ torch.linalg.inv(cams.viewmats[i].double()) @ pc
        u = (Kj[0, 0] * pj[0] / pj[2] + Kj[0, 2]).floor().long()
        v = (Kj[1, 1] * pj[1] / pj[2] + Kj[1, 2]).floor().long()
        ok = (u >= 0) & (u < w) & (v >= 0) & (v < h)
        dj = torch.zeros_like(pj[2])
        dj[ok] = depth[j].double()[v[ok], u[ok]]
        vis = ok & (dj > 0) & ((pj[2] - dj).abs() / pj[2] < 0.02)
        if vis.sum():
            diffs.append((cond[i].double()[m][vis] - cond[j].double()[v[vis], u[vis]]).abs().mean())
    return float(torch.stack(diffs).mean()) if diffs else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orbitforge.bench refiner")
    ap.add_argument("--json", action="store_true", help="print one JSON object (always JSON)")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--skip-consistency", action="store_true")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    for s in sizes:
        if s % 64:
            raise SystemExit(f"size {s} is not a multiple of 64")
    result = {"bench": "refiner", "steps": bench_steps(sizes, args.frames)}
    if not args.skip_consistency:
        result["consistency"] = bench_consistency()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
