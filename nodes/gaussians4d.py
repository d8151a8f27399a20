"""4D Gaussian nodes: V·F frames + CAMERAS -> GAUSSIANS_SEQUENCE (+ turntable, PLY sequence)."""

from __future__ import annotations

import os

import torch

from ..kernels.dynamic.fit4d import (
    FRAME_ORDER,
    Fit4DConfig,
    GaussianSequence,
    check_sequence,
    fit_sequence,
    render_turntable,
    sequence_paths,
    write_ply_sequence,
)
from ..kernels.geometry.cameras import check_cameras_see_object
from ..kernels.splat.fit import FitConfig
from ..kernels.splat.frame import to_splat_frame
from . import host
from .cameras import parse_color
from .gaussians import _FIT, _check_cameras
from .host import geometry


def _parse_weights(text: str, views: int, times: int):
    if not text.strip():
        return None
    try:
        w = torch.tensor([float(x) for x in text.replace("\n", ",").split(",") if x.strip()])
    except ValueError:
        raise ValueError(f"image_weights must be comma-separated numbers, got {text!r}") from None
    if w.numel() == views and times > 1:  # one weight per view, shared by every time step
        w = w.repeat_interleave(times)
    if w.numel() != views * times or (w < 0).any() or not torch.isfinite(w).all():
        raise ValueError(f"image_weights needs {views} (one per view) or {views * times} (one per "
                         f"image, view-major) non-negative numbers, got {w.numel()}")
    return w


def sequence_output_paths(prefix: str, times: int):
    """(folder, base) for the first free ``<prefix>_<counter>_t000.ply`` run in the output
    folder."""
    folder, sub, base = host.prepare_output_folder(prefix)
    names = set(os.listdir(folder))
    i = 1
    while any(n.startswith(f"{base}_{i:05d}_t") for n in names):
        i += 1
    return folder, sub, f"{base}_{i:05d}"


# The sequence and its fit (4D Gaussian Reconstruct, required).
_SEQUENCE = {
    "views": ("IMAGE", {"tooltip": "V·F frames in view-major order: all F times of "
              "view 0, then all F times of view 1, ... (what the Diffusion² sampler "
              "outputs)."}),
    "cameras": ("CAMERAS", {"tooltip": "The V cameras of the orbit, shared by every "
                "time step, in view order."}),
    "frames_per_view": ("INT", {"default": 5, "min": 1, "max": 1000, "tooltip":
                        "F, the number of time steps; the views must hold "
                        "V·F images."}),
    "iterations": ("INT", {"default": 1000, "min": 1, "max": 100000, "tooltip":
                   "Optimisation steps for time 0 (a full 3DGS fit)."}),
    "warm_iterations": ("INT", {"default": 300, "min": 1, "max": 100000, "tooltip":
                        "Optimisation steps for each later time step, started from "
                        "the previous time's Gaussians."}),
    "temporal_weight": ("FLOAT", {"default": 0.02, "min": 0.0, "max": 1000.0,
                        "step": 0.01, "tooltip": "Weight of the smoothness term that "
                        "pulls positions, colours and opacities toward the previous "
                        "time step (0 = off; raise it against flicker, lower it for "
                        "fast motion)."}),
    "confidence": (["none", "ssim"], {"default": "none", "tooltip": "ssim: weight "
                   "each image's loss by SSIM(image, render of the warm-start scene) "
                   "(Diffusion²'s C_ssim), down-weighting inconsistent generated "
                   "frames. (1 - LPIPS needs a network not available offline; give "
                   "it through image_weights.)"}),
}


# The per-time 3DGS fit and the output (4D Gaussian Reconstruct, required).
_FIT_4D = {
    "resolution": _FIT["resolution"],  # the per-time fit is Gaussian Reconstruct's
    "sh_degree": ("INT", {"default": 0, "min": 0, "max": 3, "tooltip": "Spherical "
                  "harmonics degree of the colours (0 = view-independent)."}),
    "seed": _FIT["seed"],
    "filename_prefix": ("STRING", {"default": "orbitforge/4d/seq", "tooltip":
                        "PLY sequence prefix inside the output folder; a run counter "
                        "and _t000, _t001, ... are appended."}),
}


# Optional inputs of 4D Gaussian Reconstruct.
_TARGETS_4D = {
    "mask": ("MASK", {"tooltip": "Object masks (1 = object) [V·F,H,W], same order as "
             "the views. Without it: pixels that differ from the background."}),
    "background": ("STRING", {"default": "1, 1, 1", "tooltip": "Background colour "
                   "of the views as 'r, g, b' in 0..1."}),
    "mask_weight": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 10.0, "step": 0.01,
                    "tooltip": "Weight of the alpha-vs-mask loss term."}),
    "warm_lr_scale": ("FLOAT", {"default": 5.0, "min": 0.01, "max": 100.0,
                      "step": 0.1, "tooltip": "Learning-rate multiplier of the later "
                      "time steps (positions, colours, opacities): higher follows "
                      "faster motion in few warm iterations, too high gets noisy."}),
    "image_weights": ("STRING", {"default": "", "tooltip": "Optional loss weights: V "
                      "numbers (one per view) or V·F (one per image, view-major), "
                      "e.g. 1 - LPIPS confidences; multiplied with the SSIM "
                      "confidence. Empty = all 1."}),
}


class Gaussian4DReconstruct:
    DESCRIPTION = (
        "Fits a sequence of 3D Gaussian scenes (one per time step) to V·F frames of a moving "
        "object seen by V orbit cameras (e.g. a Diffusion² matrix). Frames are VIEW-MAJOR: image "
        "v·F + f is view v at time f. Time 0 gets the full 3DGS fit; each later time starts from "
        "the previous one (warm start, no densification) with a temporal smoothness term. "
        "Optional Diffusion² SSIM confidence weighting. Saves a numbered PLY sequence "
        "(<prefix>_<n>_t000.ply, ...) only after the whole fit succeeded.")
    CATEGORY = "OrbitForge/4d"
    FUNCTION = "reconstruct"
    OUTPUT_NODE = True
    RETURN_TYPES = ("GAUSSIANS_SEQUENCE", "IMAGE", "STRING")
    RETURN_NAMES = ("sequence", "turntable", "paths")
    OUTPUT_TOOLTIPS = (
        "The fitted scenes, one per time step, with their times.",
        ("Turntable animation: frame f is time step f seen from a camera that circles the object "
         "once over the sequence, at the views' resolution."),
        ("The written PLY files (relative to the output folder), one per line."))

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {**_SEQUENCE, **_FIT_4D}, "optional": dict(_TARGETS_4D)}

    def reconstruct(self, views, cameras, frames_per_view, iterations, warm_iterations,
                    temporal_weight, confidence, resolution, sh_degree, seed, filename_prefix,
                    mask=None, background="1, 1, 1", mask_weight=0.1, warm_lr_scale=5.0,
                    image_weights=""):
        cams = _check_cameras(cameras)
        bg = parse_color(background)
        times = int(frames_per_view)
        check_sequence(views, cams, times, mask, None, bg)
        check_cameras_see_object(cams)
        weights = _parse_weights(image_weights, len(cams), times)
        cfg = Fit4DConfig(  # validates itself
            base=FitConfig(iterations=iterations, resolution=resolution, sh_degree=sh_degree,
                           seed=seed, background=bg, lambda_mask=mask_weight),
            warm_iterations=warm_iterations, temporal_weight=temporal_weight,
            confidence=confidence, warm_lr_scale=warm_lr_scale)
        folder, sub, base = sequence_output_paths(filename_prefix, times)
        device = host.torch_device()
        res = fit_sequence(views.to(device), cams.to(device),
                           times, None if mask is None else mask.to(device), cfg,
                           weights=weights, progress=host.kernel_progress(preview_every=50))
        h, w = views.shape[1:3]
        turntable = render_turntable(res.sequence, cams.resized(w, h).to(device), bg)
        host.check_interrupt()
        # everything succeeded: now write all files (all or nothing)
        in_file_frame = GaussianSequence([to_splat_frame(g) for g in res.sequence.gaussians],
                                         res.sequence.times)  # PLYs are in the 3DGS frame
        paths = write_ply_sequence(sequence_paths(folder, base, times), in_file_frame)
        rel = [os.path.join(sub, os.path.basename(p)) for p in paths]
        return (res.sequence, turntable.to(host.intermediate_device()), "\n".join(rel))


class GaussianSequenceFrame:
    DESCRIPTION = ("Picks one time step of a GAUSSIANS_SEQUENCE as a SPLAT (to render, save or "
                   "mesh it with our 3D nodes or core splat nodes).")
    CATEGORY = "OrbitForge/4d"
    FUNCTION = "pick"
    RETURN_TYPES = ("SPLAT",)
    RETURN_NAMES = ("gaussians",)
    OUTPUT_TOOLTIPS = ("The scene of the chosen time step.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "sequence": ("GAUSSIANS_SEQUENCE", {"tooltip": "A fitted 4D sequence."}),
            "time_step": ("INT", {"default": 0, "min": 0, "max": 100000, "tooltip": "Which time "
                          "step (0 = first)."}),
        }}

    def pick(self, sequence, time_step):
        if not isinstance(sequence, GaussianSequence):
            raise ValueError(f"sequence must be GAUSSIANS_SEQUENCE, got {type(sequence).__name__}")
        if not 0 <= time_step < len(sequence):
            raise ValueError(f"time_step {time_step} is outside the sequence's {len(sequence)} "
                             f"time steps (0..{len(sequence) - 1})")
        return (geometry.make_splat(sequence[time_step]),)


assert FRAME_ORDER == "view-major"  # the node's docs above describe this order

NODE_CLASS_MAPPINGS = {
    "OrbitForgeGaussian4DReconstruct": Gaussian4DReconstruct,
    "OrbitForgeGaussianSequenceFrame": GaussianSequenceFrame,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "OrbitForgeGaussian4DReconstruct": "Gaussian 4D Reconstruct (OrbitForge)",
    "OrbitForgeGaussianSequenceFrame": "Gaussian Sequence Frame (OrbitForge)",
}
