"""SV3D nodes: orbit conditioning, the all-in-one orbit sampler, and the HarmonyView GUIDER."""

from __future__ import annotations

import logging

import torch

from ..kernels.diffusion.guidance import make_guidance
from ..kernels.diffusion.sv3d import check_frames_and_orbit, prepare_input_image
from ..kernels.geometry.cameras import (
    DEFAULT_RADIUS,
    SV3D_FOV_DEG,
    SV3D_ORBITS,
    make_orbit_cameras,
    orbit_angles,
)
from . import host

log = logging.getLogger("orbitforge")

ORBITS = [*SV3D_ORBITS, "cameras"]  # static, dynamic (the registry's SV3D orbits), cameras
GUIDANCE = ["triangle", "harmonyview", "constant", "linear"]


def _tip(t):
    return {"tooltip": t}


ORBIT_INPUTS = {
    "width": ("INT", {"default": 576, "min": 64, "max": 4096, "step": 8,
                      "tooltip": "Output width (SV3D: 576)."}),
    "height": ("INT", {"default": 576, "min": 64, "max": 4096, "step": 8,
                       "tooltip": "Output height (SV3D: 576)."}),
    "frames": ("INT", {"default": 21, "min": 1, "max": 256,
                       "tooltip": "Views to generate. SV3D was trained on 21 (others warn)."}),
    "orbit": (ORBITS, {"default": "static", "tooltip": "static: official orbit, frame f at "
                       "(f+1)*360/frames, the input view last at azimuth 0; dynamic: official "
                       "seeded wavy orbit; cameras: the CAMERAS input."}),
    "elevation": ("FLOAT", {"default": 10.0, "min": -90.0, "max": 90.0, "step": 0.5,
                            "tooltip": "Camera elevation in degrees (polar = 90 - elevation). "
                                       "Trained range about -5..30."}),
    "cond_aug": ("FLOAT", {"default": 1e-5, "min": 0.0, "max": 1.0, "step": 1e-5, "round": False,
                           "tooltip": "Noise added to the input before VAE encoding, also embedded "
                                      "in the vector (official 1e-5)."}),
    "object_scale": ("FLOAT", {"default": 0.85, "min": 0.05, "max": 1.0, "step": 0.01,
                               "tooltip": "With a MASK/alpha: fraction of the frame the object's "
                                          "longest side spans (margin around it)."}),
    "orbit_seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1,
                           "tooltip": "Seed of the dynamic orbit."}),
}


def resolve_orbit(orbit, frames, elevation, orbit_seed, width, height, cameras=None):
    """``(CAMERAS of the views at width x height, elevations [F], azimuths [F])`` in degrees,
    validated before any work: the registry's SV3D orbit, or the CAMERAS input itself (resized;
    its own orbit angles condition SV3D)."""
    if not (-90.0 <= float(elevation) <= 90.0):
        raise ValueError(f"elevation={elevation} is outside [-90, 90] degrees")
    if orbit == "cameras":
        if cameras is None:
            raise ValueError("orbit='cameras' needs the CAMERAS input connected (e.g. OrbitForge "
                             "Orbit Cameras)")
        if len(cameras) != frames:
            raise ValueError(f"CAMERAS has {len(cameras)} cameras but frames={frames}: make them "
                             "equal")
        el, az = cameras.elevation.double().numpy(), cameras.azimuth.double().numpy()
    elif orbit in SV3D_ORBITS:
        el, az = orbit_angles(SV3D_ORBITS[orbit], frames, elevation, orbit_seed)
    else:
        raise ValueError(f"orbit must be one of {ORBITS}, got {orbit!r}")
    for w in check_frames_and_orbit(frames, list(el), list(az)):
        log.warning("OrbitForge SV3D: %s", w)
    el, az = [float(e) for e in el], [float(a) for a in az]
    cams = (cameras.resized(width, height) if orbit == "cameras" else
            make_orbit_cameras(el, az, DEFAULT_RADIUS, SV3D_FOV_DEG, width, height))
    return cams, el, az


def prepare(image, mask, width, height, object_scale):
    if image.ndim != 4 or image.shape[0] < 1:
        raise ValueError(f"IMAGE must be [B,H,W,C], got {tuple(image.shape)}")
    if width != height:
        log.warning("OrbitForge SV3D: %dx%d is not square; SV3D was trained on "
                    "576x576", width, height)
    m = mask[:1] if mask is not None else None
    rgb, _ = prepare_input_image(image[:1].float().cpu(),
                                 m.float().cpu() if m is not None else None,
                                   max(width, height), object_scale)
    rgb = rgb[None]
    if width != height:
        rgb = torch.nn.functional.interpolate(rgb.permute(0, 3, 1, 2), size=(height, width),
                                              mode="bilinear",
                                              align_corners=False).permute(0, 2, 3, 1)
    return rgb  # [1,H,W,3]


class SV3DOrbit:
    DESCRIPTION = ("SV3D conditioning as the official script: the input composited on white and "
                   "centred, CLIP image embedding, VAE latent of the noise-augmented input, "
                   "per-frame cameras (polar = 90 - elevation, the input view last at azimuth 0). "
                   "Feeds core SamplerCustomAdvanced (CFGGuider / OrbitForge HarmonyView guider) "
                   "or any KSampler, and outputs the CAMERAS of the generated views.")
    CATEGORY = "OrbitForge/sv3d"
    FUNCTION = "run"
    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT", "CAMERAS", "IMAGE")
    RETURN_NAMES = ("positive", "negative", "latent", "cameras", "input_view")
    OUTPUT_TOOLTIPS = ("Full conditioning (CLIP, concat latent, cameras, cond_aug).",
                       "CLIP and concat zeroed, same cameras (official unconditional branch).",
                       "Empty latent [frames, 4, H/8, W/8].",
                       "Exactly the cameras of the generated views, in frame order (for "
                       "reconstruction).",
                       "The prepared input view (on white, centred).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip_vision": ("CLIP_VISION", _tip("From ImageOnlyCheckpointLoader with sv3d_p/sv3d_u "
                                                "(OpenCLIP ViT-H).")),
            "vae": ("VAE", _tip("From the same ImageOnlyCheckpointLoader.")),
            "image": ("IMAGE", _tip("The object photo; RGBA alpha or a MASK marks the object.")),
            **ORBIT_INPUTS,
        }, "optional": {
            "mask": ("MASK",
                     _tip("LoadImage's mask (1 = background). Overrides an alpha channel.")),
            "cameras": ("CAMERAS",
                        _tip("Custom orbit for orbit='cameras' (count must equal frames).")),
        }}

    def run(self, clip_vision, vae, image, width, height, frames, orbit, elevation, cond_aug,
            object_scale, orbit_seed, mask=None, cameras=None):
        from .host.guiders import make_conditioning  # noqa: PLC0415

        cams, el, az = resolve_orbit(orbit, frames, elevation, orbit_seed, width, height, cameras)
        rgb = prepare(image, mask, width, height, object_scale)
        pos, neg, lat = make_conditioning(clip_vision, vae, rgb, el, az, width, height, cond_aug,
                                          seed=orbit_seed)
        return (pos, neg, lat, cams, rgb.to(host.intermediate_device()))


class SV3DSampler:
    DESCRIPTION = ("All-in-one SV3D orbit: conditioning, Euler-EDM sampling (official sigmas, "
                   "sigma_max 700, noise x sqrt(1+sigma_max^2)) with triangle CFG (official), "
                   "HarmonyView decomposed guidance (three branches in one batched forward) or "
                   "constant/linear CFG, decoding. Needs sv3d_p.safetensors or sv3d_u.safetensors "
                   "(sv3d_u ignores the orbit: fixed cameras).")
    CATEGORY = "OrbitForge/sv3d"
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE", "CAMERAS", "LATENT")
    RETURN_NAMES = ("views", "cameras", "latent")
    OUTPUT_TOOLTIPS = ("The generated views in orbit order (last = input view).",
                       "Cameras of the views (y-up, azimuth 0 on +z).", "The sampled latents.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", _tip("SV3D_p or SV3D_u from ImageOnlyCheckpointLoader.")),
            "clip_vision": ("CLIP_VISION", _tip("From the same loader.")),
            "vae": ("VAE", _tip("From the same loader.")),
            "image": ("IMAGE", _tip("The object photo.")),
            **ORBIT_INPUTS,
            "steps": ("INT", {"default": 50, "min": 1, "max": 500,
                              "tooltip": "Euler steps (official 50)."}),
            "guidance": (GUIDANCE, {"default": "triangle",
                                    "tooltip": "triangle: official per-frame CFG; harmonyview: s + "
                                    "s1(s - s_no_input) + s2(s - s_no_views); constant/linear "
                                    "CFG."}),
            "min_cfg": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 30.0, "step": 0.05,
                                  "tooltip": "CFG at the ends (triangle/linear)."}),
            "max_cfg": ("FLOAT", {"default": 2.5, "min": 0.0, "max": 30.0, "step": 0.05,
                                  "tooltip": "CFG in the middle (triangle), at the end (linear), "
                                             "everywhere (constant)."}),
            "s1": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 30.0, "step": 0.05,
                             "tooltip": "HarmonyView: pull towards the input (consistency)."}),
            "s2": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 30.0, "step": 0.05,
                             "tooltip": "HarmonyView: push views apart (diversity)."}),
            "seed": ("INT", {"default": 23, "min": 0, "max": 2**63 - 1,
                             "tooltip": "Noise seed (official script default 23)."}),
            "restore_input_view": ("BOOLEAN", {"default": True,
                                               "tooltip": "Replace the last (input-view) frame by "
                                                          "the input, as the official script."}),
        }, "optional": {
            "mask": ("MASK", _tip("LoadImage's mask (1 = background).")),
            "cameras": ("CAMERAS", _tip("Custom orbit for orbit='cameras'.")),
        }}

    def run(self, model, clip_vision, vae, image, width, height, frames, orbit, elevation, cond_aug,
            object_scale,
            orbit_seed, steps, guidance, min_cfg, max_cfg, s1, s2, seed, restore_input_view,
            mask=None, cameras=None):
        from .host.guiders import (  # noqa: PLC0415
            context_dim,
            make_conditioning,
            make_guider,
            run_sampling,
            sv3d_variant,
        )

        variant = sv3d_variant(model)
        if variant == "u" and orbit != "static":
            log.warning("OrbitForge SV3D: sv3d_u has no camera input; orbit=%s is ignored (static "
                        "orbit used)", orbit)
            orbit = "static"
        cams, el, az = resolve_orbit(orbit, frames, elevation, orbit_seed, width, height, cameras)
        make_guidance(guidance, frames, min_cfg, max_cfg, s1, s2)  # validate before work
        rgb = prepare(image, mask, width, height, object_scale)
        pos, _neg, lat = make_conditioning(clip_vision, vae, rgb, el, az, width, height, cond_aug,
                                           seed=seed,
                                              expected_dim=context_dim(model))
        guider = make_guider(model, pos, guidance, min_scale=min_cfg, max_scale=max_cfg, s1=s1,
                             s2=s2)
        samples = run_sampling(model, guider, lat, steps, seed)
        views = vae.decode(samples).to(host.intermediate_device()).float()
        views = views.reshape(-1, *views.shape[-3:])[..., :3]
        if restore_input_view:
            views[-1] = rgb[0].to(views)
        return (views, cams, {"samples": samples})


class HarmonyViewGuider:
    DESCRIPTION = ("GUIDER for SamplerCustomAdvanced (pick any sampler/scheduler): HarmonyView "
                   "decomposed guidance x0 = s + s1(s - s_no_input) + s2(s - s_no_views) on SV3D, "
                   "or per-frame CFG (triangle/linear/constant). Branches: full; input removed "
                   "(CLIP and concat zeroed); cross-view interaction removed (frames without "
                   "temporal mixing via image_only_indicator, input kept, concat x concat_scale). "
                   "Cameras kept in every branch; one batched forward per step; core pre/post-CFG "
                   "patches re-applied.")
    CATEGORY = "OrbitForge/sv3d"
    FUNCTION = "get_guider"
    RETURN_TYPES = ("GUIDER",)
    RETURN_NAMES = ("guider",)
    OUTPUT_TOOLTIPS = ("Guider for SamplerCustomAdvanced.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", _tip("SV3D_p or SV3D_u.")),
            "positive": ("CONDITIONING", _tip("From OrbitForge SV3D Orbit or core "
                                              "SV3D_Conditioning; the no-input branch is derived "
                                              "from it.")),
            "mode": (["harmonyview", "triangle", "linear", "constant"],
                     {"default": "harmonyview", "tooltip": "Guidance formula."}),
            "s1": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 30.0, "step": 0.05,
                             "tooltip": "HarmonyView consistency scale (paper 2.0)."}),
            "s2": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 30.0, "step": 0.05,
                             "tooltip": "HarmonyView diversity scale (paper 1.0)."}),
            "concat_scale": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 10.0, "step": 0.1,
                                       "tooltip": "Concat latent multiplier in the no-views branch "
                                                  "(official HarmonyView code: 4; 1 = off)."}),
            "schedule": (["constant", "triangle"], {
                "default": "constant",
                "tooltip": "HarmonyView: constant s1/s2, or scaled per frame by the official "
                           "triangle wave."}),
            "min_cfg": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 30.0, "step": 0.05,
                                  "tooltip": "CFG modes: scale at the ends."}),
            "max_cfg": ("FLOAT", {"default": 2.5, "min": 0.0, "max": 30.0, "step": 0.05,
                                  "tooltip": "CFG modes: peak/constant scale."}),
        }}

    def get_guider(self, model, positive, mode, s1, s2, concat_scale, schedule, min_cfg, max_cfg):
        from .host.guiders import make_guider  # noqa: PLC0415

        g = make_guider(model, positive, mode, min_scale=min_cfg, max_scale=max_cfg, s1=s1, s2=s2,
                           concat_scale=concat_scale, harmony_schedule=schedule)
        return (g,)


NODE_CLASS_MAPPINGS = {
    "OrbitForgeSV3DOrbit": SV3DOrbit,
    "OrbitForgeSV3DSampler": SV3DSampler,
    "OrbitForgeHarmonyViewGuider": HarmonyViewGuider,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "OrbitForgeSV3DOrbit": "OrbitForge SV3D Orbit (conditioning)",
    "OrbitForgeSV3DSampler": "OrbitForge SV3D Sampler",
    "OrbitForgeHarmonyViewGuider": "OrbitForge HarmonyView Guider",
}
