"""Differentiable 3D Gaussian rasteriser: fast tile-binned pure-torch path (any device).

Conventions (gsplat's, so results match ``gsplat.rasterization`` up to the differences noted):

* world -> camera ``viewmats`` (OpenCV: x right, y down, z forward), ``Ks`` in pixels, pixel
  ``(i, j)`` centred at ``(j + 0.5, i + 0.5)``; the projected centre of a Gaussian is
  ``K @ (R x + t)`` divided by depth;
* EWA projection: 2D covariance ``J W Sigma W^T J^T`` with the Jacobian evaluated at the camera
  point clamped to 1.3x the field of view, then ``+0.3 px^2`` on the diagonal (no antialias
  compensation); Gaussians with depth <= ``near_plane`` or >= ``far_plane``, a non-positive 2D
  determinant, or whose 3-sigma circle (radius ``ceil(3 sqrt(lambda_max))``) misses the image are
  culled (``radii == 0``);
* ``alpha = min(0.99, opacity * exp(-0.5 d^T conic d))``; a (Gaussian, pixel) pair with
  ``opacity * exp(...) < 1/255`` is skipped, whatever the tiles (the tile binning uses each
  Gaussian's exact opacity-aware footprint, so results do not depend on ``tile_size``);
* front-to-back compositing by camera depth; a pixel stops *before* the Gaussian after which its
  transmittance would be <= 1e-4 (that Gaussian is not composited), as in gsplat's kernel.

Differences from gsplat 1.5's CUDA kernel: alpha is clamped at 0.99 (the 3DGS paper value;
gsplat uses 0.999); ``meta["radii"]`` is ``[C, N]`` (gsplat 1.5 returns per-axis ``[C, N, 2]``).

Back ends (one module each): :mod:`.rasterize_torch` (tiled, pure torch, the default),
:mod:`.rasterize_reference` (brute force, every pixel against every Gaussian: the check for the
others), :mod:`.rasterize_gsplat` (gsplat's CUDA kernels); types and constants are in
:mod:`.rasterize_types`.
"""

from __future__ import annotations

import torch

from .rasterize_gsplat import rasterize_gsplat
from .rasterize_reference import rasterize_reference
from .rasterize_torch import rasterize_torch
from .rasterize_types import RenderOutput, check_inputs

__all__ = ["BACKENDS", "RenderOutput", "rasterize"]

BACKENDS = ("auto", "torch", "gsplat", "reference")


def gsplat_usable(device) -> bool:
    """Whether the gsplat back end can render on ``device``: a CUDA device, and gsplat imports."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except Exception:
        return False
    return True


def rasterize(means, quats, scales, opacities, colors, viewmats, Ks, width, height, *,
              sh_degree=None, backgrounds=None, near_plane=0.01, far_plane=1e10, tile_size=None,
              backend="auto", retain_means2d_grad=False, block_elems=1 << 21,
              save_elems=48 << 20, chunk_slots=48) -> RenderOutput:
    """Render ``N`` 3D Gaussians into ``C`` cameras (differentiable).

    means [N, 3]; quats [N, 4] wxyz (unnormalised); scales [N, 3] std devs; opacities [N] in (0, 1);
    colors [N, 3] RGB (``sh_degree=None``) or SH coefficients [N, K, 3] (``sh_degree`` 0..3);
    viewmats [C, 4, 4] world -> camera (OpenCV); Ks [C, 3, 3]; backgrounds [C, 3] or None (black).
    ``backend``: "auto" (gsplat on CUDA when importable, else "torch"), "torch", "gsplat",
    "reference" (brute force, small scenes). ``tile_size``: None = the back end's best (16 for
    gsplat, 8 for the torch path on CPU, measured fastest there); the result does not depend on it
    (up to float rounding) because tile binning uses each Gaussian's exact footprint.
    Torch path tuning: ``block_elems`` bounds the size of the per-bucket working tensors; the
    forward keeps its per-(slot, pixel) tensors for the backward (2-3 x 4 bytes per element) when
    there are at most ``save_elems`` of them, else the backward recomputes them; ``chunk_slots``:
    slots per chunk of the front-to-back early exit.

    Returns :class:`RenderOutput`; ``meta`` holds ``means2d`` [C, N, 2] (in the graph; its
    ``.grad`` is kept when ``retain_means2d_grad``), ``radii`` [C, N] int32 (0 = culled),
    ``depths`` [C, N], ``conics`` [C, N, 3], ``width``, ``height``, ``n_cameras``, ``n_pairs``.
    """
    width, height = int(width), int(height)
    if tile_size is None:
        tile_size = 8 if backend in ("auto", "torch") and means.device.type == "cpu" else 16
    check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree,
                 backgrounds, tile_size)
    if backend not in BACKENDS:
        raise ValueError("backend must be 'auto', 'torch', 'gsplat' or 'reference', got "
                         f"{backend!r}")
    if backend == "auto":
        backend = "gsplat" if gsplat_usable(means.device) else "torch"
    if backend == "gsplat":
        return rasterize_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width,
                                height, sh_degree=sh_degree, backgrounds=backgrounds,
                                near_plane=near_plane, far_plane=far_plane, tile_size=tile_size,
                                retain_means2d_grad=retain_means2d_grad)
    if backend == "reference":
        return rasterize_reference(means, quats, scales, opacities, colors, viewmats, Ks, width,
                                   height, sh_degree=sh_degree, backgrounds=backgrounds,
                                   near_plane=near_plane, far_plane=far_plane)
    return rasterize_torch(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                           sh_degree=sh_degree, backgrounds=backgrounds, near_plane=near_plane,
                           far_plane=far_plane, tile_size=tile_size,
                           retain_means2d_grad=retain_means2d_grad, block_elems=block_elems,
                           save_elems=save_elems, chunk_slots=chunk_slots)
