"""gsplat (CUDA) back end of :func:`orbitforge.kernels.splat.rasterize.rasterize`.

Calls ``gsplat.rasterization(..., render_mode="RGB+ED", packed=False)`` and converts its output
to :class:`~orbitforge.kernels.splat.rasterize_types.RenderOutput`:

* ``rgb``/``alpha`` as gsplat renders them (its kernel clamps alpha at 0.999, the torch path at
  0.99: they agree wherever ``opacity * exp(-sigma) < 0.99``);
* ``depth``: gsplat's expected depth (``sum(w z) / alpha``), set to 0 where alpha <= 1e-6 like the
  torch path;
* ``depth_median``: gsplat has no median-depth output for 3D Gaussians, so it is computed by a
  second, gradient-free render with the pure-torch tiled rasteriser (:mod:`.rasterize_torch`) on
  the same (CUDA) device: exact by our definition (the 0.99/0.999 clamp difference cannot move
  the 0.5 crossing unless one Gaussian alone takes a pixel from above 0.5 to below 0.005
  transmittance);
* ``meta``: gsplat's meta dict, with ``radii`` reduced to ``[C, N]`` (gsplat >= 1.5 returns
  per-axis ``[C, N, 2]``; we keep the larger axis) and the original kept as ``radii_xy``.

gsplat needs CUDA (its kernels are JIT-compiled/prebuilt for CUDA only).
"""

from __future__ import annotations

import torch

from .rasterize_torch import rasterize_torch
from .rasterize_types import RenderOutput


def rasterize_gsplat(means, quats, scales, opacities, colors, viewmats, Ks, width, height, *,
                     sh_degree=None, backgrounds=None, near_plane=0.01, far_plane=1e10,
                     tile_size=16, retain_means2d_grad=False):
    if means.device.type != "cuda":
        raise ValueError(f"backend 'gsplat' needs CUDA tensors, got device {means.device}; "
                         "use backend='torch' (or 'auto')")
    try:
        import gsplat
    except Exception as e:  # pragma: no cover - depends on the install
        raise ValueError(f"backend 'gsplat' needs the gsplat package ({e}); install gsplat or use "
                         "backend='torch'") from e

    dt = means.dtype
    viewmats = viewmats.to(device=means.device, dtype=dt)
    Ks = Ks.to(device=means.device, dtype=dt)
    bg = backgrounds.to(device=means.device, dtype=dt) if backgrounds is not None else None
    render, alphas, meta = gsplat.rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, int(width), int(height),
        near_plane=near_plane, far_plane=far_plane, eps2d=0.3, sh_degree=sh_degree, packed=False,
        tile_size=int(tile_size), backgrounds=bg, render_mode="RGB+ED", rasterize_mode="classic",
        camera_model="pinhole")
    rgb = render[..., :3]  # [C, H, W, 3]
    ed = render[..., 3:4]  # [C, H, W, 1]
    depth = torch.where(alphas > 1e-6, ed, torch.zeros_like(ed))
    meta = dict(meta)
    radii = meta.get("radii")
    if radii is not None and radii.ndim == 3:
        meta["radii_xy"] = radii
        meta["radii"] = radii.max(dim=-1).values.to(torch.int32)
    means2d = meta.get("means2d")
    if retain_means2d_grad and means2d is not None and means2d.requires_grad:
        means2d.retain_grad()
    with torch.no_grad():
        med = rasterize_torch(means.detach(), quats.detach(), scales.detach(), opacities.detach(),
                              colors.detach(), viewmats, Ks, int(width), int(height),
                              sh_degree=sh_degree, near_plane=near_plane, far_plane=far_plane,
                              tile_size=int(tile_size)).depth_median
    meta.setdefault("width", int(width))
    meta.setdefault("height", int(height))
    meta.setdefault("n_cameras", viewmats.shape[0])
    meta["backend"] = "gsplat"
    return RenderOutput(rgb, alphas, depth, med, meta)
