"""3D Gaussian Splatting nodes: reconstruct, render, save and load 3D Gaussian scenes.

Scenes cross node boundaries as ``SPLAT`` (ComfyUI's own type since v0.33; a stand-in class with
the same attributes on older hosts), in the 3DGS splat frame, so core splat nodes (RenderSplat,
SplatToFile3D, SplatToMesh, TransformSplat, MergeSplat) take our scenes upright and ours take
theirs. Inside a node the scene is a :class:`..kernels.splat.gaussians.Gaussians` in OrbitForge's
y-up world; :mod:`.host.geometry` converts (frame map, SH rotation) at the boundary.
"""

from __future__ import annotations

import os

import torch

from ..kernels.geometry.cameras import Cameras, check_cameras_see_object
from ..kernels.priors.regularizers import IPSMGeometryRegularizer
from ..kernels.splat.fit import FitConfig, check_views, fit_gaussians, render_gaussians
from ..kernels.splat.frame import from_splat_frame, to_splat_frame
from ..kernels.splat.ply import read_ply, write_ply
from . import host
from .calibrate import CALIBRATE_CHOICES, CALIBRATE_TOOLTIP, calibrate_for_reconstruction
from .cameras import FIXED_SEED, parse_color, parse_floats
from .host import geometry

PLY_FRAMES = ["3dgs", "y-up"]  # LoadGaussians: the frame a PLY file's coordinates are in


def _check_cameras(cameras) -> Cameras:
    if not isinstance(cameras, Cameras):
        raise ValueError(f"cameras must be a CAMERAS value (from Orbit Cameras or an SV3D node), "
                         f"got {type(cameras).__name__}")
    return cameras


# The fit's inputs (Gaussian Reconstruct, required).
_FIT = {
    "views": ("IMAGE", {"tooltip": "The views (e.g. an SV3D orbit), one per camera."}),
    "cameras": ("CAMERAS", {"tooltip": "The cameras of the views, same order."}),
    "iterations": ("INT", {"default": 600, "min": 1, "max": 100000,
                   "tooltip": "Optimisation steps (one view each). 600 at 256² takes "
                   "a few minutes on a CPU, seconds on a GPU."}),
    "resolution": ("INT", {"default": 256, "min": 0, "max": 4096, "step": 8,
                   "tooltip": "Longest image side used for fitting; 0 = the views' own "
                   "size. Lower is faster."}),
    "sh_degree": ("INT", {"default": 1, "min": 0, "max": 3, "tooltip": "Spherical "
                  "harmonics degree of the colours: 0 = view-independent; 1 (default) "
                  "follows the slow drift of a generated orbit's appearance around the "
                  "object (held-out views of six SV3D orbits +0.05 to +0.19 dB over "
                  "0); up to 3 for shiny captures."}),
    "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1,
             "control_after_generate": FIXED_SEED,
             "tooltip": "Seed of the view order and densification."}),
}


# What the fit is held to besides the views (Gaussian Reconstruct, optional).
_TARGETS = {
    "mask": ("MASK", {"tooltip": "Object masks (1 = object) [B,H,W]. Without it the "
             "mask is every pixel that differs from the background colour. Note: "
             "LoadImage's MASK is 1 = transparent; invert it first."}),
    "background": ("STRING", {"default": "1, 1, 1", "tooltip": "Background colour "
                   "of the views as 'r, g, b' in 0..1 (SV3D orbits are on white)."}),
    "mask_weight": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 10.0, "step": 0.01,
                    "tooltip": "Weight of the alpha-vs-mask loss term (0 disables "
                    "it; raise it when the fit leaves floaters outside the object)."}),
    "view_weights": ("STRING", {"default": "", "tooltip": "Optional per-view loss "
                     "weights 'w0, w1, ...' (e.g. Diffusion² SSIM / 1-LPIPS "
                     "confidences); empty = all 1."}),
    "priors": ("RECON_PRIORS", {"tooltip": "Optional regularisers, e.g. from IPSM "
               "Geometry Priors (helps sparse views)."}),
}


# Robust reconstruction of generated orbits (Gaussian Reconstruct, optional).
_ROBUST = {
    "calibrate": (CALIBRATE_CHOICES, {"default": "auto", "tooltip":
                  CALIBRATE_TOOLTIP + " The Gaussians live in the calibrated "
                  "cameras' frame (Calibrate Orbit outputs those cameras)."}),
    "appearance": ("BOOLEAN", {"default": True, "tooltip": "Per-view colour "
                   "compensation: each view gets its own colour gains + biases "
                   "(generated views drift in exposure / white balance), estimated "
                   "during the fit and kept out of the saved scene, which keeps the "
                   "views' average colour."}),
    "robust_loss": ("BOOLEAN", {"default": True, "tooltip": "Truncate each view's "
                    "largest residuals (above its own 90th percentile) so details "
                    "that only one view shows do not pull the scene apart."}),
    "refine_cameras": ("BOOLEAN", {"default": False, "tooltip": "Fit small per-view "
                       "pose and focal corrections (pulled towards the given "
                       "cameras). For views whose cameras are slightly off; the "
                       "renders output uses the refined cameras."}),
}


class GaussianReconstruct:
    DESCRIPTION = (
        "Fits 3D Gaussians to views with known cameras (3D Gaussian Splatting). Starts from the "
        "masks' visual hull coloured from the views; L1 + D-SSIM + mask loss; densifies and "
        "prunes. Robust to generated views that disagree: per-view colour compensation and a "
        "truncated photometric loss (on by default), optional per-view camera refinement. Runs on "
        "the CPU in pure torch, and uses gsplat's CUDA rasteriser when available.")
    CATEGORY = "OrbitForge/3d"
    FUNCTION = "reconstruct"
    RETURN_TYPES = ("SPLAT", "IMAGE")
    RETURN_NAMES = ("gaussians", "renders")
    OUTPUT_TOOLTIPS = ("The fitted Gaussian scene as a SPLAT (feeds core splat nodes too).",
                       "The scene rendered from the training cameras, to compare with the views.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": dict(_FIT), "optional": {**_TARGETS, **_ROBUST}}

    def reconstruct(self, views, cameras, iterations, resolution, sh_degree, seed, mask=None,
                    background="1, 1, 1", mask_weight=0.1, view_weights="", priors=None,
                    calibrate="auto", appearance=True, robust_loss=True, refine_cameras=False):
        cams = _check_cameras(cameras)
        bg = parse_color(background)
        check_views(views, cams, mask)
        check_cameras_see_object(cams)
        cams = calibrate_for_reconstruction(views, mask, cams, calibrate, bg)
        weights = None
        if view_weights.strip():
            weights = torch.tensor(parse_floats(view_weights, "view_weights"))
            if weights.numel() != views.shape[0] or (weights < 0).any():
                raise ValueError(f"view_weights needs {views.shape[0]} non-negative numbers (one "
                                 f"per view), got {weights.tolist()}")
        regularizer = build_regularizer(priors, views.shape[0])
        cfg = FitConfig(iterations=iterations, resolution=resolution, sh_degree=sh_degree,
                        seed=seed, background=bg, lambda_mask=mask_weight,
                        appearance=bool(appearance), robust=bool(robust_loss),
                        refine_cameras=bool(refine_cameras))
        device = host.torch_device()
        bar = host.Progress(iterations)

        def progress(step, total, preview_fn):
            if step % 50 == 0 or step == total:
                bar.update(step, preview_fn())
            else:
                bar.update(step)

        res = fit_gaussians(views.to(device), cams.to(device),
                            None if mask is None else mask.to(device), cfg, weights=weights,
                            progress=progress, regularizer=regularizer)
        rcams = res.cameras if res.cameras is not None else cams
        # a few views per render call on the CPU, so that Cancel is seen between them
        rgb, _, _, _ = render_gaussians(res.gaussians, rcams.to(device), bg,
                                        chunk=8 if device.type == "cuda" else 2)
        out = host.intermediate_device()
        return (geometry.make_splat(res.gaussians.to(out)), rgb.to(out))


def build_regularizer(priors, n_views: int):
    """RECON_PRIORS (a dict of named prior settings) -> one ``regularizer`` callable, or None."""
    if priors is None:
        return None
    if not isinstance(priors, dict):
        raise ValueError(f"priors must come from a priors node (RECON_PRIORS), got "
                         f"{type(priors).__name__}")
    terms = []
    for name, spec in priors.items():
        if name == "ipsm_geometry":
            mono = spec["mono_depth"]
            if mono is not None and mono.shape[0] != n_views:
                raise ValueError(f"mono_depth has {mono.shape[0]} images but there are {n_views} "
                                 "views; give one depth per view")
            terms.append(IPSMGeometryRegularizer(spec["config"], mono, spec["mono_kind"]))
        elif name == "ipsm_diffusion":
            from .host import priors as host_priors  # noqa: PLC0415 - ComfyUI models

            terms.append(host_priors.build_ipsm_diffusion(spec))
        elif name == "sv3d_sds":
            from .host import priors as host_priors  # noqa: PLC0415 - ComfyUI models

            terms.append(host_priors.build_sv3d_sds(spec))
        else:
            raise ValueError(f"unknown prior {name!r} in RECON_PRIORS")
    if not terms:
        return None
    return lambda step, params, ctx: sum(t(step, params, ctx) for t in terms)


class GaussianRender:
    DESCRIPTION = ("Renders a SPLAT (ours or any core splat) from CAMERAS: colour IMAGE, alpha "
                   "MASK and depth (expected or median) as an IMAGE normalised per view (near = "
                   "white) plus raw depth values.")
    CATEGORY = "OrbitForge/3d"
    FUNCTION = "render"
    RETURN_TYPES = ("IMAGE", "MASK", "IMAGE")
    RETURN_NAMES = ("image", "alpha", "depth")
    OUTPUT_TOOLTIPS = ("Colour renders [B,H,W,3].", "Alpha (1 = covered) [B,H,W].",
                       "Depth as a grey IMAGE, min-max normalised per view over covered pixels, "
                       "near = bright (what depth-conditioned models expect).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "gaussians": ("SPLAT", {"tooltip": "The scene to render (one SPLAT scene: from "
                          "Gaussian Reconstruct, Get Splat, TripoSplat, ...)."}),
            "cameras": ("CAMERAS", {"tooltip": "Where to render from (their image size is used)."}),
            "depth_mode": (["median", "expected"], {"default": "median", "tooltip": "median: "
                           "depth where accumulated alpha reaches 0.5 (sharp, best for meshing); "
                           "expected: alpha-weighted mean depth."}),
            "background": ("STRING", {"default": "1, 1, 1", "tooltip": "Background 'r, g, b'."}),
        }}

    def render(self, gaussians, cameras, depth_mode, background):
        cams = _check_cameras(cameras)
        g = geometry.read_splat(gaussians, "gaussians")
        dev = host.torch_device()
        rgb, alpha, depth, median = render_gaussians(g.to(dev), cams.to(dev),
                                                     parse_color(background))
        d = (median if depth_mode == "median" else depth)[..., 0]
        out = host.intermediate_device()
        return (rgb.to(out), alpha[..., 0].to(out), depth_to_image(d, alpha[..., 0]).to(out))


def depth_to_image(depth: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """[B,H,W] metric depth -> [B,H,W,3] grey, min-max per view over covered pixels, near = 1."""
    out = torch.zeros_like(depth)
    for i in range(depth.shape[0]):
        m = (alpha[i] > 0.5) & (depth[i] > 0)
        if m.any():
            lo, hi = depth[i][m].min(), depth[i][m].max()
            out[i] = torch.where(m, 1 - (depth[i] - lo) / (hi - lo).clamp_min(1e-8), 0.0)
    return out[..., None].expand(-1, -1, -1, 3).contiguous()


class SaveGaussians:
    DESCRIPTION = ("Saves a SPLAT as a standard 3DGS .ply (the 3DGS y-down frame, full SH: opens "
                   "upright in common splat viewers and core Get Splat) into the output folder, "
                   "written atomically; also outputs the file for Preview Splat / Get Splat.")
    CATEGORY = "OrbitForge/3d"
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "FILE_3D_PLY")
    RETURN_NAMES = ("path", "model_3d")
    OUTPUT_TOOLTIPS = ("Path of the written file, relative to the output folder.",
                       "The written .ply as a 3D file (core Preview Splat, Get Splat, Save 3D).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "gaussians": ("SPLAT", {"tooltip": "The scene to save (one SPLAT scene)."}),
            "filename_prefix": ("STRING", {"default": "orbitforge/splat", "tooltip": "File name "
                                "prefix inside the output folder; a counter is appended."}),
        }}

    def save(self, gaussians, filename_prefix):
        g = geometry.read_splat(gaussians, "gaussians")
        rel = next_output_path(filename_prefix, ".ply")
        full = os.path.join(host.output_directory(), rel)
        write_ply(full, to_splat_frame(g))  # files are in the 3DGS frame, as every splat tool
        sub, name = os.path.split(rel)
        return {"ui": {"3d": [{"filename": name, "subfolder": sub, "type": "output"}]},
                "result": (rel, geometry.make_file3d(full))}


def next_output_path(prefix: str, ext: str) -> str:
    """``prefix_00001.ext`` relative to the output folder, the first free counter."""
    folder, sub, base = host.prepare_output_folder(prefix)
    i = 1
    while os.path.exists(os.path.join(folder, f"{base}_{i:05d}{ext}")):
        i += 1
    return os.path.join(sub, f"{base}_{i:05d}{ext}")


class LoadGaussians:
    DESCRIPTION = ("Loads a standard 3DGS .ply (from the output folder, or an absolute path) as a "
                   "SPLAT. Refuses truncated or foreign PLY files with a clear error.")
    CATEGORY = "OrbitForge/3d"
    FUNCTION = "load"
    RETURN_TYPES = ("SPLAT",)
    RETURN_NAMES = ("gaussians",)
    OUTPUT_TOOLTIPS = ("The loaded scene.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "path": ("STRING", {"default": "orbitforge/splat_00001.ply", "tooltip": "A .ply path: "
                     "absolute, or relative to the output folder."}),
        }, "optional": {
            "file_frame": (PLY_FRAMES, {"default": PLY_FRAMES[0], "tooltip": "3dgs: the standard "
                           "3DGS frame (y down) of splat tools, core and OrbitForge >= 0.2; "
                           "y-up: PLYs saved by OrbitForge 0.1 (they would load upside down)."}),
        }}

    def load(self, path, file_frame=None):
        file_frame = file_frame or PLY_FRAMES[0]
        if file_frame not in PLY_FRAMES:
            raise ValueError(f"file_frame must be one of {PLY_FRAMES}, got {file_frame!r}")
        full = path if os.path.isabs(path) else os.path.join(host.output_directory(), path)
        g = read_ply(full)
        if file_frame == PLY_FRAMES[0]:
            g = from_splat_frame(g)
        return (geometry.make_splat(g),)



NODE_CLASS_MAPPINGS = {
    "OrbitForgeGaussianReconstruct": GaussianReconstruct,
    "OrbitForgeGaussianRender": GaussianRender,
    "OrbitForgeSaveGaussians": SaveGaussians,
    "OrbitForgeLoadGaussians": LoadGaussians,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "OrbitForgeGaussianReconstruct": "Gaussian Reconstruct (OrbitForge)",
    "OrbitForgeGaussianRender": "Gaussian Render (OrbitForge)",
    "OrbitForgeSaveGaussians": "Save Gaussians PLY (OrbitForge)",
    "OrbitForgeLoadGaussians": "Load Gaussians PLY (OrbitForge)",
}
