"""Benchmark of the pure-torch Gaussian rasteriser: forward+backward time per view.

``python -m orbitforge.bench raster [--n 10000] [--size 256] [--views 4] [--repeats 5]
[--threads 2] [--tile N] [--sh-degree D] [--json]`` prints one JSON object
(wall-clock and process-CPU seconds per forward+backward of one view, peak RSS).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch

from . import peak_rss_mb


def make_scene(n: int, seed: int = 0, sh_degree: int = 0):
    """Random but realistic scene: Gaussians in the unit box, scales 0.01-0.03, opacity 0.1-0.95."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g) - 0.5
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.empty(n, 3).uniform_(math.log(0.01), math.log(0.03), generator=g))
    opac = torch.empty(n).uniform_(0.1, 0.95, generator=g)
    k = (sh_degree + 1) ** 2
    sh = torch.randn(n, k, 3, generator=g) * 0.3
    return means, quats, scales, opac, sh


def main(argv=None):
    ap = argparse.ArgumentParser(prog="orbitforge.bench raster")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--views", type=int, default=4, help="distinct orbit views timed per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tile", type=int, default=None,
                    help="tile size (default: rasterize's choice)")
    ap.add_argument("--sh-degree", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="(output is always one JSON object)")
    args = ap.parse_args(argv)

    from ..kernels.geometry.cameras import make_orbit_cameras
    from ..kernels.splat.rasterize import rasterize

    torch.set_num_threads(args.threads)
    means, quats, scales, opac, sh = make_scene(args.n, sh_degree=args.sh_degree)
    params = [t.clone().requires_grad_() for t in (means, quats, scales, opac, sh)]
    az = [i * 360.0 / args.views for i in range(args.views)]
    cams = make_orbit_cameras(10.0, az, radius=2.0, fov=33.8, width=args.size, height=args.size)
    target = torch.rand(1, args.size, args.size, 3, generator=torch.Generator().manual_seed(1))

    def step(v):
        out = rasterize(*params, cams.viewmats[v:v + 1], cams.Ks[v:v + 1], args.size, args.size,
                        sh_degree=args.sh_degree, backend="torch", tile_size=args.tile)
        loss = (out.rgb - target).abs().mean() + out.alpha.mean()
        loss.backward()
        return out.meta["n_pairs"]

    step(0)  # warm-up
    fwd_bwd, cpu, fwd, pairs = [], [], [], []
    for _ in range(args.repeats):
        for v in range(args.views):
            t0, c0 = time.perf_counter(), time.process_time()
            pairs.append(step(v))
            fwd_bwd.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    with torch.no_grad():
        for v in range(args.views):
            t0 = time.perf_counter()
            rasterize(*params, cams.viewmats[v:v + 1], cams.Ks[v:v + 1], args.size, args.size,
                      sh_degree=args.sh_degree, backend="torch", tile_size=args.tile)
            fwd.append(time.perf_counter() - t0)
    res = {
        "bench": "raster",
        "backend": "torch",
        "n_gaussians": args.n,
        "image": [args.size, args.size],
        "threads": torch.get_num_threads(),
        "tile_size": args.tile or "default",
        "sh_degree": args.sh_degree,
        "fwd_bwd_s_median": round(statistics.median(fwd_bwd), 4),
        "fwd_bwd_s_min": round(min(fwd_bwd), 4),
        "fwd_s_median": round(statistics.median(fwd), 4),
        # CPU seconds of this process (all threads) per fwd+bwd: robust to other load on the box
        "fwd_bwd_cpu_s_median": round(statistics.median(cpu), 4),
        "pairs_per_view_mean": round(sum(pairs) / len(pairs)),
        "samples": len(fwd_bwd),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    main()
