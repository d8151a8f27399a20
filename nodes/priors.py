"""Priors for the 3DGS fit, as companion nodes feeding Gaussian Reconstruct (``RECON_PRIORS``):
IPSM's geometry regularisers, IPSM's diffusion prior (SD-1.5 inpainting + SD-1.5) and SV3D
masked SDS. Each node takes an optional ``priors`` input and returns it merged with its own entry,
so they chain. Model/VAE/conditioning problems are refused here, before any fit starts."""

from __future__ import annotations

from ..kernels.priors.regularizers import IPSMDiffusionConfig, IPSMGeometryConfig, SV3DSDSConfig

PRIORS_TIP = ("Optional RECON_PRIORS from another priors node; this node's prior is added to "
              "them (chain several priors).")


def merge_priors(priors, name: str, entry: dict) -> dict:
    """``priors`` (RECON_PRIORS or None) plus ``{name: entry}``; refuses duplicates."""
    if priors is None:
        return {name: entry}
    if not isinstance(priors, dict):
        raise ValueError(f"priors must come from a priors node (RECON_PRIORS), got "
                         f"{type(priors).__name__}")
    if name in priors:
        raise ValueError(f"the chained priors already contain {name!r}; use one such node per "
                         "chain")
    out = dict(priors)
    out[name] = entry
    return out


def _check_core(obj, what: str, attr: str, fix: str) -> None:
    if obj is not None and not hasattr(obj, attr):
        raise ValueError(f"{what} must be a core {fix}, got {type(obj).__name__}")


class IPSMGeometryPriors:
    DESCRIPTION = (
        "Geometry regularisers for sparse or slightly inconsistent views (e.g. 4-8 views, or a "
        "generated orbit). On by default: OrbitForge's cross-view term, each training view "
        "compared with its nearest training views warped through the rendered depth (measured "
        "+0.1-0.3 dB held-out PSNR on 4- and 6-view fits of spot and cow at 256²). IPSM's own "
        "terms are inputs: random pseudo cameras near the training cameras pulled towards the "
        "closest training view warped into them (weight_geometry; off by default because it "
        "measured lower held-out PSNR on those fits), and the Pearson correlation of the "
        "rendered depth with a monocular depth (mono_depth). Connect to Gaussian Reconstruct's "
        "'priors'. No model needed.")
    CATEGORY = "OrbitForge/3d"
    FUNCTION = "make"
    RETURN_TYPES = ("RECON_PRIORS",)
    RETURN_NAMES = ("priors",)
    OUTPUT_TOOLTIPS = ("Regularisers for Gaussian Reconstruct.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "weight_geometry": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0,
                                    "step": 0.05, "tooltip": "Weight of IPSM's warp-consistency "
                                    "L1 in pseudo views (IPSM uses 0.5; 0 disables it). Off by "
                                    "default: on clean object orbits it measured 0.15-1.0 dB "
                                    "lower held-out PSNR at ~1.9x fit time (bench priors)."}),
                "pseudo_views": ("INT", {"default": 1, "min": 1, "max": 8, "tooltip":
                                 "Pseudo cameras rendered per step (cost grows with it)."}),
                "every": ("INT", {"default": 1, "min": 1, "max": 100, "tooltip": "Apply every "
                          "k-th step to bound the extra cost."}),
                "start": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 0.95, "step": 0.05,
                          "tooltip": "Fraction of the fit before the terms switch on."}),
            },
            "optional": {
                "mono_depth": ("IMAGE", {"tooltip": "A monocular depth per training view (e.g. "
                               "from a depth-estimation node), same count as the views."}),
                "mono_kind": (["disparity", "depth"], {"default": "disparity", "tooltip":
                              "disparity: near is bright (MiDaS / Depth Anything); depth: far "
                              "is bright."}),
                "weight_depth": ("FLOAT", {"default": 0.05, "min": 0.0, "max": 10.0,
                                 "step": 0.01, "tooltip": "Weight of the Pearson depth "
                                 "correlation loss (needs mono_depth)."}),
                "weight_cross_view": ("FLOAT", {"default": 0.3, "min": 0.0, "max": 10.0,
                                      "step": 0.05, "tooltip": "Weight of the cross-view "
                                      "consistency term (OrbitForge's, not IPSM's): each "
                                      "training view is compared with its 2 nearest training "
                                      "views warped through the rendered depth, which moves the "
                                      "surface to where the views agree; pixels whose colours "
                                      "differ by more than 0.1 (occlusions) are left out. "
                                      "Switches on after 30% of the fit; costs ~10% more time. "
                                      "0 disables it."}),
                "priors": ("RECON_PRIORS", {"tooltip": PRIORS_TIP}),
            },
        }

    def make(self, weight_geometry, pseudo_views, every, start, mono_depth=None,
             mono_kind="disparity", weight_depth=0.05, weight_cross_view=0.3, priors=None):
        mono = None
        if mono_depth is not None:
            if mono_depth.ndim != 4:
                raise ValueError(f"mono_depth must be an IMAGE [B,H,W,C], got "
                                 f"{list(mono_depth.shape)}")
            mono = mono_depth[..., :3].float().mean(-1)  # [B,H,W]
        if weight_cross_view < 0:
            raise ValueError(f"weight_cross_view must be >= 0, got {weight_cross_view}")
        cfg = IPSMGeometryConfig(weight_geometry=weight_geometry, weight_depth=weight_depth,
                                 pseudo_views=pseudo_views, every=every, start=start,
                                 weight_cross_view=weight_cross_view)
        return (merge_priors(priors, "ipsm_geometry",
                             {"config": cfg, "mono_depth": mono, "mono_kind": mono_kind}),)


class IPSMDiffusionPriors:
    DESCRIPTION = (
        "IPSM's diffusion prior for sparse views ('How to Use Diffusion Priors under Sparse "
        "Views?', NeurIPS 2024): random pseudo views of the Gaussians are VAE-encoded and pushed "
        "by two score terms, an SD-1.5 inpainting model conditioned on the closest training view "
        "warped into the pseudo view (regions the warp cannot trust are inpainted) minus the "
        "noise (weight 0.2) and minus plain SD-1.5 (weight 2.0); t ~ U[250, 750), CFG 7.5, "
        "ramped in over 500 steps. Costs 4 UNet passes per application, so it runs every k "
        "steps. Connect to Gaussian Reconstruct's 'priors'.")
    CATEGORY = "OrbitForge/3d"
    FUNCTION = "make"
    RETURN_TYPES = ("RECON_PRIORS",)
    RETURN_NAMES = ("priors",)
    OUTPUT_TOOLTIPS = ("The incoming priors plus the IPSM diffusion prior.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "inpaint_model": ("MODEL", {"tooltip": "SD-1.5 inpainting checkpoint (UNet with "
                                  "9 input channels, e.g. sd-v1-5-inpainting)."}),
                "sd_model": ("MODEL", {"tooltip": "Plain SD-1.5 checkpoint."}),
                "vae": ("VAE", {"tooltip": "The SD-1.5 VAE (either checkpoint's)."}),
                "positive": ("CONDITIONING", {"tooltip": "Text conditioning (CLIPTextEncode with "
                             "SD-1.5's CLIP), e.g. a short caption of the object."}),
                "weight": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.05,
                           "tooltip": "Scale on both score terms (0.2 and 2.0 inside)."}),
                "every": ("INT", {"default": 4, "min": 1, "max": 100, "tooltip": "Apply every "
                          "k-th step (each application runs both UNets with CFG)."}),
                "start": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 0.95, "step": 0.05,
                          "tooltip": "Fraction of the fit before the prior switches on."}),
                "ramp": ("INT", {"default": 500, "min": 0, "max": 100000, "tooltip": "Steps over "
                         "which the prior's weight ramps from 0 to 1 after the start (IPSM: "
                         "500)."}),
                "cfg": ("FLOAT", {"default": 7.5, "min": 1.0, "max": 30.0, "step": 0.1,
                        "tooltip": "Classifier-free guidance of both models (IPSM: 7.5)."}),
            },
            "optional": {
                "negative": ("CONDITIONING", {"tooltip": "Negative text conditioning (default: "
                             "zeros)."}),
                "pseudo_views": ("INT", {"default": 1, "min": 1, "max": 8, "tooltip": "Pseudo "
                                 "views per application."}),
                "size": ("INT", {"default": 0, "min": 0, "max": 1024, "step": 8, "tooltip":
                         "Long side in pixels the pseudo renders are encoded at (SD-1.5 likes "
                         "512); 0 = the fit's render size."}),
                "priors": ("RECON_PRIORS", {"tooltip": PRIORS_TIP}),
            },
        }

    def make(self, inpaint_model, sd_model, vae, positive, weight, every, start, ramp, cfg,
             negative=None, pseudo_views=1, size=0, priors=None):
        from .host.priors import check_ipsm_prior  # noqa: PLC0415

        _check_core(vae, "vae", "first_stage_model", "VAE (from a checkpoint loader)")
        check_ipsm_prior(inpaint_model, sd_model, vae, positive, negative)
        if size and size % 8:
            raise ValueError(f"size must be a multiple of 8 (or 0), got {size}")
        conf = IPSMDiffusionConfig(weight=weight, every=every, start=start, ramp=ramp,
                                   pseudo_views=pseudo_views, size=size)
        entry = {"inpaint_model": inpaint_model, "sd_model": sd_model, "vae": vae,
                 "positive": positive, "negative": negative, "cfg": cfg, "config": conf}
        return (merge_priors(priors, "ipsm_diffusion", entry),)


class SV3DSDSPriors:
    DESCRIPTION = (
        "SV3D masked score distillation (the SV3D paper's 3D stage, ECCV 2024): late in the fit, "
        "a whole SV3D orbit of the Gaussians is rendered (randomly rotated for SV3D_p), "
        "VAE-encoded and pushed towards what SV3D, conditioned on the input image, denoises it "
        "to; the push is masked by the visibility mask so only surfaces no training camera faces "
        "are repainted. Use the positive/negative of OrbitForge SV3D Orbit (its orbit and size "
        "set the rendered views). Connect to Gaussian Reconstruct's 'priors'.")
    CATEGORY = "OrbitForge/3d"
    FUNCTION = "make"
    RETURN_TYPES = ("RECON_PRIORS",)
    RETURN_NAMES = ("priors",)
    OUTPUT_TOOLTIPS = ("The incoming priors plus SV3D masked SDS.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL",
                          {"tooltip": "SV3D_p (or SV3D_u) from ImageOnlyCheckpointLoader."}),
                "vae": ("VAE", {"tooltip": "The VAE of the same loader."}),
                "positive": ("CONDITIONING", {"tooltip": "From OrbitForge SV3D Orbit (or core "
                             "SV3D_Conditioning): input image, cameras, size."}),
                "weight": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1000.0, "step": 0.1,
                           "tooltip": "Weight of the SDS term."}),
                "start": ("FLOAT", {"default": 0.7, "min": 0.0, "max": 0.95, "step": 0.05,
                          "tooltip": "Fraction of the fit before SDS switches on (0.7 = the "
                          "last 30 %)."}),
                "every": ("INT", {"default": 4, "min": 1, "max": 100, "tooltip": "Apply every "
                          "k-th step (each application renders and denoises the whole orbit)."}),
                "cfg": ("FLOAT", {"default": 2.5, "min": 1.0, "max": 30.0, "step": 0.1,
                        "tooltip": "Classifier-free guidance of SV3D (1 = conditional only)."}),
            },
            "optional": {
                "negative": ("CONDITIONING", {"tooltip": "The negative of OrbitForge SV3D Orbit "
                             "(default: CLIP and concat zeroed)."}),
                "sigma_max": ("FLOAT", {"default": 5.0, "min": 0.1, "max": 700.0, "step": 0.1,
                              "tooltip": "Largest SDS noise level (log-uniform from 0.05)."}),
                "random_orbit": ("BOOLEAN", {"default": True, "tooltip": "Rotate the orbit by a "
                                 "random azimuth each time (SV3D_p only)."}),
                "priors": ("RECON_PRIORS", {"tooltip": PRIORS_TIP}),
            },
        }

    def make(self, model, vae, positive, weight, start, every, cfg, negative=None,
             sigma_max=5.0, random_orbit=True, priors=None):
        from .host.priors import _need_cond, check_sv3d_sds, sv3d_orbit_of  # noqa: PLC0415

        _check_core(vae, "vae", "first_stage_model", "VAE (from ImageOnlyCheckpointLoader)")
        check_sv3d_sds(model, vae, positive=positive)
        if negative is not None:
            _need_cond(negative, "SV3D negative conditioning")
        sv3d_orbit_of(positive)  # needs its concat latent and cameras
        if sigma_max <= 0.05:
            raise ValueError(f"sigma_max must be > 0.05, got {sigma_max}")
        conf = SV3DSDSConfig(weight=weight, start=start, every=every, sigma_max=sigma_max,
                             random_azimuth=random_orbit)
        entry = {"model": model, "vae": vae, "positive": positive, "negative": negative,
                 "cfg": cfg, "config": conf}
        return (merge_priors(priors, "sv3d_sds", entry),)


NODE_CLASS_MAPPINGS = {
    "OrbitForgeIPSMGeometryPriors": IPSMGeometryPriors,
    "OrbitForgeIPSMDiffusionPriors": IPSMDiffusionPriors,
    "OrbitForgeSV3DSDSPriors": SV3DSDSPriors,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "OrbitForgeIPSMGeometryPriors": "IPSM Geometry Priors (OrbitForge)",
    "OrbitForgeIPSMDiffusionPriors": "IPSM Diffusion Priors (OrbitForge)",
    "OrbitForgeSV3DSDSPriors": "SV3D Masked SDS Priors (OrbitForge)",
}
