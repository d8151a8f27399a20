"""CD score node: HarmonyView's consistency-diversity metric of generated views (CLIP)."""

from __future__ import annotations

import torch

from ..kernels.diffusion.cd_score import (
    PROMPT_TEMPLATE,
    cd_terms,
    check_joint_space,
    check_views,
    make_prompt,
)


class CDScore:
    DESCRIPTION = (
        "HarmonyView's CD score of a set of generated views (official eval_CD_score.py): D = sum_i "
        "(1 - cos(f_ref, f_i)) (diversity from the input view), S_var = sample variance over views "
        "of 100*max(cos(text, f_i), 0) with text 'An image of {name}' (semantic consistency); CD = "
        "D / S_var. For a data set the paper reports mean(D)/mean(S_var) (HarmonyView 0.792 vs "
        "SyncDreamer 0.717, 16 views, CLIP ViT-L/14); compare numbers only across runs scored with "
        "the same CLIP and view count. NEEDS one CLIP model's joint space: CLIP_VISION gives "
        "projected image_embeds, CLIP must be the text tower of the SAME CLIP (its projected "
        "pooled output is used). Paper setup: Load CLIP Vision 'clip-vit-large-patch14' + Load "
        "CLIP 'clip_l.safetensors' (768-d). SV3D's CLIP_VISION (OpenCLIP ViT-H/14, 1024-d) pairs "
        "with an SD2.x text encoder. Mismatched widths are refused; SD1.x checkpoint CLIPs lack "
        "the text projection.")
    CATEGORY = "OrbitForge/metrics"
    FUNCTION = "run"
    RETURN_TYPES = ("FLOAT", "FLOAT", "FLOAT", "STRING")
    RETURN_NAMES = ("cd", "D", "S_var", "report")
    OUTPUT_TOOLTIPS = (
        "CD = D / S_var of this sample (higher = more diverse yet semantically consistent; inf if "
        "S_var = 0).",
        "D: sum over views of 1 - cos(reference view, view) in CLIP image space.",
        "S_var: sample variance (n-1) over views of 100*max(cos(text, view), 0).",
        "Per-view breakdown: 1-cos to the reference view and text similarity, plus the prompt "
        "used.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "clip_vision": ("CLIP_VISION", {"tooltip": "CLIP image encoder (projected "
                                            "image_embeds). Paper: ViT-L/14. Must be the same CLIP "
                                            "model as the text encoder."}),
            "clip": ("CLIP", {"tooltip": "CLIP text encoder of the SAME CLIP model as clip_vision "
                              "(paper: clip_l for ViT-L/14). Its projected pooled output is used; "
                              "SD1.x checkpoint CLIPs lack the projection."}),
            "views": ("IMAGE", {"tooltip": "The generated views [n,H,W,C] including the input view "
                                           "(n >= 2; paper: 16)."}),
            "object_name": ("STRING", {"default": "",
                                       "tooltip": "What the object is, e.g. 'alarm clock' (prompt "
                                       "'An image of {name}')."}),
            "reference_index": ("INT", {"default": -1, "min": -4096, "max": 4095,
                                        "tooltip": "Which view is the input view f_0: -1 = last "
                                        "(SV3D orbits put the input view last), 0 = first "
                                        "(SyncDreamer/HarmonyView grids)."}),
            "prompt_template": ("STRING", {"default": PROMPT_TEMPLATE,
                                           "tooltip": "Text prompt; {name} is replaced "
                                           "by the object name (official: 'An image of {name}')."}),
            "official_name_cleanup": ("BOOLEAN", {
                "default": True,
                "tooltip": "As the official script: '_' -> space, digits removed from the name."}),
        }}

    def run(self, clip_vision, clip, views, object_name, reference_index, prompt_template,
            official_name_cleanup):
        from .host.cd_score import escape_prompt, image_embeddings, text_embedding  # noqa: PLC0415

        if not torch.is_tensor(views) or views.ndim != 4 or views.shape[-1] < 3:
            raise ValueError("views must be an IMAGE [n,H,W,C], got "
                             f"{getattr(views, 'shape', type(views))}")
        check_views(views.shape[0], reference_index, "reference_index")
        prompt = make_prompt(object_name, prompt_template, bool(official_name_cleanup))
        txt = text_embedding(clip, escape_prompt(prompt))  # [1, Dt]
        check_joint_space(_width_hint(clip_vision, txt.shape[-1]), txt.shape[-1])
        img = image_embeddings(clip_vision, views)  # [n, Di]
        res = cd_terms(img, txt, int(reference_index))
        report = f"prompt: {prompt!r}\n" + res.report()
        return (float(res.cd), float(res.D), float(res.S_var), report)


def _width_hint(clip_vision, default: int) -> int:
    """Projection width of a core CLIP_VISION from its config without encoding (falls back to
    ``default``, the real check then happens on the embeddings)."""
    model = getattr(clip_vision, "model", None)
    proj = getattr(model, "visual_projection", None)
    w = getattr(proj, "weight", None)
    if w is not None and w.ndim == 2:
        return int(w.shape[0])
    return int(default)


NODE_CLASS_MAPPINGS = {"OrbitForgeCDScore": CDScore}
NODE_DISPLAY_NAME_MAPPINGS = {"OrbitForgeCDScore": "OrbitForge CD Score (HarmonyView)"}
