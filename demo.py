"""``python -m orbitforge demo``: the bundled spot orbit -> Gaussians (PLY) -> renders -> mesh
(GLB).

Runs on the CPU with no model files: the 21 views of the public-domain spot mesh bundled in
``assets/sample_orbit`` stand in for an SV3D orbit.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from PIL import Image


def contact_sheet(images: torch.Tensor, cols: int = 7) -> np.ndarray:
    """[N,H,W,3] 0..1 -> one uint8 grid image."""
    n, h, w, _ = images.shape
    rows = (n + cols - 1) // cols
    sheet = np.ones((rows * h, cols * w, 3), np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = images[i, ..., :3].clamp(0, 1).numpy()
    return (sheet * 255).round().astype(np.uint8)


def save_png(path: str, arr: np.ndarray) -> None:
    tmp = path + ".tmp.png"
    Image.fromarray(arr).save(tmp)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orbitforge demo", description=__doc__)
    ap.add_argument("--out", default=os.path.join("output", "orbitforge_demo"),
                    help="output folder (default: ./output/orbitforge_demo)")
    ap.add_argument("--iters", type=int, default=None, help="fit iterations (default: FitConfig)")
    ap.add_argument("--mesh-res", type=int, default=128, help="mesh grid resolution")
    args = ap.parse_args(argv)

    from .kernels.geometry.cameras import interpolate_orbit
    from .kernels.sample import load_sample_orbit
    from .kernels.splat.fit import FitConfig, fit_gaussians, render_gaussians
    from .kernels.splat.frame import to_splat_frame
    from .kernels.splat.ply import write_ply

    os.makedirs(args.out, exist_ok=True)
    images, masks, cams = load_sample_orbit()
    print(f"sample orbit: {images.shape[0]} views {images.shape[2]}x{images.shape[1]}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    cfg = FitConfig()
    if args.iters is not None:
        cfg.iterations = args.iters
    t0 = time.perf_counter()
    last = [0.0]

    def progress(step, total, _preview):
        now = time.perf_counter()
        if now - last[0] > 10 or step == total:
            last[0] = now
            print(f"  fit {step}/{total} ({now - t0:.0f} s)", flush=True)

    res = fit_gaussians(images, cams, masks, cfg, progress=progress)
    fit_s = time.perf_counter() - t0
    g = res.gaussians
    summary = {"gaussians": len(g), "fit_s": round(fit_s, 1), "iterations": cfg.iterations,
               "train_psnr_last": round(res.history[-1]["psnr"], 2)}
    ply = write_ply(os.path.join(args.out, "spot_splat.ply"), to_splat_frame(g))  # 3DGS frame
    # held-out views: one Hi3D interpolation camera between each pair of training cameras
    between = interpolate_orbit(cams, 1)
    rgb, _, _, _ = render_gaussians(g, between)
    save_png(os.path.join(args.out, "spot_between_views.png"), contact_sheet(rgb))
    train_rgb, _, _, _ = render_gaussians(g, cams)
    save_png(os.path.join(args.out, "spot_training_views.png"),
             contact_sheet(torch.cat([images[:7], train_rgb[:7]])))
    summary["ply"] = ply
    try:
        from .kernels.mesh.views_to_mesh import gaussians_to_mesh_file  # noqa: PLC0415
    except ImportError:
        gaussians_to_mesh_file = None
    if gaussians_to_mesh_file is not None:
        t = time.perf_counter()
        glb = gaussians_to_mesh_file(g, images, masks, cams, os.path.join(args.out, "spot.glb"),
                                     resolution=args.mesh_res)
        summary["glb"] = glb
        summary["mesh_s"] = round(time.perf_counter() - t, 1)
    print(json.dumps(summary, indent=1))
    print(f"outputs in {os.path.abspath(args.out)}")
    return 0
