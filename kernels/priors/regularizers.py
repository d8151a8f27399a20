"""Regularisers plugged into the 3DGS fit (:func:`.splat.fit.fit_gaussians`'s ``regularizer`` hook).

:class:`IPSMGeometryRegularizer`: the host-free geometry terms of IPSM ("How to Use Diffusion Priors
under Sparse Views?", NeurIPS 2024; official code GeorgeNum7/IPSM): each step, pseudo
cameras perturbed around the training cameras (σ annealed 0.01 -> 0.05) are rendered, the closest
training view is inverse-warped into them with the rendered pseudo depth, and the pseudo render
is pulled towards the warped view inside the strict depth-consistency mask; optionally a Pearson
correlation loss ties the rendered depth of the training views to a monocular depth.

:class:`IPSMDiffusionRegularizer`: IPSM's two score terms (:func:`.sds.ipsm_prior_loss`,
weights 0.2 / 2.0, t ~ U[250, 750), ramp-in) on the VAE latents of pseudo renders, the
inpainting model conditioned on the warped closest training view and its inpaint mask.
:class:`SV3DSDSRegularizer`: SV3D's masked SDS (the paper's 3D stage; no code released) with the
video (SV3D) denoiser on a whole orbit of renders, weighted by the visibility mask
(:func:`.sds.visibility_mask_from_depth`) so only what no training camera sees is repainted;
switched on in the last part of the fit.

Both take the models as callables (built by the host layer, ``nodes/host/priors.py``), so this
module stays free of ComfyUI; both only act every ``every`` steps to bound their cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..geometry.cameras import SV3D_FOV_DEG, make_orbit_cameras, neighbor_views
from . import ipsm, sds


@dataclass
class IPSMGeometryConfig:
    weight_geometry: float = 0.5
    weight_depth: float = 0.05  # only used with a monocular depth
    pseudo_views: int = 1
    every: int = 1  # apply every k-th step (cost bound)
    start: float = 0.0  # fraction of the fit before the terms switch on
    sigma_scale: float = 1.0  # x IPSM's pseudo-pose noise (0.01 -> 0.05 of the camera distance)
    seed: int = 0
    # cross-view photometric consistency (ours, :func:`.ipsm.cross_view_loss`): 0 disables it
    weight_cross_view: float = 0.0
    cross_view_start: float = 0.3  # fraction of the fit before it switches on
    cross_view_neighbors: int = 2  # nearest training views (by viewing direction) compared
    cross_view_tol: float = 0.02  # relative depth tolerance of the occlusion test
    cross_view_max_residual: float = 0.1  # drop pixels whose L1 residual exceeds this (0 = keep)


def pseudo_cameras(ctx, sigma: float, count: int, gen: torch.Generator):
    """IPSM pseudo cameras for one fit step: ``(cams [P], source view indices [P], the sources'
    rendered depth [P,H,W,1])``. Perturbs this step's training views when the fit rendered them
    (their depth is reused: one render less), else random training views (rendered here)."""
    k = len(ctx.view_idx)
    if k and ctx.step_render is not None:
        pick = torch.randint(0, k, (count,), generator=gen)
        src = torch.tensor(ctx.view_idx)[pick]
        pc, _ = ipsm.perturb_cameras(ctx.cams, sigma, source=src, generator=gen)
        return pc, src, ctx.step_render.depth.detach()[pick]
    pc, src = ipsm.perturb_cameras(ctx.cams, sigma, count=count, generator=gen)
    with torch.no_grad():
        depth = ctx(ctx.cams[src.tolist()]).depth
    return pc, src, depth


class IPSMGeometryRegularizer:
    """Callable ``(step, params, ctx) -> loss`` for :func:`.splat.fit.fit_gaussians`.

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
        self._depth_cache = {}  # training view -> its last rendered depth (occlusion tests)
        self._near = None  # [N, k] nearest training views (the cameras are fixed during a fit)

    def cross_view(self, step: int, ctx) -> Optional[torch.Tensor]:
        """The cross-view term for this step's training views (None when off or not yet on).
        Neighbours' depths come from their own most recent training render (no extra render;
        at most one pass over the views stale)."""
        out = ctx.step_render
        if out is None or not ctx.view_idx:
            return None
        h, w = ctx.images.shape[1:3]
        for j, a in enumerate(ctx.view_idx):
            self._depth_cache[a] = out.depth[j].detach()
        if self.cfg.weight_cross_view <= 0 or step < self.cfg.cross_view_start * ctx.iterations:
            return None
        if self._near is None or self._near.shape[0] != len(ctx.cams):
            self._near = neighbor_views(ctx.cams, self.cfg.cross_view_neighbors)  # [N, k]
        near = self._near
        terms = []
        for j, a in enumerate(ctx.view_idx):
            nbs = [b for b in near[a].tolist()
                   if b in self._depth_cache and self._depth_cache[b].shape[:2] == (h, w)]
            if not nbs:
                continue
            terms.append(ipsm.cross_view_loss(
                out.depth[j], out.alpha[j], ctx.images[a], ctx.masks[a], ctx.cams.viewmats[a],
                ctx.cams.Ks[a], ctx.images[nbs], ctx.masks[nbs],
                torch.stack([self._depth_cache[b] for b in nbs]), ctx.cams.viewmats[nbs],
                ctx.cams.Ks[nbs], tol=self.cfg.cross_view_tol,
                max_residual=self.cfg.cross_view_max_residual))
        return torch.stack(terms).mean() if terms else None

    def __call__(self, step: int, params: dict, ctx) -> torch.Tensor:
        loss = params["means"].sum() * 0
        total = ctx.iterations
        xv = self.cross_view(step, ctx)
        if xv is not None:
            loss = loss + self.cfg.weight_cross_view * xv
            self.last["cross_view"] = float(xv.detach())
        pseudo_off = self.cfg.weight_geometry <= 0 and (self.mono is None
                                                        or self.cfg.weight_depth <= 0)
        if step < self.cfg.start * total or step % self.cfg.every or pseudo_off:
            return loss
        sig = ipsm.pseudo_sigma(step, total) * self.cfg.sigma_scale
        pc, src, src_depth = pseudo_cameras(ctx, sig, self.cfg.pseudo_views, self.gen)
        out_p = ctx(pc)
        r = ipsm.ipsm_geometry(out_p.rgb, out_p.depth, pc.viewmats, pc.Ks,
                               ctx.images[src], src_depth,
                               ctx.cams.viewmats[src], ctx.cams.Ks[src], pseudo_alpha=out_p.alpha)
        loss = loss + self.cfg.weight_geometry * r.loss_geo
        self.last.update({"sigma": sig, "geo": float(r.loss_geo.detach())})
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


def _resize_images(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[B, H, W, C]`` -> ``[B, height, width, C]`` (bilinear; identity when already there)."""
    if x.shape[1:3] == (height, width):
        return x
    y = torch.nn.functional.interpolate(x.permute(0, 3, 1, 2), size=(height, width),
                                        mode="bilinear", align_corners=False)
    return y.permute(0, 2, 3, 1)


def _latent_size(h: int, w: int, size: int) -> tuple:
    """Pixel size (multiple of 8) the pseudo renders are encoded at: ``size`` on the long side
    (0 = the render's own size rounded to 8), at least 64."""
    long = max(h, w) if size <= 0 else size
    s = long / max(h, w)
    return (max(64, int(round(h * s / 8)) * 8), max(64, int(round(w * s / 8)) * 8))


@dataclass
class IPSMDiffusionConfig:
    weight: float = 1.0  # multiplies 0.2 L(g1) + 2.0 L(g2)
    w1: float = sds.IPSM_W1
    w2: float = sds.IPSM_W2
    every: int = 4  # apply every k-th step (each application = 2 UNet passes x 2 for CFG)
    start: float = 0.0  # fraction of the fit before the terms switch on
    ramp: int = sds.IPSM_RAMP  # ramp-in length in steps after the start
    pseudo_views: int = 1
    # long side (pixels, multiple of 8) the pseudo renders are encoded at; 0 = as rendered
    size: int = 0
    t_range: tuple = sds.IPSM_T_RANGE
    seed: int = 0


class IPSMDiffusionRegularizer:
    """IPSM's diffusion prior as a fit ``regularizer(step, params, ctx)``.

    ``encode(images [P,H,W,3] 0..1) -> latents [P,4,H/8,W/8]`` must keep the autograd graph;
    ``eps_inpaint(x9, t)`` / ``eps_sd(x4, t)`` are the CFG'd epsilon predictions of the
    SD-1.5-inpainting and SD-1.5 models on DDPM latents; ``alphas_cumprod`` ``[T]`` their schedule.
    ``prepare()`` (optional) is called once on first use (the host loads weights there).
    """

    def __init__(self, encode, eps_inpaint, eps_sd, alphas_cumprod: torch.Tensor,
                 config: Optional[IPSMDiffusionConfig] = None, prepare=None):
        self.cfg = config or IPSMDiffusionConfig()
        if self.cfg.every < 1 or self.cfg.pseudo_views < 1 or self.cfg.ramp < 0:
            raise ValueError(f"every and pseudo_views must be >= 1 and ramp >= 0, got "
                             f"{self.cfg.every}, {self.cfg.pseudo_views}, {self.cfg.ramp}")
        self.encode, self.eps_inpaint, self.eps_sd = encode, eps_inpaint, eps_sd
        self.ac = alphas_cumprod
        self.prepare = prepare
        self.gen = torch.Generator().manual_seed(self.cfg.seed)
        self.last = {}
        self.calls = 0

    def __call__(self, step: int, params: dict, ctx) -> torch.Tensor:
        zero = params["means"].sum() * 0
        total = ctx.iterations
        start = int(self.cfg.start * total)
        if step < start or step % self.cfg.every or self.cfg.weight == 0:
            return zero
        if self.prepare is not None:
            self.prepare()
            self.prepare = None
        sig = ipsm.pseudo_sigma(step, total)
        pc, src, src_depth = pseudo_cameras(ctx, sig, self.cfg.pseudo_views, self.gen)
        out_p = ctx(pc)  # [P, H, W, *] with grad
        g = ipsm.ipsm_geometry(out_p.rgb.detach(), out_p.depth.detach(), pc.viewmats, pc.Ks,
                               ctx.images[src], src_depth, ctx.cams.viewmats[src],
                               ctx.cams.Ks[src], pseudo_alpha=out_p.alpha.detach())
        H, W = _latent_size(out_p.rgb.shape[1], out_p.rgb.shape[2], self.cfg.size)
        z = self.encode(_resize_images(out_p.rgb, H, W))  # [P, 4, h, w] with grad
        inpaint = g.masks.inpaint  # [P, H, W, 1] bool: where the warp is not trusted
        with torch.no_grad():
            cond_img = _resize_images(sds.masked_image(g.warp.image[..., :3], inpaint), H, W)
            masked_latent = self.encode(cond_img).detach()
        mask_latent = sds.inpaint_mask_latent(inpaint, z.shape[-2], z.shape[-1])
        loss, info = sds.ipsm_prior_loss(z, self.eps_inpaint, self.eps_sd, self.ac,
                                         mask_latent.to(z), masked_latent.to(z), step=step,
                                         start=start, ramp=self.cfg.ramp, t_range=self.cfg.t_range,
                                         w1=self.cfg.w1, w2=self.cfg.w2, generator=self.gen)
        self.calls += 1
        self.last = {"loss": float(loss.detach()), "l1": float(info["l1"].detach()),
                     "l2": float(info["l2"].detach()), "scale": info["scale"],
                     "inpaint_frac": float(inpaint.float().mean())}
        return self.cfg.weight * loss.to(zero.device, zero.dtype)


@dataclass
class SV3DSDSConfig:
    weight: float = 1.0
    start: float = 0.7  # fraction of the fit before SDS switches on (0.7 = the last 30 %)
    every: int = 4
    sigma_min: float = 0.05
    sigma_max: float = 5.0
    weighting: str = "one_minus_alpha"
    random_azimuth: bool = True  # rotate the whole orbit by a random offset each application
    f0: float = 0.0  # visibility smoothstep range: SV3D's mask 1 - smoothstep(v.n; 0, 0.5)
    f1: float = 0.5
    seed: int = 0


class SV3DSDSRegularizer:
    """Masked SDS with a multi-view video denoiser on a whole orbit (SV3D).

    ``elevations`` / ``azimuths`` (degrees, ``[F]``) are the orbit the conditioning was made for,
    ``(height, width)`` the pixel size of its latents x 8. ``denoiser_for(elevations, azimuths)``
    returns ``D(x [F,4,h,w], sigma [F]) -> x0`` conditioned on those cameras (the host rebuilds
    the camera vector for a rotated orbit); ``encode(images [F,H,W,3]) -> [F,4,h,w]`` keeps the
    graph. The orbit is rendered with cameras at the training cameras' mean distance and
    ``fov`` (SV3D's 33.8 degrees by default); the SDS gradient on the latents is multiplied by the
    visibility mask w.r.t. the training cameras (area-averaged to the latent grid).
    """

    def __init__(self, encode, denoiser_for, elevations, azimuths, height: int, width: int,
                 config: Optional[SV3DSDSConfig] = None, fov: float = SV3D_FOV_DEG,
                 prepare=None):
        self.cfg = config or SV3DSDSConfig()
        if self.cfg.every < 1 or not (0.0 <= self.cfg.start < 1.0):
            raise ValueError(f"every must be >= 1 and start in [0, 1), got {self.cfg.every}, "
                             f"{self.cfg.start}")
        sds.edm_weight(torch.ones(1), self.cfg.weighting)  # validate
        if len(elevations) != len(azimuths) or len(azimuths) == 0:
            raise ValueError(f"need one elevation per azimuth, got {len(elevations)} and "
                             f"{len(azimuths)}")
        if height % 8 or width % 8:
            raise ValueError(f"render size must be a multiple of 8, got {width}x{height}")
        self.encode, self.denoiser_for = encode, denoiser_for
        self.el = [float(e) for e in elevations]
        self.az = [float(a) for a in azimuths]
        self.h, self.w, self.fov = int(height), int(width), float(fov)
        self.prepare = prepare
        self.gen = torch.Generator().manual_seed(self.cfg.seed)
        self.last = {}
        self.calls = 0

    def orbit(self, offset: float, radius: float):
        az = [(a + offset) % 360.0 for a in self.az]
        return az, make_orbit_cameras(self.el, az, radius, self.fov, self.w, self.h)

    def __call__(self, step: int, params: dict, ctx) -> torch.Tensor:
        zero = params["means"].sum() * 0
        if step < int(self.cfg.start * ctx.iterations) or step % self.cfg.every \
                or self.cfg.weight == 0:
            return zero
        if self.prepare is not None:
            self.prepare()
            self.prepare = None
        dev = ctx.cams.viewmats.device
        ref = ctx.cams.centers  # [R, 3]
        radius = float(ref.norm(dim=-1).mean())
        offset = 0.0
        if self.cfg.random_azimuth:
            step_deg = 360.0 / len(self.az)
            offset = float(torch.rand(1, generator=self.gen)) * step_deg
        az, cams = self.orbit(offset, radius)
        cams = cams.to(dev)
        out = ctx(cams)  # [F, H, W, *] with grad
        mask, _ = sds.visibility_mask_from_depth(out.depth, cams.viewmats, cams.Ks, ref,
                                                 alpha=out.alpha, f0=self.cfg.f0, f1=self.cfg.f1)
        z = self.encode(out.rgb)  # [F, 4, h, w]
        m = sds.mask_to_latent(mask, z.shape[-2], z.shape[-1]).to(z)  # [F, 1, h, w]
        sigma = sds.sample_sigma(1, self.cfg.sigma_min, self.cfg.sigma_max, self.gen,
                                 z.device, z.dtype).expand(z.shape[0])
        noise = torch.randn(z.shape, generator=self.gen, dtype=z.dtype).to(z.device)
        D = self.denoiser_for(self.el, az)
        loss, info = sds.edm_sds_loss(z, D, sigma, m, noise=noise, weighting=self.cfg.weighting)
        self.calls += 1
        self.last = {"loss": float(loss.detach()), "sigma": float(sigma[0]),
                     "offset": offset, "mask_mean": float(mask.mean())}
        return self.cfg.weight * loss.to(zero.device, zero.dtype)
