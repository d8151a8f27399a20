"""Adaptive density control for 3DGS (clone / split / prune), driven by a rasteriser's ``meta``.

The same rules as the original 3DGS and gsplat's ``DefaultStrategy`` (thresholds on the image-
space gradient of the projected means, normalised by half the image size), written for our
:class:`~.gaussians.Gaussians` parameter dict so it runs on any device with the pure-torch
rasteriser. Optimiser moments of surviving Gaussians are kept; new ones start from zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .gaussians import quat_to_rotmat

PARAM_NAMES = ("means", "quats", "log_scales", "opacity_logits", "sh")


@dataclass
class DensifyConfig:
    grad_threshold: float = 0.0002  # on the mean 2D gradient, in half-image units
    small_scale: float = 0.01  # relative to the scene extent: below -> clone, above -> split
    prune_opacity: float = 0.005
    prune_big_scale: float = 0.1  # relative to the scene extent
    max_gaussians: int = 200_000


class DensifyState:
    """Accumulates per-Gaussian gradient statistics between refinements."""

    def __init__(self, n: int, device):
        self.grad = torch.zeros(n, device=device)
        self.count = torch.zeros(n, device=device)

    def accumulate(self, means2d: torch.Tensor, radii: torch.Tensor, width: int, height: int):
        """``means2d`` [C, N, 2] with ``.grad`` in pixels; ``radii`` [C, N]."""
        if means2d.grad is None:
            return
        g = means2d.grad.detach().clone()  # [C, N, 2]
        g[..., 0] *= width / 2.0
        g[..., 1] *= height / 2.0
        vis = radii > 0  # [C, N]
        norms = g.norm(dim=-1) * vis  # [C, N]
        self.grad += norms.sum(0)
        self.count += vis.sum(0).to(self.count.dtype)

    def reset(self, n: int):
        self.grad = torch.zeros(n, device=self.grad.device)
        self.count = torch.zeros(n, device=self.count.device)


def _update_optimizer(opt: torch.optim.Optimizer, params: dict, keep: torch.Tensor,
                      n_new: int) -> None:
    """Swap each param in ``opt`` for ``params[name]``: moments of kept rows are carried over
    (indices ``keep``), ``n_new`` appended rows start with zero moments."""
    for group in opt.param_groups:
        name = group["name"]
        old = group["params"][0]
        new = params[name]
        state = opt.state.pop(old, None)
        if state:
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    v = state[key][keep]
                    if n_new:
                        v = torch.cat([v, v.new_zeros((n_new,) + v.shape[1:])])
                    state[key] = v
            opt.state[new] = state
        group["params"][0] = new


@torch.no_grad()
def refine(params: dict, opt: torch.optim.Optimizer, state: DensifyState, cfg: DensifyConfig,
           scene_extent: float, allow_grow: bool = True, generator=None) -> dict:
    """One clone/split/prune pass. Returns the new ``params`` dict (leaf tensors with grad)."""
    means = params["means"]
    n = means.shape[0]
    scales = torch.exp(params["log_scales"])  # [N, 3]
    opac = torch.sigmoid(params["opacity_logits"])  # [N]
    avg = state.grad / state.count.clamp_min(1)
    if allow_grow:
        grow = (avg > cfg.grad_threshold) & (state.count > 0)
    else:
        grow = torch.zeros_like(opac, dtype=torch.bool)
    small = scales.max(-1).values <= cfg.small_scale * scene_extent
    clone = grow & small
    split = grow & ~small
    budget = cfg.max_gaussians - n
    if budget <= 0:
        clone[:] = False
        split[:] = False
    elif int(clone.sum() + split.sum()) > budget:  # keep the strongest gradients
        cand = torch.nonzero(clone | split).flatten()
        top = cand[torch.argsort(avg[cand], descending=True)[:budget]]
        sel = torch.zeros_like(clone)
        sel[top] = True
        clone &= sel
        split &= sel
    too_big = scales.max(-1).values > cfg.prune_big_scale * scene_extent
    prune = (opac < cfg.prune_opacity) | too_big
    keep_mask = ~prune & ~split  # split parents are replaced by their two children
    keep = torch.nonzero(keep_mask).flatten()

    new_rows = {k: [] for k in PARAM_NAMES}
    # clones: exact copies (they separate under the next gradient steps)
    ci = torch.nonzero(clone & ~prune).flatten()
    for k in PARAM_NAMES:
        new_rows[k].append(params[k][ci])
    # splits: two samples from the parent Gaussian, scales shrunk by 1.6
    si = torch.nonzero(split).flatten()
    if si.numel():
        R = quat_to_rotmat(params["quats"][si])  # [S, 3, 3]
        for _ in range(2):
            z = torch.randn(si.numel(), 3, device=means.device, generator=generator)
            offs = (R @ (z * scales[si]).unsqueeze(-1)).squeeze(-1)
            new_rows["means"].append(means[si] + offs)
            new_rows["log_scales"].append(params["log_scales"][si] - torch.log(torch.tensor(1.6)))
            new_rows["quats"].append(params["quats"][si])
            new_rows["opacity_logits"].append(params["opacity_logits"][si])
            new_rows["sh"].append(params["sh"][si])
    out = {}
    n_new = sum(t.shape[0] for t in new_rows["means"])
    for k in PARAM_NAMES:
        t = torch.cat([params[k][keep]] + new_rows[k])
        out[k] = t.detach().requires_grad_(True)
    _update_optimizer(opt, out, keep, n_new)
    state.reset(out["means"].shape[0])
    return out
