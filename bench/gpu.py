"""``python -m orbitforge.bench gpu --json``: the one-GPU check (aimed at <= 8 minutes).

Parts (each reported on its own; a failing part records its error and the others still run):

* ``raster``: gsplat vs the pure-torch rasteriser on one random scene at 576²: agreement of
  colour / alpha / depth (max and mean absolute difference, PSNR of one against the other) and
  forward+backward seconds per view of each;
* ``sv3d_p``: the full-size SV3D_p video UNet (random weights, fp16, built with ComfyUI's own
  classes from the official layout, see ``bench/fullsize.py``): seconds per sampling step and
  peak VRAM at 576² x 21 frames (cond + uncond in one batch, 42 frames);
* ``refiner``: the full-size Hi3D stage-2 UNet at 1024² x 21 frames, cond + uncond in one batch:
  peak VRAM (the README's "~40 GB") and seconds per step;
* ``diffusion2``: one Diffusion² pass over an 8 x 8 matrix at 576² with full-size SVD and SV3D_p:
  peak VRAM with the automatic chunking and with 2 sequences per call;
* ``fit``: a 3DGS fit of the bundled sample orbit at 256² (18 views trained, 3 held out):
  seconds, training-view and held-out PSNR.

Without CUDA it prints ``{"skipped": ...}`` and exits 0. ``--device cpu --tiny`` runs every part
on the CPU at tiny size (tiny models, 64² images, few iterations): the smoke test of this
benchmark's code. The model parts need ComfyUI (``COMFYUI_PATH``); without it they are skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from . import peak_rss_mb, pick

PARTS = ("raster", "sv3d_p", "refiner", "diffusion2", "fit")


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _reset_peak(dev):
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)


def _peak(dev) -> dict:
    if dev.type == "cuda":
        return {"peak_vram_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)}
    return {"peak_rss_mib": round(peak_rss_mb(), 1)}


def _timed(fn, dev, repeats: int = 2) -> float:
    fn()  # warm-up (kernels, allocator)
    _sync(dev)
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(dev)
    return (time.perf_counter() - t) / repeats


# ----------------------------------------------------------------------------------------------
# rasterisers
# ----------------------------------------------------------------------------------------------


def part_raster(dev, tiny: bool) -> dict:
    from ..kernels.geometry.cameras import make_orbit_cameras
    from ..kernels.splat.rasterize import rasterize
    from .raster import make_scene

    n, size, views = (2000, 64, 2) if tiny else (100_000, 576, 4)
    scene = [t.to(dev) for t in make_scene(n)]
    cams = make_orbit_cameras(10.0, [i * 360.0 / views for i in range(views)], radius=2.0,
                              fov=33.8, width=size, height=size).to(dev)
    out = {"n_gaussians": n, "size": size, "views": views}
    backends = ["torch"]
    if dev.type == "cuda":
        try:
            import gsplat  # noqa: F401

            backends.append("gsplat")
        except Exception as e:  # noqa: BLE001
            out["gsplat"] = f"not installed ({e})"
    else:
        out["gsplat"] = "skipped: gsplat needs CUDA"
    renders = {}
    for b in backends:
        params = [t.clone().requires_grad_() for t in scene]

        def step(b=b, params=params):
            for v in range(views):
                o = rasterize(*params, cams.viewmats[v:v + 1], cams.Ks[v:v + 1], size, size,
                              sh_degree=0, backend=b)
                (o.rgb.mean() + o.alpha.mean()).backward()

        out[f"{b}_fwd_bwd_s_per_view"] = round(_timed(step, dev, 1 if tiny else 2) / views, 4)
        with torch.no_grad():
            o = rasterize(*scene, cams.viewmats, cams.Ks, size, size, sh_degree=0, backend=b)
        renders[b] = o
    if "gsplat" in renders:
        a, g = renders["torch"], renders["gsplat"]
        mse = ((a.rgb - g.rgb) ** 2).mean().clamp_min(1e-12)
        out["agreement"] = {
            "rgb_max_abs": round(float((a.rgb - g.rgb).abs().max()), 5),
            "rgb_mean_abs": round(float((a.rgb - g.rgb).abs().mean()), 6),
            "rgb_psnr_db": round(float(-10 * torch.log10(mse)), 2),
            "alpha_max_abs": round(float((a.alpha - g.alpha).abs().max()), 5),
            "depth_mean_abs": round(float((a.depth - g.depth).abs().mean()), 6)}
    return out


# ----------------------------------------------------------------------------------------------
# full-size (or tiny) ComfyUI models with random weights
# ----------------------------------------------------------------------------------------------


def random_model(kind: str, dev, dtype, tiny: bool):
    """A ComfyUI BaseModel of ``kind`` (``sv3d_p``, ``svd_xt``, ``hi3d_stage2``) on ``dev`` with
    random weights: full size from the official layout, or tiny."""
    from comfy.model_detection import detect_unet_config, model_config_from_unet

    from ..kernels.diffusion.hi3d_checkpoint import HI3D_STAGE2, unet_layout
    from .fullsize import UNET_PREFIX, checkpoint_unet_layout
    from .tiny_comfy import init_random_, tiny_video_model
    from .tiny_hi3d import tiny_config

    if tiny and kind != "hi3d_stage2":
        m = tiny_video_model({"svd_xt": "svd"}.get(kind, kind), seed=0, context_dim=1024).model
        return m.to(dev)
    if kind == "hi3d_stage2":
        from ..nodes.host.models import stage2_classes

        cfg_u = tiny_config() if tiny else HI3D_STAGE2
        lay = {k: torch.empty(s, device="meta") for k, s in unet_layout(cfg_u).items()}
        _, Config = stage2_classes()
        cfg = Config(detect_unet_config(lay, ""))
    else:
        lay = {k: torch.empty(s, device="meta") for k, s in checkpoint_unet_layout(kind).items()}
        cfg = model_config_from_unet(lay, UNET_PREFIX)
    cfg.set_inference_dtype(dtype, None)
    model = cfg.get_model({}, "", device=dev)
    torch.manual_seed(0)
    init_random_(model.diffusion_model)
    return model.to(dev).eval()


def _conds(batch: int, frames: int, hw: int, cin: int, adm: int, ctx: int, dev) -> dict:
    return {"c_concat": torch.rand(batch, cin - 4, hw, hw, device=dev),
            "c_crossattn": torch.randn(batch, 1, ctx, device=dev),
            "y": torch.randn(batch, adm, device=dev), "num_video_frames": frames}


def _unet_step(model, frames: int, size: int, dev, cin: int, adm: int) -> dict:
    hw = size // 8
    batch = 2 * frames  # cond + uncond in one batch
    ctx = int(model.model_config.unet_config.get("context_dim", 1024))
    x = torch.randn(batch, 4, hw, hw, device=dev)
    c = _conds(batch, frames, hw, cin, adm, ctx, dev)
    sigma = torch.full((batch,), 10.0, device=dev)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    _reset_peak(dev)
    with torch.inference_mode():
        s = _timed(lambda: model.apply_model(x, sigma, **c), dev, 2)
        y = model.apply_model(x, sigma, **c)
    return {"frames": frames, "size": size, "batch": batch, "s_per_step": round(s, 3),
            "weights_gib": round(weights / 2**30, 2), "finite": bool(torch.isfinite(y).all()),
            **_peak(dev)}


def part_sv3d(dev, tiny: bool) -> dict:
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    model = random_model("sv3d_p", dev, dtype, tiny)
    frames, size = (5, 64) if tiny else (21, 576)
    out = _unet_step(model, frames, size, dev, 8, 1280)
    out["model"] = "tiny SV3D_p" if tiny else "SV3D_p full size (1.52 B UNet), random fp16"
    return out


def part_refiner(dev, tiny: bool) -> dict:
    from ..kernels.diffusion.hi3d_checkpoint import HI3D_STAGE2
    from .tiny_hi3d import tiny_config

    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    model = random_model("hi3d_stage2", dev, dtype, tiny)
    cfg = tiny_config() if tiny else HI3D_STAGE2
    frames, size = (4, 64) if tiny else (21, 1024)
    out = _unet_step(model, frames, size, dev, cfg.in_channels, cfg.adm_in_channels)
    out["model"] = "tiny Hi3D stage 2" if tiny else "Hi3D stage 2 full size, random fp16"
    out["readme_claim_gib"] = 40
    return out


def part_diffusion2(dev, tiny: bool) -> dict:
    import comfy.model_patcher

    from ..kernels.dynamic.diffusion2 import MatrixStats, denoise_matrix, view_weights
    from ..nodes.host.diffusion2 import HostSequenceModel, auto_chunk, oom, sv3d_vector, svd_vector

    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    V = F = 8
    size = 64 if tiny else 576
    h = size // 8
    patch = lambda m: comfy.model_patcher.ModelPatcher(m, load_device=dev,  # noqa: E731
                                                       offload_device=torch.device("cpu"))
    video = patch(random_model("svd_xt", dev, dtype, tiny))
    mv = patch(random_model("sv3d_p", dev, dtype, tiny))
    el = [10.0] * V
    az = [(i + 1) * 360.0 / V for i in range(V)]
    col = HostSequenceModel(mv, torch.randn(F, 1, 1024), torch.randn(F, 4, h, h),
                            sv3d_vector(mv, el, az, 1e-5), torch.full((V,), 2.5))
    row = HostSequenceModel(video, torch.randn(V, 1, 1024), torch.randn(V, 4, h, h),
                            svd_vector(video, 25, 127, 0.02), torch.linspace(1.5, 3.0, F))
    for f in (col, row):
        f.crossattn, f.concat = f.crossattn.to(dev), f.concat.to(dev)
    x = torch.randn(V, F, 4, h, h, device=dev)
    w = view_weights(V).to(dev)
    out = {"views": V, "frames": F, "size": size}
    for name, cap in (("auto", 0), ("chunk2", 2)):
        cc = auto_chunk(mv, (4, h, h), V, F, cap)
        rc = auto_chunk(video, (4, h, h), F, V, cap)
        _reset_peak(dev)
        t = time.perf_counter()
        with torch.inference_mode():
            d, st = denoise_matrix(x, torch.tensor(10.0), col, row, w, 0.6, cc, rc, oom(),
                                   MatrixStats())
        _sync(dev)
        out[name] = {"column_chunk": st.column_chunk, "row_chunk": st.row_chunk,
                     "s_per_pass": round(time.perf_counter() - t, 3),
                     "finite": bool(torch.isfinite(d).all()), **_peak(dev)}
    return out


# ----------------------------------------------------------------------------------------------
# 3DGS fit of the sample
# ----------------------------------------------------------------------------------------------


def part_fit(dev, tiny: bool) -> dict:
    from ..kernels.metrics import psnr
    from ..kernels.splat.fit import FitConfig, fit_gaussians, render_gaussians
    from .interrupt import _sample

    res, iters = (64, 30) if tiny else (256, FitConfig().iterations)
    img, msk, cams = _sample(res)
    held = [6, 13, 20]
    train = [i for i in range(len(cams)) if i not in held]
    cfg = FitConfig(iterations=iters, resolution=res)
    _sync(dev)
    t = time.perf_counter()
    r = fit_gaussians(img[train].to(dev), cams[train].to(dev), msk[train].to(dev), cfg)
    _sync(dev)
    dt = time.perf_counter() - t
    rgb = render_gaussians(r.gaussians, cams.to(dev))[0].cpu()
    return {"size": res, "iterations": iters, "train_views": len(train), "held_out": held,
            "fit_s": round(dt, 2), "gaussians": int(r.gaussians.means.shape[0]),
            "psnr_train_db": round(float(psnr(rgb[train], img[train])), 2),
            "psnr_held_out_db": round(float(psnr(rgb[held], img[held])), 2), **_peak(dev)}


FUNCS = {"raster": part_raster, "sv3d_p": part_sv3d, "refiner": part_refiner,
         "diffusion2": part_diffusion2, "fit": part_fit}
NEEDS_COMFY = {"sv3d_p", "refiner", "diffusion2"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orbitforge.bench gpu", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny)")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU smoke test)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {PARTS}")
    ap.add_argument("--budget-s", type=float, default=450.0,
                    help="skip the remaining parts once this many seconds have passed")
    ap.add_argument("--json", action="store_true", help="(output is always one JSON object)")
    args = ap.parse_args(argv)
    parts = pick(args.parts, PARTS, "part")
    res = {"bench": "gpu", "device": args.device, "tiny": bool(args.tiny)}
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        res["skipped"] = ("no CUDA device (torch.cuda.is_available() is False); "
                          "`--device cpu --tiny` runs the CPU smoke test")
        print(json.dumps(res))
        return 0
    if args.device == "cpu" and not args.tiny:
        raise SystemExit("full sizes on the CPU would take hours; add --tiny")
    dev = torch.device(args.device)
    if dev.type == "cpu":
        torch.set_num_threads(1)  # small tensors: more threads only spin-wait on a busy box
    if dev.type == "cuda":
        res["gpu"] = torch.cuda.get_device_name(dev)
    from .tiny_comfy import load_comfyui

    t0 = time.perf_counter()
    model_management = load_comfyui()
    res["comfyui"] = model_management is not None
    res["parts"] = {}
    for p in parts:
        if time.perf_counter() - t0 > args.budget_s:
            res["parts"][p] = {"skipped": f"time budget {args.budget_s:g} s spent"}
            continue
        if p in NEEDS_COMFY and model_management is None:
            res["parts"][p] = {"skipped": "needs ComfyUI (set COMFYUI_PATH): the networks are "
                               "ComfyUI's classes"}
            continue
        t = time.perf_counter()
        try:
            res["parts"][p] = FUNCS[p](dev, bool(args.tiny))
        except Exception as e:  # noqa: BLE001 - one part's failure must not hide the others
            res["parts"][p] = {"error": f"{type(e).__name__}: {e}"[:2000]}
        res["parts"][p]["part_s"] = round(time.perf_counter() - t, 2)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    res["total_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
