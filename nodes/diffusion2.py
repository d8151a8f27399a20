"""Diffusion² matrix sampler node: image, video or static orbit -> V views x F frames."""

from __future__ import annotations

import logging

import torch

from ..kernels.diffusion.sv3d import prepare_input_image
from ..kernels.dynamic.diffusion2 import (
    MAX_VIDEO_FRAMES,
    PROMPTS,
    MatrixSettings,
    check_prompt,
    frame_times,
    lambda_schedule,
    view_weights,
    view_weights_from_azimuths,
)
from ..kernels.geometry.cameras import (
    DEFAULT_RADIUS,
    SV3D_FOV_DEG,
    make_orbit_cameras,
    orbit_angles,
)
from . import host

log = logging.getLogger("orbitforge")

LAMBDA_CHOICES = ["constant", "logistic_code", "logistic_paper", "logistic", "linear", "cosine"]


def _tip(t):
    return {"tooltip": t}


def lambda_for(kind: str, steps: int, value: float, k: float):
    """Resolve the node's schedule choice: logistic_code = s0 0.6 / k 15, logistic_paper =
    s0 0.5 / k 20, logistic = s0 ``value`` / ``k``."""
    if kind == "logistic_code":
        return lambda_schedule(steps, "logistic", value=0.6, k=15.0)
    if kind == "logistic_paper":
        return lambda_schedule(steps, "logistic", value=0.5, k=20.0)
    return lambda_schedule(steps, kind, value=value, k=k)


def _prepare_batch(images: torch.Tensor, size: int, object_scale: float) -> torch.Tensor:
    out = [prepare_input_image(images[i:i + 1].float().cpu(), None, size, object_scale)[0]
           for i in range(images.shape[0])]
    return torch.stack(out)  # [N, size, size, 3]


def grid_preview(frames: torch.Tensor, views: int, nframes: int, thumb: int = 96) -> torch.Tensor:
    """``[V*F, H, W, 3]`` view-major -> one ``[1, V*t, F*t, 3]`` grid (rows = views)."""
    x = frames.permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(thumb, thumb),
                                        mode="bilinear", align_corners=False,
                                        antialias=True)
    x = x.reshape(views, nframes, 3, thumb, thumb).permute(0, 3, 1, 4, 2)  # [V, t, F, t, 3]
    return x.reshape(1, views * thumb, nframes * thumb, 3).clamp(0, 1)



def _orbit(cameras, elevation, V, size, view_weight_min):
    """(elevations, azimuths, CAMERAS at ``size``, view weights) of the multi-view axis: the given
    CAMERAS, or SV3D's static orbit at ``elevation``."""
    if cameras is not None:
        el = [float(e) for e in cameras.elevation.tolist()]
        az = [float(a) for a in cameras.azimuth.tolist()]
        return el, az, cameras.resized(size, size), view_weights_from_azimuths(
            az, az[-1], float(view_weight_min))
    el, az = orbit_angles("sv3d_static", V, float(elevation))
    el, az = [float(e) for e in el], [float(a) for a in az]
    cams = make_orbit_cameras(el, az, DEFAULT_RADIUS, SV3D_FOV_DEG, size, size)
    return el, az, cams, view_weights(V, float(view_weight_min))


# The two models and what they share (both nodes).
_MODELS = {
    "video_model": ("MODEL", _tip("Stable Video Diffusion XT (svd_xt.safetensors, "
                                  "Image Only Checkpoint Loader): evaluated on rows "
                                  "(one view over time).")),
    "multiview_model": ("MODEL", _tip("SV3D_p (sv3d_p.safetensors): evaluated on "
                                      "columns (all views at one time).")),
    "clip_vision": ("CLIP_VISION", _tip("CLIP vision from the SVD-XT loader (same "
                                        "OpenCLIP ViT-H as SV3D's).")),
    "vae": ("VAE",
            _tip("VAE shared by both models (SD latent space); decodes in chunks.")),
}

# What the sampler starts from and the matrix it samples (V x F).
_PROMPT = {
    "prompt": ("IMAGE", _tip("image: one image; video: at least F frames (the first F "
                             "are used); orbit: V views of a static object in orbit "
                             "order, the front view last.")),
    "prompt_type": (list(PROMPTS), {"default": "image",
                                    "tooltip": "What the prompt IMAGE is."}),
    "views": ("INT", {"default": 21, "min": 2, "max": 64,
                      "tooltip": "V: views (SV3D: 21)."}),
    "frames": ("INT", {"default": 25, "min": 2, "max": MAX_VIDEO_FRAMES,
                       "tooltip": "F: frames (SVD-XT: up to 25)."}),
}

# Output size and the default orbit's elevation (both nodes).
_OUTPUT = {
    "size": ("INT", {"default": 576, "min": 64, "max": 1024, "step": 8,
                     "tooltip": "Square output size in pixels (both models: 576)."}),
    "elevation": ("FLOAT", {"default": 10.0, "min": -89.0, "max": 89.0, "step": 0.5,
                            "tooltip": "Orbit elevation (degrees) when no CAMERAS are "
                                       "given."}),
}

# Each model's CFG and conditioning, as in the official sampling scripts (both nodes).
_CONDITIONING = {
    "multiview_cfg": ("FLOAT", {"default": 2.5, "min": 1.0, "max": 20.0, "step": 0.05,
                                "tooltip": "SV3D's CFG, constant over views (official "
                                           "2.5)."}),
    "video_cfg_min": ("FLOAT", {"default": 1.5, "min": 1.0, "max": 20.0, "step": 0.05,
                                "tooltip": "SVD's CFG at the first frame (linear, "
                                           "official 1.5)."}),
    "video_cfg_max": ("FLOAT", {"default": 3.0, "min": 1.0, "max": 20.0, "step": 0.05,
                                "tooltip": "SVD's CFG at the last frame (official "
                                           "3.0)."}),
    "motion_bucket_id": ("INT", {"default": 127, "min": 0, "max": 1023,
                                 "tooltip": "SVD motion bucket (official 127)."}),
    "fps": ("INT", {"default": 25, "min": 1, "max": 1024,
                    "tooltip": "SVD fps condition (ComfyUI passes fps - 1 as fps_id: "
                    "25 = the official fps_id 24); also the frame times."}),
    "video_cond_aug": ("FLOAT", {"default": 0.02, "min": 0.0, "max": 1.0, "step": 0.001,
                                 "tooltip": "SVD noise augmentation of its reference "
                                            "views (0.02)."}),
    "multiview_cond_aug": ("FLOAT", {"default": 1e-5, "min": 0.0, "max": 1.0,
                                     "step": 1e-5,
                                     "round": False,
                                     "tooltip": "SV3D noise augmentation (1e-5)."}),
}

# How the two models' x0 are composed per step (both nodes).
_COMPOSITION = {
    "lambda_schedule": (LAMBDA_CHOICES, {
        "default": "constant",
        "tooltip": "Multi-view weight per step: constant (official code, 0.6), "
                   "logistic_code (s0 0.6, k 15), logistic_paper (s0 0.5, k 20), "
                   "logistic (s0 = lambda_value, k), linear / cosine (1 -> 0)."}),
    "lambda_value": ("FLOAT", {"default": 0.6, "min": 0.0, "max": 1.0, "step": 0.01,
                               "tooltip": "Constant lambda, or the logistic midpoint "
                                          "s0."}),
    "logistic_k": ("FLOAT", {"default": 15.0, "min": 0.1, "max": 200.0, "step": 0.5,
                             "tooltip": "Steepness k of the 'logistic' schedule."}),
    "view_weight_min": ("FLOAT", {"default": 0.25, "min": 0.0, "max": 1.0, "step": 0.01,
                                  "tooltip": "w_v at the side views (official 0.25; 1 "
                                  "at front/back). 1.0 = same weight everywhere."}),
}

# The sampler node's own loop.
_SAMPLING = {
    "steps": ("INT", {"default": 50, "min": 1, "max": 500,
                      "tooltip": "Euler steps (50)."}),
    "vrs_steps": ("INT", {"default": 10, "min": 0, "max": 500,
                          "tooltip": "VRS: the first N "
                          "steps are taken twice with re-noising (official 10)."}),
}

_SEED = {
    "seed": ("INT", {"default": 0, "min": 0, "max": 2**63 - 1,
                     "tooltip": "Noise seed."}),
}

# Optional inputs of both nodes.
_ORBIT_AND_CHUNKS = {
    "cameras": ("CAMERAS", _tip("The V cameras of the orbit (default: SV3D's static "
                                "orbit at 'elevation', the input view last).")),
    "max_chunk": ("INT", {"default": 0, "min": 0, "max": 64,
                          "tooltip": "Most rows/columns per "
                          "model call (0 = as many as the free memory allows)."}),
}

# Optional inputs of the sampler node.
_DECODE = {
    "decode_chunk": ("INT", {"default": 8, "min": 1, "max": 256,
                             "tooltip": "Frames per VAE decode call."}),
    "object_scale": ("FLOAT", {"default": 0.85, "min": 0.05, "max": 1.0, "step": 0.01,
                               "tooltip": "With alpha: fraction of the frame the "
                                          "object spans."}),
}


class Diffusion2Sampler:
    DESCRIPTION = (
        "Diffusion² (4D): samples a matrix of V views x F frames by composing a video model "
        "(SVD-XT, rows) and a multi-view model (SV3D_p, columns) in x0 space: D = [1 - w_v + "
        "w_v*lam] D_mv + [w_v (1 - lam)] D_video. The prompt is an image (reference orbit and "
        "video are generated first), a video (its frames are the reference video; SV3D conditions "
        "on its last frame) or a static orbit (SVD conditions on the front view, the last one). "
        "Output frames are view-major: image v*F + t is view v at frame t. The reference (input) "
        "view is the last view, as in SV3D's orbit.")
    CATEGORY = "OrbitForge/4d"
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE", "CAMERAS", "FRAME_TIMES", "IMAGE", "IMAGE", "IMAGE")
    RETURN_NAMES = ("frames", "cameras", "frame_times", "grid", "reference_orbit",
                    "reference_video")
    OUTPUT_TOOLTIPS = (
        "V*F images, view-major (index v*F + t = view v at frame t).",
        "The V cameras (y-up world, azimuth 0 on +z), one per view, at the output size.",
        "Time in seconds of each of the F frames (t / fps).",
        "Preview grid: rows = views, columns = frames.",
        "The V reference views the rows were conditioned on.",
        "The F reference frames the columns were conditioned on.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {**_MODELS, **_PROMPT, **_OUTPUT, **_CONDITIONING, **_COMPOSITION,
                             **_SAMPLING, **_SEED},
                "optional": {**_ORBIT_AND_CHUNKS, **_DECODE}}

    def run(self, video_model, multiview_model, clip_vision, vae, prompt, prompt_type, views,
            frames, size,
            elevation, multiview_cfg, video_cfg_min, video_cfg_max, motion_bucket_id, fps,
            video_cond_aug,
            multiview_cond_aug, lambda_schedule, lambda_value, logistic_k, view_weight_min, steps,
            vrs_steps,
            seed, cameras=None, max_chunk=0, decode_chunk=8, object_scale=0.85,
            progress_callback=None):
        from .host.diffusion2 import check_models, sample_4d

        s = MatrixSettings(views, frames, size, multiview_cfg, video_cfg_min, video_cfg_max,
                           motion_bucket_id, fps, video_cond_aug, multiview_cond_aug, steps,
                           vrs_steps, seed, max_chunk, decode_chunk)
        check_prompt(prompt, prompt_type, s, cameras)
        check_models(video_model, multiview_model)
        lams = lambda_for(lambda_schedule, s.steps, float(lambda_value), float(logistic_k))
        el, az, cams, w = _orbit(cameras, elevation, s.views, s.size, view_weight_min)
        images = _prepare_batch(prompt[..., :4] if prompt.shape[-1] == 4 else prompt, s.size,
                                object_scale)
        if prompt_type == "video":
            images = images[:s.frames]
        imgs, ref_orbit, ref_video, stats = sample_4d(video_model, multiview_model, clip_vision,
                                                      vae, images,
                                                      prompt_type, el, az, w, lams, s,
                                                      progress_callback)
        log.info("OrbitForge Diffusion2: %d passes, %d column + %d row model calls (chunks %d/%d)",
                 stats.passes, stats.column_calls, stats.row_calls, stats.column_chunk,
                 stats.row_chunk)
        idev = host.intermediate_device()
        return (imgs.to(idev), cams, frame_times(s.frames, float(fps)),
                grid_preview(imgs, s.views, s.frames).to(idev), ref_orbit.to(idev),
                ref_video.to(idev))


class Diffusion2Guider:
    DESCRIPTION = (
        "Diffusion² as a GUIDER for SamplerCustomAdvanced: given the reference orbit (V views, "
        "input view last) and reference video (F frames), every model call returns the composed x0 "
        "of the whole V x F matrix (F SV3D column and V SVD row sequences, each with its own CFG). "
        "Use the LATENT output (view-major V*F latents) and any sampler/sigmas (euler on the EDM "
        "sigmas reproduces the official loop without VRS; the all-in-one sampler node adds VRS).")
    CATEGORY = "OrbitForge/4d"
    FUNCTION = "get_guider"
    RETURN_TYPES = ("GUIDER", "LATENT", "CAMERAS")
    RETURN_NAMES = ("guider", "latent", "cameras")
    OUTPUT_TOOLTIPS = ("The Diffusion² guider.", "Empty V*F latent (view-major: v*F + t).",
                       "The V cameras.")

    @classmethod
    def INPUT_TYPES(cls):
        references = {
            "reference_orbit": ("IMAGE", _tip("V reference views (orbit order, input view last): "
                                              "row v is conditioned on view v.")),
            "reference_video": ("IMAGE",
                                _tip("F reference frames: column t is conditioned on frame t.")),
        }
        return {"required": {**_MODELS, **references, **_OUTPUT, **_CONDITIONING,
                             **_COMPOSITION, **_SEED},
                "optional": dict(_ORBIT_AND_CHUNKS)}

    def get_guider(self, video_model, multiview_model, clip_vision, vae, reference_orbit,
                   reference_video, size,
                   elevation, multiview_cfg, video_cfg_min, video_cfg_max, motion_bucket_id, fps,
                   video_cond_aug,
                   multiview_cond_aug, lambda_schedule, lambda_value, logistic_k, view_weight_min,
                   seed, cameras=None, max_chunk=0):
        from .host.diffusion2 import check_models, guider_class, latent_channels, matrix_denoisers

        V, F = int(reference_orbit.shape[0]), int(reference_video.shape[0])
        if F > MAX_VIDEO_FRAMES or F < 2:
            raise ValueError(f"reference_video has {F} frames: SVD-XT samples "
                             f"2..{MAX_VIDEO_FRAMES}")
        if V < 2:
            raise ValueError("reference_orbit needs at least 2 views")
        if cameras is not None and len(cameras) != V:
            raise ValueError(f"CAMERAS has {len(cameras)} cameras but reference_orbit has {V} "
                             "views")
        s = MatrixSettings(V, F, size, multiview_cfg, video_cfg_min, video_cfg_max,
                           motion_bucket_id, fps,
                           video_cond_aug, multiview_cond_aug, seed=seed, max_chunk=max_chunk)
        check_models(video_model, multiview_model)
        lambda_for(lambda_schedule, 2, float(lambda_value), float(logistic_k))  # validate
        el, az, cams, w = _orbit(cameras, elevation, V, s.size, view_weight_min)
        col_fn, row_fn = matrix_denoisers(video_model, multiview_model, clip_vision, vae,
                                          _resize(reference_orbit, s.size), _resize(reference_video,
                                                                                    s.size),
                                          el, az, s)
        g = guider_class()(video_model)
        g.setup(multiview_model, col_fn, row_fn, V, F, w,
                lambda n: lambda_for(lambda_schedule, n, float(lambda_value), float(logistic_k)),
                s.max_chunk)
        g.set_conds()
        latent = {"samples": torch.zeros(V * F, latent_channels(video_model), s.size // 8,
                                         s.size // 8)}
        return (g, latent, cams)


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    x = images[..., :3].float().cpu()
    if x.shape[1:3] != (size, size):
        x = torch.nn.functional.interpolate(x.permute(0, 3, 1, 2), size=(size, size),
                                            mode="bilinear",
                                            align_corners=False, antialias=True).permute(0, 2, 3, 1)
    return x.clamp(0, 1)


NODE_CLASS_MAPPINGS = {"OrbitForgeDiffusion2Sampler": Diffusion2Sampler,
                       "OrbitForgeDiffusion2Guider": Diffusion2Guider}
NODE_DISPLAY_NAME_MAPPINGS = {
    "OrbitForgeDiffusion2Sampler": "Diffusion² 4D Matrix Sampler (OrbitForge)",
    "OrbitForgeDiffusion2Guider": "Diffusion² Guider (OrbitForge)",
}
