"""ComfyUI glue for the CD score: projected CLIP image and text embeddings from core objects.

- Image: ``CLIP_VISION.encode_image(images)["image_embeds"]`` -- the *projected* embedding
  (``visual_projection(post_layernorm(CLS))``), ``[n, D]``; ComfyUI does the 224 CLIP resize,
  centre crop and mean/std (as the official ``clip.load`` preprocess).
- Text: ``CLIP.encode_from_tokens(tokens, return_pooled=True)`` returns the model's *default*
  pooled output, and for SD1.x / Flux / SD3 CLIP-L that default is the UNPROJECTED pooled output
  (``SD1CheckpointClipModel(return_projected_pooled=False)``), which is not in the joint space
  although it has the same width (768). So we ask the text model explicitly for the projected
  pooled output (``set_clip_options({"projected_pooled": True})``, the option core itself uses),
  encode, and restore the options. The projection weights must have been loaded: SD1.x
  checkpoints do NOT contain ``text_projection`` (ComfyUI leaves it uninitialised); load the
  text encoder with CLIPLoader from a full CLIP text model (e.g. ``clip_l.safetensors``).
"""

from __future__ import annotations

import torch


def image_embeddings(clip_vision, images: torch.Tensor) -> torch.Tensor:
    """``images [n,H,W,C]`` 0..1 -> projected CLIP image embeddings ``[n, D]`` (float32, CPU)."""
    if not hasattr(clip_vision, "encode_image"):
        raise ValueError(f"clip_vision is a {type(clip_vision).__name__}, not a CLIP_VISION (no "
                         "encode_image): connect a Load CLIP Vision node")
    out = clip_vision.encode_image(images[..., :3])
    emb = out["image_embeds"]
    if emb is None:
        raise ValueError("this CLIP_VISION has no projected image embedding (image_embeds): use a "
                         "CLIP model's vision tower (e.g. clip_vision ViT-L/14), not "
                         "DINO/SigLIP-only encoders")
    return emb.detach().reshape(emb.shape[0], -1).float().cpu()


def _text_projections(cond_stage_model):
    return [m for n, m in cond_stage_model.named_modules()
            if n.endswith("text_projection") and hasattr(m, "weight")]


def text_embedding(clip, text: str) -> torch.Tensor:
    """Projected pooled CLIP text embedding ``[1, D]`` (float32, CPU) of ``text``."""
    csm = getattr(clip, "cond_stage_model", None)
    if csm is None or not hasattr(clip, "tokenize"):
        raise ValueError(f"clip is a {type(clip).__name__}, not a core CLIP: connect Load CLIP / a "
                         "checkpoint's CLIP")
    for p in _text_projections(csm):
        w = p.weight
        if w is not None and (not torch.isfinite(w.float()).all()
                              or float(w.float().abs().max()) == 0.0):
            raise ValueError("the CLIP text model's text_projection is empty/uninitialised (SD1.x "
                             "checkpoints do not store it): load the text encoder with Load CLIP "
                             "from a full CLIP text model (e.g. clip_l.safetensors for ViT-L/14)")
    tokens = clip.tokenize(text)
    csm.reset_clip_options()
    try:
        csm.set_clip_options({"projected_pooled": True})
        if hasattr(clip, "load_model"):
            clip.load_model()
        o = csm.encode_token_weights(tokens)
    finally:
        csm.reset_clip_options()
    pooled = o[1] if isinstance(o, (tuple, list)) and len(o) > 1 else None
    if pooled is None:
        raise ValueError(f"this text encoder ({type(csm).__name__}) gives no pooled embedding: use "
                         "a CLIP text encoder (e.g. clip_l for ViT-L/14)")
    return pooled[:1].detach().reshape(1, -1).float().cpu()


def escape_prompt(text: str) -> str:
    """Escape ComfyUI's prompt-weight syntax so ``(`` and ``)`` are read literally."""
    return text.replace("(", "\\(").replace(")", "\\)")
