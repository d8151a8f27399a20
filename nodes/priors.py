"""Priors for the 3DGS fit: IPSM's geometry regularisers as a companion node feeding
Gaussian Reconstruct (``RECON_PRIORS``)."""

from __future__ import annotations

from ..kernels.priors import IPSMGeometryConfig


class IPSMGeometryPriors:
    DESCRIPTION = (
        "IPSM's geometry regularisers for sparse or slightly inconsistent views (e.g. 4-8 views, "
        "or a generated orbit): random pseudo cameras near the training cameras are rendered and "
        "pulled towards the closest training view warped into them with the rendered depth, "
        "inside a strict depth-consistency mask; optionally the rendered depth is correlated with "
        "a monocular depth. Connect to Gaussian Reconstruct's 'priors'. No model needed.")
    CATEGORY = "OrbitForge/3d"
    FUNCTION = "make"
    RETURN_TYPES = ("RECON_PRIORS",)
    RETURN_NAMES = ("priors",)
    OUTPUT_TOOLTIPS = ("Regularisers for Gaussian Reconstruct.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "weight_geometry": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 10.0,
                                    "step": 0.05, "tooltip": "Weight of the warp-consistency "
                                    "L1 in pseudo views (0 disables it)."}),
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
            },
        }

    def make(self, weight_geometry, pseudo_views, every, start, mono_depth=None,
             mono_kind="disparity", weight_depth=0.05):
        mono = None
        if mono_depth is not None:
            if mono_depth.ndim != 4:
                raise ValueError(f"mono_depth must be an IMAGE [B,H,W,C], got "
                                 f"{list(mono_depth.shape)}")
            mono = mono_depth[..., :3].float().mean(-1)  # [B,H,W]
        cfg = IPSMGeometryConfig(weight_geometry=weight_geometry, weight_depth=weight_depth,
                                 pseudo_views=pseudo_views, every=every, start=start)
        return ({"ipsm_geometry": {"config": cfg, "mono_depth": mono, "mono_kind": mono_kind}},)


NODE_CLASS_MAPPINGS = {"OrbitForgeIPSMGeometryPriors": IPSMGeometryPriors}
NODE_DISPLAY_NAME_MAPPINGS = {"OrbitForgeIPSMGeometryPriors": "IPSM Geometry Priors (OrbitForge)"}
