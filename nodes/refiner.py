"""Depth-conditioned refiner (Hi3D stage 2) and its anchored fallback for SVD/SV3D models."""

from __future__ import annotations

from ..kernels.diffusion.depth_condition import (
    DEPTH_KINDS,
    HI3D_CFG,
    HI3D_COND_AUG,
    HI3D_STEPS,
    check_refine_inputs,
)
from .host.family import require
from .host.models import load_refiner, refiner_files

MODES = {
    "hi3d_stage2": "hi3d_depth_refiner",
    "sv3d_p": "anchored_sv3d_p (no depth)",
    "sv3d_u": "anchored_sv3d_u (no depth)",
    "svd": "anchored_svd (no depth)",
}


class LoadRefiner:
    DESCRIPTION = ("Loads Hi3D's stage-2 refiner UNet (second_stage.pt read with "
                   "weights_only=True, or its convert-hi3d safetensors) from "
                   "models/orbitforge_refiner as a core MODEL (17 input channels: latent 4 + depth "
                   "9 + condition latent 4; vector 512). Mismatched checkpoints fail with the list "
                   "of differing keys/shapes.")
    CATEGORY = "OrbitForge/refine"
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The stage-2 refiner; ComfyUI loads/offloads it like any MODEL.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ckpt_name": (refiner_files(), {"tooltip": "A file in models/orbitforge_refiner "
                          "(second_stage.pt or the converted .safetensors)."}),
        }}

    def load(self, ckpt_name):
        return (load_refiner(ckpt_name),)


class DepthRefiner:
    DESCRIPTION = (
        "Hi3D stage 2: refines low-res orbit views to high resolution with a depth-conditioned "
        "video-to-video UNet (25 Euler-EDM steps, linear CFG 1->2 over frames, latent anchoring "
        "alpha_i=[(1+cos(i/25))/2]^40). Depth: any depth IMAGE, or depth rendered from the 3DGS "
        "fit (multi-view consistent). With an SVD/SV3D MODEL instead of the Hi3D checkpoint it "
        "runs the 'anchored' mode: the same anchoring, no depth. The mode output says which ran.")
    CATEGORY = "OrbitForge/refine"
    FUNCTION = "refine"
    RETURN_TYPES = ("IMAGE", "CAMERAS", "STRING")
    RETURN_NAMES = ("views", "cameras", "mode")
    OUTPUT_TOOLTIPS = ("Refined views at target_size, same order as the input views.",
                       "The cameras at the new image size.",
                       "Which mode ran: hi3d_depth_refiner or anchored_<model> (no depth).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "Hi3D stage-2 refiner (OrbitForgeLoadRefiner), or "
                          "an SVD/SV3D MODEL for the anchored mode without depth."}),
                "clip_vision": ("CLIP_VISION", {"tooltip": "OpenCLIP ViT-H (the SVD/SV3D one)."}),
                "vae": ("VAE", {"tooltip": "The SVD/SV3D VAE."}),
                "views": ("IMAGE", {"tooltip": "Low-res orbit views (square), e.g. SV3D output."}),
                "input_image": ("IMAGE", {"tooltip": "The input image (white background); replaces "
                                "the input-view frame before refinement, as the official "
                                "pipeline."}),
                "target_size": ("INT", {"default": 1024, "min": 64, "max": 4096, "step": 64,
                                "tooltip": "Output side in pixels (multiple of 64; Hi3D: 1024)."}),
                "steps": ("INT", {"default": HI3D_STEPS, "min": 1, "max": 200,
                          "tooltip": "Euler-EDM steps (Hi3D: 25)."}),
                "cfg_min": ("FLOAT", {"default": HI3D_CFG[0], "min": 0.0, "max": 30.0, "step": 0.05,
                            "tooltip": "CFG of the first frame (linear schedule over frames)."}),
                "cfg_max": ("FLOAT", {"default": HI3D_CFG[1], "min": 0.0, "max": 30.0, "step": 0.05,
                            "tooltip": "CFG of the last frame (Hi3D: 2.0)."}),
                "anchor_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                    "tooltip": "Multiplies the anchoring alphas (1 = official, 0 = "
                                               "off)."}),
                "cond_aug": ("FLOAT", {"default": HI3D_COND_AUG, "min": 0.0, "max": 1.0,
                             "step": 0.001, "tooltip": "Noise added to the condition frames (in "
                             "[-1,1] units) and fed to the model (Hi3D: 0.02; SV3D: 1e-5)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**63 - 1,
                         "tooltip": "Seed of the start noise and condition noise."}),
                "elevation": ("FLOAT", {"default": 0.0, "min": -90.0, "max": 90.0, "step": 1.0,
                              "tooltip": "Input-view elevation in degrees, used when no cameras "
                              "are connected."}),
                "depth_kind": (list(DEPTH_KINDS), {"default": "near_bright", "tooltip":
                               "near_bright: MiDaS/Depth-Anything style (near is bright); "
                               "far_bright: far is bright, 0 = background; metric: distance, 0 = "
                               "background."}),
                "vae_chunk": ("INT", {"default": 4, "min": 1, "max": 64,
                                      "tooltip": "Frames per VAE "
                              "encode/decode call (lower = less memory)."}),
            },
            "optional": {
                "cameras": ("CAMERAS", {"tooltip": "Cameras of the views; the one nearest azimuth "
                            "0 is the input view (SV3D: last; Hi3D: first)."}),
                "depth": ("IMAGE", {"tooltip": "Depth per view (same count as views). Required for "
                          "the Hi3D refiner; ignored in anchored mode."}),
            },
        }

    def refine(self, model, clip_vision, vae, views, input_image, target_size, steps, cfg_min,
               cfg_max, anchor_strength, cond_aug, seed, elevation, depth_kind, vae_chunk,
               cameras=None, depth=None):
        from .host.refine import refine_views

        kind = require(model, "video")
        check_refine_inputs(kind, views, depth, cameras, target_size, cfg_min, cfg_max)
        images, out_cams = refine_views(model, kind, clip_vision, vae, views, input_image,
                                        target_size,
                                        steps, cfg_min, cfg_max, anchor_strength, cond_aug, seed,
                                        elevation, depth_kind, vae_chunk, cameras, depth)
        return (images, out_cams, MODES[kind])


NODE_CLASS_MAPPINGS = {
    "OrbitForgeLoadRefiner": LoadRefiner,
    "OrbitForgeDepthRefiner": DepthRefiner,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "OrbitForgeLoadRefiner": "Load Hi3D Refiner (OrbitForge)",
    "OrbitForgeDepthRefiner": "Depth-Conditioned Refiner (OrbitForge)",
}
