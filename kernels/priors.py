"""Regularisers plugged into the 3DGS fit (:func:`.fit.fit_gaussians`'s ``regularizer`` hook).

:class:`IPSMGeometryRegularizer`: IPSM's host-free geometry terms (SPEC §7): each step, pseudo
cameras perturbed around the training cameras (σ annealed 0.01 -> 0.05) are rendered, the closest
training view is inverse-warped into them with the rendered pseudo depth, and the pseudo render
is pulled towards the warped view inside the strict depth-consistency mask; optionally a Pearson
correlation loss ties the rendered depth of the training views to a monocular depth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from . import ipsm


@dataclass
class IPSMGeometryConfig:
    weight_geometry: float = 0.5
    weight_depth: float = 0.05  # only used with a monocular depth
    pseudo_views: int = 1
    every: int = 1  # apply every k-th step (cost bound)
    start: float = 0.0  # fraction of the fit before the terms switch on
    seed: int = 0


class IPSMGeometryRegularizer:
    """Callable ``(step, params, ctx) -> loss`` for :func:`.fit.fit_gaussians`.

    ``mono_depth`` [N, H, W] (any resolution; resized to the training size): a monocular depth or
    disparity per training view; the Pearson loss is invariant to its scale and shift.
    """

    def __init__(self, config: Optional[IPSMGeometryConfig] = None,
                 mono_depth: Optional[torch.Tensor] = None, mono_kind: str = "disparity"):
        self.cfg = config or IPSMGeometryConfig()
        if self.cfg.every < 1 or self.cfg.pseudo_views < 1:
            raise ValueError(f"every and pseudo_views must be >= 1, got {self.cfg.every}, "
                             f"{self.cfg.pseudo_views}")
        self.mono = mono_depth
        self.kind = mono_kind  # "disparity" (near = large, as depth nodes output) or "depth"
        self.gen = torch.Generator().manual_seed(self.cfg.seed)
        self.last = {}

    def __call__(self, step: int, params: dict, ctx) -> torch.Tensor:
        zero = params["means"].sum() * 0
        total = ctx.iterations
        if step < self.cfg.start * total or step % self.cfg.every:
            return zero
        sig = ipsm.pseudo_sigma(step, total)
        # pseudo cameras around this step's training views: their depth is already rendered
        k = len(ctx.view_idx)
        pick = torch.randint(0, k, (self.cfg.pseudo_views,), generator=self.gen) if k else None
        if k and ctx.step_render is not None:
            src = torch.tensor(ctx.view_idx)[pick]
            src_depth = ctx.step_render.depth.detach()[pick]
            pc, _ = ipsm.perturb_cameras(ctx.cams, sig, source=src, generator=self.gen)
        else:
            pc, src = ipsm.perturb_cameras(ctx.cams, sig, count=self.cfg.pseudo_views,
                                           generator=self.gen)
            with torch.no_grad():
                src_depth = ctx(ctx.cams[src.tolist()]).depth
        out_p = ctx(pc)
        r = ipsm.ipsm_geometry(out_p.rgb, out_p.depth, pc.viewmats, pc.Ks,
                               ctx.images[src], src_depth,
                               ctx.cams.viewmats[src], ctx.cams.Ks[src], pseudo_alpha=out_p.alpha)
        loss = self.cfg.weight_geometry * r.loss_geo
        self.last = {"sigma": sig, "geo": float(r.loss_geo.detach())}
        if self.mono is not None and self.cfg.weight_depth > 0:
            i = src.tolist()
            out_t = ctx(ctx.cams[i])
            mono = self.mono[i].to(out_t.depth)
            h, w = ctx.images.shape[1:3]
            if mono.shape[1:] != (h, w):
                mono = torch.nn.functional.interpolate(mono[:, None], size=(h, w), mode="bilinear",
                                                       align_corners=False)[:, 0]
            mask = (ctx.masks[i] > 0.5).to(mono)
            lp = ipsm.pearson_depth_loss(out_t.depth, mono[..., None], mask[..., None],
                                         kind=self.kind)
            loss = loss + self.cfg.weight_depth * lp
            self.last["depth"] = float(lp.detach())
        return loss
