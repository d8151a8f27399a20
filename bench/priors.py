"""``python -m orbitforge.bench priors``: sparse-view 3DGS fits with and without IPSM's geometry
regularisers, in the same run: held-out PSNR (views between the training ones, never trained on),
mask IoU of held-out silhouettes, fit time, and the time ratio. Four fits per setting: the
baseline, IPSM's pseudo-view term alone (``ipsm_geometry``, ``--weight``), the cross-view
consistency term alone (``cross_view``, ``--cross-view``;
:func:`orbitforge.kernels.priors.ipsm.cross_view_loss`), and both together (``combined``: what
``OrbitForgeIPSMGeometryPriors`` runs with ``weight_geometry`` raised from its default 0 to
``--weight``). The node's default is the ``cross_view`` row.

Default: spot and cow (when ``--mesh`` names files; spot is bundled), 4 and 6 views on a ring at
elevation 10, 256² (``--res``), evaluated on 21 held-out cameras of the same ring. The README's
numbers: ``--threads 2 --mesh spot --mesh PATH/cow.obj --json`` (about 15 minutes on 2 cores).

``--diffusion-cost``: extra cost per iteration of the diffusion priors (IPSM diffusion with an
SD-1.5-inpainting + SD-1.5 pair, SV3D masked SDS on a 5-frame orbit), applied every step of a
short fit, with tiny random-weight models built with ComfyUI's own classes (needs
``COMFYUI_PATH``; reported as skipped otherwise). Real checkpoints cost far more: these numbers
measure the plumbing (renders, VAE graph, CFG batches), not the UNets' real size.
``--skip-geometry`` leaves out the geometry section.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from . import peak_rss_mb
from .tiny_comfy import tiny_sd15, tiny_vae


def _fit_eval(gt, cams, test_gt, test_cams, iters, reg, seed, mesh=None):
    from ..kernels.metrics import psnr
    from ..kernels.splat.fit import FitConfig, fit_gaussians, render_gaussians

    t = time.perf_counter()
    res = fit_gaussians(gt["rgb"], cams, gt["mask"], FitConfig(iterations=iters, seed=seed),
                        regularizer=reg)
    wall = time.perf_counter() - t
    rgb, alpha, _, _ = render_gaussians(res.gaussians, test_cams)
    a, b = alpha[..., 0] > 0.5, test_gt["mask"] > 0.5
    iou = float((a & b).sum() / (a | b).sum().clamp_min(1))
    out = {"psnr": round(float(psnr(rgb, test_gt["rgb"])), 3), "mask_iou": round(iou, 4),
           "wall_s": round(wall, 2), "gaussians": len(res.gaussians)}
    if mesh is not None:  # Hi3D route: mesh from the Gaussians seen by the dense held-out orbit
        from ..kernels.mesh.pipeline import reconstruct_mesh
        from ..kernels.metrics import evaluate_mesh

        pred = reconstruct_mesh((alpha[..., 0] > 0.5).float().cpu(), test_cams, 128,
                                depth_source="gaussians", gaussians=res.gaussians)
        ev = evaluate_mesh(pred, mesh)
        out["chamfer"] = round(ev["chamfer"], 5)
        out["mesh_iou"] = round(ev["iou"], 4)
    return out


def diffusion_cost(iters: int = 6, res: int = 48, frames: int = 5, latent: int = 8) -> dict:
    """Seconds per iteration of a short fit without / with each diffusion prior (every step)."""
    from .guidance import _comfy, tiny_comfy_sv3d

    if _comfy() is None:
        return {"skipped": "COMFYUI_PATH unset"}
    import logging

    logging.getLogger().setLevel(logging.ERROR)  # the tiny VAE's 'missing keys' warning
    from ..kernels.sample import load_sample_orbit
    from ..kernels.splat.fit import FitConfig, fit_gaussians
    from ..nodes.gaussians import build_regularizer
    from ..nodes.priors import IPSMDiffusionPriors, SV3DSDSPriors

    images, masks, cams = load_sample_orbit()
    idx = [20, 0, 19]
    im = torch.nn.functional.interpolate(images[idx].permute(0, 3, 1, 2), size=(res, res),
                                         mode="area").permute(0, 2, 3, 1)
    mk = torch.nn.functional.interpolate(masks[idx][:, None], size=(res, res), mode="area")[:, 0]
    cams = cams[idx].resized(res, res)
    vae = tiny_vae(latent * 8)
    text = [[torch.full((1, 77, 768), 0.5), {}]]
    g = torch.Generator().manual_seed(0)
    az = [(f + 1) * 360.0 / frames % 360.0 for f in range(frames)]
    sv_pos = [[torch.randn(1, 1, 1024, generator=g) * 0.1,
               {"concat_latent_image": torch.randn(1, 4, latent, latent, generator=g),
                "elevation": [10.0] * frames, "azimuth": az, "augmentation_level": 1e-5}]]
    (ipsm,) = IPSMDiffusionPriors().make(tiny_sd15(9, 3), tiny_sd15(4, 4), vae, text, 1.0, 1,
                                         0.0, 0, 7.5)
    (sv3d,) = SV3DSDSPriors().make(tiny_comfy_sv3d(), vae, sv_pos, 1.0, 0.0, 1, 2.5)

    def run(priors):
        reg = build_regularizer(priors, len(idx))
        t = time.perf_counter()
        with torch.inference_mode():
            fit_gaussians(im.clone(), cams, mk.clone(),
                          FitConfig(iterations=iters, densify=False, seed=0), regularizer=reg)
        return (time.perf_counter() - t) / iters

    run(None)  # warm-up
    base = run(None)
    out = {"iters": iters, "res": res, "baseline_s_per_iter": round(base, 4)}
    for name, pri in (("ipsm_diffusion", ipsm), ("sv3d_sds", sv3d)):
        t = run(pri)
        out[name] = {"s_per_iter": round(t, 4), "extra_s_per_application": round(t - base, 4),
                     "ratio": round(t / max(base, 1e-9), 2)}
    out["sv3d_frames"] = frames
    out["sv3d_render"] = latent * 8
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orbitforge.bench priors", description=__doc__)
    ap.add_argument("--mesh", action="append", default=None,
                    help="mesh file (repeatable; default: the bundled spot)")
    ap.add_argument("--views", default="4,6", help="comma-separated sparse view counts")
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--iters", type=int, default=400)
    ap.add_argument("--weight", type=float, default=0.5, help="IPSM geometry weight")
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--cross-view", type=float, default=0.3,
                    help="weight of the cross-view consistency term (its own row; 0 = skip)")
    ap.add_argument("--sigma-scale", type=float, default=1.0, help="x IPSM's pseudo-pose noise")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = as is)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-mesh", action="store_true", help="skip the mesh chamfer part")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--diffusion-cost", action="store_true",
                    help="also time the diffusion priors on tiny ComfyUI models (COMFYUI_PATH)")
    ap.add_argument("--skip-geometry", action="store_true",
                    help="skip the geometry-regulariser PSNR section")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from ..kernels.geometry.cameras import make_orbit_cameras, uniform_orbit
    from ..kernels.mesh.render import load_mesh, normalize_mesh, render_mesh
    from ..kernels.priors.regularizers import IPSMGeometryConfig, IPSMGeometryRegularizer
    from ..kernels.sample import SAMPLE_RADIUS, load_sample_mesh

    meshes = [] if args.skip_geometry else (args.mesh or ["spot"])
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
            gt_mesh = None if args.no_mesh else mesh
            base = _fit_eval(gt, cams, test_gt, test_cams, args.iters, None, args.seed, gt_mesh)
            reg = IPSMGeometryRegularizer(IPSMGeometryConfig(weight_geometry=args.weight,
                                                             every=args.every, seed=args.seed,
                                                             sigma_scale=args.sigma_scale))
            with_reg = _fit_eval(gt, cams, test_gt, test_cams, args.iters, reg, args.seed, gt_mesh)
            row = {"mesh": str(path), "views": n, "baseline": base, "ipsm_geometry": with_reg,
                   "psnr_gain": round(with_reg["psnr"] - base["psnr"], 3),
                   "time_ratio": round(with_reg["wall_s"] / max(base["wall_s"], 1e-9), 3)}
            variants = []
            if args.cross_view > 0:
                variants.append(("cross_view", dict(weight_geometry=0.0,
                                                    weight_cross_view=args.cross_view)))
                if args.weight > 0:  # both terms (the node with weight_geometry raised)
                    variants.append(("combined", dict(weight_geometry=args.weight,
                                                      weight_cross_view=args.cross_view,
                                                      every=args.every,
                                                      sigma_scale=args.sigma_scale)))
            for name, kw in variants:
                reg = IPSMGeometryRegularizer(IPSMGeometryConfig(seed=args.seed, **kw))
                xv = _fit_eval(gt, cams, test_gt, test_cams, args.iters, reg, args.seed, gt_mesh)
                row[name] = xv
                row[f"{name}_psnr_gain"] = round(xv["psnr"] - base["psnr"], 3)
                row[f"{name}_time_ratio"] = round(xv["wall_s"] / max(base["wall_s"], 1e-9), 3)
            results.append(row)
            if not args.json:
                print(json.dumps(row), file=sys.stderr)
    out = {"bench": "priors", "res": args.res, "iters": args.iters, "results": results,
           "mean_psnr_gain": (round(float(np.mean([r["psnr_gain"] for r in results])), 3)
                              if results else None),
           "max_time_ratio": max((r["time_ratio"] for r in results), default=None),
           "cross_view_weight": args.cross_view}
    for name in ("cross_view", "combined"):
        gains = [r[f"{name}_psnr_gain"] for r in results if f"{name}_psnr_gain" in r]
        out[f"mean_{name}_psnr_gain"] = round(float(np.mean(gains)), 3) if gains else None
        out[f"min_{name}_psnr_gain"] = min(gains, default=None)
        out[f"max_{name}_time_ratio"] = max((r[f"{name}_time_ratio"] for r in results
                                             if f"{name}_time_ratio" in r), default=None)
    out.update({
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "threads": torch.get_num_threads()})
    if args.diffusion_cost:
        out["diffusion_cost"] = diffusion_cost()
        out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
