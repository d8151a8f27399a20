"""Host side of the reconstruction priors (IPSM diffusion, SV3D masked SDS): checks and model
callables.

Everything imports ComfyUI lazily. The maths lives in ``kernels/priors/sds.py`` /
``kernels/priors/ipsm.py``; this module turns core objects into what those kernels call:

* :func:`model_family` -- the pack's model-family detector (:func:`.family.family`): 'sd15_inpaint'
  | 'sd15' | 'sd2' | 'sdxl' | 'sv3d_p' | 'sv3d_u' | 'svd' | 'hi3d_stage2' | 'other:<Class>'.
* :func:`check_ipsm_prior` / :func:`check_sv3d_sds` -- ``ValueError`` before the fit starts for
  a prior MODEL of the wrong family (e.g. SDXL wired as the SD-1.5 inpainting model), a missing
  VAE, or a prior enabled without the CONDITIONING it needs.
* :func:`eps_callable` -- an SD-1.x MODEL + positive/negative CONDITIONING -> ``eps(x, t)`` with
  CFG, on DDPM latents ``z_t = sqrt(a) z + sqrt(1-a) eps`` (the kernel's convention), through
  ComfyUI's ``apply_model`` (k-diffusion form ``x = z_t / sqrt(a)``, ``sigma = sqrt((1-a)/a)``).
  For the 9-channel inpainting model, ``x[:, 4:]`` (mask | masked-image latents) is passed as
  ``c_concat`` (not scaled by c_in), which is how ComfyUI feeds inpainting UNets.
* :func:`alphas_cumprod` -- the model's own alpha_bar table ``1 / (1 + sigmas^2)``.
* :func:`encode_latents` -- IMAGE ``[B,H,W,3]`` -> the model's latent space (VAE encode, keeping
  the autograd graph when asked: the IPSM prior needs d(latent)/d(render)).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from .conditioning import unconditional
from .family import family, require

model_family = family  # family of a core MODEL; never raises


def _need_cond(cond, what: str) -> None:
    if cond is None:
        raise ValueError(f"{what} is not connected; wire a CONDITIONING (e.g. CLIPTextEncode of a "
                         "short caption, or an empty prompt) into it")
    if not isinstance(cond, (list, tuple)) or len(cond) == 0 or not torch.is_tensor(cond[0][0]):
        raise ValueError(f"{what} must be a core CONDITIONING (list of [tensor, dict]), got "
                         f"{type(cond).__name__}")


def check_ipsm_prior(inpaint_model, sd_model, vae, positive, negative=None) -> None:
    """Validate the IPSM diffusion-prior inputs (called before the fit starts)."""
    if inpaint_model is None or sd_model is None:
        raise ValueError("the IPSM diffusion prior needs both an SD-1.5 inpainting MODEL "
                         "(9 input channels) and an SD-1.5 MODEL; connect both or disable it")
    require(inpaint_model, "ipsm_inpaint")
    require(sd_model, "ipsm_sd")
    if vae is None:
        raise ValueError("the IPSM diffusion prior needs the SD-1.5 VAE; connect a VAE")
    _need_cond(positive, "positive conditioning for the IPSM prior")
    if negative is not None:
        _need_cond(negative, "negative conditioning for the IPSM prior")


def check_sv3d_sds(sv3d_model, vae, clip_vision=None, positive=None, image=None) -> str:
    """Validate the SV3D masked-SDS inputs; returns the family ('sv3d_p' or 'sv3d_u')."""
    if sv3d_model is None:
        raise ValueError("SV3D SDS is enabled but no SV3D MODEL is connected")
    fam = require(sv3d_model, "sv3d_sds")
    if vae is None:
        raise ValueError("SV3D SDS needs the SV3D VAE; connect the VAE of the SV3D checkpoint")
    if positive is None and (clip_vision is None or image is None):
        raise ValueError("SV3D SDS needs its conditioning: either the SV3D CONDITIONING (from "
                         "SV3D_Conditioning / OrbitForge SV3D Orbit) or CLIP_VISION plus the "
                         "input IMAGE")
    if positive is not None:
        _need_cond(positive, "SV3D conditioning")
    return fam


def alphas_cumprod(model) -> torch.Tensor:
    """alpha_bar ``[T]`` of an EPS (discrete) MODEL from its sigma table."""
    ms = model.model.model_sampling
    sig = ms.sigmas.detach().to(torch.float64)
    return (1.0 / (1.0 + sig**2)).to(torch.float32)


def eps_callable(model, positive, negative=None, cfg: float = 7.5) -> Callable:
    """``eps(x, t)`` for an SD-1.x MODEL with CFG (see module doc). ``x`` is ``[B, 4 or 9, h, w]``
    DDPM latents in the model's latent space; ``t`` integer timesteps ``[B]``."""
    from comfy import model_management  # noqa: PLC0415

    base = model.model
    ms = base.model_sampling
    if hasattr(model, "patch_model"):  # a real ModelPatcher: load its weights on the device
        model_management.load_models_gpu([model])
    dev = model_management.get_torch_device()
    dtype = base.get_dtype() if hasattr(base, "get_dtype") else torch.float32
    pos = positive[0][0]
    neg = negative[0][0] if negative is not None else torch.zeros_like(pos)

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        a = (1.0 / (1.0 + ms.sigmas.to(x.device)[t.to(x.device)] ** 2)).to(x.dtype)  # [B]
        sigma = ((1 - a) / a).sqrt()
        z_t, concat = x[:, :4], (x[:, 4:] if x.shape[1] > 4 else None)
        xk = (z_t / a.sqrt().view(B, 1, 1, 1)).to(dev, dtype)
        s2 = sigma.to(dev, dtype).repeat(2)
        ctx = torch.cat([neg.expand(B, -1, -1), pos.expand(B, -1, -1)]).to(dev, dtype)
        cc = None if concat is None else concat.to(dev, dtype).repeat(2, 1, 1, 1)
        with torch.no_grad():
            den = base.apply_model(xk.repeat(2, 1, 1, 1), s2, c_concat=cc, c_crossattn=ctx)
        e = (xk.repeat(2, 1, 1, 1) - den) / s2.view(-1, 1, 1, 1)
        e_u, e_c = e.chunk(2)
        return (e_u + cfg * (e_c - e_u)).to(x.device, x.dtype)

    return eps


def encode_latents(model, vae, images: torch.Tensor, keep_graph: bool = False) -> torch.Tensor:
    """IMAGE ``[B,H,W,3]`` 0..1 -> latents in ``model``'s space ``[B,4,H/8,W/8]``.

    ``keep_graph`` runs the VAE encoder directly (``vae.first_stage_model.encode`` on -1..1
    input, mean of the posterior) so gradients reach ``images``; otherwise ``vae.encode``.
    """
    if keep_graph:
        x = images.permute(0, 3, 1, 2) * 2 - 1
        fsm = vae.first_stage_model
        p = next(fsm.parameters())
        out = fsm.encode(x.to(p.device, p.dtype))
        z = out[0] if isinstance(out, tuple) else out  # mean of the posterior
        z = z.to(images.dtype)
    else:
        z = vae.encode(images[..., :3]).to(images.dtype)
    return model.model.latent_format.process_in(z)


def sd_family_note(model: Optional[object]) -> str:
    """One-line description for error messages / logs."""
    return "not connected" if model is None else family(model)


# ----------------------------------------------------------------------------------------------
# Regularisers for the fit (built lazily from RECON_PRIORS entries; models loaded before the fit)
# ----------------------------------------------------------------------------------------------


def _load(models) -> None:
    """Load ModelPatchers (MODELs, a VAE's patcher) together through ComfyUI's model management."""
    from comfy import model_management  # noqa: PLC0415

    patchers = [m for m in models if m is not None and hasattr(m, "patch_model")]
    if patchers:
        model_management.load_models_gpu(patchers)


def _grad_ready_vae(vae) -> None:
    """The VAE encoder must be usable in a graph: frozen weights, no inference tensors (weights
    moved while ComfyUI ran the node under ``inference_mode`` are inference tensors, which
    autograd cannot save for backward). Replaces such parameters by ordinary clones, once."""
    fsm = vae.first_stage_model
    with torch.inference_mode(False):
        for mod in fsm.modules():
            for name, p in list(mod._parameters.items()):
                if p is None:
                    continue
                if p.is_inference():
                    mod._parameters[name] = torch.nn.Parameter(p.clone(), requires_grad=False)
                elif p.requires_grad:
                    p.requires_grad_(False)
            for name, b in list(mod._buffers.items()):
                if b is not None and b.is_inference():
                    mod._buffers[name] = b.clone()


def _encoder(model, vae):
    def encode(images: torch.Tensor) -> torch.Tensor:
        return encode_latents(model, vae, images, keep_graph=True)

    return encode


def build_ipsm_diffusion(spec: dict):
    """RECON_PRIORS ``ipsm_diffusion`` entry ->
    :class:`...kernels.priors.regularizers.IPSMDiffusionRegularizer`.

    Re-checks the inputs, loads both UNets and the VAE together (before the fit); the epsilon
    callables are created on first use (inside the fit, outside inference mode)."""
    from ...kernels.priors.regularizers import IPSMDiffusionRegularizer  # noqa: PLC0415

    inp, sd, vae = spec["inpaint_model"], spec["sd_model"], spec["vae"]
    pos, neg, scale = spec["positive"], spec.get("negative"), float(spec.get("cfg", 7.5))
    check_ipsm_prior(inp, sd, vae, pos, neg)
    _load([inp, sd, getattr(vae, "patcher", None)])
    state = {}

    def prepare():
        _load([inp, sd, getattr(vae, "patcher", None)])
        _grad_ready_vae(vae)
        state["inp"] = eps_callable(inp, pos, neg, scale)
        state["sd"] = eps_callable(sd, pos, neg, scale)

    return IPSMDiffusionRegularizer(
        _encoder(sd, vae), lambda x, t: state["inp"](x, t), lambda x, t: state["sd"](x, t),
        alphas_cumprod(sd), spec["config"], prepare=prepare)


def sv3d_orbit_of(positive) -> tuple:
    """(elevations [F], azimuths [F], latent height, latent width) of an SV3D CONDITIONING."""
    d = positive[0][1]
    lat = d.get("concat_latent_image")
    if lat is None or not torch.is_tensor(lat):
        raise ValueError("the SV3D conditioning has no concat_latent_image; use the positive "
                         "output of OrbitForge SV3D Orbit or core SV3D_Conditioning")
    az = d.get("azimuth")
    el = d.get("elevation")
    if az is None:  # SV3D_u conditioning carries no cameras: its fixed static orbit
        frames = int(d.get("video_frames", 21) or 21)
        az = [(f + 1) * 360.0 / frames % 360.0 for f in range(frames)]
        el = [float(el if el is not None else 0.0)] * frames
    if not isinstance(az, (list, tuple)):
        az = [float(az)]
    if not isinstance(el, (list, tuple)):
        el = [float(el)] * len(az)
    if len(el) != len(az):
        raise ValueError(f"SV3D conditioning has {len(el)} elevations but {len(az)} azimuths")
    return [float(e) for e in el], [float(a) for a in az], int(lat.shape[-2]), int(lat.shape[-1])


def sv3d_denoiser_factory(model, positive, negative=None, cfg: float = 2.5):
    """``denoiser_for(elevations, azimuths) -> D(x [F,4,h,w], sigma [F]) -> x0`` for an SV3D
    MODEL through ComfyUI's ``apply_model`` (its EDM v-prediction wrapper), with the camera vector
    rebuilt by the model's own ``encode_adm`` for the given orbit, the CLIP embedding and concat
    latent of ``positive`` (``negative``: its zeroed counterparts when not given), CFG ``cfg``
    (one batched forward of both branches; 1 = conditional only)."""
    from comfy import model_management  # noqa: PLC0415

    base = model.model
    dev = model_management.get_torch_device()
    dtype = base.get_dtype() if hasattr(base, "get_dtype") else torch.float32
    p_ctx, p_d = positive[0][0], positive[0][1]
    p_cat = p_d["concat_latent_image"]
    aug = float(p_d.get("augmentation_level", 0.0))
    n_ctx, n_d = (negative if negative is not None else unconditional(positive[:1]))[0]
    n_cat = n_d.get("concat_latent_image", torch.zeros_like(p_cat))

    def denoiser_for(elevations, azimuths):
        def D(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            F_ = x.shape[0]
            xd = x.to(dev, dtype)
            y = base.encode_adm(augmentation_level=aug, elevation=list(elevations),
                                azimuth=list(azimuths), noise=xd).to(dev, dtype)  # [F, adm]
            branches = [(p_ctx, p_cat)] if cfg == 1.0 else [(n_ctx, n_cat), (p_ctx, p_cat)]
            k = len(branches)
            cc = torch.cat([c.to(dev, dtype).expand(F_, -1, -1, -1) if c.shape[0] == 1 else
                            c.to(dev, dtype) for _, c in branches])
            ctx = torch.cat([t.to(dev, dtype).expand(F_, -1, -1) if t.shape[0] == 1 else
                             t.to(dev, dtype) for t, _ in branches])
            with torch.no_grad():
                den = base.apply_model(xd.repeat(k, 1, 1, 1), sigma.to(dev, dtype).repeat(k),
                                       c_concat=cc, c_crossattn=ctx, y=y.repeat(k, 1),
                                       num_video_frames=F_)
            if k == 2:
                u, c = den.chunk(2)
                den = u + cfg * (c - u)
            return den.to(x.device, x.dtype)

        return D

    return denoiser_for


def build_sv3d_sds(spec: dict):
    """RECON_PRIORS ``sv3d_sds`` entry ->
    :class:`...kernels.priors.regularizers.SV3DSDSRegularizer`."""
    import dataclasses  # noqa: PLC0415

    from ...kernels.priors.regularizers import SV3DSDSRegularizer  # noqa: PLC0415

    model, vae, pos, neg = spec["model"], spec["vae"], spec["positive"], spec.get("negative")
    fam = check_sv3d_sds(model, vae, positive=pos)
    el, az, h, w = sv3d_orbit_of(pos)
    config = spec["config"]
    if fam == "sv3d_u" and config.random_azimuth:  # fixed cameras: the orbit cannot rotate
        config = dataclasses.replace(config, random_azimuth=False)
    _load([model, getattr(vae, "patcher", None)])

    def prepare():
        _load([model, getattr(vae, "patcher", None)])
        _grad_ready_vae(vae)

    return SV3DSDSRegularizer(_encoder(model, vae),
                              sv3d_denoiser_factory(model, pos, neg, float(spec.get("cfg", 2.5))),
                              el, az, h * 8, w * 8, config, prepare=prepare)
