"""Real spherical harmonics (degree 0..3) in the convention of 3D Gaussian Splatting / gsplat.

The basis ordering and signs are those of the reference 3DGS code (``Y_1 = -C1 y``, ``Y_2 = C1 z``,
``Y_3 = -C1 x``, ...), so SH coefficients read from a standard 3DGS PLY evaluate to the same
colours. A colour is ``max(0, sum_k Y_k(d) * coeff_k + 0.5)`` with ``d`` the unit direction from the
camera centre to the Gaussian.
"""

from __future__ import annotations

import torch

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792,
         0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def num_sh_bases(degree: int) -> int:
    return (degree + 1) ** 2


def sh_basis(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """Basis values ``[..., (degree+1)^2]`` at directions ``dirs`` ``[..., 3]`` (normalised
    here)."""
    if degree not in (0, 1, 2, 3):
        raise ValueError(f"sh degree must be 0, 1, 2 or 3, got {degree}")
    d = torch.nn.functional.normalize(dirs, dim=-1)
    x, y, z = d.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [SH_C2[0] * x * y, SH_C2[1] * y * z, SH_C2[2] * (2 * zz - xx - yy),
                SH_C2[3] * x * z, SH_C2[4] * (xx - yy)]
    if degree >= 3:
        out += [SH_C3[0] * y * (3 * xx - yy), SH_C3[1] * x * y * z,
                SH_C3[2] * y * (4 * zz - xx - yy), SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
                SH_C3[4] * x * (4 * zz - xx - yy), SH_C3[5] * z * (xx - yy),
                SH_C3[6] * x * (xx - 3 * yy)]
    return torch.stack(out, -1)


def eval_sh(degree: int, dirs: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Raw SH sum ``[..., 3]``: ``dirs`` ``[..., 3]``, ``coeffs`` ``[..., K, 3]`` with
    ``K >= (degree+1)^2`` (extra coefficients are ignored)."""
    k = num_sh_bases(degree)
    if coeffs.shape[-2] < k:
        raise ValueError(f"sh degree {degree} needs {k} coefficients, got {coeffs.shape[-2]}")
    basis = sh_basis(degree, dirs)  # [..., k]
    return (basis.unsqueeze(-1) * coeffs[..., :k, :]).sum(-2)


def sh_to_color(degree: int, dirs: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """RGB ``[..., 3]`` = ``max(0, eval_sh + 0.5)`` (the 3DGS / gsplat convention)."""
    return (eval_sh(degree, dirs, coeffs) + 0.5).clamp_min(0.0)
