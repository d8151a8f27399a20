"""``python -m orbitforge.bench refiner [--json] [--frames F] [--sizes 256,512] [--mono-depth DIR]``

1. ``steps``: time per sampling step (cond + uncond in one batch) of a tiny random Hi3D stage-2
   UNet built through the real loading path, at each size, and peak memory (CUDA allocator, else
   process RSS). Needs ComfyUI (its VideoUNet): set COMFYUI_PATH; otherwise this part is skipped.
2. ``vae_chunked``: peak memory of VAE encode and decode of ``--vae-frames`` frames at
   ``--vae-size`` through the node's own ``vae_encode_chunked`` / ``vae_decode_chunked`` at chunk
   1, 4 and all frames, each configuration in a fresh subprocess (CPU: peak RSS over the RSS
   before the call; CUDA: ``max_memory_allocated`` over the loaded model). A tiny AutoencoderKL
   built from ComfyUI's own classes (``comfy.sd.VAE``) when COMFYUI_PATH is set, else diffusers'
   AutoencoderKL of the same shape (said in the JSON).
3. ``consistency``: on the bundled 21-view sample orbit of spot (downsampled to ``--depth-size``),
   reprojection error between adjacent views of (a) ray-cast ground-truth depth, (b) median depth
   rendered from Gaussians fitted to the sample views (``--fit-iterations``), (c) per-frame
   monocular depth from ``--mono-depth DIR`` (else reported as not measured), and for every source
   the disagreement of the Hi3D condition at ground-truth correspondences, with the official
   per-frame min-max normalisation and with one normalisation shared by all frames.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import peak_rss_mb, run_child


def _comfy():
    from .tiny_comfy import load_comfyui

    return load_comfyui()


def bench_steps(sizes, frames, repeats=2):
    import torch

    from ..nodes.host.models import build_refiner_model
    from .tiny_hi3d import random_unet_state_dict, tiny_config

    model_management = _comfy()
    if model_management is None:
        return {"skipped": "COMFYUI_PATH unset (the UNet is ComfyUI's VideoUNet)"}
    sd = random_unet_state_dict(tiny_config(), seed=0)
    m = build_refiner_model(sd)
    model_management.load_models_gpu([m])
    base = m.model
    dev = model_management.get_torch_device()
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
        peak = (torch.cuda.max_memory_allocated() / 2**20) if dev.type == "cuda" else peak_rss_mb()
        out["sizes"][str(s)] = {"s_per_step": round(dt, 4), "peak_mb": round(peak, 1),
                                "peak_kind": ("cuda_allocated" if dev.type == "cuda"
                                              else "process_rss")}
    if len(sizes) >= 2:
        a, b = out["sizes"][str(sizes[0])], out["sizes"][str(sizes[-1])]
        out["time_ratio"] = round(b["s_per_step"] / max(a["s_per_step"], 1e-9), 2)
        out["pixel_ratio"] = (sizes[-1] / sizes[0]) ** 2
    return out


# ----------------------------------------------------------------------------------------------
# Chunked VAE memory (each configuration in a fresh subprocess for a clean peak)
# ----------------------------------------------------------------------------------------------


def _init_weights(module) -> None:
    """Deterministic explicit init (ComfyUI's ops skip weight init)."""
    import torch

    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for n, p in module.named_parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            elif "norm" in n and n.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()


def _tiny_comfy_vae(size):
    """ComfyUI's own AutoencoderKL (comfy.sd.VAE) with a tiny config: 32 channels, 4 levels."""
    import comfy.sd

    dd = {"double_z": True, "z_channels": 4, "resolution": size, "in_channels": 3, "out_ch": 3,
          "ch": 32, "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [],
          "dropout": 0.0}
    vae = comfy.sd.VAE(sd={}, config={"params": {"ddconfig": dd, "embed_dim": 4}})
    _init_weights(vae.first_stage_model)
    return vae


class _DiffusersVAE:
    """diffusers AutoencoderKL of the same tiny shape behind ComfyUI's VAE interface
    (encode IMAGE [B,H,W,3] 0..1 -> raw latent; decode raw latent -> IMAGE)."""

    def __init__(self, size, device):
        from diffusers import AutoencoderKL

        self.m = AutoencoderKL(in_channels=3, out_channels=3,
                               down_block_types=("DownEncoderBlock2D",) * 4,
                               up_block_types=("UpDecoderBlock2D",) * 4,
                               block_out_channels=(32,) * 4,
                               layers_per_block=1, latent_channels=4, norm_num_groups=32,
                               sample_size=size).eval().to(device)
        _init_weights(self.m)
        self.device = device

    def encode(self, images):
        x = images.to(self.device).movedim(-1, 1) * 2.0 - 1.0
        return self.m.encode(x).latent_dist.mode()

    def decode(self, z):
        return ((self.m.decode(z.to(self.device)).sample + 1.0) / 2.0).movedim(1, -1)


def _vae_worker(spec: str) -> dict:
    """One measurement: ``op,chunk,frames,size,backend`` -> peak memory of that call."""
    import torch

    from ..nodes.host.models import vae_decode_chunked, vae_encode_chunked

    op, chunk, frames, size, backend = spec.split(",")
    chunk, frames, size = int(chunk), int(frames), int(size)
    cuda = torch.cuda.is_available()
    if backend == "comfyui":
        model_management = _comfy()
        vae = _tiny_comfy_vae(size)
        dev = model_management.get_torch_device()
    else:
        dev = torch.device("cuda" if cuda else "cpu")
        vae = _DiffusersVAE(size, dev)
    g = torch.Generator().manual_seed(0)
    if op == "encode":
        x = torch.rand(frames, size, size, 3, generator=g)
        fn = vae_encode_chunked
    else:
        x = torch.randn(frames, 4, size // 8, size // 8, generator=g)
        fn = vae_decode_chunked
    with torch.inference_mode():
        if cuda:  # load the weights onto the GPU first so that the peak is the call's own
            fn(vae, x[:1], 1)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated() / 2**20
        else:
            base = peak_rss_mb()
        t0 = time.perf_counter()
        out = fn(vae, x, chunk)
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mb()
    return {"op": op, "chunk": chunk, "frames": frames, "s": round(dt, 3),
            "out_shape": list(out.shape),
            "base_mb": round(base, 1), "peak_mb": round(peak, 1),
            "peak_over_base_mb": round(peak - base, 1)}


def bench_vae_memory(frames=8, size=256, chunks=(1, 4, 0), threads=2):
    """Peak memory of :func:`vae_encode_chunked` / :func:`vae_decode_chunked` (the node's path)
    at ``chunks`` (0 = all frames), each in a fresh ``python`` process."""
    import torch

    backend = "comfyui" if os.environ.get("COMFYUI_PATH") else "diffusers"
    cuda = torch.cuda.is_available()
    out = {"backend": backend, "frames": frames, "size": size,
           "vae": "AutoencoderKL ch 32, ch_mult 1,1,1,1, 1 res block, random weights",
           "peak_kind": "cuda max_memory_allocated over the loaded model" if cuda
           else "process peak RSS (ru_maxrss) over the RSS before the call, fresh process",
           "runs": []}
    if backend == "diffusers":
        out["note"] = ("COMFYUI_PATH unset: diffusers' AutoencoderKL of the same shape behind the "
                       "ComfyUI VAE interface, through the node's chunked functions")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    for op in ("encode", "decode"):
        for c in chunks:
            c = frames if c <= 0 else min(c, frames)
            spec = f"{op},{c},{frames},{size},{backend}"
            out["runs"].append(run_child(__spec__.name if __spec__ else __name__,
                                         "--vae-worker", spec,
                                         "--threads", str(threads), env=env, op=op, chunk=c))
    for op in ("encode", "decode"):
        r = {x["chunk"]: x.get("peak_over_base_mb") for x in out["runs"] if x["op"] == op}
        lo, hi = r.get(min(r)), r.get(max(r))
        if lo and hi:
            out[f"{op}_peak_ratio_all_vs_chunk1"] = round(hi / lo, 2)
    return out


# ----------------------------------------------------------------------------------------------
# Multi-view consistency of depth on the bundled sample
# ----------------------------------------------------------------------------------------------


def condition_disagreement(corr_depth, cond, viewmats, Ks, valid=None, closed=True, occl_tol=0.02):
    """Mean ``|c_i(p) - c_j(p')|`` between adjacent views, over pixels ``p`` of view ``i`` whose
    3D point (from ``corr_depth``, z-depth, 0 = empty) lands visibly (z within ``occl_tol``
    relative of view ``j``'s depth) at pixel ``p'`` of view ``j``. ``cond`` ``[N,H,W]`` the
    values compared (e.g. the per-frame normalised condition); ``valid`` ``[N,H,W]`` bool
    restricts both ends. Returns ``[pairs]`` (float64, nan where no overlap)."""
    import torch

    from ..kernels.diffusion.depth_condition import reproject_pixels, view_pairs

    ok_all = corr_depth > 0 if valid is None else (valid & (corr_depth > 0))
    out = []
    for i, j in view_pairs(corr_depth.shape[0], closed):
        m = ok_all[i]
        u, v, z, inside = reproject_pixels(corr_depth[i], m, viewmats, Ks, i, j)
        dj = torch.zeros_like(z)
        okj = torch.zeros_like(inside)
        dj[inside] = corr_depth[j].double()[v[inside], u[inside]]
        okj[inside] = ok_all[j][v[inside], u[inside]]
        vis = inside & okj & ((z - dj).abs() / z < occl_tol)
        if vis.sum() == 0:
            out.append(torch.tensor(float("nan"), dtype=torch.float64))
            continue
        out.append((cond[i].double()[m][vis] - cond[j].double()[v[vis], u[vis]]).abs().mean())
    return torch.stack(out)


def _normalize_global(d):
    """One min-max for all frames (what a consistent normalisation would do)."""
    lo = d.min()
    return (d - lo) / (d.max() - lo).clamp_min(1e-6)


def _load_mono(dirname, n, size):
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    if not os.path.isdir(dirname):
        raise SystemExit(f"--mono-depth {dirname!r} is not a directory")
    names = sorted(f for f in os.listdir(dirname) if f.lower().endswith(".png"))
    if len(names) != n:
        raise SystemExit(f"--mono-depth {dirname!r} has {len(names)} PNGs; need {n}, one per "
                         "sample frame (assets/sample_orbit/frame_*.png), in the same name order")
    maps = []
    for f in names:
        with Image.open(os.path.join(dirname, f)) as im:
            a = np.asarray(im.convert("RGB"), dtype=np.float32).mean(-1) / 255.0
        maps.append(torch.from_numpy(a))
    m = torch.stack(maps)[:, None]  # [N, 1, h, w] near = bright
    return F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)[:, 0], names


def _stats(t):
    import torch

    t = t[~torch.isnan(t)]
    if t.numel() == 0:
        return {"mean": None, "max": None}
    return {"mean": round(float(t.mean()), 5), "max": round(float(t.max()), 5)}


def bench_consistency(size=128, iterations=300, mono_dir=None):
    """Reprojection error between adjacent views of the 21-view sample orbit for ground-truth,
    rendered-3DGS and (optionally) per-frame monocular depth, and the consistency of the Hi3D
    condition (per-frame min-max normalised disparity) each source produces."""
    import torch

    from ..kernels.diffusion.depth_condition import (
        align_scale_shift,
        normalize_per_frame,
        reprojection_error,
        to_disparity,
    )
    from ..kernels.mesh.render import render_mesh
    from ..kernels.sample import load_sample_mesh, load_sample_orbit
    from ..kernels.splat.fit import FitConfig, fit_gaussians, render_gaussians

    images, masks, cams = load_sample_orbit()
    n = len(cams)
    c = cams.resized(size, size)
    out = {"views": n, "size": size, "pairs": "adjacent in orbit order, closed (20 -> 0)",
           "metric": "reprojection_rel_err = |z_proj - D_j| / z_proj (nearest pixel) over points "
                     "of view i landing on view j's surface; condition_abs_diff = |c_i(p) - "
                     "c_j(p')| at ground-truth correspondences visible in both views (c in [0, 1])",
           "sources": {}}
    t0 = time.perf_counter()
    gt = render_mesh(load_sample_mesh(), c)["depth"].float()  # [N, H, W] z, 0 = empty
    out["gt_render_s"] = round(time.perf_counter() - t0, 2)
    gt_valid = gt > 0

    t0 = time.perf_counter()
    fit = fit_gaussians(images, cams, masks, FitConfig(iterations=iterations, resolution=size))
    out["fit_s"] = round(time.perf_counter() - t0, 2)
    out["fit"] = {"iterations": iterations, "gaussians": int(fit.gaussians.means.shape[0]),
                  "train_psnr_last": (round(float(fit.history[-1]["psnr"]), 2) if fit.history
                                      else None)}
    _, alpha, _, dmed = render_gaussians(fit.gaussians, c)
    gs_valid = (alpha[..., 0] > 0.5) & (dmed[..., 0] > 0)
    gs = torch.where(gs_valid, dmed[..., 0], torch.zeros_like(gt))

    sources = {"ground_truth_raycast": (gt, gt_valid, gt),
               "rendered_3dgs_median": (gs, gs_valid, gs)}
    if mono_dir:
        mono, names = _load_mono(mono_dir, n, size)
        disp_gt = to_disparity(gt, "metric")
        aligned = align_scale_shift(mono, disp_gt, gt_valid)  # MiDaS protocol, per frame
        mono_valid = gt_valid & (aligned > 1e-6)
        mono_depth = torch.where(mono_valid, 1.0 / aligned.clamp_min(1e-6),
                                 torch.zeros_like(aligned)).float()
        # the condition comes from the raw map (as the node packs a near-bright depth IMAGE)
        sources["per_frame_mono"] = (mono_depth, mono_valid, mono)
        out["mono"] = {"dir": mono_dir, "files": len(names),
                       "depth_for_reprojection": "per-frame least-squares scale+shift of the map "
                                                 "to ground-truth disparity (MiDaS protocol), then "
                                                 "1/x"}
    else:
        out["sources"]["per_frame_mono"] = {
            "measured": False,
            "reason": "no monocular depth network runs offline here; pass --mono-depth DIR with "
                      "one grey PNG per sample frame (near = bright, as depth nodes output) made "
                      "by any depth estimator from assets/sample_orbit/frame_*.png"}

    for name, (depth, valid, raw) in sources.items():
        err = reprojection_error(depth, c.viewmats, c.Ks)
        hidden = []
        err_vis = reprojection_error(depth, c.viewmats, c.Ks, occlusion_tol=0.05,
                                        occluded=hidden)
        kind = "near_bright" if name == "per_frame_mono" else "metric"
        disp = to_disparity(raw, kind)
        both = valid & gt_valid
        per_frame = condition_disagreement(gt, normalize_per_frame(disp), c.viewmats, c.Ks, both)
        glob = condition_disagreement(gt, _normalize_global(disp), c.viewmats, c.Ks, both)
        rel = ((depth - gt).abs() / gt.clamp_min(1e-6))[both]
        out["sources"][name] = {
            "measured": True,
            "reprojection_rel_err": _stats(err),
            "reprojection_rel_err_visible": _stats(err_vis),
            "occluded_fraction": round(float(sum(hidden) / max(len(hidden), 1)), 4),
            "depth_abs_rel_vs_gt": round(float(rel.mean()), 5) if rel.numel() else None,
            "valid_fraction_of_gt_mask": round(float(both.sum() / gt_valid.sum()), 4),
            "condition_abs_diff_per_frame_norm": _stats(per_frame),
            "condition_abs_diff_global_norm": _stats(glob)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orbitforge.bench refiner")
    ap.add_argument("--json", action="store_true", help="print one JSON object (always JSON)")
    ap.add_argument("--frames", type=int, default=4, help="frames for the UNet step timing")
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads on CPU (2 "
                                                           "threads made the 3DGS fit 18x slower "
                                                           "on the busy 2-core box)")
    ap.add_argument("--vae-frames", type=int, default=8)
    ap.add_argument("--vae-size", type=int, default=256)
    ap.add_argument("--vae-chunks", default="1,4,0", help="chunk sizes, 0 = all frames at once")
    ap.add_argument("--depth-size", type=int, default=128)
    ap.add_argument("--fit-iterations", type=int, default=300)
    ap.add_argument("--mono-depth", default=None,
                    help="folder of per-frame monocular depth PNGs of the sample orbit (near = "
                         "bright)")
    ap.add_argument("--skip-steps", action="store_true")
    ap.add_argument("--skip-vae", action="store_true")
    ap.add_argument("--skip-consistency", action="store_true")
    ap.add_argument("--vae-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, args.threads))
    if args.vae_worker:
        print(json.dumps(_vae_worker(args.vae_worker)))
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    for s in sizes + [args.vae_size]:
        if s % 64:
            raise SystemExit(f"size {s} is not a multiple of 64")
    result = {"bench": "refiner", "threads": torch.get_num_threads()}
    if not args.skip_steps:
        result["steps"] = bench_steps(sizes, args.frames)
    if not args.skip_vae:
        chunks = [int(x) for x in args.vae_chunks.split(",") if x.strip()]
        result["vae_chunked"] = bench_vae_memory(args.vae_frames, args.vae_size, chunks,
                                                 args.threads)
    if not args.skip_consistency:
        result["consistency"] = bench_consistency(args.depth_size, args.fit_iterations,
                                                  args.mono_depth)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
