"""EDM sampling core for SV3D/SVD-family models (host-free).

Follows the official Stability-AI ``generative-models`` code that produced SV3D's results:

- ``sgm/modules/diffusionmodules/denoiser_scaling.py`` ``VScalingWithEDMcNoise``:
  c_skip = 1/(s^2+1), c_out = -s/sqrt(s^2+1), c_in = 1/sqrt(s^2+1), c_noise = 0.25 ln s.
  The denoiser is ``D(x, s) = F(c_in x, c_noise) * c_out + x * c_skip``.
- ``discretizer.py`` ``EDMDiscretization`` (rho 7) with ``append_zero``: ``steps`` sigmas from
  sigma_max down to sigma_min, then a final 0 (so ``steps + 1`` values, ``steps`` Euler steps).
- ``sampling.py`` ``BaseDiffusionSampler.prepare_sampling_loop``: the N(0,1) start is multiplied
  by ``sqrt(1 + sigmas[0]^2)`` (sigmas[0] == sigma_max; *not* by sigma_max as in k-diffusion).
- ``EDMSampler.__call__``/``sampler_step`` (``EulerEDMSampler`` = no correction step):
  ``gamma = min(s_churn / (num_sigmas - 1), sqrt(2) - 1)`` when ``s_tmin <= sigma <= s_tmax``
  (num_sigmas - 1 == steps), ``sigma_hat = sigma (1 + gamma)``, and when gamma > 0
  ``x += s_noise * N(0,1) * sqrt(sigma_hat^2 - sigma^2)``; then
  ``d = (x - D(x, sigma_hat)) / sigma_hat``, ``x += (sigma_next - sigma_hat) d``.
  The official SV3D configs use the defaults: s_churn 0 (deterministic Euler).

All functions take device/dtype from their inputs. Sigmas are computed in float64 and returned in
float32 (the official code computes them in float32; the difference is < 1e-6 relative).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

SIGMA_MIN = 0.002
SIGMA_MAX = 700.0
RHO = 7.0


def edm_sigmas(
    steps: int,
    sigma_min: float = SIGMA_MIN,
    sigma_max: float = SIGMA_MAX,
    rho: float = RHO,
    device: Optional[torch.device] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Karras/EDM schedule as the official ``EDMDiscretization`` + ``append_zero``.

    Returns ``[steps + 1]``: sigma_max ... sigma_min, 0 (descending).
    """
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps={steps}: need at least 1 sampling step")
    if not (0 < sigma_min < sigma_max):
        raise ValueError(f"sigma_min={sigma_min}, sigma_max={sigma_max}: need 0 < sigma_min < "
                         "sigma_max")
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    if steps == 1:
        ramp = torch.zeros(1, dtype=torch.float64)  # linspace(0,1,1) == [0] too; explicit
    min_inv = sigma_min ** (1.0 / rho)
    max_inv = sigma_max ** (1.0 / rho)
    sig = (max_inv + ramp * (min_inv - max_inv)) ** rho  # [steps]
    sig = torch.cat([sig, sig.new_zeros(1)])  # [steps+1]
    return sig.to(device=device, dtype=dtype)


def vscaling(sigma):
    """``VScalingWithEDMcNoise``: returns (c_skip, c_out, c_in, c_noise) for tensor (or float)
    sigma."""
    s = sigma if torch.is_tensor(sigma) else torch.tensor(float(sigma), dtype=torch.float64)
    c_skip = 1.0 / (s**2 + 1.0)
    c_out = -s / (s**2 + 1.0) ** 0.5
    c_in = 1.0 / (s**2 + 1.0) ** 0.5
    c_noise = 0.25 * s.log()
    return c_skip, c_out, c_in, c_noise


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Broadcast a scalar or per-batch sigma ``[B]`` to ``x``'s rank (``append_dims``)."""
    v = torch.as_tensor(v, device=x.device, dtype=x.dtype)
    if v.ndim == 0:
        return v
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def vpred_denoise(network: Callable, x: torch.Tensor, sigma, *args, **kwargs) -> torch.Tensor:
    """The official ``Denoiser.forward`` with V scaling:
    ``F(x c_in, c_noise, ...) c_out + x c_skip``.

    ``network(x_in, c_noise, *args, **kwargs)`` is the raw UNet (v-prediction). ``sigma`` is a
    scalar or ``[B]``; c_noise is passed with sigma's shape (``[B]`` if per-batch).
    """
    sig = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
    if sig.ndim == 0:
        sig = sig.expand(x.shape[0])
    c_skip, c_out, c_in, c_noise = vscaling(sig)
    out = network(x * _bcast(c_in, x), c_noise, *args, **kwargs)
    return out * _bcast(c_out, x) + x * _bcast(c_skip, x)


def initial_noise(
    shape,
    sigma_max: float = SIGMA_MAX,
    generator: Optional[torch.Generator] = None,
    device: Optional[torch.device] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Start latent as the official script: ``randn(shape) * sqrt(1 + sigma_max^2)``.

    The noise is drawn on the generator's device (CPU by default) then moved, so a seed gives the
    same start on every device.
    """
    gdev = generator.device if generator is not None else torch.device("cpu")
    n = torch.randn(tuple(shape), generator=generator, device=gdev, dtype=torch.float32)
    scale = math.sqrt(1.0 + float(sigma_max) ** 2)
    return (n * scale).to(device=device if device is not None else gdev, dtype=dtype)


def to_d(x: torch.Tensor, sigma, denoised: torch.Tensor) -> torch.Tensor:
    """Probability-flow derivative ``(x - D) / sigma``."""
    return (x - denoised) / _bcast(sigma, x)


def euler_step(x: torch.Tensor, denoised: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
    """One Euler step: ``d = (x - D)/sigma; x + (sigma_next - sigma) d``."""
    d = to_d(x, sigma, denoised)
    return x + d * (_bcast(sigma_next, x) - _bcast(sigma, x))


def churn_gamma(sigma: float, steps: int, s_churn: float, s_tmin: float = 0.0,
                s_tmax: float = float("inf")) -> float:
    """Official ``EDMSampler`` gamma: ``min(s_churn / steps, sqrt(2) - 1)`` inside [s_tmin,
    s_tmax]."""
    if s_tmin <= float(sigma) <= s_tmax:
        return min(float(s_churn) / max(int(steps), 1), 2**0.5 - 1)
    return 0.0


def sample_euler(
    denoise_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    sigmas: torch.Tensor,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    generator: Optional[torch.Generator] = None,
    callback: Optional[Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]] = None,
) -> torch.Tensor:
    """Official ``EulerEDMSampler`` loop.

    ``denoise_fn(x, sigma)`` returns the (guided) denoised x0; ``sigma`` is a 0-d tensor.
    ``x`` must already be the scaled initial noise (see :func:`initial_noise`).
    ``callback(i, x, denoised, sigma)`` is called after each step (previews, progress, interrupts).
    With ``s_churn == 0`` (official default) this is fully deterministic.
    """
    sigmas = sigmas.to(device=x.device)
    steps = len(sigmas) - 1
    for i in range(steps):
        sigma = sigmas[i]
        sigma_next = sigmas[i + 1]
        gamma = churn_gamma(float(sigma), steps, s_churn, s_tmin, s_tmax) if s_churn > 0 else 0.0
        sigma_hat = sigma * (gamma + 1.0)
        if gamma > 0:
            gdev = generator.device if generator is not None else x.device
            eps = torch.randn(x.shape, generator=generator, device=gdev, dtype=x.dtype)
            eps = eps.to(x.device) * s_noise
            x = x + eps * (sigma_hat**2 - sigma**2) ** 0.5
        denoised = denoise_fn(x, sigma_hat)
        x = euler_step(x, denoised, sigma_hat, sigma_next)
        if callback is not None:
            callback(i, x, denoised, sigma_hat)
    return x
