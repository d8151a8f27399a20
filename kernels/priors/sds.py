"""Score distillation for reconstruction (host-free): SV3D masked SDS and IPSM's score terms.

Two priors a 3DGS fit can add (the models themselves are callables given by the host layer):

**SV3D masked SDS** ("SV3D: Novel Multi-view Synthesis and 3D Generation from a Single Image
using Latent Video Diffusion", ECCV 2024, the 3D stage; no official code). For each pixel of a
random render with world point ``p`` and unit normal ``n``, the reference camera ``c`` maximising
``v_c . n`` (``v_c`` = unit vector from ``p`` to camera c) decides how well the input views
already see it; the SDS gradient is multiplied by ``M = 1 - smoothstep(max_c v_c . n; 0, 0.5)``,
``smoothstep(x) = x^2 (3 - 2x)`` on ``x = clamp((x - f0)/(f1 - f0), 0, 1)``, so only what no
reference camera faces is repainted. :func:`visibility_mask` / :func:`visibility_mask_from_depth`.

SDS in SV3D's EDM parameterisation (``x = z + sigma * eps``, x0-predicting denoiser ``D``, e.g.
:func:`.diffusion.edm.vpred_denoise` around the SV3D UNet): ``eps_hat = (x - D(x, sigma)) / sigma``
and the gradient on the latents is ``g = w(sigma) (eps_hat - eps) = w(sigma) (z - D) / sigma``; the
default ``w = sigma^2/(1+sigma^2)`` is DreamFusion's ``1 - alpha_bar`` in EDM terms.
:func:`edm_sds_loss`.

**IPSM** ("How to Use Diffusion Priors under Sparse Views?", NeurIPS 2024; follows the choices
of the official code GeorgeNum7/IPSM): with an SD-1.5-inpainting epsilon
``eps_inp`` on ``[z_t | mask | VAE(masked warped image)]`` and plain SD-1.5 ``eps_sd`` on ``z_t``
(both with CFG 7.5, t ~ U[250, 750)):
``g1 = alpha_bar_t (eps_inp - eps)``, ``g2 = alpha_bar_t (eps_inp - eps_sd)``, each term
``0.5 * MSE(z, sg(z - g))`` (mean over elements), total ``0.2 L(g1) + 2.0 L(g2)``, multiplied by
a ramp ``min((step - start) / 500, 1)``. :func:`ipsm_prior_loss`.

Every "loss" here is a *surrogate*: its gradient w.r.t. ``z`` is ``mask * g / numel(z)``; its
value is ``0.5 * mean(g^2)`` (not an objective to monitor for convergence).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..geometry.cameras import backproject, camera_centers

# ----------------------------------------------------------------------------------------------
# SV3D visibility mask
# ----------------------------------------------------------------------------------------------


def smoothstep(x: torch.Tensor, f0: float = 0.0, f1: float = 0.5) -> torch.Tensor:
    """``s^2 (3 - 2 s)`` with ``s = clamp((x - f0) / (f1 - f0), 0, 1)``."""
    if f1 <= f0:
        raise ValueError(f"smoothstep needs f1 > f0, got f0={f0}, f1={f1}")
    s = ((x - f0) / (f1 - f0)).clamp(0, 1)
    return s * s * (3 - 2 * s)


def normals_from_points(points: torch.Tensor, valid: torch.Tensor,
                        cam_centers: torch.Tensor) -> torch.Tensor:
    """Unit world normals ``[C, H, W, 3]`` from a point map ``[C, H, W, 3]`` by central differences
    (one-sided at borders and next to invalid pixels), oriented towards the camera. 0 where the
    pixel or both neighbours along an axis are invalid."""
    v = valid.bool()[..., 0]  # [C, H, W]

    def diff(axis):  # axis 1 (rows) or 2 (columns): same index for points and v
        n = points.shape[axis]

        def sl(a, b):
            idx = [slice(None)] * 3
            idx[axis] = slice(a, b)
            return tuple(idx)

        fwd = torch.zeros_like(points)
        bwd = torch.zeros_like(points)
        vf = torch.zeros_like(v)
        vb = torch.zeros_like(v)
        fwd[sl(0, n - 1)] = points[sl(1, n)] - points[sl(0, n - 1)]
        vf[sl(0, n - 1)] = v[sl(1, n)]
        bwd[sl(1, n)] = points[sl(1, n)] - points[sl(0, n - 1)]
        vb[sl(1, n)] = v[sl(0, n - 1)]
        vf, vb = vf & v, vb & v
        both = (vf & vb)[..., None]
        d = torch.where(both, 0.5 * (fwd + bwd), torch.where(vf[..., None], fwd, bwd))
        return d, (vf | vb)

    dx, okx = diff(2)  # along image x (W)
    dy, oky = diff(1)  # along image y (H)
    n = torch.linalg.cross(dx, dy)
    n = F.normalize(n, dim=-1, eps=1e-12)
    to_cam = cam_centers[:, None, None, :].to(points) - points
    flip = ((n * to_cam).sum(-1, keepdim=True) < 0).to(n.dtype)
    n = n * (1 - 2 * flip)
    ok = (okx & oky & v)[..., None]
    return torch.where(ok, n, torch.zeros_like(n))


def visibility_mask(points: torch.Tensor, normals: torch.Tensor, ref_centers: torch.Tensor,
                    f0: float = 0.0, f1: float = 0.5, valid: Optional[torch.Tensor] = None,
                    background: float = 0.0) -> torch.Tensor:
    """SV3D's masked-SDS weight ``M = 1 - smoothstep(max_c v_c . n; f0, f1)`` ``[C, H, W, 1]``.

    Args:
        points / normals: ``[C, H, W, 3]`` world surface points and unit normals of the render.
        ref_centers: ``[R, 3]`` the reference (input / generated) camera centres.
        valid: optional ``[C, H, W, 1]`` surface pixels; others get ``background`` (default 0: do
            not repaint empty pixels).
    """
    if ref_centers.ndim != 2 or ref_centers.shape[-1] != 3 or ref_centers.shape[0] == 0:
        raise ValueError(f"ref_centers must be [R,3] with R >= 1, got {tuple(ref_centers.shape)}")
    v = F.normalize(ref_centers.to(points)[:, None, None, None, :] - points[None], dim=-1)
    dots = (v * normals[None]).sum(-1)  # [R, C, H, W]
    best = dots.amax(0)[..., None]  # [C, H, W, 1]
    m = 1 - smoothstep(best, f0, f1)
    if valid is not None:
        m = torch.where(valid.bool(), m, torch.full_like(m, background))
    return m


def visibility_mask_from_depth(depth: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor,
                               ref_centers: torch.Tensor, alpha: Optional[torch.Tensor] = None,
                               alpha_threshold: float = 0.5, normals: Optional[torch.Tensor] = None,
                               f0: float = 0.0, f1: float = 0.5, background: float = 0.0):
    """The visibility mask of renders given their depth ``[C, H, W, 1]`` (camera z) and cameras.

    Normals come from ``normals`` when given (world, ``[C, H, W, 3]``) else from the depth's point
    map (:func:`normals_from_points`). Returns ``(mask [C, H, W, 1], normals [C, H, W, 3])``;
    computed without gradient (the mask is a weight).
    """
    with torch.no_grad():
        d = depth.detach()
        valid = d > 0
        if alpha is not None:
            valid = valid & (alpha.detach() >= alpha_threshold)
        pts = backproject(d, viewmats, Ks)
        if normals is None:
            centers = camera_centers(viewmats)
            normals = normals_from_points(pts, valid, centers)
            valid = valid & (normals.norm(dim=-1, keepdim=True) > 0.5)
        m = visibility_mask(pts, normals.to(pts), ref_centers, f0, f1, valid, background)
    return m, normals


def mask_to_latent(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Image-space weights ``[C, H, W, 1]`` -> latent grid ``[C, 1, h, w]`` (area average)."""
    m = mask.to(torch.float32 if not mask.is_floating_point() else mask.dtype).permute(0, 3, 1, 2)
    if m.shape[-2:] == (height, width):
        return m
    return F.interpolate(m, size=(height, width), mode="area")


# ----------------------------------------------------------------------------------------------
# Score distillation surrogate losses
# ----------------------------------------------------------------------------------------------


def score_distillation_loss(z: torch.Tensor, grad: torch.Tensor,
                            mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``0.5 * MSE(z, sg(z - mask * grad))`` (mean): d/dz = ``mask * grad / z.numel()``.

    ``mask`` broadcasts against ``z`` (e.g. ``[B, 1, h, w]`` for latents ``[B, 4, h, w]``).
    Non-finite gradient entries are zeroed (as IPSM does with ``nan_to_num``).
    """
    g = torch.nan_to_num(grad.detach().to(z.dtype), nan=0.0, posinf=0.0, neginf=0.0)
    if mask is not None:
        g = g * mask.detach().to(z.dtype)
    target = (z - g).detach()
    return 0.5 * F.mse_loss(z, target, reduction="mean")


SDS_WEIGHTINGS = ("one_minus_alpha", "alpha", "unit")


def edm_weight(sigma: torch.Tensor, weighting: str = "one_minus_alpha") -> torch.Tensor:
    """SDS weight w(sigma) in EDM terms: ``1 - alpha_bar = s^2/(1+s^2)``, ``alpha_bar = 1/(1+s^2)``
    or 1."""
    if weighting == "one_minus_alpha":
        return sigma**2 / (1 + sigma**2)
    if weighting == "alpha":
        return 1 / (1 + sigma**2)
    if weighting == "unit":
        return torch.ones_like(sigma)
    raise ValueError(f"weighting must be one of {SDS_WEIGHTINGS}, got {weighting!r}")


def sample_sigma(n: int, sigma_min: float = 0.05, sigma_max: float = 5.0,
                 generator: Optional[torch.Generator] = None, device=None,
                 dtype=torch.float32) -> torch.Tensor:
    """Log-uniform noise levels ``[n]`` in ``[sigma_min, sigma_max]`` (our SDS default range: in
    VP terms alpha_bar from 0.998 down to 0.038; anneal ``sigma_max`` down late in a fit)."""
    if not (0 < sigma_min <= sigma_max):
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got {sigma_min}, {sigma_max}")
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    s = torch.exp(torch.log(torch.tensor(sigma_min, dtype=torch.float64)) * (1 - u)
                  + torch.log(torch.tensor(sigma_max, dtype=torch.float64)) * u)
    return s.to(device=device, dtype=dtype)


def _per_batch(v, z: torch.Tensor) -> torch.Tensor:
    v = torch.as_tensor(v, device=z.device, dtype=z.dtype)
    if v.ndim == 0:
        v = v.expand(z.shape[0])
    return v.reshape(v.shape + (1,) * (z.ndim - 1))


def edm_sds_grad(z: torch.Tensor, denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 sigma, noise: Optional[torch.Tensor] = None, weighting: str = "one_minus_alpha",
                 generator: Optional[torch.Generator] = None):
    """SDS gradient on latents ``z`` ``[B, ...]`` for an x0-predicting ``denoiser(x, sigma [B])``.

    ``x = z + sigma * eps``; ``g = w(sigma) * (z - D(x, sigma)) / sigma``. Runs the denoiser under
    ``no_grad``. Returns ``(g, info)`` with ``info = {"x0": D, "noise": eps, "sigma": sigma}``.
    """
    zd = z.detach()
    sig = torch.as_tensor(sigma, device=z.device, dtype=z.dtype)
    if sig.ndim == 0:
        sig = sig.expand(z.shape[0])
    if (sig <= 0).any():
        raise ValueError(f"sigma must be > 0, got {sig.tolist()}")
    if noise is None:
        noise = torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device)
    s = _per_batch(sig, z)
    with torch.no_grad():
        x0 = denoiser(zd + s * noise, sig)
    g = _per_batch(edm_weight(sig, weighting), z) * (zd - x0) / s
    return g, {"x0": x0, "noise": noise, "sigma": sig}


def edm_sds_loss(z: torch.Tensor, denoiser: Callable, sigma, mask: Optional[torch.Tensor] = None,
                 noise: Optional[torch.Tensor] = None, weighting: str = "one_minus_alpha",
                 generator: Optional[torch.Generator] = None):
    """(Masked) SDS surrogate loss for EDM denoisers (SV3D): see :func:`edm_sds_grad`.

    ``mask``: weights broadcasting to ``z`` (e.g. :func:`mask_to_latent` of the visibility mask).
    Returns ``(loss, info)``.
    """
    g, info = edm_sds_grad(z, denoiser, sigma, noise, weighting, generator)
    info["grad"] = g
    return score_distillation_loss(z, g, mask), info


def vpred_x0_denoiser(network: Callable, *args, **kwargs) -> Callable:
    """Wrap a raw v-prediction UNet ``network(x_in, c_noise, *args, **kwargs)`` (SV3D) into an
    x0 denoiser ``D(x, sigma)`` with SV3D's ``VScalingWithEDMcNoise`` (:mod:`.diffusion.edm`)."""
    from ..diffusion.edm import vpred_denoise  # noqa: PLC0415 - keep sds importable on its own

    def D(x, sigma):
        return vpred_denoise(network, x, sigma, *args, **kwargs)

    return D


# ----------------------------------------------------------------------------------------------
# IPSM score terms (SD-1.5 discrete schedule)
# ----------------------------------------------------------------------------------------------

IPSM_T_RANGE = (250, 750)
IPSM_CFG = 7.5
IPSM_W1 = 0.2
IPSM_W2 = 2.0
IPSM_RAMP = 500  # iterations


def sd_alphas_cumprod(steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012,
                      device=None) -> torch.Tensor:
    """SD-1.x training schedule (``scaled_linear``): alpha_bar ``[steps]`` (float64 maths, f32
    out)."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).to(device=device, dtype=torch.float32)


def sample_timesteps(n: int, low: int = IPSM_T_RANGE[0], high: int = IPSM_T_RANGE[1],
                     generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
    """Integer timesteps ``[n]`` uniform in ``[low, high)``."""
    if not (0 <= low < high):
        raise ValueError(f"need 0 <= low < high, got [{low}, {high})")
    return torch.randint(low, high, (n,), generator=generator).to(device)


def add_noise(z: torch.Tensor, noise: torch.Tensor, alpha_bar) -> torch.Tensor:
    """DDPM forward process ``sqrt(a) z + sqrt(1 - a) eps`` (``alpha_bar`` scalar or ``[B]``)."""
    a = _per_batch(alpha_bar, z)
    return a.sqrt() * z + (1 - a).sqrt() * noise


def cfg(uncond: torch.Tensor, cond: torch.Tensor, scale: float = IPSM_CFG) -> torch.Tensor:
    """Classifier-free guidance ``u + s (c - u)``."""
    return uncond + scale * (cond - uncond)


def ramp_weight(step: int, start: int, length: int = IPSM_RAMP) -> float:
    """IPSM's ramp-in ``clamp((step - start) / length, 0, 1)`` (0 before ``start``)."""
    if length <= 0:
        return 1.0 if step >= start else 0.0
    return float(min(max((step - start) / length, 0.0), 1.0))


def ipsm_score_grads(noise: torch.Tensor, eps_inp: torch.Tensor, eps_sd: torch.Tensor, alpha_bar):
    """``g1 = a (eps_inp - eps)``, ``g2 = a (eps_inp - eps_sd)`` with ``a = alpha_bar_t`` (the
    official IPSM code's weighting and signs)."""
    a = _per_batch(alpha_bar, noise)
    return a * (eps_inp - noise), a * (eps_inp - eps_sd)


def ipsm_score_loss(z: torch.Tensor, noise: torch.Tensor, eps_inp: torch.Tensor,
                    eps_sd: torch.Tensor, alpha_bar, w1: float = IPSM_W1, w2: float = IPSM_W2,
                    scale: float = 1.0):
    """``scale * (w1 L(g1) + w2 L(g2))`` with ``L(g) = 0.5 MSE(z, sg(z - g))``.

    Returns ``(total, {"l1": L(g1), "l2": L(g2), "g1": g1, "g2": g2})``.
    """
    g1, g2 = ipsm_score_grads(noise.to(z), eps_inp.to(z), eps_sd.to(z), alpha_bar)
    l1 = score_distillation_loss(z, g1)
    l2 = score_distillation_loss(z, g2)
    return scale * (w1 * l1 + w2 * l2), {"l1": l1, "l2": l2, "g1": g1, "g2": g2}


def inpaint_mask_latent(inpaint: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """IPSM's inpainting-mask conditioning: ``[P, H, W, 1]`` (bool/float, 1 = repaint) -> binary
    ``[P, 1, h, w]`` (bilinear resize then ``> 0.5``, then nearest to the latent grid)."""
    m = inpaint.to(torch.float32).permute(0, 3, 1, 2)
    if m.shape[-2:] != (height * 8, width * 8):
        m = F.interpolate(m, size=(height * 8, width * 8), mode="bilinear", align_corners=False)
    m = (m > 0.5).to(torch.float32)
    return F.interpolate(m, size=(height, width), mode="nearest")


def masked_image(warped: torch.Tensor, inpaint: torch.Tensor) -> torch.Tensor:
    """The inpainting model's image condition ``[P, H, W, 3]`` in 0..1: the warped training image
    where it is trusted, neutral grey (0.5, i.e. 0 in the VAE's -1..1 range) where to repaint."""
    keep = (~inpaint.bool()).to(warped.dtype)
    return warped * keep + 0.5 * (1 - keep)


def inpaint_model_input(z_t: torch.Tensor, mask_latent: torch.Tensor,
                        masked_latent: torch.Tensor) -> torch.Tensor:
    """SD-1.5-inpainting UNet input ``[B, 9, h, w]`` = ``[z_t (4) | mask (1) | masked-image
    latents (4)]`` (the order the 9-channel checkpoints were trained with)."""
    if z_t.shape[0] != mask_latent.shape[0] or z_t.shape[0] != masked_latent.shape[0]:
        raise ValueError(f"batch sizes differ: z_t {tuple(z_t.shape)}, mask "
                         f"{tuple(mask_latent.shape)}, masked latents {tuple(masked_latent.shape)}")
    return torch.cat([z_t, mask_latent.to(z_t), masked_latent.to(z_t)], 1)


def ipsm_prior_loss(z: torch.Tensor, eps_inpaint: Callable, eps_sd: Callable,
                    alphas_cumprod: torch.Tensor, mask_latent: torch.Tensor,
                    masked_latent: torch.Tensor, step: Optional[int] = None, start: int = 0,
                    ramp: int = IPSM_RAMP, t: Optional[torch.Tensor] = None,
                    noise: Optional[torch.Tensor] = None, t_range=IPSM_T_RANGE,
                    w1: float = IPSM_W1, w2: float = IPSM_W2,
                    generator: Optional[torch.Generator] = None):
    """IPSM's diffusion prior on the pseudo-view latents ``z`` ``[P, 4, h, w]`` (with grad, the
    VAE encoding of the pseudo render, already in the UNet's latent scale).

    ``eps_inpaint(x9 [P,9,h,w], t [P]) -> eps`` and ``eps_sd(x4 [P,4,h,w], t [P]) -> eps`` are the
    two models *with CFG applied* (7.5 in IPSM; see :func:`cfg`). ``mask_latent`` ``[P,1,h,w]``
    (:func:`inpaint_mask_latent`), ``masked_latent`` ``[P,4,h,w]`` (VAE of :func:`masked_image`).
    ``step``/``start``/``ramp`` give the ramp-in factor (1 when ``step`` is None).

    Returns ``(loss, info)``; the models run under ``no_grad``.
    """
    P = z.shape[0]
    if t is None:
        t = sample_timesteps(P, t_range[0], t_range[1], generator, z.device)
    t = torch.as_tensor(t, device=z.device).long().reshape(-1).expand(P)
    if noise is None:
        noise = torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device)
    a = alphas_cumprod.to(device=z.device, dtype=z.dtype)[t]  # [P]
    scale = 1.0 if step is None else ramp_weight(step, start, ramp)
    with torch.no_grad():
        z_t = add_noise(z.detach(), noise, a)
        e_inp = eps_inpaint(inpaint_model_input(z_t, mask_latent, masked_latent), t)
        e_sd = eps_sd(z_t, t)
    loss, info = ipsm_score_loss(z, noise, e_inp, e_sd, a, w1, w2, scale)
    info.update({"t": t, "alpha_bar": a, "noise": noise, "eps_inp": e_inp, "eps_sd": e_sd,
                 "scale": scale})
    return loss, info
