"""ComfyUI glue for SV3D: model detection, conditioning, the OrbitForge GUIDER (triangle/linear/
constant CFG and HarmonyView in one batched forward), the Euler-EDM SAMPLER and the all-in-one run.

Every ComfyUI import is inside a function; the guider class is built by :func:`guider_class` the
first time it is needed (it must subclass ``comfy.samplers.CFGGuider``).

HarmonyView's "cross-view interaction removed" branch (``no_views``) on SV3D: the frames are
evaluated with ``image_only_indicator = 1``. This is the network's own switch (official
``VideoUNet`` and ComfyUI's ``openaimodel``): every ``AlphaBlender`` (``learned_with_images``)
then takes alpha = 1, i.e. the purely spatial path, so the temporal res-blocks and temporal
attention -- the only places where frames interact -- are bypassed, while the input (CLIP,
concat latent x ``concat_scale``) and the per-frame camera vector stay. The indicator travels as
an extra model condition (``image_only_indicator``, shape ``[1, F]`` per branch, concatenated to
``[branches, F]``), so all branches run in ONE batched forward.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch

from ...kernels.diffusion import edm
from ...kernels.diffusion.guidance import FULL, NO_INPUT, NO_VIEWS, Guidance, make_guidance
from ...kernels.diffusion.sv3d import COND_AUG, noisy_cond_pixels
from .conditioning import sv3d_conditioning
from .family import require

log = logging.getLogger("orbitforge")

_CACHE: dict = {}


# ----------------------------------------------------------------------------- model checks
def sv3d_variant(model) -> str:
    """'p' or 'u' for a ComfyUI MODEL holding SV3D_p / SV3D_u; ValueError otherwise (the
    family detector's ``require(model, "sv3d")``)."""
    return require(model, "sv3d")[-1]


def context_dim(model) -> int:
    return int(model.model.model_config.unet_config.get("context_dim", 1024))


def encode_clip(clip_vision, rgb: torch.Tensor, expected_dim: Optional[int]) -> torch.Tensor:
    """CLIP image embedding ``[1, 1, D]`` of ``rgb [1,H,W,3]`` (ComfyUI does the 224 CLIP prep)."""
    out = clip_vision.encode_image(rgb)
    emb = out["image_embeds"]
    if expected_dim is not None and emb.shape[-1] != expected_dim:
        raise ValueError(f"CLIP_VISION gives {emb.shape[-1]}-d image embeddings but SV3D needs "
                         f"{expected_dim}: use the CLIP_VISION from the same "
                         "ImageOnlyCheckpointLoader (OpenCLIP ViT-H/14)")
    return emb.reshape(1, 1, -1).float()


# ----------------------------------------------------------------------------- conditioning
def make_conditioning(clip_vision, vae, rgb: torch.Tensor, elevations, azimuths, width: int,
                      height: int,
                      cond_aug: float = COND_AUG, seed: int = 0,
                      expected_dim: Optional[int] = 1024):
    """(positive, negative, latent) for SV3D as the official script, in ComfyUI's format.

    ``rgb``: the prepared input ``[1,H,W,3]`` (on white). Positive = CLIP embedding + VAE mode of
    ``image + cond_aug * N(0,1)`` (unscaled) + per-frame elevation/azimuth + ``augmentation_level``
    (= cond_aug, so the vector matches the official one; core's SV3D_Conditioning leaves it 0).
    Negative zeroes CLIP and concat and keeps the cameras.
    """
    import comfy.utils  # noqa: PLC0415

    frames = len(azimuths)
    pooled = encode_clip(clip_vision, rgb, expected_dim)
    pix = comfy.utils.common_upscale(rgb.movedim(-1, 1), width, height, "bilinear", "center")
    pix = pix.movedim(1, -1)
    gen = torch.Generator().manual_seed(int(seed))
    noisy = noisy_cond_pixels(pix.float().cpu(), cond_aug, gen)
    t = vae.encode(noisy[..., :3])
    positive, negative = sv3d_conditioning(pooled, t, cond_aug, elevations, azimuths)
    latent = {"samples": torch.zeros([frames, 4, height // 8, width // 8])}
    return positive, negative, latent


# ----------------------------------------------------------------------------- guider
def _ioi_cond_class():
    import comfy.conds  # noqa: PLC0415

    class CONDImageOnlyIndicator(comfy.conds.CONDRegular):
        """``[1, F]`` per branch; not repeated to the latent batch; concatenates to ``[n, F]``."""

        def process_cond(self, batch_size, **kwargs):
            return self._copy_with(self.cond)

    return CONDImageOnlyIndicator


def _branch_conds(conds, branch: str, frames: int, concat_scale: float, ioi_cls):
    out = []
    for c in conds:
        c = c.copy()
        mc = dict(c["model_conds"])
        ind = torch.zeros(1, frames)
        if branch == NO_INPUT:
            for k in ("c_crossattn", "c_concat"):
                if k in mc:
                    mc[k] = mc[k]._copy_with(torch.zeros_like(mc[k].cond))
        elif branch == NO_VIEWS:
            if "c_concat" in mc and concat_scale != 1.0:
                mc["c_concat"] = mc["c_concat"]._copy_with(mc["c_concat"].cond * concat_scale)
            ind = torch.ones(1, frames)
        elif branch != FULL:
            raise ValueError(f"unknown branch {branch!r}")
        mc["image_only_indicator"] = ioi_cls(ind)  # every branch has it, so all concatenate
        c["model_conds"] = mc
        out.append(c)
    return out


def guider_class():
    """The ``OrbitForgeGuider`` class (a ``comfy.samplers.CFGGuider``), built once."""
    if "guider" in _CACHE:
        return _CACHE["guider"]
    import comfy.samplers  # noqa: PLC0415

    ioi_cls = _ioi_cond_class()

    class OrbitForgeGuider(comfy.samplers.CFGGuider):
        """SV3D guidance with per-frame schedules, all branches in one ``calc_cond_batch``.

        ``kind``: triangle | linear | constant (CFG in x0 space) | harmonyview. The no-input
        branch is derived from ``positive`` (CLIP and concat zeroed, camera vector kept), so it
        needs no negative. Core's ``sampler_pre_cfg_function`` / ``sampler_post_cfg_function``
        patches are re-applied (outputs ordered [full, no_input(, no_views)], i.e. [cond, uncond,
        ...] as core expects). A ``sampler_cfg_function`` patch is ignored: this guider defines
        the combination (a warning is logged).
        """

        def set_conds(self, positive, negative=None):
            self.inner_set_conds({"positive": positive})

        def set_guidance(self, kind="triangle", min_scale=1.0, max_scale=2.5, s1=2.0, s2=1.0,
                         concat_scale=4.0, harmony_schedule="constant"):
            self.kind = kind
            self.params = dict(min_scale=float(min_scale), max_scale=float(max_scale), s1=float(s1),
                               s2=float(s2), harmony_schedule=harmony_schedule)
            make_guidance(kind, 21, **self.params)  # validate now, before sampling
            self.concat_scale = float(concat_scale)
            # scalar for patches
            self.cfg = (1.0 + float(s1)) if kind == "harmonyview" else float(max_scale)
            self.forwards = 0
            self._warned = False

        def _guidance(self, frames):
            key = (self.kind, frames)
            if getattr(self, "_gkey", None) != key:
                self._g = make_guidance(self.kind, frames, **self.params)
                # ComfyUI convention: cond first, uncond second (for pre/post-CFG patches)
                if self._g.name == "cfg":
                    comb = self._g.combine
                    self._g = Guidance((FULL, NO_INPUT), lambda o, c=comb: c((o[1], o[0])), "cfg")
                self._gkey = key
            return self._g

        def predict_noise(self, x, timestep, model_options={}, seed=None):
            frames = x.shape[0]
            gd = self._guidance(frames)
            pos = self.conds.get("positive", None)
            conds = [_branch_conds(pos, b, frames, self.concat_scale, ioi_cls) for b in gd.branches]
            out = comfy.samplers.calc_cond_batch(self.inner_model, conds, x, timestep,
                                                 model_options)
            self.forwards += 1
            for fn in model_options.get("sampler_pre_cfg_function", []):
                args = {"conds": conds, "conds_out": out, "cond_scale": self.cfg,
                        "timestep": timestep,
                        "input": x, "sigma": timestep, "model": self.inner_model,
                        "model_options": model_options}
                out = fn(args)
            if "sampler_cfg_function" in model_options and not self._warned:
                log.warning("OrbitForge guider: the model's sampler_cfg_function patch is ignored "
                            "(use the guider's schedule instead)")
                self._warned = True
            result = gd.combine(tuple(out))
            for fn in model_options.get("sampler_post_cfg_function", []):
                args = {"denoised": result, "cond": conds[0],
                        "uncond": conds[1] if len(conds) > 1 else None,
                        "cond_scale": self.cfg, "model": self.inner_model,
                        "uncond_denoised": out[1] if len(out) > 1 else out[0],
                        "cond_denoised": out[0], "sigma": timestep, "model_options": model_options,
                        "input": x}
                result = fn(args)
            return result

    _CACHE["guider"] = OrbitForgeGuider
    return OrbitForgeGuider


def make_guider(model, positive, kind="harmonyview", **kw):
    sv3d_variant(model)
    g = guider_class()(model)
    g.set_conds(positive)
    g.set_guidance(kind, **kw)
    return g


# ----------------------------------------------------------------------------- sampler
def euler_sampler(s_churn: float = 0.0):
    """A core SAMPLER running the official Euler-EDM loop of :mod:`...kernels.diffusion.edm`."""
    import comfy.samplers  # noqa: PLC0415
    from comfy import model_management  # noqa: PLC0415

    def fn(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=s_churn):
        extra_args = extra_args or {}
        s_in = x.new_ones([x.shape[0]])
        gen = torch.Generator().manual_seed(int(extra_args.get("seed", 0) or 0) + 1)

        def den(xx, sigma):
            model_management.throw_exception_if_processing_interrupted()
            return model(xx, sigma * s_in, **extra_args)

        def cb(i, xx, d, s):
            if callback is not None:
                callback({"x": xx, "i": i, "sigma": sigmas[i], "sigma_hat": s, "denoised": d})

        return edm.sample_euler(den, x, sigmas, s_churn=s_churn, generator=gen, callback=cb)

    return comfy.samplers.KSAMPLER(fn)


def model_sigmas(model, steps: int) -> torch.Tensor:
    ms = model.get_model_object("model_sampling")
    return edm.edm_sigmas(steps, float(ms.sigma_min), float(ms.sigma_max))


def run_sampling(model, guider, latent: dict, steps: int, seed: int,
                 s_churn: float = 0.0) -> torch.Tensor:
    """Sample through core (model management, previews, interrupts). Returns raw latents
    [F,4,h,w]."""
    import comfy.sample  # noqa: PLC0415
    import comfy.utils  # noqa: PLC0415
    import latent_preview  # noqa: PLC0415
    from comfy import model_management  # noqa: PLC0415

    lat = latent["samples"]
    noise = comfy.sample.prepare_noise(lat, int(seed))
    sigmas = model_sigmas(model, steps)
    callback = latent_preview.prepare_callback(model, steps)
    samples = guider.sample(noise, lat, euler_sampler(s_churn), sigmas, callback=callback,
                            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=int(seed))
    return samples.to(model_management.intermediate_device())
