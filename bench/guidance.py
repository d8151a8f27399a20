"""``python -m orbitforge.bench guidance [--json] [--frames 21] [--latent 16] [--repeats 7]
[--warmup 2] [--threads 2] [--backend auto|diffusers|comfyui|both]``

Cost per sampling step of HarmonyView (3 branches: full, no_input, no_views, in ONE batched
forward) against plain CFG (2 branches: no_input, full) on tiny random-weight SVD-family UNets at
21 frames. Target: HarmonyView <= 1.6x CFG per step (3/2 = 1.5 is the ideal when the
forward is compute-bound).

Backends
- ``diffusers``: a tiny ``UNetSpatioTemporalConditionModel``; the host-free branch denoiser of
  :func:`diffusers_branch_denoiser` runs all branches as videos of one batch and feeds the
  per-branch ``image_only_indicator`` (``[n, F]``, 1 for no_views) to every block (diffusers
  itself hard-codes zeros), so there is one UNet forward per step.
- ``comfyui`` (needs ``COMFYUI_PATH``): a tiny ComfyUI ``SV3D_p`` in a ModelPatcher, sampled
  through core's ``CFGGuider.sample`` with the OrbitForge guider (harmonyview / triangle CFG)
  and core's own ``CFGGuider`` (cfg 2.5) for reference; everything core does per step
  (``calc_cond_batch``, cond concatenation, model wrapper) is inside the timing.

Reported per mode: median wall time per step and median process CPU time per step (the machine
may be shared: CPU time is less disturbed by other processes), UNet forwards per step (forward
hook), batch items per forward, peak memory (CUDA max allocated on GPU; else peak RSS over the
mode, reset through /proc/self/clear_refs), and the raw UNet forward time at 1, 2, 3 videos of F
frames, which separates the compute scaling from fixed per-step overheads.

On a machine shared with other busy processes use ``--threads 1``: with 2 intra-op threads and
more runnable processes than cores, OpenMP barriers spin and a tiny forward gets ~10-20x slower
(and CPU time balloons), which drowns the branch-count effect being measured.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

import torch

from ..kernels.diffusion import edm
from ..kernels.diffusion.guidance import guided_denoiser, make_guidance
from ..kernels.diffusion.sv3d import branch_conditions
from . import peak_rss_mb, print_result


# ------------------------------------------------------------------------------ host-free denoiser
@contextlib.contextmanager
def image_only_indicator(unet, ioi: torch.Tensor):
    """Feed ``ioi [B, F]`` to every down/mid/up block of a diffusers SVD UNet for the duration."""

    def pre(_mod, args, kwargs):
        if "image_only_indicator" in kwargs:
            kwargs = dict(kwargs)
            kwargs["image_only_indicator"] = ioi.to(device=kwargs["image_only_indicator"].device,
                                                    dtype=kwargs["image_only_indicator"].dtype)
        return args, kwargs

    blocks = list(unet.down_blocks) + [unet.mid_block] + list(unet.up_blocks)
    handles = [b.register_forward_pre_hook(pre, with_kwargs=True) for b in blocks]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def diffusers_branch_denoiser(unet, crossattn: torch.Tensor, concat: torch.Tensor,
                              added_time_ids: torch.Tensor, concat_scale_no_views: float = 4.0):
    """Branch denoiser (:mod:`...kernels.diffusion.guidance` protocol) over a diffusers
    ``UNetSpatioTemporalConditionModel`` with V-scaling EDM
    (:func:`...kernels.diffusion.edm.vpred_denoise`).

    ``crossattn [F,1,D]`` (one embedding per frame, the same for all frames), ``concat [F,4,h,w]``,
    ``added_time_ids [1,3]``. All branches go through ONE UNet call as ``n`` videos of ``F``
    frames; ``no_views`` videos get ``image_only_indicator = 1`` (no temporal mixing).
    Diffusers' UNet takes one vector condition per video (no per-frame cameras), so the camera
    vector is not modelled here.
    """
    frames = concat.shape[0]

    def den(x, sigma, branches):
        n = len(branches)
        conds = branch_conditions(crossattn, concat, torch.zeros(frames, 1), branches,
                                  concat_scale_no_views)

        def net(x_in, c_noise):
            sample = torch.cat([x_in, conds["concat"].to(x_in)], 1)  # [n*F, 8, h, w]
            sample = sample.reshape(n, frames, *sample.shape[1:])
            ctx = conds["crossattn"].to(x_in)
            ctx = ctx.reshape(n, frames, *crossattn.shape[1:])[:, 0]  # [n,1,D]
            with image_only_indicator(unet, conds["image_only_indicator"]):
                out = unet(sample, c_noise[0], ctx, added_time_ids.to(x_in).expand(n, -1)).sample
            return out.reshape(n * frames, *out.shape[2:])

        return edm.vpred_denoise(net, x, sigma)

    return den


def tiny_diffusers_unet(cross_dim: int = 16, channels=(32, 64), seed: int = 0):
    from diffusers import UNetSpatioTemporalConditionModel

    torch.manual_seed(seed)
    m = UNetSpatioTemporalConditionModel(
        sample_size=4, in_channels=8, out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=tuple(channels), addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=24,
        layers_per_block=1, cross_attention_dim=cross_dim, num_attention_heads=(2, 4),
        num_frames=21)
    return m.eval()


# ------------------------------------------------------------------------------ measurement helpers
def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _reset_peak(dev):
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS (VmHWM) of this process
    except OSError:
        pass


def _peak_mb(dev):
    if dev.type == "cuda":
        return {"cuda_max_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return {"peak_rss_mb": round(int(line.split()[1]) / 1024, 1)}
    except OSError:
        pass
    return {"peak_rss_mb_process_lifetime": round(peak_rss_mb(), 1)}


def _time_steps(step, warmup, repeats, dev):
    for _ in range(warmup):
        step()
    _sync(dev)
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        _sync(dev)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"wall_s_median": statistics.median(wall), "wall_s_min": min(wall),
            "cpu_s_median": statistics.median(cpu),
            "wall_s_all": [round(w, 4) for w in wall]}


def _ratios(modes, a="harmonyview", b="cfg"):
    if a not in modes or b not in modes:
        return {}
    return {"ratio_wall_median": modes[a]["wall_s_median"] / modes[b]["wall_s_median"],
            "ratio_wall_min": modes[a]["wall_s_min"] / modes[b]["wall_s_min"],
            "ratio_cpu_median": modes[a]["cpu_s_median"] / modes[b]["cpu_s_median"]}


# ------------------------------------------------------------------------------ backends
def bench_diffusers(frames, latent, warmup, repeats, dev):
    unet = tiny_diffusers_unet().to(dev)
    forwards = []
    unet.register_forward_hook(lambda m, a, o: forwards.append(1))
    g = torch.Generator().manual_seed(0)
    ca = torch.randn(1, 1, 16, generator=g).expand(frames, 1, 16).to(dev)
    cc = torch.randn(1, 4, latent, latent, generator=g).expand(frames, 4, latent, latent).to(dev)
    ids = torch.tensor([[1e-5, 1.4, 0.0]], device=dev)
    den = diffusers_branch_denoiser(unet, ca, cc, ids)
    sig = edm.edm_sigmas(50).to(dev)
    sigma, sigma_next = sig[25], sig[26]
    x = torch.randn(frames, 4, latent, latent, generator=g).to(dev) * float(sigma)
    out = {"model": "diffusers UNetSpatioTemporalConditionModel, block_out (32, 64), 1 "
                    "layer/block, random weights",
           "params": sum(p.numel() for p in unet.parameters()), "latent": [4, latent, latent],
           "modes": {}}
    guid = {"cfg": make_guidance("constant", frames, max_scale=2.5),
            "harmonyview": make_guidance("harmonyview", frames, s1=2.0, s2=1.0)}
    with torch.inference_mode():
        for name, gd in guid.items():
            fn = guided_denoiser(den, gd)
            _reset_peak(dev)
            forwards.clear()
            r = _time_steps(lambda fn=fn: edm.euler_step(x, fn(x, sigma), sigma, sigma_next),
                            warmup, repeats, dev)
            r["forwards_per_step"] = len(forwards) / (warmup + repeats)
            r["batch_items_per_forward"] = len(gd.branches) * frames
            r["branches"] = list(gd.branches)
            r.update(_peak_mb(dev))
            out["modes"][name] = r
        # raw UNet forwards at 1, 2, 3 videos: compute scaling without the guidance glue
        raw = {}
        for n in (1, 2, 3):
            smp = torch.randn(n, frames, 8, latent, latent, device=dev)
            ctx = torch.randn(n, 1, 16, device=dev)
            ioi = torch.zeros(n, frames, device=dev)

            def fwd(smp=smp, ctx=ctx, ioi=ioi, n=n):
                with image_only_indicator(unet, ioi):
                    unet(smp, torch.tensor(1.0, device=dev), ctx, ids.expand(n, -1))

            raw[f"{n}x"] = _time_steps(fwd, 1, repeats, dev)["wall_s_median"]
    out["unet_forward_wall_s"] = raw
    out["unet_forward_ratio_3x_over_2x"] = raw["3x"] / raw["2x"]
    out.update(_ratios(out["modes"]))
    return out


def _comfy():
    from .tiny_comfy import load_comfyui

    return load_comfyui()


def tiny_comfy_sv3d(context_dim=1024, model_channels=64):
    """A tiny random-weight ComfyUI SV3D_p (the same architecture family as sv3d_p.safetensors)."""
    from .tiny_comfy import tiny_video_model

    return tiny_video_model("sv3d_p", 0, context_dim, model_channels)


def bench_comfyui(frames, latent, warmup, repeats):
    model_management = _comfy()
    if model_management is None:
        return {"skipped": "COMFYUI_PATH unset"}
    import comfy.samplers

    from ..kernels.geometry.cameras import sv3d_static_orbit
    from ..nodes.host.guiders import make_guider, model_sigmas

    dev = model_management.get_torch_device()
    model = tiny_comfy_sv3d()
    dm = model.model.diffusion_model
    el, az = sv3d_static_orbit(10.0, frames)
    g = torch.Generator().manual_seed(0)
    extra = {"elevation": [float(e) for e in el], "azimuth": [float(a) for a in az],
             "augmentation_level": 1e-5}
    lat_img = torch.randn(1, 4, latent, latent, generator=g)
    pooled = torch.randn(1, 1, 1024, generator=g)
    pos = [[pooled, {"concat_latent_image": lat_img, **extra}]]
    neg = [[torch.zeros_like(pooled), {"concat_latent_image": torch.zeros_like(lat_img), **extra}]]
    empty = torch.zeros(frames, 4, latent, latent)
    noise = torch.randn(frames, 4, latent, latent, generator=g)
    sig = model_sigmas(model, 50)
    calls = []
    orig = dm.forward

    def counting(x, *a, **k):
        calls.append(int(x.shape[0]))
        return orig(x, *a, **k)

    out = {"model": "ComfyUI SV3D_p (VideoUNet) 64 ch, mult (1, 2), context 1024, random weights",
           "params": sum(p.numel() for p in dm.parameters()), "device": str(dev),
           "latent": [4, latent, latent],
           "modes": {}}
    guiders = {"cfg": make_guider(model, pos, "triangle", min_scale=1.0, max_scale=2.5),
               "harmonyview": make_guider(model, pos, "harmonyview", s1=2.0, s2=1.0)}
    core = comfy.samplers.CFGGuider(model)
    core.set_conds(pos, neg)
    core.set_cfg(2.5)
    guiders["core_cfg"] = core
    dm.forward = counting
    try:
        # two rounds over the modes, only the second timed: the first run of a process pays for
        # allocator growth and cache warm-up, which skewed whichever mode ran first
        for name, gdr in [*guiders.items(), *guiders.items()]:
            res = {}

            def sampler_fn(m, x, sigmas, extra_args=None, callback=None, disable=None, res=res):
                s_in = x.new_ones([x.shape[0]])
                sigma, sigma_next = sigmas[25], sigmas[26]
                xx = x * 0 + noise.to(x) * float(sigma)

                def step():
                    d = m(xx, sigma * s_in, **(extra_args or {}))
                    return edm.euler_step(xx, d, sigma, sigma_next)

                _reset_peak(xx.device)
                calls.clear()
                res.update(_time_steps(step, warmup, repeats, xx.device))
                res["forwards_per_step"] = len(calls) / (warmup + repeats)
                res["batch_items_per_forward"] = statistics.median(calls) if calls else 0
                res.update(_peak_mb(xx.device))
                return x

            with torch.inference_mode():
                gdr.sample(noise, empty, comfy.samplers.KSAMPLER(sampler_fn), sig, seed=0)
            out["modes"][name] = res  # the second round overwrites the first
    finally:
        del dm.forward
    out.update(_ratios(out["modes"]))
    if "core_cfg" in out["modes"]:
        modes = out["modes"]
        out["ratio_harmonyview_over_core_cfg_wall_median"] = (
            modes["harmonyview"]["wall_s_median"] / modes["core_cfg"]["wall_s_median"])
    return out


# ------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orbitforge.bench guidance",
                                 description=__doc__.split("\n\n")[1])
    ap.add_argument("--json", action="store_true", help="(the output is always one JSON object)")
    ap.add_argument("--frames", type=int, default=21)
    ap.add_argument("--latent", type=int, default=16, help="latent side (image side / 8)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on CPU")
    ap.add_argument("--backend", choices=["auto", "diffusers", "comfyui", "both"], default="auto",
                    help="auto: both when COMFYUI_PATH is set, else diffusers")
    a = ap.parse_args(argv)
    if (a.frames < 1 or a.latent < 4 or a.latent % 4 or a.repeats < 1 or a.warmup < 0
            or a.threads < 1):
        raise SystemExit("need frames >= 1, latent >= 4 and a multiple of 4, repeats >= 1, warmup "
                         ">= 0, threads >= 1")
    torch.set_num_threads(a.threads)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backend = a.backend
    if backend == "auto":
        backend = "both" if os.environ.get("COMFYUI_PATH") else "diffusers"
    res = {"bench": "guidance", "frames": a.frames, "latent_side": a.latent, "repeats": a.repeats,
           "warmup": a.warmup,
           "threads": torch.get_num_threads(), "device": str(dev), "torch": torch.__version__,
           "loadavg_start": list(os.getloadavg()), "must_ratio_max": 1.6, "ideal_ratio": 1.5,
           "backends": {}}
    t0 = time.perf_counter()
    if backend in ("diffusers", "both"):
        res["backends"]["diffusers"] = bench_diffusers(a.frames, a.latent, a.warmup, a.repeats, dev)
    if backend in ("comfyui", "both"):
        res["backends"]["comfyui"] = bench_comfyui(a.frames, a.latent, a.warmup, a.repeats)
    res["loadavg_end"] = list(os.getloadavg())
    res["total_wall_s"] = time.perf_counter() - t0
    verdict = {}
    for k, v in res["backends"].items():
        if "ratio_wall_median" in v:
            verdict[k] = {"ratio_wall_median": round(v["ratio_wall_median"], 3),
                          "ratio_cpu_median": round(v["ratio_cpu_median"], 3),
                          "one_forward_per_step":
                              v["modes"]["harmonyview"]["forwards_per_step"] == 1.0,
                          "pass_wall": v["ratio_wall_median"] <= 1.6,
                          "pass_cpu": v["ratio_cpu_median"] <= 1.6}
    res["verdict"] = verdict
    print_result(res, a.json, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
