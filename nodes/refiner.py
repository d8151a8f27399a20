"""Depth-conditioned refiner (Hi3D stage 2) and its anchored fallback for SVD/SV3D models."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..kernels.cameras import make_orbit_cameras, sv3d_static_orbit
from ..kernels import depth_condition as DC
from ..kernels import edm
from ..kernels.inputs import check_image, check_mask
from ..kernels.sv3d import noisy_cond_pixels
from . import host
from .host import models as HM
from .host.conditioning import sv3d_conditioning
from .host.family import require

MODES = {
    "hi3d_stage2": "hi3d_depth_refiner",
    "sv3d_p": "anchored_sv3d_p (no depth)",
    "sv3d_u": "anchored_sv3d_u (no depth)",
    "svd": "anchored_svd (no depth)",
}


class LoadRefiner:
    DESCRIPTION = ("Loads Hi3D's stage-2 refiner UNet (second_stage.pt read with weights_only=True, "
                   "or its convert-hi3d safetensors) from models/orbitforge_refiner as a core MODEL "
                   "(17 input channels: latent 4 + depth 9 + condition latent 4; vector 512). "
                   "Mismatched checkpoints fail with the list of differing keys/shapes.")
    CATEGORY = "OrbitForge/refine"
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The stage-2 refiner; ComfyUI loads/offloads it like any MODEL.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "ckpt_name": (HM.refiner_files(), {"tooltip": "A file in models/orbitforge_refiner "
                          "(second_stage.pt or the converted .safetensors)."}),
        }}

    def load(self, ckpt_name):
        return (HM.load_refiner(ckpt_name),)


def _square_resize(img: torch.Tensor, size: int) -> torch.Tensor:
    """IMAGE [B,H,W,C] -> [B,size,size,3] (alpha composited on white; bilinear like cv2.resize)."""
    if img.shape[-1] == 4:
        a = img[..., 3:4]
        img = img[..., :3] * a + (1.0 - a)
    x = img[..., :3].movedim(-1, 1).float()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > size)
    return x.movedim(1, -1).clamp(0, 1)


class DepthRefiner:
    DESCRIPTION = (
        "Hi3D stage 2: refines low-res orbit views to high resolution with a depth-conditioned "
        "video-to-video UNet (25 Euler-EDM steps, linear CFG 1->2 over frames, latent anchoring "
        "alpha_i=[(1+cos(i/25))/2]^40). Depth: any depth IMAGE, or depth rendered from the 3DGS fit "
        "(multi-view consistent). With an SVD/SV3D MODEL instead of the Hi3D checkpoint it runs "
        "the 'anchored' mode: the same anchoring, no depth. The mode output says which ran.")
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
                "model": ("MODEL", {"tooltip": "Hi3D stage-2 refiner (OrbitForgeLoadRefiner), or an "
                          "SVD/SV3D MODEL for the anchored mode without depth."}),
                "clip_vision": ("CLIP_VISION", {"tooltip": "OpenCLIP ViT-H (the SVD/SV3D one)."}),
                "vae": ("VAE", {"tooltip": "The SVD/SV3D VAE."}),
                "views": ("IMAGE", {"tooltip": "Low-res orbit views (square), e.g. SV3D output."}),
                "input_image": ("IMAGE", {"tooltip": "The input image (white background); replaces "
                                "the input-view frame before refinement, as the official pipeline."}),
                "target_size": ("INT", {"default": 1024, "min": 64, "max": 4096, "step": 64,
                                "tooltip": "Output side in pixels (multiple of 64; Hi3D: 1024)."}),
                "steps": ("INT", {"default": DC.HI3D_STEPS, "min": 1, "max": 200,
                          "tooltip": "Euler-EDM steps (Hi3D: 25)."}),
                "cfg_min": ("FLOAT", {"default": DC.HI3D_CFG[0], "min": 0.0, "max": 30.0, "step": 0.05,
                            "tooltip": "CFG of the first frame (linear schedule over frames)."}),
                "cfg_max": ("FLOAT", {"default": DC.HI3D_CFG[1], "min": 0.0, "max": 30.0, "step": 0.05,
                            "tooltip": "CFG of the last frame (Hi3D: 2.0)."}),
                "anchor_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                    "tooltip": "Multiplies the anchoring alphas (1 = official, 0 = off)."}),
                "cond_aug": ("FLOAT", {"default": DC.HI3D_COND_AUG, "min": 0.0, "max": 1.0,
                             "step": 0.001, "tooltip": "Noise added to the condition frames (in "
                             "[-1,1] units) and fed to the model (Hi3D: 0.02; SV3D: 1e-5)."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**63 - 1,
                         "tooltip": "Seed of the start noise and condition noise."}),
                "elevation": ("FLOAT", {"default": 0.0, "min": -90.0, "max": 90.0, "step": 1.0,
                              "tooltip": "Input-view elevation in degrees, used when no cameras "
                              "are connected."}),
                "depth_kind": (list(DC.DEPTH_KINDS), {"default": "near_bright", "tooltip":
                               "near_bright: MiDaS/Depth-Anything style (near is bright); far_bright: "
                               "far is bright, 0 = background; metric: distance, 0 = background."}),
                "vae_chunk": ("INT", {"default": 4, "min": 1, "max": 64, "tooltip": "Frames per VAE "
                              "encode/decode call (lower = less memory)."}),
            },
            "optional": {
                "cameras": ("CAMERAS", {"tooltip": "Cameras of the views; the one nearest azimuth 0 is "
                            "the input view (SV3D: last; Hi3D: first)."}),
                "depth": ("IMAGE", {"tooltip": "Depth per view (same count as views). Required for "
                          "the Hi3D refiner; ignored in anchored mode."}),
            },
        }

    # ------------------------------------------------------------------ validation
    @staticmethod
    def check(kind, views, depth, cameras, target_size, cfg_min, cfg_max):
        check_image(views, "views")
        if views.shape[1] != views.shape[2]:
            raise ValueError(f"views are {views.shape[2]}x{views.shape[1]}; the refiner needs square "
                             "views (crop or pad them first)")
        if target_size % 64 != 0:
            raise ValueError(f"target_size {target_size} is not a multiple of 64; use e.g. "
                             f"{max(64, round(target_size / 64) * 64)}")
        if cfg_min < 0 or cfg_max < 0:
            raise ValueError("cfg_min and cfg_max must be >= 0")
        if cameras is not None and len(cameras) != views.shape[0]:
            raise ValueError(f"{len(cameras)} cameras for {views.shape[0]} views; connect the cameras "
                             "of these views")
        if kind == "hi3d_stage2":
            if depth is None:
                raise ValueError("the Hi3D stage-2 refiner needs a depth IMAGE (rendered from the "
                                 "Gaussians or from a depth node); without depth use an SVD/SV3D MODEL "
                                 "(anchored mode)")
            if isinstance(depth, torch.Tensor) and depth.ndim == 3:  # [B,H,W] depth maps
                check_mask(depth, "depth")
            else:
                check_image(depth, "depth", channels=(1, 3, 4))
            if depth.shape[0] != views.shape[0]:
                raise ValueError(f"depth has {depth.shape[0]} images but views has "
                                 f"{views.shape[0]}; give one depth map per view")

    def refine(self, model, clip_vision, vae, views, input_image, target_size, steps, cfg_min,
               cfg_max, anchor_strength, cond_aug, seed, elevation, depth_kind, vae_chunk,
               cameras=None, depth=None):
        kind = require(model, "video")
        self.check(kind, views, depth, cameras, target_size, cfg_min, cfg_max)
        n, s = views.shape[0], int(target_size)
        h = w = s // 8
        gen = torch.Generator().manual_seed(int(seed) % (2**63))

        ref = DC.reference_index(cameras.azimuth if cameras is not None else None, n)
        if kind == "hi3d_stage2":
            order_shift = ref  # the refiner was trained with the input view first
        else:
            order_shift = 0
        frames = _square_resize(views, s)  # [F,S,S,3]
        frames[ref] = _square_resize(input_image[:1], s)[0]
        frames = DC.roll_to_front(frames, order_shift)

        cond_frames = noisy_cond_pixels(frames, cond_aug, gen)  # + cond_aug N(0,1) in [-1,1] units
        z_anchor = HM.latent_scale_in(model, HM.vae_encode_chunked(vae, frames, vae_chunk))
        eps = torch.randn((n, 4, h, w), generator=gen)
        clip = HM.clip_image_embed(clip_vision, frames[:1])
        if cameras is not None:
            elevs = DC.roll_to_front(cameras.elevation.float(), order_shift)
        else:
            elevs = torch.full((n,), float(elevation))

        if kind == "hi3d_stage2":
            lat = HM.vae_encode_chunked(vae, cond_frames, vae_chunk)
            d = DC.roll_to_front(DC.depth_from_image(depth.float()), order_shift)
            d9 = DC.pack_depth(d, h, w, depth_kind)
            elev_int = [float(round(float(elevs[0])))] * n  # official: int degrees
            pos, neg = sv3d_conditioning(clip, lat, cond_aug, elevations=elev_int, concat_depth=d9)
        else:
            lat0 = HM.vae_encode_chunked(vae, cond_frames[ref:ref + 1], 1)
            el = az = None
            if kind == "sv3d_p":
                cams = cameras if cameras is not None else make_orbit_cameras(
                    *sv3d_static_orbit(elevation, n), width=s, height=s)
                el, az = cams.elevation.float().tolist(), cams.azimuth.float().tolist()
            pos, neg = sv3d_conditioning(clip, lat0, cond_aug, elevations=el, azimuths=az)

        sigmas = edm.edm_sigmas(steps)
        alphas = DC.anchor_alphas(steps, anchor_strength).tolist()
        progress = host.Progress(steps)
        m = HM.per_frame_cfg_model(model, cfg_min, cfg_max)
        sampler = HM.anchored_sampler(z_anchor, eps, alphas)
        out = HM.run_guided(m, pos, neg, cfg_max, eps, sigmas, sampler,
                            callback=lambda step, x0, x, total: progress.update(step + 1), seed=seed)
        images = HM.vae_decode_chunked(vae, out, vae_chunk)  # [F,S,S,3]
        images = DC.roll_back(images, order_shift).to(host.intermediate_device())
        if cameras is not None:
            out_cams = cameras.resized(s, s)
        else:
            out_cams = make_orbit_cameras(elevs.double(), torch.arange(n, dtype=torch.float64) * 360.0 / n,
                                            width=s, height=s)
        return (images, out_cams, MODES[kind])


NODE_CLASS_MAPPINGS = {
    "OrbitForgeLoadRefiner": LoadRefiner,
    "OrbitForgeDepthRefiner": DepthRefiner,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "OrbitForgeLoadRefiner": "Load Hi3D Refiner (OrbitForge)",
    "OrbitForgeDepthRefiner": "Depth-Conditioned Refiner (OrbitForge)",
}
