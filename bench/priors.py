"""``python -m orbitforge.bench priors``: sparse-view 3DGS fits with and without IPSM's geometry
regularisers, in the same run: held-out PSNR (views between the training ones, never trained on),
mask IoU of held-out silhouettes, fit time, and the time ratio.

Default: spot and cow (when ``--mesh`` names files; spot is bundled), 4 and 6 views on a ring at
elevation 10, 128² (``--res``), evaluated on 21 held-out cameras of the same ring.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np
import torch


def _fit_eval(gt, cams, test_gt, test_cams, iters, reg, seed):
    from ..kernels.fit import FitConfig, fit_gaussians, render_gaussians
    from ..kernels.metrics import psnr

    t = time.perf_counter()
    res = fit_gaussians(gt["rgb"], cams, gt["mask"], FitConfig(iterations=iters, seed=seed),
                        regularizer=reg)
    wall = time.perf_counter() - t
    rgb, alpha, _, _ = render_gaussians(res.gaussians, test_cams)
    a, b = alpha[..., 0] > 0.5, test_gt["mask"] > 0.5
    iou = float((a & b).sum() / (a | b).sum().clamp_min(1))
    return {"psnr": round(float(psnr(rgb, test_gt["rgb"])), 3), "mask_iou": round(iou, 4),
            "wall_s": round(wall, 2), "gaussians": len(res.gaussians)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orbitforge.bench priors", description=__doc__)
    ap.add_argument("--mesh", action="append", default=None,
                    help="mesh file (repeatable; default: the bundled spot)")
    ap.add_argument("--views", default="4,6", help="comma-separated sparse view counts")
    ap.add_argument("--res", type=int, default=128)
    ap.add_argument("--iters", type=int, default=400)
    ap.add_argument("--weight", type=float, default=0.5, help="IPSM geometry weight")
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from ..kernels.cameras import make_orbit_cameras, uniform_orbit
    from ..kernels.mesh_render import load_mesh, normalize_mesh, render_mesh
    from ..kernels.priors import IPSMGeometryConfig, IPSMGeometryRegularizer
    from ..kernels.sample import SAMPLE_RADIUS, load_sample_mesh

    meshes = args.mesh or ["spot"]
    results = []
    for path in meshes:
        mesh = load_sample_mesh() if path == "spot" else normalize_mesh(load_mesh(path))[0]
        el, az = uniform_orbit(21, [10.0], start_azimuth=360 / 42)  # between any sparse set
        test_cams = make_orbit_cameras(el, az, SAMPLE_RADIUS, 33.8, args.res, args.res)
        test_gt = render_mesh(mesh, test_cams, ss=2)
        for n in [int(v) for v in args.views.split(",")]:
            el, az = uniform_orbit(n, [10.0])
            cams = make_orbit_cameras(el, az, SAMPLE_RADIUS, 33.8, args.res, args.res)
            gt = render_mesh(mesh, cams, ss=2)
            base = _fit_eval(gt, cams, test_gt, test_cams, args.iters, None, args.seed)
            reg = IPSMGeometryRegularizer(IPSMGeometryConfig(weight_geometry=args.weight,
                                                             every=args.every, seed=args.seed))
            with_reg = _fit_eval(gt, cams, test_gt, test_cams, args.iters, reg, args.seed)
            row = {"mesh": str(path), "views": n, "baseline": base, "ipsm_geometry": with_reg,
                   "psnr_gain": round(with_reg["psnr"] - base["psnr"], 3),
                   "time_ratio": round(with_reg["wall_s"] / max(base["wall_s"], 1e-9), 3)}
            results.append(row)
            if not args.json:
                print(json.dumps(row), file=sys.stderr)
    out = {"bench": "priors", "res": args.res, "iters": args.iters, "results": results,
           "mean_psnr_gain": round(float(np.mean([r["psnr_gain"] for r in results])), 3),
           "max_time_ratio": max(r["time_ratio"] for r in results),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "threads": torch.get_num_threads()}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
