"""Types, constants and input validation shared by the rasteriser's back ends.

:func:`orbitforge.kernels.splat.rasterize.rasterize` dispatches to the tiled torch path
(:mod:`.rasterize_torch`), the brute-force reference (:mod:`.rasterize_reference`) or gsplat
(:mod:`.rasterize_gsplat`); all of them return :class:`RenderOutput` and share these constants
(the 3DGS / gsplat values: alpha skipped below 1/255, clamped at 0.99, compositing stops before
transmittance would reach 1e-4, +0.3 px^2 low-pass dilation of the 2D covariance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import Tensor

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
T_MIN = 1e-4
EPS2D = 0.3
LOG_ALPHA_MIN = math.log(255.0)  # sigma' = sigma - log(opacity) <= this <=> alpha >= 1/255


@dataclass
class RenderOutput:
    rgb: Tensor  # [C, H, W, 3] composited over the backgrounds
    alpha: Tensor  # [C, H, W, 1]
    depth: Tensor  # [C, H, W, 1] expected depth sum(w z) / alpha, 0 where alpha ~ 0
    depth_median: Tensor  # [C, H, W, 1] depth where accumulated alpha reaches 0.5 (0 if never)
    meta: dict = field(default_factory=dict)


def check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree,
                 backgrounds, tile_size):
    """ValueError naming the argument and the expected shape for malformed rasteriser inputs."""
    n = means.shape[0] if means.ndim == 2 else -1
    if means.ndim != 2 or means.shape[1] != 3:
        raise ValueError(f"means must be [N, 3], got {list(means.shape)}")
    for name, t, shape in (("quats", quats, (n, 4)), ("scales", scales, (n, 3)),
                           ("opacities", opacities, (n,))):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must be {list(shape)} for N={n} Gaussians, got "
                             f"{list(t.shape)}")
    if sh_degree is None:
        if tuple(colors.shape) != (n, 3):
            raise ValueError("colors must be [N, 3] RGB when sh_degree is None, got "
                             f"{list(colors.shape)} (pass sh_degree for SH coefficients [N, K, 3])")
    else:
        if sh_degree not in (0, 1, 2, 3):
            raise ValueError(f"sh_degree must be None or 0..3, got {sh_degree}")
        k = (sh_degree + 1) ** 2
        if colors.ndim != 3 or colors.shape[0] != n or colors.shape[2] != 3 or colors.shape[1] < k:
            raise ValueError(f"colors must be SH coefficients [N, K>={k}, 3] for sh_degree "
                             f"{sh_degree}, got {list(colors.shape)}")
    if viewmats.ndim != 3 or viewmats.shape[1:] != (4, 4):
        raise ValueError(f"viewmats must be [C, 4, 4], got {list(viewmats.shape)}")
    c = viewmats.shape[0]
    if tuple(Ks.shape) != (c, 3, 3):
        raise ValueError(f"Ks must be [C, 3, 3] with C={c}, got {list(Ks.shape)}")
    if backgrounds is not None and tuple(backgrounds.shape) != (c, 3):
        raise ValueError(f"backgrounds must be [C, 3] with C={c} or None, got "
                         f"{list(backgrounds.shape)}")
    if int(width) < 1 or int(height) < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if int(tile_size) < 1:
        raise ValueError(f"tile_size must be >= 1, got {tile_size}")
