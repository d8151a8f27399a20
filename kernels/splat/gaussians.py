"""The ``GAUSSIANS`` type: a 3D Gaussian scene in the standard 3DGS parameterisation."""

from __future__ import annotations

from dataclasses import dataclass

import torch

SH_C0 = 0.28209479177387814


def sh_coeffs(degree: int) -> int:
    return (degree + 1) ** 2


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: torch.Tensor) -> torch.Tensor:
    return sh0 * SH_C0 + 0.5


@dataclass
class Gaussians:
    """Raw (optimisable) parameters, exactly the fields of the standard 3DGS PLY.

    means      [N, 3]  world positions (y-up world of :mod:`.geometry.cameras`)
    quats      [N, 4]  rotation quaternion wxyz, unnormalised
    log_scales [N, 3]  log of the per-axis standard deviations
    opacity_logits [N] logit of the opacity
    sh         [N, K, 3]  SH coefficients, K = (sh_degree+1)^2; sh[:, 0] is the DC term
    """

    means: torch.Tensor
    quats: torch.Tensor
    log_scales: torch.Tensor
    opacity_logits: torch.Tensor
    sh: torch.Tensor

    def __post_init__(self):
        n = self.means.shape[0]
        shapes = {"means": (n, 3), "quats": (n, 4), "log_scales": (n, 3), "opacity_logits": (n,)}
        for name, shape in shapes.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"Gaussians.{name} must be {list(shape)}, "
                                 f"got {list(getattr(self, name).shape)}")
        if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3:
            raise ValueError(f"Gaussians.sh must be [N,K,3], got {list(self.sh.shape)}")
        k = self.sh.shape[1]
        if k not in (1, 4, 9, 16):
            raise ValueError(f"Gaussians.sh must hold 1, 4, 9 or 16 coefficients, got {k}")

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        return int(round(self.sh.shape[1] ** 0.5)) - 1

    @property
    def scales(self) -> torch.Tensor:
        return torch.exp(self.log_scales)

    @property
    def opacities(self) -> torch.Tensor:
        return torch.sigmoid(self.opacity_logits)

    @property
    def rgb(self) -> torch.Tensor:
        """View-independent colour (DC term) ``[N, 3]`` in 0..1 (unclamped)."""
        return sh0_to_rgb(self.sh[:, 0])

    @property
    def device(self) -> torch.device:
        return self.means.device

    def to(self, device=None, dtype=None) -> "Gaussians":
        return Gaussians(*(t.to(device=device, dtype=dtype or t.dtype) for t in self.tensors()))

    def tensors(self):
        return (self.means, self.quats, self.log_scales, self.opacity_logits, self.sh)

    def detach(self) -> "Gaussians":
        return Gaussians(*(t.detach().clone() for t in self.tensors()))

    def subset(self, keep: torch.Tensor) -> "Gaussians":
        return Gaussians(*(t[keep] for t in self.tensors()))

    def with_sh_degree(self, degree: int) -> "Gaussians":
        """Pad (with zeros) or truncate the SH coefficients to ``degree``."""
        k = sh_coeffs(degree)
        sh = self.sh[:, :k]
        if sh.shape[1] < k:
            pad = sh.new_zeros(sh.shape[0], k - sh.shape[1], 3)
            sh = torch.cat([sh, pad], 1)
        return Gaussians(self.means, self.quats, self.log_scales, self.opacity_logits, sh)

    @staticmethod
    def cat(gs) -> "Gaussians":
        deg = max(g.sh_degree for g in gs)
        gs = [g.with_sh_degree(deg) for g in gs]
        return Gaussians(*(torch.cat(ts) for ts in zip(*(g.tensors() for g in gs))))


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """wxyz quaternions ``[..., 4]`` (normalised here) -> rotation matrices ``[..., 3, 3]``."""
    q = torch.nn.functional.normalize(quats, dim=-1)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(q.shape[:-1] + (3, 3))
