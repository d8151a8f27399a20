"""``python -m orbitforge.bench core [--json]``: OrbitForge beside ComfyUI core's splat nodes.

Needs a ComfyUI >= v0.33 checkout in ``--comfyui`` or ``$COMFYUI_PATH`` (imported in CPU mode; the
torchvision/torchaudio stand-ins of :mod:`.host_stubs` are used where those do not import).

1. Fit 3D Gaussians to an orbit of the bundled spot mesh (ground-truth renders and masks).
2. (a) Render the fitted splat at ``--render-size``² from one held-out camera with our rasteriser
   and with core ``RenderSplat`` (same camera as a ``camera_info``, white background,
   ``sharpen`` 1 = physically blended): time of each, PSNR between them. The gap is split by
   cause: ours re-rendered with core's choices one at a time (:func:`like_with_like`), and core
   with 256 depth slabs (:func:`finer_core_slabs`); plus each image's mean coverage.
3. (b) A mesh from the same splat: our SDF Mesh (gaussians + the views) vs core ``SplatToMesh``:
   chamfer, volume IoU and F-score against the ground-truth mesh, and time.
4. (c) Our Save Gaussians PLY -> core ``File3DToSplat`` -> ``RenderSplat`` against core's render
   of our SPLAT itself (the file path is lossless) and against our own render.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import tempfile
import time
import types

import torch


def load_host(path: str):
    """Import ComfyUI (CPU) and its splat nodes module."""
    from .host_stubs import import_comfyui

    import_comfyui(path, keep_stubs=True)
    try:
        return importlib.import_module("comfy_extras.nodes_gaussian_splat")
    except ImportError as e:
        raise ValueError(f"ComfyUI at {path} has no splat nodes (needs v0.33 or newer): "
                         f"{e}") from None


def log(msg: str) -> None:
    print(f"[bench core {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_node(node_cls, **kwargs):
    out = node_cls.PREPARE_CLASS_CLONE({"hidden_inputs": {}}).execute(**kwargs)
    return out.args


def like_with_like(g, view, core_img: torch.Tensor) -> dict:
    """PSNR of core's render against ours as we adopt core ``RenderSplat``'s choices one by one
    (cumulative), so the gap splits into its causes. Ours follows the 3DGS reference rasteriser
    (Kerbl et al. 2023, graphdeco-inria/diff-gaussian-rasterization; gsplat): full SH, pixel
    centres at ``j + 0.5`` around a principal point at the image centre, colours blended as
    given (the space the splat was fitted in), EWA footprint + 0.3 px^2 dilation. Core's
    choices (``comfy_extras/nodes_gaussian_splat.py``, v0.33):

    * ``sh0``: base colour only (``_gaussian_item`` reads the SH DC term);
    * ``pixel_grid``: pixel ``j`` samples the ray through ``j - W/2`` (half a pixel off ours);
    * ``linear_light``: colours and background blended in linear light, re-encoded to sRGB.

    What stays is core's own kernel (each splat weighted by its 3D Gaussian's peak along the
    pixel ray, no dilation, alpha up to 0.999, no 1/255 cut-off) and its depth-slab compositing
    (alpha-weighted mean inside each slab).
    """
    import torch.nn.functional as F

    from ..kernels.mesh.gltf import linear_to_srgb, srgb_to_linear
    from ..kernels.metrics import psnr
    from ..kernels.splat.gaussians import sh0_to_rgb
    from ..kernels.splat.rasterize import rasterize

    rgb = sh0_to_rgb(g.sh[:, 0]).clamp(0, 1)  # [N, 3]
    Ks = view.Ks.clone()
    shifted = Ks.clone()
    shifted[:, 0, 2] += 0.5
    shifted[:, 1, 2] += 0.5
    white = torch.ones(1, 3, dtype=rgb.dtype)

    def render(colors, ks, linear=False):
        with torch.no_grad():
            out = rasterize(g.means, F.normalize(g.quats, dim=-1), g.scales, g.opacities,
                            srgb_to_linear(colors) if linear else colors, view.viewmats, ks,
                            view.width, view.height, backgrounds=white, backend="torch")
        img = out.rgb.clamp(0, 1)
        return linear_to_srgb(img) if linear else img

    steps = {"sh0": render(rgb, Ks), "sh0+pixel_grid": render(rgb, shifted),
             "sh0+pixel_grid+linear_light": render(rgb, shifted, linear=True)}
    return {k: float(psnr(core_img, v)) for k, v in steps.items()}


@contextlib.contextmanager
def finer_core_slabs(gs):
    """Diagnostic: core's ``_render_gaussian`` with 256 depth slabs instead of one per ~1000
    splats, i.e. close to per-splat depth order (its slab count is ``min(256, n // 1000)``; the
    1000 is swapped for 1 in a copy of the function, core's files are untouched). Yields False
    when this core's renderer does not have that constant."""
    f = getattr(gs, "_render_gaussian", None)
    code = getattr(f, "__code__", None)
    if code is None or 1000 not in code.co_consts or 256 not in code.co_consts:
        yield False
        return
    consts = tuple(1 if c == 1000 else c for c in code.co_consts)
    gs._render_gaussian = types.FunctionType(code.replace(co_consts=consts), f.__globals__,
                                             f.__name__, f.__defaults__, f.__closure__)
    try:
        yield True
    finally:
        gs._render_gaussian = f


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orbitforge.bench core", description=__doc__)
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"))
    ap.add_argument("--views", type=int, default=21)
    ap.add_argument("--res", type=int, default=128, help="fit resolution")
    ap.add_argument("--iters", type=int, default=600)
    ap.add_argument("--render-size", type=int, default=512)
    ap.add_argument("--mesh-res", type=int, default=128, help="our SDF Mesh grid")
    ap.add_argument("--core-mesh-res", type=int, default=256, help="core SplatToMesh grid")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=None, help="folder for a PNG: ours | core | core via PLY")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not args.comfyui:
        raise ValueError("no ComfyUI: pass --comfyui PATH or set COMFYUI_PATH")
    if args.threads:
        torch.set_num_threads(args.threads)
    gs = load_host(args.comfyui)

    from ..kernels.geometry.cameras import interpolate_orbit, make_orbit_cameras, sv3d_static_orbit
    from ..kernels.mesh.core_mesh import mesh_items
    from ..kernels.mesh.render import load_mesh, normalize_mesh, render_mesh
    from ..kernels.metrics import evaluate_mesh, psnr
    from ..kernels.sample import spot_mesh_path
    from ..kernels.splat.fit import FitConfig, fit_gaussians, render_gaussians
    from ..nodes.gaussians import SaveGaussians
    from ..nodes.host import geometry
    from ..nodes.mesh import SDFMesh

    gt_mesh, _, _ = normalize_mesh(load_mesh(spot_mesh_path()))
    el, az = sv3d_static_orbit(10.0, args.views)
    cams = make_orbit_cameras(el, az, 2.2, 33.8, args.res, args.res)
    gt = render_mesh(gt_mesh, cams, ss=2)
    log(f"ground truth rendered; fitting {args.iters} steps")
    t = time.perf_counter()
    fit = fit_gaussians(gt["rgb"], cams, gt["mask"], FitConfig(iterations=args.iters, seed=0))
    fit_s = time.perf_counter() - t
    g = fit.gaussians.detach()
    splat = geometry.make_splat(g)
    log(f"fit: {len(g)} Gaussians in {fit_s:.1f} s; rendering {args.render_size}^2")

    # (a) one held-out view at render_size^2, both renderers
    s = args.render_size
    view = interpolate_orbit(make_orbit_cameras(el, az, 2.2, 33.8, s, s), 1)[1:2]
    eye = view.centers[0].tolist()
    cam_info = gs._lookat_camera_info(eye, [0.0, 0.0, 0.0], float(view.fov[0]),
                                      torch.device("cpu"))
    render_gaussians(g, view, backend="torch")  # warm-up
    t = time.perf_counter()
    ours, ours_alpha, _, _ = render_gaussians(g, view, backend="torch")
    ours_s = time.perf_counter() - t
    core_kw = dict(width=s, height=s, frames=1, splat_scale=1.0, sharpen=1.0,
                   headlight_shading=0.0, opacity_threshold=0.0, background="#ffffff",
                   render_style="color", camera_info=cam_info)
    t = time.perf_counter()
    core_img, core_mask = run_node(gs.RenderSplat, splat=splat, **core_kw)
    core_s = time.perf_counter() - t
    psnr_a = float(psnr(core_img.float(), ours))
    log(f"render: ours {ours_s:.2f} s, core {core_s:.2f} s, PSNR {psnr_a:.2f}")
    steps = like_with_like(g, view, core_img.float())
    log("ours with core's choices, cumulative: "
        + ", ".join(f"{k} {v:.2f} dB" for k, v in steps.items()))
    fine = None
    with finer_core_slabs(gs) as patched:
        if patched:
            fine_img, _ = run_node(gs.RenderSplat, splat=splat, **core_kw)
            fine_img = fine_img.float()
            fine = {"psnr_vs_core": round(float(psnr(fine_img, core_img.float())), 2),
                    "psnr_vs_ours": round(float(psnr(fine_img, ours)), 2),
                    "psnr_vs_ours_with_core_choices": {
                        k: round(v, 2) for k, v in like_with_like(g, view, fine_img).items()}}
            log(f"core with 256 depth slabs: {fine}")

    # (c) our PLY through core's file reader
    with tempfile.TemporaryDirectory() as out_dir:
        os.environ["ORBITFORGE_OUTPUT"] = out_dir
        _, f3d = SaveGaussians().save(splat, "bench/core")["result"]
        loaded = run_node(gs.File3DToSplat, model_3d=f3d)[0]
        via_file, _ = run_node(gs.RenderSplat, splat=loaded, **core_kw)
    psnr_c_core = float(psnr(via_file.float(), core_img.float()))
    if args.out:
        from PIL import Image

        os.makedirs(args.out, exist_ok=True)
        row = torch.cat([ours[0], core_img[0].float(), via_file[0].float()], 1)
        Image.fromarray((row.clamp(0, 1) * 255).round().byte().numpy()).save(
            os.path.join(args.out, "core_render.png"))
    psnr_c_ours = float(psnr(via_file.float(), ours))

    log(f"PLY path: {psnr_c_core:.2f} dB vs core direct; meshing")
    # (b) meshes from the same splat
    t = time.perf_counter()
    with torch.inference_mode():
        (our_mesh,) = SDFMesh().build(cams, args.mesh_res, "fast", 1, True, 50000, 5, "vertex",
                                      1024, images=gt["rgb"], masks=gt["mask"], gaussians=splat)
    our_mesh_s = time.perf_counter() - t
    log(f"our mesh {our_mesh_s:.1f} s; core SplatToMesh at {args.core_mesh_res}")
    t = time.perf_counter()
    (core_mesh,) = run_node(gs.SplatToMesh, splat=splat, resolution=args.core_mesh_res, kernel=5,
                            smooth=0, level=0.4, min_component=500, min_opacity=0.02,
                            color_sharpen=2.0)
    core_mesh_s = time.perf_counter() - t
    log(f"core mesh {core_mesh_s:.1f} s; evaluating")
    q_ours = evaluate_mesh(mesh_items(our_mesh)[0].to_trimesh(), gt_mesh)
    q_core = evaluate_mesh(mesh_items(core_mesh)[0].to_trimesh(), gt_mesh)

    def pick(q):
        return {k: round(float(q[k]), 4) for k in ("chamfer", "iou", "fscore_001")}

    out = {
        "bench": "core", "comfyui": os.path.abspath(args.comfyui),
        "fit": {"views": args.views, "res": args.res, "iters": args.iters,
                "gaussians": len(g), "wall_s": round(fit_s, 1)},
        "render": {"size": s, "ours_s": round(ours_s, 3), "core_s": round(core_s, 3),
                   "psnr_core_vs_ours": round(psnr_a, 2),
                   "psnr_core_vs_ours_with_core_choices": {k: round(v, 2)
                                                           for k, v in steps.items()},
                   "core_256_slabs": fine,
                   "coverage": {"ours": round(float(ours_alpha.mean()), 4),
                                "core": round(float(core_mask.float().mean()), 4)}},
        "mesh": {"ours": {**pick(q_ours), "resolution": args.mesh_res,
                          "wall_s": round(our_mesh_s, 1)},
                 "core": {**pick(q_core), "resolution": args.core_mesh_res,
                          "wall_s": round(core_mesh_s, 1)}},
        "ply_roundtrip": {"psnr_vs_core_direct": round(min(psnr_c_core, 99.0), 2),
                          "psnr_vs_ours": round(psnr_c_ours, 2)},
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
