"""ComfyUI glue of the Diffusion² matrix sampler: model checks, per-sequence conditions, the
sequence denoisers on ComfyUI models, memory-sized chunks, and the whole run.

Both MODELs are loaded together through ComfyUI's model management
(``load_models_gpu([video, multiview])``) and stay loaded for the run. A sequence denoiser
evaluates a chunk of rows (or columns) with both CFG branches in ONE ``apply_model`` call: the
batch is ``[2 n L]`` frames (uncond first), ``num_video_frames = L`` so the temporal layers see
``2 n`` independent sequences; per-sequence conditions (CLIP embedding and VAE concat latent of
the reference image the sequence is conditioned on) are repeated over the sequence's frames; the
vector condition (SVD: fps / motion bucket / cond_aug; SV3D_p: cond_aug + per-view cameras) is the
model's own ``encode_adm``. The unconditional branch zeroes CLIP and concat and keeps the vector
(official ``force_uc_zero_embeddings``).
"""

from __future__ import annotations

import math

import torch

from ...kernels.diffusion import edm
from ...kernels.diffusion.guidance import make_scales
from ...kernels.diffusion.sv3d import noisy_cond_pixels
from ...kernels.dynamic.diffusion2 import (
    MatrixSettings,
    MatrixStats,
    cfg_combine,
    denoise_matrix,
    flatten_matrix,
    sample_matrix,
    unflatten_matrix,
)
from . import check_interrupt, intermediate_device, oom_exceptions, torch_device
from .family import require
from .models import clip_image_embed, vae_decode_chunked, vae_encode_chunked

# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------


def latent_channels(model) -> int:
    return int(model.model.latent_format.latent_channels)


def check_models(video_model, multiview_model) -> None:
    """ValueError unless video_model is SVD(-XT) and multiview_model is SV3D_p/SV3D_u with the
    same latent space."""
    kv, km = require(video_model, "video"), require(multiview_model, "video")
    if kv != "svd":
        swapped = " -- the two models look swapped" if km == "svd" else ""
        raise ValueError(f"video_model is {kv.upper()}, expected Stable Video Diffusion "
                         f"(svd_xt.safetensors){swapped}; connect SVD-XT to video_model and SV3D_p "
                         "to multiview_model")
    if km not in ("sv3d_p", "sv3d_u"):
        raise ValueError(f"multiview_model is {km.upper()}, expected SV3D_p (sv3d_p.safetensors); "
                         "load it with Image Only Checkpoint Loader")
    cv, cm = latent_channels(video_model), latent_channels(multiview_model)
    if cv != cm:
        raise ValueError(f"the models have different latent channels ({cv} vs {cm}); Diffusion² "
                         "needs two models sharing one latent space (SVD-XT and SV3D share the SD "
                         "VAE)")


# ----------------------------------------------------------------------------------------------
# Conditions
# ----------------------------------------------------------------------------------------------


def encode_references(clip_vision, vae, images: torch.Tensor, cond_aug: float, seed: int,
                      chunk: int = 8):
    """Per-image conditions: CLIP embeddings ``[N, 1, D]`` and VAE latents (mode) of
    ``image + cond_aug * N(0,1)`` (official ``cond_frames``, [-1, 1] space) ``[N, 4, h, w]``."""
    emb = torch.cat([clip_image_embed(clip_vision, images[i:i + 1]).reshape(1, 1, -1).float().cpu()
                     for i in range(images.shape[0])])
    gen = torch.Generator().manual_seed(int(seed))
    noisy = noisy_cond_pixels(images[..., :3].float().cpu(), cond_aug, gen)
    lat = vae_encode_chunked(vae, noisy, chunk).float().cpu()
    return emb, lat


def svd_vector(model, fps: int, motion_bucket_id: int, cond_aug: float) -> torch.Tensor:
    """SVD's vector condition ``[1, 768]`` (ComfyUI: fps_id = fps - 1)."""
    return model.model.encode_adm(fps=fps, motion_bucket_id=motion_bucket_id,
                                  augmentation_level=cond_aug).float().cpu()


def sv3d_vector(model, elevations, azimuths, cond_aug: float) -> torch.Tensor:
    """SV3D's vector condition, one row per view ``[V, A]`` (SV3D_p: cameras; SV3D_u: cond_aug)."""
    V = len(azimuths)
    y = model.model.encode_adm(augmentation_level=cond_aug,
                               elevation=[float(e) for e in elevations],
                               azimuth=[float(a) for a in azimuths], noise=torch.zeros(V, 1, 1, 1))
    return y.float().cpu().expand(V, -1) if y.shape[0] == 1 else y.float().cpu()


class HostSequenceModel:
    """A ComfyUI SVD-family MODEL as a Diffusion² sequence denoiser with per-frame CFG."""

    def __init__(self, model, crossattn: torch.Tensor, concat: torch.Tensor, vector: torch.Tensor,
                 scales: torch.Tensor, model_options: dict | None = None):
        self.model = model
        self.crossattn = crossattn  # [N, 1, D] one per sequence
        self.concat = concat  # [N, 4, h, w] one per sequence
        self.vector = vector  # [L, A] or [1, A]
        self.scales = scales  # [L]
        options = model_options or model.model_options
        self.transformer_options = dict(options.get("transformer_options", {}))
        self.forwards = 0
        self.sequences = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        check_interrupt()
        n, L = x.shape[0], x.shape[1]
        dev = x.device
        i = idx.cpu()
        xf = x.reshape((n * L,) + tuple(x.shape[2:]))
        cat = self.concat[i].repeat_interleave(L, 0)  # [nL, 4, h, w]
        ctx = self.crossattn[i].repeat_interleave(L, 0)  # [nL, 1, D]
        vec = self.vector if self.vector.shape[0] == L else self.vector.expand(L, -1)
        y = vec.repeat(2 * n, 1)  # [2nL, A] (frames fastest)
        x2 = torch.cat([xf, xf])
        c_concat = torch.cat([torch.zeros_like(cat), cat]).to(dev)
        c_ctx = torch.cat([torch.zeros_like(ctx), ctx]).to(dev)
        s = torch.full((2 * n * L,), float(sigma), device=dev, dtype=torch.float32)
        out = self.model.model.apply_model(x2, s, c_concat=c_concat, c_crossattn=c_ctx,
                                           transformer_options=self.transformer_options,
                                           y=y.to(dev), num_video_frames=L).float()
        self.forwards += 1
        self.sequences += 2 * n
        du, dc = out.reshape((2 * n, L) + tuple(x.shape[2:])).chunk(2)
        return cfg_combine(du, dc, self.scales.to(dev)).to(x.dtype)


# ----------------------------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------------------------


def load_both(video_model, multiview_model, frame_shape, frames: int) -> None:
    """Load both models with ComfyUI's model management (kept loaded while sampling)."""
    from comfy import model_management

    need = max(_seq_memory(video_model, frame_shape, frames), _seq_memory(multiview_model,
                                                                          frame_shape, frames))
    model_management.load_models_gpu([video_model, multiview_model], memory_required=need)


def _seq_memory(model, frame_shape, length: int) -> float:
    """Activation memory estimate (bytes) of one sequence, both CFG branches (core's estimate)."""
    try:
        return float(model.model.memory_required([2 * length] + list(frame_shape)))
    except Exception:  # noqa: BLE001 - older cores lack the estimate
        return 2.0 * length * math.prod(frame_shape) * 4 * 2000  # coarse fallback


def auto_chunk(model, frame_shape, length: int, count: int, cap: int) -> int:
    """Sequences per call: what fits in 80% of the free memory of the torch device, at most ``cap``
    (0 = no cap) and at most ``count``."""
    from comfy import model_management

    dev = torch_device()
    free = float(model_management.get_free_memory(dev))
    per = max(_seq_memory(model, frame_shape, length), 1.0)
    n = max(1, int(0.8 * free // per))
    if cap > 0:
        n = min(n, cap)
    return max(1, min(n, count))


# ----------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------


def model_sigmas(model, steps: int) -> torch.Tensor:
    ms = model.get_model_object("model_sampling")
    return edm.edm_sigmas(steps, float(ms.sigma_min), float(ms.sigma_max))


def sample_sequence(seq_model: HostSequenceModel, length: int, latent_hw, steps: int, seed: int,
                    progress=None, offset: int = 0) -> torch.Tensor:
    """One reference sequence (orbit or video) with the official Euler-EDM loop:
    ``[L, 4, h, w]``."""
    dev = torch_device()
    sig = model_sigmas(seq_model.model, steps)
    x = edm.initial_noise((1, length, 4) + tuple(latent_hw), float(sig[0]),
                          torch.Generator().manual_seed(seed), device=dev)

    def den(xx, s):
        return seq_model(xx, s, torch.zeros(1, dtype=torch.long))

    def cb(i, xx, d, s):
        if progress is not None:
            progress.update(offset + i + 1)

    out = edm.sample_euler(den, x, sig, callback=cb)
    return out[0]


def decode(vae, latents: torch.Tensor, chunk: int) -> torch.Tensor:
    return vae_decode_chunked(vae, latents, max(1, int(chunk)))


def oom():
    return oom_exceptions()


__all__ = [
    "HostSequenceModel",
    "auto_chunk",
    "check_models",
    "decode",
    "encode_references",
    "intermediate_device",
    "load_both",
    "matrix_denoisers",
    "model_sigmas",
    "multiview_denoiser",
    "oom",
    "sample_4d",
    "sample_sequence",
    "sv3d_vector",
    "svd_vector",
    "video_denoiser",
]


# ----------------------------------------------------------------------------------------------
# The whole run
# ----------------------------------------------------------------------------------------------


def multiview_denoiser(multiview_model, clip_vision, vae, refs: torch.Tensor, elevations, azimuths,
                       s: MatrixSettings, seed: int) -> HostSequenceModel:
    """SV3D as a sequence denoiser over the V views, conditioned per sequence on ``refs``
    (constant CFG ``s.multiview_cfg``; the cameras in the vector)."""
    emb, lat = encode_references(clip_vision, vae, refs, s.multiview_cond_aug, seed)
    return HostSequenceModel(multiview_model, emb, lat,
                             sv3d_vector(multiview_model, elevations, azimuths,
                                         s.multiview_cond_aug),
                             make_scales("constant", s.views, max_scale=s.multiview_cfg))


def video_denoiser(video_model, clip_vision, vae, refs: torch.Tensor, s: MatrixSettings,
                   seed: int) -> HostSequenceModel:
    """SVD as a sequence denoiser over the F frames, conditioned per sequence on ``refs``
    (CFG linear from ``s.video_cfg_min`` to ``s.video_cfg_max``)."""
    emb, lat = encode_references(clip_vision, vae, refs, s.video_cond_aug, seed)
    return HostSequenceModel(video_model, emb, lat,
                             svd_vector(video_model, s.fps, s.motion_bucket_id, s.video_cond_aug),
                             make_scales("linear", s.frames, s.video_cfg_min, s.video_cfg_max))


def matrix_denoisers(video_model, multiview_model, clip_vision, vae, ref_orbit: torch.Tensor,
                     ref_video: torch.Tensor, elevations, azimuths, s: MatrixSettings):
    """``(column_fn, row_fn)`` of the matrix: SV3D on the F columns (column t conditioned on
    video frame t) and SVD on the V rows (row v conditioned on orbit view v)."""
    return (multiview_denoiser(multiview_model, clip_vision, vae, ref_video, elevations, azimuths,
                               s, s.seed + 2),
            video_denoiser(video_model, clip_vision, vae, ref_orbit, s, s.seed + 3))


def sample_4d(video_model, multiview_model, clip_vision, vae, images: torch.Tensor,
              prompt_type: str,
              elevations, azimuths, view_weight: torch.Tensor, lambdas: torch.Tensor,
              s: MatrixSettings, progress_callback=None):
    """The all-in-one Diffusion² run on prepared prompt ``images`` ``[N, S, S, 3]``: the
    reference orbit (SV3D on the front view) and reference video (SVD) sampled first where the
    prompt does not give them, then the V x F matrix with VRS, decoded.

    Returns ``(frames [V*F, S, S, 3] view-major, reference orbit [V, ...], reference video
    [F, ...], MatrixStats)``."""
    from . import Progress  # noqa: PLC0415

    V, F, steps, seed = s.views, s.frames, s.steps, s.seed
    h = s.size // 8
    frame_shape = (latent_channels(video_model), h, h)
    load_both(video_model, multiview_model, frame_shape, max(V, F))
    n_ref = 2 if prompt_type == "image" else 1  # reference sequences sampled first
    prog = Progress(n_ref * steps + steps + min(s.vrs_steps, steps), progress_callback)
    done = 0
    with torch.inference_mode():
        if prompt_type in ("image", "video"):
            front = images[-1:]  # image, or the last video frame (official)
            mv1 = multiview_denoiser(multiview_model, clip_vision, vae, front, elevations, azimuths,
                                     s, seed)
            z = sample_sequence(mv1, V, (h, h), steps, seed + 11, prog, done)
            done += steps
            ref_orbit = decode(vae, multiview_model.model.process_latent_out(z), s.decode_chunk)
            ref_orbit[-1:] = front  # official: the last (input) view replaced by the input
        else:
            ref_orbit = images
        if prompt_type in ("image", "orbit"):
            front = ref_orbit[-1:] if prompt_type == "orbit" else images[-1:]
            vid1 = video_denoiser(video_model, clip_vision, vae, front, s, seed + 1)
            z = sample_sequence(vid1, F, (h, h), steps, seed + 12, prog, done)
            done += steps
            ref_video = decode(vae, video_model.model.process_latent_out(z), s.decode_chunk)
        else:
            ref_video = images
        col_fn, row_fn = matrix_denoisers(video_model, multiview_model, clip_vision, vae, ref_orbit,
                                          ref_video, elevations, azimuths, s)
        sig = model_sigmas(video_model, steps)
        x = edm.initial_noise((V, F) + frame_shape, float(sig[0]),
                              torch.Generator().manual_seed(seed), device=torch_device())
        stats = MatrixStats()
        out = sample_matrix(x, sig, col_fn, row_fn, view_weight, lambdas, vrs_steps=s.vrs_steps,
                            column_chunk=auto_chunk(multiview_model, frame_shape, V, F,
                                                    s.max_chunk),
                            row_chunk=auto_chunk(video_model, frame_shape, F, V, s.max_chunk),
                            generator=torch.Generator().manual_seed(seed + 1),
                            callback=lambda k, tot, i, xx, dd: prog.update(done + k),
                            oom_exceptions=oom(), stats=stats)
        lat = video_model.model.process_latent_out(flatten_matrix(out))
        frames = decode(vae, lat, s.decode_chunk)  # [V*F, H, W, 3] view-major
    return frames, ref_orbit, ref_video, stats


# ----------------------------------------------------------------------------------------------
# GUIDER for SamplerCustomAdvanced
# ----------------------------------------------------------------------------------------------

_CACHE: dict = {}


def guider_class():
    """``OrbitForgeDiffusion2Guider`` (a ``comfy.samplers.CFGGuider``), built once.

    The latent is the flattened matrix ``[V*F, 4, h, w]`` (view-major). Each ``predict_noise``
    returns the composed x0 of the whole matrix (:func:`kernels.dynamic.diffusion2.denoise_matrix`);
    lambda is indexed by the step, found from the sampler's sigmas captured in :meth:`sample`. VRS
    is a sampler feature and is not applied in guider mode (use the all-in-one node for it). The
    multi-view model is registered as an additional model so core loads both.
    """
    if "guider" in _CACHE:
        return _CACHE["guider"]
    import comfy.samplers

    class OrbitForgeDiffusion2Guider(comfy.samplers.CFGGuider):
        def setup(self, multiview_model, col_fn, row_fn, views, frames, w, lambda_fn, max_chunk):
            self.model_patcher.set_additional_models("orbitforge_diffusion2", [multiview_model])
            self.mv = multiview_model
            self.col_fn, self.row_fn = col_fn, row_fn
            self.V, self.F = int(views), int(frames)
            self.w, self.lambda_fn, self.max_chunk = w, lambda_fn, int(max_chunk)
            self.stats = MatrixStats()
            self._sig = None

        def set_conds(self, positive=None, negative=None):
            self.inner_set_conds({})

        def sample(self, noise, latent_image, sampler, sigmas, *args, **kwargs):
            if noise.shape[0] != self.V * self.F:
                raise ValueError(f"latent batch {noise.shape[0]} is not views x frames = "
                                 f"{self.V}x{self.F}; use the LATENT output of the Diffusion² "
                                 "guider node")
            self._sig = sigmas.detach().double().cpu()
            self._lams = self.lambda_fn(max(1, len(sigmas) - 1))
            fs = tuple(noise.shape[1:])
            self._cc = auto_chunk(self.mv, fs, self.V, self.F, self.max_chunk)
            self._rc = auto_chunk(self.model_patcher, fs, self.F, self.V, self.max_chunk)
            return super().sample(noise, latent_image, sampler, sigmas, *args, **kwargs)

        def predict_noise(self, x, timestep, model_options={},
                          seed=None):  # noqa: B006 - core signature
            s = float(timestep.flatten()[0])
            i = int((self._sig[:-1] - s).abs().argmin()) if self._sig is not None else 0
            lam = float(self._lams[min(i, len(self._lams) - 1)])
            xm = unflatten_matrix(x, self.V, self.F)
            d, self.stats = denoise_matrix(xm, torch.tensor(s), self.col_fn, self.row_fn, self.w,
                                           lam, self._cc, self._rc, oom(), self.stats)
            self._cc, self._rc = self.stats.column_chunk, self.stats.row_chunk
            return flatten_matrix(d)

    _CACHE["guider"] = OrbitForgeDiffusion2Guider
    return OrbitForgeDiffusion2Guider
