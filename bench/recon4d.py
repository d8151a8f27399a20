"""``python -m orbitforge.bench recon4d``: 4D reconstruction of a synthetic moving object.

The bundled spot mesh turns about +y (0..``--degrees`` over ``--times`` time steps) while V orbit
cameras film it; the V·F renders (view-major) are fitted frame by frame with warm start
(:func:`orbitforge.kernels.dynamic.fit4d.fit_sequence`), then every time step is rendered from
held-out cameras (Hi3D interpolation cameras between the training ones, never trained on) and
compared with the mesh's renders at that time. Prints one JSON object: held-out PSNR/SSIM per time
step, wall time, Gaussians per step, peak RSS. ``--compare-cold`` also fits each later time step
from scratch with the same iteration count (what the warm start saves).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from . import peak_rss_mb, print_result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orbitforge.bench recon4d", description=__doc__)
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--times", type=int, default=5)
    ap.add_argument("--degrees", type=float, default=60.0, help="total turn about +y")
    ap.add_argument("--res", type=int, default=96)
    ap.add_argument("--iters", type=int, default=300, help="iterations of time step 0")
    ap.add_argument("--warm-iters", type=int, default=100, help="iterations of later steps")
    ap.add_argument("--temporal-weight", type=float, default=0.02)
    ap.add_argument("--warm-lr-scale", type=float, default=5.0)
    ap.add_argument("--confidence", choices=("none", "ssim"), default="none")
    ap.add_argument("--elevation", type=float, default=10.0)
    ap.add_argument("--radius", type=float, default=2.2)
    ap.add_argument("--compare-cold", action="store_true")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 is fastest for small fits on a busy CPU; 0 = as is)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import trimesh

    from ..kernels.dynamic.fit4d import Fit4DConfig, fit_sequence, merge_times
    from ..kernels.geometry.cameras import interpolate_orbit, make_orbit_cameras, uniform_orbit
    from ..kernels.mesh.render import render_mesh
    from ..kernels.metrics import psnr, ssim
    from ..kernels.sample import load_sample_mesh
    from ..kernels.splat.fit import FitConfig, fit_gaussians, render_gaussians

    mesh = load_sample_mesh()
    el, az = uniform_orbit(args.views, (args.elevation,))
    cams = make_orbit_cameras(el, az, args.radius, 33.8, args.res, args.res)
    test_cams = interpolate_orbit(cams, 1)
    angles = np.linspace(0.0, args.degrees, args.times)
    t = time.perf_counter()
    train, masks, test = [], [], []
    for a in angles:
        m = mesh.copy()
        m.apply_transform(trimesh.transformations.rotation_matrix(np.deg2rad(a), [0, 1, 0]))
        r = render_mesh(m, cams, ss=2)
        train.append(r["rgb"])
        masks.append(r["mask"])
        test.append(render_mesh(m, test_cams, ss=2)["rgb"])
    render_s = time.perf_counter() - t
    images = merge_times(torch.stack(train))  # [V*F,H,W,3] view-major
    mask = merge_times(torch.stack(masks))

    base = FitConfig(iterations=args.iters, seed=args.seed)
    cfg = Fit4DConfig(base=base, warm_iterations=args.warm_iters,
                      temporal_weight=args.temporal_weight, confidence=args.confidence,
                      warm_lr_scale=args.warm_lr_scale)
    t = time.perf_counter()
    res = fit_sequence(images, cams, args.times, mask, cfg)
    wall = time.perf_counter() - t
    seq = res.sequence
    held, held_ssim, train_psnr, static = [], [], [], []
    for f, g in enumerate(seq.gaussians):
        rgb = render_gaussians(g, test_cams)[0]
        held.append(round(float(psnr(rgb, test[f])), 3))
        held_ssim.append(round(float(ssim(rgb, test[f])), 4))
        train_psnr.append(round(float(psnr(render_gaussians(g, cams)[0], train[f])), 3))
        # how much the object moved: time 0's scene against this time's held-out views
        static.append(round(float(psnr(render_gaussians(seq[0], test_cams)[0], test[f])), 3))
    out = {
        "bench": "recon4d",
        "object": f"spot turning {args.degrees:g} deg about +y",
        "views": args.views,
        "times": args.times,
        "res": args.res,
        "frame_order": "view-major (image v*F + f)",
        "held_out_views": len(test_cams),
        "iters": args.iters,
        "warm_iters": args.warm_iters,
        "temporal_weight": args.temporal_weight,
        "warm_lr_scale": args.warm_lr_scale,
        "confidence": args.confidence,
        "held_out_psnr": held,
        "held_out_psnr_mean": round(float(np.mean(held)), 3),
        "held_out_ssim": held_ssim,
        "train_psnr": train_psnr,
        "time0_scene_vs_each_time_psnr": static,
        "gaussians": [len(g) for g in seq.gaussians],
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "gt_render_s": round(render_s, 2),
        "threads": torch.get_num_threads(),
    }
    if args.compare_cold:
        cold, cold_s = [], 0.0
        for f in range(1, args.times):
            t = time.perf_counter()
            g = fit_gaussians(torch.stack(train)[f], cams, torch.stack(masks)[f],
                              FitConfig(iterations=args.warm_iters, seed=args.seed)).gaussians
            cold_s += time.perf_counter() - t
            cold.append(round(float(psnr(render_gaussians(g, test_cams)[0], test[f])), 3))
        out["cold_held_out_psnr"] = [None] + cold
        out["cold_wall_s"] = round(cold_s, 2)
    print_result(out, args.json, indent=1)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
