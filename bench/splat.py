"""``python -m orbitforge.bench splat --mesh PATH``: fit 3D Gaussians to a mesh's orbit renders.

Renders ground-truth views (SV3D static orbit) and masks of any OBJ/PLY/GLB mesh on the CPU,
fits Gaussians with the pack's own path, renders held-out views (Hi3D interpolation cameras
between the training cameras, never trained on) and prints one JSON object.

``--degrade generated`` runs the fit twice on the same orbit (at ``--res`` 128 unless given):
once on clean renders with their exact cameras and masks, once on views degraded the way
generated orbits disagree (``bench/degrade.py``: per-view camera error, colour drift, warp,
512 px -> 128 px, 256-colour dithered palette, thresholded masks) with the nominal cameras.
Both are scored on the same clean held-out renders; the JSON holds
``{"clean": {psnr, ssim, ...}, "degraded": {psnr, ssim, ...}}`` side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from . import peak_rss_mb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orbitforge.bench splat", description=__doc__)
    ap.add_argument("--mesh", default=None, help="mesh file (default: the bundled spot)")
    ap.add_argument("--views", type=int, default=21)
    ap.add_argument("--res", type=int, default=None,
                    help="view size (default 256; 128 with --degrade)")
    ap.add_argument("--iters", type=int, default=None, help="fit iterations (default: FitConfig)")
    ap.add_argument("--elevation", type=float, default=10.0)
    ap.add_argument("--radius", type=float, default=2.2,
                    help="camera distance (2.2 keeps spot whole at elevation 10)")
    ap.add_argument("--held-out-per-gap", type=int, default=1,
                    help="Hi3D interpolation views per gap used for evaluation")
    ap.add_argument("--sh-degree", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--degrade", choices=["generated"], default=None,
                    help="also fit degraded views (see bench/degrade.py) and report both")
    ap.add_argument("--degrade-seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    args = ap.parse_args(argv)
    if args.res is None:
        args.res = 128 if args.degrade else 256
    if args.threads:
        torch.set_num_threads(args.threads)

    from ..kernels.geometry.cameras import interpolate_orbit, make_orbit_cameras, sv3d_static_orbit
    from ..kernels.mesh.render import load_mesh, normalize_mesh, render_mesh
    from ..kernels.metrics import psnr, ssim
    from ..kernels.sample import spot_mesh_path
    from ..kernels.splat.fit import FitConfig, fit_gaussians, render_gaussians

    path = args.mesh or spot_mesh_path()
    mesh, _, _ = normalize_mesh(load_mesh(path))
    el, az = sv3d_static_orbit(args.elevation, args.views)
    cams = make_orbit_cameras(el, az, args.radius, 33.8, args.res, args.res)
    test_cams = interpolate_orbit(cams, args.held_out_per_gap)
    t = time.perf_counter()
    gt = render_mesh(mesh, cams, ss=2)
    gt_test = render_mesh(mesh, test_cams, ss=2)
    render_s = time.perf_counter() - t

    cfg = FitConfig(seed=args.seed, sh_degree=args.sh_degree)
    if args.iters is not None:
        cfg.iterations = args.iters

    def run(images, masks):
        t = time.perf_counter()
        res = fit_gaussians(images, cams, masks, cfg)
        wall = time.perf_counter() - t
        rgb, _, _, _ = render_gaussians(res.gaussians, test_cams)
        rgb_train, _, _, _ = render_gaussians(res.gaussians, cams)
        if not args.json:
            for h in res.history[:: max(1, len(res.history) // 10)]:
                print(f"  it {h['iteration']:5d}  loss {h['loss']:.4f}  psnr {h['psnr']:.2f}  "
                      f"n {h['n']}  t {h['t']:.1f}s", file=sys.stderr)
        return {"psnr": round(float(psnr(rgb, gt_test["rgb"])), 3),
                "ssim": round(float(ssim(rgb, gt_test["rgb"])), 4),
                "train_psnr": round(float(psnr(rgb_train, images)), 3),
                "wall_s": round(wall, 2), "gaussians": len(res.gaussians)}

    clean = run(gt["rgb"], gt["mask"])
    out = {
        "bench": "splat",
        "mesh": str(path),
        "views": args.views,
        "res": args.res,
        "held_out_views": len(test_cams),
        "iters": cfg.iterations,
    }
    if args.degrade:
        from .degrade import preset, render_degraded

        t = time.perf_counter()
        images, masks, _ = render_degraded(mesh, cams, args.degrade_seed, preset(args.degrade))
        render_s += time.perf_counter() - t
        out.update({"degrade": args.degrade, "degrade_seed": args.degrade_seed,
                    "clean": clean, "degraded": run(images, masks)})
    else:
        out.update(clean)
    out.update({"peak_rss_mb": round(peak_rss_mb(), 1), "gt_render_s": round(render_s, 2),
                "threads": torch.get_num_threads()})
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
