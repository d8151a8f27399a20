"""3D Gaussian Splatting nodes: reconstruct, render, save and load GAUSSIANS."""

from __future__ import annotations

import os

import torch

from ..kernels.cameras import Cameras, check_cameras_see_object
from ..kernels.fit import FitConfig, check_views, fit_gaussians, render_gaussians
from ..kernels.gaussians import Gaussians
from ..kernels.ply import read_ply, write_ply
from ..kernels.priors import IPSMGeometryRegularizer
from . import host
from .cameras import parse_floats


def _check_cameras(cameras) -> Cameras:
    if not isinstance(cameras, Cameras):
        raise ValueError(f"cameras must be a CAMERAS value (from Orbit Cameras or an SV3D node), "
                         f"got {type(cameras).__name__}")
    return cameras


def _parse_color(text: str):
    try:
        vals = parse_floats(text, "background")
    except ValueError:
        vals = []
    if len(vals) != 3 or not all(0 <= v <= 1 for v in vals):
        raise ValueError(f"background must be three numbers in 0..1 like '1, 1, 1', got {text!r}")
    return tuple(vals)


class GaussianReconstruct:
    DESCRIPTION = (
        "Fits 3D Gaussians to views with known cameras (3D Gaussian Splatting). Starts from the "
        "masks' visual hull coloured from the views; L1 + D-SSIM + mask loss; densifies and prunes. "
        "Runs on the CPU in pure torch, and uses gsplat's CUDA rasteriser when available.")
    CATEGORY = "OrbitForge/3d"
    FUNCTION = "reconstruct"
    RETURN_TYPES = ("GAUSSIANS", "IMAGE")
    RETURN_NAMES = ("gaussians", "renders")
    OUTPUT_TOOLTIPS = ("The fitted Gaussian scene.",
                       "The scene rendered from the training cameras, to compare with the views.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "views": ("IMAGE", {"tooltip": "The views (e.g. an SV3D orbit), one per camera."}),
                "cameras": ("CAMERAS", {"tooltip": "The cameras of the views, same order."}),
                "iterations": ("INT", {"default": 600, "min": 1, "max": 100000,
                               "tooltip": "Optimisation steps (one view each). 600 at 256² takes "
                               "a few minutes on a CPU, seconds on a GPU."}),
                "resolution": ("INT", {"default": 256, "min": 0, "max": 4096, "step": 8,
                               "tooltip": "Longest image side used for fitting; 0 = the views' own "
                               "size. Lower is faster."}),
                "sh_degree": ("INT", {"default": 0, "min": 0, "max": 3, "tooltip": "Spherical "
                              "harmonics degree of the colours: 0 = view-independent (best for "
                              "generated orbits), up to 3 for shiny captures."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1,
                         "tooltip": "Seed of the view order and densification."}),
            },
            "optional": {
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
            },
        }

    def reconstruct(self, views, cameras, iterations, resolution, sh_degree, seed, mask=None,
                    background="1, 1, 1", mask_weight=0.1, view_weights="", priors=None):
        cams = _check_cameras(cameras)
        bg = _parse_color(background)
        check_views(views, cams, mask)
        check_cameras_see_object(cams)
        weights = None
        if view_weights.strip():
            weights = torch.tensor(parse_floats(view_weights, "view_weights"))
            if weights.numel() != views.shape[0] or (weights < 0).any():
                raise ValueError(f"view_weights needs {views.shape[0]} non-negative numbers (one "
                                 f"per view), got {weights.tolist()}")
        regularizer = build_regularizer(priors, views.shape[0])
        cfg = FitConfig(iterations=iterations, resolution=resolution, sh_degree=sh_degree,
                        seed=seed, background=bg, lambda_mask=mask_weight)
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
        # a few views per render call on the CPU, so that Cancel is seen between them
        rgb, _, _, _ = render_gaussians(res.gaussians, cams.to(device), bg,
                                        chunk=8 if device.type == "cuda" else 2)
        return (res.gaussians, rgb.to(host.intermediate_device()))


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
    DESCRIPTION = ("Renders GAUSSIANS from CAMERAS: colour IMAGE, alpha MASK and depth (expected or "
                   "median) as an IMAGE normalised per view (near = white) plus raw depth values.")
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
            "gaussians": ("GAUSSIANS", {"tooltip": "The scene to render."}),
            "cameras": ("CAMERAS", {"tooltip": "Where to render from (their image size is used)."}),
            "depth_mode": (["median", "expected"], {"default": "median", "tooltip": "median: "
                           "depth where accumulated alpha reaches 0.5 (sharp, best for meshing); "
                           "expected: alpha-weighted mean depth."}),
            "background": ("STRING", {"default": "1, 1, 1", "tooltip": "Background 'r, g, b'."}),
        }}

    def render(self, gaussians, cameras, depth_mode, background):
        cams = _check_cameras(cameras)
        if not isinstance(gaussians, Gaussians):
            raise ValueError(f"gaussians must be GAUSSIANS, got {type(gaussians).__name__}")
        dev = host.torch_device()
        rgb, alpha, depth, median = render_gaussians(gaussians.to(dev), cams.to(dev),
                                                     _parse_color(background))
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
    DESCRIPTION = ("Saves GAUSSIANS as a standard 3DGS .ply (opens in common splat viewers) into "
                   "the output folder, written atomically.")
    CATEGORY = "OrbitForge/3d"
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    OUTPUT_TOOLTIPS = ("Path of the written file, relative to the output folder.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "gaussians": ("GAUSSIANS", {"tooltip": "The scene to save."}),
            "filename_prefix": ("STRING", {"default": "orbitforge/splat", "tooltip": "File name "
                                "prefix inside the output folder; a counter is appended."}),
        }}

    def save(self, gaussians, filename_prefix):
        if not isinstance(gaussians, Gaussians):
            raise ValueError(f"gaussians must be GAUSSIANS, got {type(gaussians).__name__}")
        rel = next_output_path(filename_prefix, ".ply")
        full = os.path.join(host.output_directory(), rel)
        write_ply(full, gaussians)
        sub, name = os.path.split(rel)
        return {"ui": {"3d": [{"filename": name, "subfolder": sub, "type": "output"}]},
                "result": (rel,)}


def next_output_path(prefix: str, ext: str) -> str:
    """``prefix_00001.ext`` relative to the output folder, the first free counter."""
    folder, sub, base = host.prepare_output_folder(prefix)
    i = 1
    while os.path.exists(os.path.join(folder, f"{base}_{i:05d}{ext}")):
        i += 1
    return os.path.join(sub, f"{base}_{i:05d}{ext}")


class LoadGaussians:
    DESCRIPTION = ("Loads a standard 3DGS .ply (from the output or input folder, or an absolute "
                   "path). Refuses truncated or foreign PLY files with a clear error.")
    CATEGORY = "OrbitForge/3d"
    FUNCTION = "load"
    RETURN_TYPES = ("GAUSSIANS",)
    RETURN_NAMES = ("gaussians",)
    OUTPUT_TOOLTIPS = ("The loaded scene.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "path": ("STRING", {"default": "orbitforge/splat_00001.ply", "tooltip": "A .ply path: "
                     "absolute, or relative to the output folder."}),
        }}

    def load(self, path):
        full = path if os.path.isabs(path) else os.path.join(host.output_directory(), path)
        return (read_ply(full),)


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
