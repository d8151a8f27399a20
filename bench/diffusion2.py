"""Benchmark of the Diffusion² matrix sampler on tiny random-weight diffusers SVD UNets.

``python -m orbitforge.bench diffusion2 [--json] [--views V] [--frames F] [--size S] [--steps N]
[--no-4d]``

Measures, per sampler pass (one composed x0 of the whole V x F matrix):

* wall time, against the baseline of V*F independent single-frame evaluations (each image alone
  as a 1-frame sequence, both CFG branches) -- what a per-image method would pay;
* forwards: UNet calls and sequences (rows/columns x branches) per pass, checked against
  ``F + V`` sequences per branch;
* peak memory at two chunk sizes (CUDA: ``max_memory_allocated``; CPU: the peak growth of the
  resident set during sampling, polled, each configuration in a fresh subprocess).

* unless ``--no-4d``: the 4D reconstruction of a synthetic moving object (``bench recon4d``:
  spot turning while seen along an orbit; held-out PSNR per time step), under ``recon4d``.

The module also holds the diffusers adapter used by the tests (:class:`DiffusersSequenceModel`).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from ..kernels.diffusion import edm
from ..kernels.diffusion.guidance import make_scales
from ..kernels.dynamic.diffusion2 import (
    MatrixStats,
    cfg_combine,
    lambda_schedule,
    sample_matrix,
    view_weights,
)
from . import print_result, run_child


def tiny_video_unet(seed: int = 0, channels=(32, 64), cross_dim: int = 32, time_dim: int = 8):
    """A random-weight ``UNetSpatioTemporalConditionModel`` with SVD's interface (8 in, 4 out)."""
    from diffusers import UNetSpatioTemporalConditionModel

    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(
        sample_size=None, in_channels=8, out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=tuple(channels), addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=3 * time_dim, layers_per_block=1,
        cross_attention_dim=cross_dim, num_attention_heads=(2, 4), num_frames=25)
    return unet.eval().requires_grad_(False)


class DiffusersSequenceModel:
    """A diffusers SVD-style UNet as a Diffusion² sequence denoiser with CFG.

    ``concat``: per-sequence reference latents ``[n_seq, 4, h, w]`` (the image the row/column is
    conditioned on), ``embeds``: ``[n_seq, 1, D]`` image embeddings, ``time_ids``: ``[3]`` added
    time ids (SVD: fps, motion bucket, cond_aug), ``scales``: per-frame CFG ``[L]``.
    Each call evaluates the uncond (embedding and concat zeroed) and cond branches of its chunk in
    ONE UNet forward, with V-scaling EDM preconditioning (:func:`edm.vpred_denoise`).
    """

    def __init__(self, unet, concat, embeds, time_ids, scales):
        self.unet, self.concat, self.embeds = unet, concat, embeds
        self.time_ids = torch.as_tensor(time_ids, dtype=torch.float32)
        self.scales = scales
        self.forwards = 0
        self.sequences = 0
        self.max_batch = 0

    def __call__(self, x, sigma, idx):  # x [n, L, 4, h, w]
        n = x.shape[0]
        dev, dt = x.device, x.dtype
        cat = self.concat[idx.cpu()].to(dev, dt)[:, None].expand(-1, x.shape[1], -1, -1, -1)
        emb = self.embeds[idx.cpu()].to(dev, dt)
        cat2 = torch.cat([torch.zeros_like(cat), cat])  # [2n, L, 4, h, w]: uncond, cond
        emb2 = torch.cat([torch.zeros_like(emb), emb])
        ids = self.time_ids.to(dev, dt).expand(2 * n, -1)

        def net(x_in, c_noise):
            return self.unet(torch.cat([x_in, cat2], dim=2), c_noise, encoder_hidden_states=emb2,
                             added_time_ids=ids).sample

        out = edm.vpred_denoise(net, torch.cat([x, x]), sigma)
        self.forwards += 1
        self.sequences += 2 * n
        self.max_batch = max(self.max_batch, 2 * n)
        du, dc = out.chunk(2)
        return cfg_combine(du, dc, self.scales)


def build_models(views: int, frames: int, h: int, w: int, device="cpu", seed: int = 0):
    """Two tiny models (video rows, multi-view columns) with random references."""
    g = torch.Generator().manual_seed(seed)
    video = tiny_video_unet(seed).to(device)
    mview = tiny_video_unet(seed + 1).to(device)
    ref_orbit = torch.randn(views, 4, h, w, generator=g)  # row v conditions on orbit view v
    ref_video = torch.randn(frames, 4, h, w, generator=g)  # column t conditions on video frame t
    row = DiffusersSequenceModel(video, ref_orbit, torch.randn(views, 1, 32, generator=g),
                                 [6.0, 127.0, 0.02], make_scales("linear", frames, 1.5, 3.0))
    col = DiffusersSequenceModel(mview, ref_video, torch.randn(frames, 1, 32, generator=g),
                                 [1e-5, 80.0, 0.0], make_scales("constant", views, 2.5, 2.5))
    return col, row


def run_matrix(views, frames, size, steps, column_chunk, row_chunk, device="cpu", seed=0, vrs=0):
    h = w = size // 8
    col, row = build_models(views, frames, h, w, device, seed)
    x = edm.initial_noise((views, frames, 4, h, w), 700.0, torch.Generator().manual_seed(seed),
                          device=device)
    sig = edm.edm_sigmas(steps, 0.002, 700.0)
    stats = MatrixStats()
    times = []
    t = [time.perf_counter()]

    def cb(k, total, i, xx, dd):
        if xx.is_cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        times.append(now - t[0])
        t[0] = now

    with torch.inference_mode():
        out = sample_matrix(x, sig, col, row, view_weights(views), lambda_schedule(steps),
                            vrs_steps=vrs, column_chunk=column_chunk, row_chunk=row_chunk,
                            generator=torch.Generator().manual_seed(seed + 1), callback=cb,
                            stats=stats)
    return out, stats, times, col, row


def single_frame_baseline(views, frames, size, device="cpu", seed=0, reps=2):
    """Seconds for V*F independent 1-frame evaluations (2 CFG branches each, batched by chunks of
    one image as a per-image method would run)."""
    h = w = size // 8
    col, _ = build_models(views, 1, h, w, device, seed)
    col.scales = torch.tensor([2.5])
    col.concat = col.concat[:1].expand(views * frames, -1, -1, -1)
    col.embeds = col.embeds[:1].expand(views * frames, -1, -1)
    x = torch.randn(views * frames, 1, 4, h, w, device=device)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(reps):
            t0 = time.perf_counter()
            for k in range(views * frames):
                col(x[k:k + 1], torch.tensor(10.0), torch.tensor([k]))
            if x.is_cuda:
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
    return best


class _RssPeak:
    """Peak resident memory above the starting RSS, polled from /proc/self/statm (CPU runs; large
    tensors are mmapped by glibc, so RSS follows allocations and frees)."""

    def __init__(self):
        import threading

        self.page = os.sysconf("SC_PAGE_SIZE")
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.0005)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())


def _child(args) -> dict:
    dev = args.device
    h = args.size // 8
    build_models(args.views, args.frames, h, h, dev)  # warm-up: imports, first allocations
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        _, stats, _times, col, row = run_matrix(args.views, args.frames, args.size, 2,
                                                args.column_chunk, args.row_chunk, dev)
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        with _RssPeak() as m:
            _, stats, _times, col, row = run_matrix(args.views, args.frames, args.size, 2,
                                                    args.column_chunk, args.row_chunk, dev)
        peak = (m.peak - m.base) / 2**20
    return {"column_chunk": args.column_chunk, "row_chunk": args.row_chunk,
            "peak_mib": round(peak, 2),
            "unet_forwards_per_pass": (col.forwards + row.forwards) / stats.passes,
            "memory_kind": ("cuda max_memory_allocated" if dev == "cuda"
                            else "cpu peak RSS growth (polled)")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m orbitforge.bench diffusion2")
    p.add_argument("--json", action="store_true", help="print only the JSON object")
    p.add_argument("--views", type=int, default=5)
    p.add_argument("--frames", type=int, default=6)
    p.add_argument("--size", type=int, default=64, help="image size (latent = size / 8)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--column-chunk", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--row-chunk", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--no-4d", action="store_true",
                   help="skip the 4D reconstruction part (bench recon4d, run as a subprocess)")
    p.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        print(json.dumps(_child(args)))
        return 0
    V, F = args.views, args.frames
    _, stats, times, col, row = run_matrix(V, F, args.size, args.steps + 1, None, None, args.device)
    # median, no warm-up
    per_pass = sorted(times[1:])[len(times[1:]) // 2] if len(times) > 1 else times[0]
    base = single_frame_baseline(V, F, args.size, args.device)
    mem = []
    for cc, rc in ((F, V), (1, 1)):
        cmd = ["orbitforge.bench.diffusion2", "--_child", "--views", str(V), "--frames", str(F),
               "--size", str(args.size), "--device", args.device, "--column-chunk", str(cc),
               "--row-chunk", str(rc)]
        mem.append(run_child(*cmd, column_chunk=cc, row_chunk=rc))
    passes = stats.passes
    result = {
        "bench": "diffusion2",
        "device": args.device,
        "views": V, "frames": F, "latent": [4, args.size // 8, args.size // 8],
        "model": "tiny random-weight diffusers UNetSpatioTemporalConditionModel (32/64 channels)",
        "seconds_per_pass": round(per_pass, 4),
        "seconds_single_frame_baseline": round(base, 4),
        "ratio_pass_over_baseline": round(per_pass / base, 3) if base > 0 else None,
        "sequences_per_pass": {"columns": stats.column_sequences[-1] * 2,
                               "rows": stats.row_sequences[-1] * 2,
                               "expected": 2 * (F + V)},
        "unet_forwards_per_pass": (col.forwards + row.forwards) / passes,
        "frames_through_unet_per_pass": 2 * 2 * V * F,
        "peak_memory": mem,
    }
    if not args.no_4d:  # the 4D reconstruction of a synthetic moving object (bench recon4d)
        result["recon4d"] = run_child("orbitforge.bench.recon4d", "--json")
    print_result(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
