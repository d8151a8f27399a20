"""3D Gaussian Splatting fit: views + cameras (+ masks) -> :class:`Gaussians`.

Initialised from the masks' visual hull (surface voxels, colours projected from the views that
face them), optimised with L1 + D-SSIM (kornia) + an alpha/mask term, optional per-view
confidence weights (Diffusion²'s SSIM / 1-LPIPS confidences), adaptive density control, and a
coarse-to-fine resolution schedule that keeps CPU fits short.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..geometry.cameras import Cameras, project
from ..geometry.visual_hull import carve_visual_hull, voxel_grid
from ..inputs import check_image, check_mask
from ..interrupt import check_interrupt
from .densify import DensifyConfig, DensifyState, refine
from .gaussians import Gaussians, rgb_to_sh0, sh_coeffs
from .rasterize import rasterize


@dataclass
class FitConfig:
    iterations: int = 600
    sh_degree: int = 0
    seed: int = 0
    resolution: int = 0  # longest side used for training; 0 = the images' own size
    coarse_fraction: float = 0.3  # first part of the fit runs at half resolution
    views_per_step: int = 1
    lambda_dssim: float = 0.2
    lambda_mask: float = 0.1
    background: tuple = (1.0, 1.0, 1.0)
    init_resolution: int = 64  # visual hull grid for the initialisation
    init_min_background_views: int = 1
    init_opacity: float = 0.5
    lr_means: float = 1.6e-4 * 10  # short CPU fits need a faster start than the 30k-iter default
    lr_means_final: float = 1.6e-6 * 10
    lr_sh0: float = 5e-3
    lr_opacity: float = 5e-2
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    densify: bool = True
    densify_start: float = 0.1  # fraction of iterations
    densify_stop: float = 0.6
    densify_every: int = 100
    densify_cfg: DensifyConfig = field(default_factory=DensifyConfig)
    sh_increase_every: int = 250  # one more SH degree every N iterations up to sh_degree
    backend: str = "auto"
    # robustness to views that disagree (generated orbits); see :func:`fit_gaussians`
    appearance: bool = True  # per-view colour transform (channel gains + biases), mean identity
    appearance_start: float = 0.1  # fraction of iterations before it is estimated
    lambda_appearance: float = 0.01  # ridge pull of each view's transform towards identity
    robust: bool = True  # clamp per-pixel residuals above a view's own robust_quantile
    robust_quantile: float = 0.9
    robust_start: float = 0.3  # fraction of iterations before the clamp is applied
    refine_cameras: bool = False  # per-view pose + focal corrections, pulled towards the given
    lr_cameras: float = 1e-3
    lambda_cameras: float = 0.01  # weight of the pull (corrections in units of ~2 deg / 2 %)


@dataclass
class FitContext:
    """What a regulariser sees each step (see :func:`fit_gaussians`)."""

    render: Callable  # render(cams) -> RenderOutput, differentiable w.r.t. the parameters
    images: torch.Tensor  # [N, h, w, 3] training views at the current resolution
    masks: torch.Tensor  # [N, h, w]
    cams: Cameras  # at the current resolution
    iterations: int  # total steps of this fit
    background: torch.Tensor  # [3]
    view_idx: list = field(default_factory=list)  # training views rendered this step
    step_render: object = None  # their RenderOutput (part of the graph)

    def __call__(self, cams: Cameras):
        return self.render(cams)


@dataclass
class FitResult:
    gaussians: Gaussians
    history: list  # per logged step: dict(iteration, loss, psnr, n, t)
    # per training view: the fitted colour transform (rgb' = A rgb + b on the object), and the
    # camera corrections (None when off). Not part of the scene: renders at any camera use the
    # Gaussians alone, i.e. the transform every view has on average (identity).
    appearance: Optional[tuple] = None  # (A [N,3,3], b [N,3])
    cameras: Optional[Cameras] = None  # the refined training cameras


def skew_exp(w: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[N,3,3]`` of axis-angle vectors ``w`` ``[N,3]`` (radians)."""
    z = torch.zeros_like(w[:, 0])
    k = torch.stack([z, -w[:, 2], w[:, 1], w[:, 2], z, -w[:, 0], -w[:, 1], w[:, 0], z],
                    -1).reshape(-1, 3, 3)
    return torch.linalg.matrix_exp(k)


class ViewCorrections(torch.nn.Module):
    """Per-view appearance (colour gains + biases) and camera corrections of a fit.

    Appearance: view ``v``'s object colour is ``g_v * c + b_v`` per channel (premultiplied by
    alpha, so the background stays the plain colour the views are composited on) -- the
    global colour drift (exposure, white balance) a generator adds to a view, as NeRF-W's
    per-image appearance or exposure compensation do. Each time a view is rendered, its
    ``(g, b)`` is re-estimated in closed form: ridge least squares of the view's pixels against
    the (detached) render, pulled towards ``(1, 0)`` by ``lam_app`` (relative to the view's
    object pixel count; the bias 10x harder, as gain and bias are confounded on near-grey
    colours), smoothed over visits (``momentum``), then normalised over the views to geometric
    mean gain 1 and mean bias 0. The scene therefore keeps the views' average colour and
    renders at new cameras need no transform. A full 3x3 colour matrix or transforms learned
    by Adam measured worse on views with known gains (confounded, noisy).

    Cameras: ``viewmat_v <- [exp(w_v) | t_v] viewmat_v`` and focal ``* exp(f_v)`` (BARF-style
    pose refinement), learned with the scene, regularised towards the given cameras by
    ``lam_cam`` in units of 2 degrees / 2 % of the distance."""

    def __init__(self, n: int, device, appearance: bool, cameras: bool, lam_app: float = 0.01,
                 lam_cam: float = 0.01, momentum: float = 0.5):
        super().__init__()
        self.use_app, self.use_cam = appearance, cameras
        self.lam_app, self.lam_cam, self.momentum = lam_app, lam_cam, momentum
        self.register_buffer("gain", torch.ones(n, 3, device=device))
        self.register_buffer("bias", torch.zeros(n, 3, device=device))
        self.w = torch.nn.Parameter(torch.zeros(n, 3, device=device))
        self.t = torch.nn.Parameter(torch.zeros(n, 3, device=device))
        self.f = torch.nn.Parameter(torch.zeros(n, device=device))

    def transforms(self):
        """(A [N,3,3] diagonal gains, b [N,3])."""
        return torch.diag_embed(self.gain), self.bias.clone()

    @torch.no_grad()
    def update(self, rgb, alpha, gt, mask, bg, idx) -> None:
        """Re-estimate the transforms of views ``idx`` from their renders and views."""
        obj = (rgb - (1 - alpha) * bg)  # [V,h,w,3] premultiplied render
        y = gt - (1 - alpha) * bg  # the view, with the render's background removed
        wgt = (mask[..., None] * alpha).clamp(0, 1)  # object pixels both agree on
        a = alpha.expand_as(obj)
        n = wgt.flatten(1, 2).sum(1).clamp_min(1.0)  # [V,1]
        lam = self.lam_app * n
        s = lambda u, v: (wgt * u * v).flatten(1, 2).sum(1)  # noqa: E731  [V,3]
        # normal equations of min sum w (g p + b a - y)^2 + lam (g-1)^2 + 10 lam b^2
        m00, m01, m11 = s(obj, obj) + lam, s(obj, a), s(a, a) + 10 * lam
        r0, r1 = s(obj, y) + lam, s(a, y)
        det = (m00 * m11 - m01 * m01).clamp_min(1e-12)
        g = ((r0 * m11 - m01 * r1) / det).clamp(0.5, 2.0)
        b = ((m00 * r1 - m01 * r0) / det).clamp(-0.3, 0.3)
        k = self.momentum
        i = torch.as_tensor(idx, device=self.gain.device)
        self.gain[i] = k * self.gain[i] + (1 - k) * g
        self.bias[i] = k * self.bias[i] + (1 - k) * b
        self.gain /= torch.exp(torch.log(self.gain).mean(0, keepdim=True))
        self.bias -= self.bias.mean(0, keepdim=True)

    def color(self, rgb: torch.Tensor, alpha: torch.Tensor, bg: torch.Tensor, idx) -> torch.Tensor:
        """``rgb`` [V,h,w,3] composited on ``bg``, ``alpha`` [V,h,w,1] -> transformed rgb."""
        if not self.use_app:
            return rgb
        g, b = self.gain[idx][:, None, None], self.bias[idx][:, None, None]
        obj = rgb - (1 - alpha) * bg  # premultiplied object colour
        return g * obj + b * alpha + (1 - alpha) * bg

    def cameras(self, cams: Cameras, idx) -> Cameras:
        if not self.use_cam:
            return cams
        dv = torch.zeros(len(idx), 4, 4, device=self.w.device, dtype=self.w.dtype)
        dv[:, :3, :3] = skew_exp(self.w[idx])
        dv[:, :3, 3] = self.t[idx]
        dv[:, 3, 3] = 1
        diag = torch.diag(torch.tensor([1.0, 1.0, 0.0], device=dv.device, dtype=dv.dtype))
        s = torch.exp(self.f[idx]) - 1  # [V]
        K = cams.Ks.to(dv) * (1 + s[:, None, None] * diag)  # focal lengths scaled
        return Cameras(dv @ cams.viewmats.to(dv), K, cams.width, cams.height,
                       cams.elevation, cams.azimuth, cams.radius)

    def penalty(self, radius: float) -> torch.Tensor:
        if not self.use_cam:
            return self.w.new_zeros(())
        u = math.radians(2.0)
        return self.lam_cam * (((self.w / u) ** 2).sum(-1).mean()
                               + ((self.t / (u * radius)) ** 2).sum(-1).mean()
                               + ((self.f / 0.02) ** 2).mean())


def check_views(images: torch.Tensor, cams: Cameras, masks: Optional[torch.Tensor] = None) -> None:
    """Validate the fit's inputs; raise ``ValueError`` naming the problem and the fix."""
    check_image(images, "views")
    n, h, w = images.shape[:3]
    if n != len(cams):
        raise ValueError(f"{n} views but {len(cams)} cameras; give one camera per view "
                         "(e.g. the CAMERAS output of the node that made the views)")
    if (w, h) != (cams.width, cams.height) and abs(w / h - cams.width / cams.height) > 1e-3:
        raise ValueError(f"views are {w}x{h} but the cameras are {cams.width}x{cams.height} "
                         "with another aspect ratio; resize the views or make matching cameras")
    if masks is not None:
        check_mask(masks, "mask", (n, h, w), allow_empty=False)


def masks_from_background(images: torch.Tensor, background=(1.0, 1.0, 1.0),
                          tol: float = 0.04) -> torch.Tensor:
    """``[B,H,W]`` object masks from views on a plain background colour (1 = object)."""
    bg = torch.tensor(background, dtype=images.dtype, device=images.device)
    d = (images[..., :3] - bg).abs().amax(-1)
    return (d > tol).to(images.dtype)


def scene_bbox(cams: Cameras, margin: float = 1.0):
    """A cube around the origin that every camera sees entirely at the origin's depth."""
    half = float((cams.radius * torch.tan(torch.deg2rad(cams.fov) / 2)).min()) * margin
    half = max(min(half, 4.0), 1e-3)
    return (-half,) * 3, (half,) * 3


@torch.no_grad()
def init_from_hull(images: torch.Tensor, masks: torch.Tensor, cams: Cameras, resolution: int = 64,
                   min_background_views: int = 1, opacity: float = 0.5,
                   sh_degree: int = 0) -> Gaussians:
    """Gaussians on the surface voxels of the visual hull, coloured from the views facing them."""
    bbox = scene_bbox(cams)
    occ = carve_visual_hull(masks, cams, resolution=resolution,
                            min_background_views=min_background_views, bbox=bbox)  # [R,R,R]
    if not occ.any():
        raise ValueError("the masks' visual hull is empty: the views' masks do not agree on any "
                         "point (check cameras and masks belong together, or lower the carving)")
    o = occ.float()[None, None]
    inner = -F.max_pool3d(-o, 3, 1, 1)  # erosion
    surf = (occ & (inner[0, 0] < 0.5))
    idx = torch.nonzero(surf)  # [P, 3]
    grid = voxel_grid(resolution, *bbox)
    pts = grid[idx[:, 0], idx[:, 1], idx[:, 2]]  # [P, 3]
    vox = (bbox[1][0] - bbox[0][0]) / resolution
    # outward normals from the blurred occupancy
    blur = F.avg_pool3d(F.pad(o, (2,) * 6, mode="replicate"), 5, 1)[0, 0]
    gx, gy, gz = torch.gradient(blur)
    nrm = -torch.stack([gx, gy, gz], -1)[idx[:, 0], idx[:, 1], idx[:, 2]]
    nrm = F.normalize(nrm, dim=-1)
    colors = project_colors(pts, nrm, images, masks, cams)
    n = pts.shape[0]
    gen = torch.Generator().manual_seed(0)
    pts = pts + (torch.rand(n, 3, generator=gen) - 0.5) * vox * 0.5
    sh = torch.zeros(n, sh_coeffs(sh_degree), 3)
    sh[:, 0] = rgb_to_sh0(colors)
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1
    log_scales = torch.full((n, 3), math.log(vox * 0.7))
    op = torch.full((n,), math.log(opacity / (1 - opacity)))
    dev = images.device
    return Gaussians(pts.to(dev), quats.to(dev), log_scales.to(dev), op.to(dev), sh.to(dev))


def project_colors(pts: torch.Tensor, nrm: torch.Tensor, images: torch.Tensor,
                   masks: torch.Tensor, cams: Cameras) -> torch.Tensor:
    """Colour of each point ``[P,3]``: views weighted by how squarely they face the normal."""
    c, h, w = images.shape[:3]
    uv, z = project(pts, cams.viewmats, cams.Ks)  # [C,P,2], [C,P]
    grid = torch.stack([uv[..., 0] / w * 2 - 1, uv[..., 1] / h * 2 - 1], -1)  # [C,P,2]
    img = images[..., :3].permute(0, 3, 1, 2).float()
    col = F.grid_sample(img, grid[:, :, None], align_corners=False).squeeze(-1)  # [C,3,P]
    m = F.grid_sample(masks[:, None].float(), grid[:, :, None], align_corners=False)[:, 0, :, 0]
    to_cam = F.normalize(cams.centers[:, None].to(pts) - pts[None], dim=-1)  # [C,P,3]
    facing = (to_cam * nrm[None]).sum(-1)  # [C,P]
    inside = (grid.abs() <= 1).all(-1) & (z > 0) & (m > 0.5)
    wgt = facing.clamp_min(0) ** 4 * inside
    fallback = inside.float()  # points no view faces: average over views that see the mask
    wgt = torch.where(wgt.sum(0, keepdim=True) > 1e-6, wgt, fallback)
    out = (col * wgt[:, None]).sum(0) / wgt.sum(0).clamp_min(1e-6)  # [3,P]
    return out.T.clamp(0, 1)


def area_resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[B,H,W,C] -> [B,h,w,C] with area averaging."""
    if x.shape[1:3] == (h, w):
        return x
    return F.interpolate(x.permute(0, 3, 1, 2), size=(h, w), mode="area").permute(0, 2, 3, 1)


def _ssim_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """1 - SSIM, per image ``[B]`` (kornia's SSIM, 11x11 Gaussian window)."""
    import kornia  # noqa: PLC0415 - heavy import kept off module import

    s = kornia.metrics.ssim(pred.permute(0, 3, 1, 2), gt.permute(0, 3, 1, 2), 11)
    return 1 - s.mean(dim=(1, 2, 3))


def _clamp_residuals(res: torch.Tensor, q: float) -> torch.Tensor:
    """Per-pixel residuals ``[V,h,w,3]`` with each view's pixels above its own ``q`` quantile
    (of the per-pixel mean residual, over pixels with any error) scaled down to that quantile:
    a loss whose gradient does not grow with what one view alone claims (a truncated L1, as
    in robust / trimmed photometric losses, e.g. RobustNeRF)."""
    r = res.mean(-1)  # [V,h,w]
    with torch.no_grad():
        thr = torch.stack([torch.quantile(v[v > 1e-3], q) if (v > 1e-3).sum() > 16
                           else v.new_tensor(float("inf")) for v in r.flatten(1)])  # [V]
        scale = (thr[:, None, None] / r.clamp_min(1e-8)).clamp(max=1.0)
    return res * scale[..., None]


def fit_gaussians(images: torch.Tensor, cams: Cameras, masks: Optional[torch.Tensor] = None,
                  config: Optional[FitConfig] = None, init: Optional[Gaussians] = None,
                  weights: Optional[torch.Tensor] = None,
                  progress: Optional[Callable[[int, int, Callable[[], torch.Tensor]], None]] = None,
                  regularizer: Optional[Callable] = None) -> FitResult:
    """Fit Gaussians to ``images`` [N,H,W,3] 0..1 seen by ``cams``.

    ``masks`` [N,H,W] (1 = object; default: pixels differing from ``config.background``);
    ``weights`` [N] optional per-view confidence multipliers; ``init`` warm start;
    ``progress(step, total, preview_fn)`` called every step (``preview_fn()`` renders the
    first view); ``regularizer(step, params, ctx) -> loss`` optional extra term, where ``ctx`` is
    a :class:`FitContext`: ``ctx(cams)`` renders the current scene (with grad) from any cameras
    at the current training resolution, and ``ctx.images / masks / cams / iterations`` are the
    training data at that resolution.
    Works under ``torch.inference_mode()`` callers (it leaves inference mode itself).

    Views that disagree (generated orbits) are handled by three options of ``config``:
    ``appearance`` (default on) fits a per-view affine colour transform of the rendered object
    (:class:`ViewCorrections`; zero-mean over the views, pulled towards identity, returned in
    ``FitResult.appearance`` and never part of the scene); ``robust`` (default on) truncates
    each view's per-pixel residuals at its own ``robust_quantile`` after ``robust_start`` of
    the fit, so a detail only one view shows pulls no harder than a typical residual;
    ``refine_cameras`` (default off) fits small per-view pose and focal corrections,
    regularised towards the given cameras (``FitResult.cameras``).
    """
    cfg = config or FitConfig()
    if cfg.iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {cfg.iterations}")
    if not 0 <= cfg.sh_degree <= 3:
        raise ValueError(f"sh_degree must be 0..3, got {cfg.sh_degree}")
    images = images[..., :3]
    check_views(images, cams, masks)
    n_views, h0, w0 = images.shape[:3]
    if weights is not None and (weights.ndim != 1 or weights.shape[0] != n_views):
        raise ValueError(f"weights must be [N]=[{n_views}] per-view confidences, got "
                         f"{list(weights.shape)}")
    with torch.inference_mode(False), torch.enable_grad():
        return _fit(images.clone(), cams, None if masks is None else masks.clone(), cfg,
                    None if init is None else init.detach(),
                    None if weights is None else weights.clone(), progress, regularizer)


def _fit(images, cams, masks, cfg: FitConfig, init, weights, progress, regularizer) -> FitResult:
    dev = images.device
    n_views, h0, w0 = images.shape[:3]
    if masks is None:
        masks = masks_from_background(images, cfg.background)
        empty = torch.nonzero(masks.reshape(n_views, -1).amax(-1) < 0.5).flatten().tolist()
        if empty:
            raise ValueError(f"view(s) {empty} are all background colour {cfg.background}: no "
                             "object to fit; give a MASK or the right background colour")
    # training resolution
    scale = 1.0 if cfg.resolution <= 0 else min(1.0, cfg.resolution / max(h0, w0))
    h, w = max(8, round(h0 * scale)), max(8, round(w0 * scale))
    images = area_resize(images, h, w)
    masks = area_resize(masks[..., None], h, w)[..., 0]
    cams = cams.resized(w, h).to(dev)
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    g0 = init if init is not None else init_from_hull(
        images, masks, cams, cfg.init_resolution, cfg.init_min_background_views,
        cfg.init_opacity, cfg.sh_degree)
    g0 = g0.with_sh_degree(cfg.sh_degree).to(dev)
    sh_rest_scale = torch.ones(1, sh_coeffs(cfg.sh_degree), 1, device=dev)
    sh_rest_scale[:, 1:] = 1 / 20.0  # SH rest coefficients learn 20x slower (3DGS): they are
    # optimised in a space 20x larger than the stored values (Adam's step is scale-free)
    params = {k: t.detach().clone().requires_grad_(True) for k, t in
              zip(("means", "quats", "log_scales", "opacity_logits", "sh"), g0.tensors())}
    with torch.no_grad():
        params["sh"].data /= sh_rest_scale  # a warm start renders exactly as given
    extent = float(cams.radius.max()) * 0.5
    lr = {"means": cfg.lr_means * extent, "quats": cfg.lr_quats, "log_scales": cfg.lr_scales,
          "opacity_logits": cfg.lr_opacity, "sh": cfg.lr_sh0}
    opt = torch.optim.Adam([{"params": [params[k]], "lr": lr[k], "name": k} for k in params],
                           eps=1e-15)
    corr = ViewCorrections(n_views, dev, cfg.appearance, cfg.refine_cameras,
                           cfg.lambda_appearance, cfg.lambda_cameras)
    opt_v = (torch.optim.Adam([corr.w, corr.t, corr.f], lr=cfg.lr_cameras, eps=1e-15)
             if cfg.refine_cameras else None)
    app_start = int(cfg.appearance_start * cfg.iterations)
    robust_start = int(cfg.robust_start * cfg.iterations)
    dstate = DensifyState(params["means"].shape[0], dev)
    bg = torch.tensor(cfg.background, dtype=images.dtype, device=dev)
    coarse = cams.resized(max(8, w // 2), max(8, h // 2))
    img_c = area_resize(images, coarse.height, coarse.width)
    msk_c = area_resize(masks[..., None], coarse.height, coarse.width)[..., 0]
    d_start = int(cfg.densify_start * cfg.iterations)
    d_stop = int(cfg.densify_stop * cfg.iterations)
    history = []
    order = torch.randperm(n_views, generator=gen)
    cursor = 0
    t0 = time.perf_counter()
    mean_decay = (cfg.lr_means_final / cfg.lr_means) ** (1 / max(cfg.iterations - 1, 1))

    def render(p, cam_subset: Cameras, degree: int, retain=False):
        return rasterize(p["means"], p["quats"], torch.exp(p["log_scales"]),
                         torch.sigmoid(p["opacity_logits"]), p["sh"] * sh_rest_scale,
                         cam_subset.viewmats, cam_subset.Ks, cam_subset.width, cam_subset.height,
                         sh_degree=degree, backgrounds=bg.expand(len(cam_subset), 3),
                         backend=cfg.backend, retain_means2d_grad=retain)

    for it in range(cfg.iterations):
        check_interrupt()
        use_coarse = it < cfg.coarse_fraction * cfg.iterations
        cam_all, img_all, msk_all = (coarse, img_c, msk_c) if use_coarse else (cams, images, masks)
        idx = []
        for _ in range(min(cfg.views_per_step, n_views)):
            if cursor >= n_views:
                order = torch.randperm(n_views, generator=gen)
                cursor = 0
            idx.append(int(order[cursor]))
            cursor += 1
        cam = corr.cameras(cam_all[idx], idx)
        degree = min(cfg.sh_degree, it // max(cfg.sh_increase_every, 1))
        densifying = cfg.densify and d_start <= it < d_stop
        out = render(params, cam, degree, retain=densifying)
        gt, gm = img_all[idx], msk_all[idx]
        if cfg.appearance and it >= app_start:
            corr.update(out.rgb.detach(), out.alpha.detach(), gt, gm, bg, idx)
            pred = corr.color(out.rgb, out.alpha, bg, idx)
        else:
            pred = out.rgb
        res = (pred - gt).abs()  # [V,h,w,3]
        if cfg.robust and it >= robust_start:
            res = _clamp_residuals(res, cfg.robust_quantile)
        l1 = res.mean(dim=(1, 2, 3))  # [V]
        dssim = _ssim_loss(pred, gt)  # [V]
        lmask = (out.alpha[..., 0] - gm).abs().mean(dim=(1, 2))  # [V]
        per_view = (1 - cfg.lambda_dssim) * l1 + cfg.lambda_dssim * dssim + cfg.lambda_mask * lmask
        if weights is not None:
            per_view = per_view * weights[idx].to(per_view)
        loss = per_view.mean()
        if regularizer is not None:
            ctx = FitContext(lambda c, d=degree: render(params, c, d), img_all, msk_all, cam_all,
                             cfg.iterations, bg, idx, out)
            loss = loss + regularizer(it, params, ctx)
        if opt_v is not None:
            loss = loss + corr.penalty(extent * 2)
            opt_v.zero_grad(set_to_none=True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if opt_v is not None:
            opt_v.step()
        if densifying:
            m2d = out.meta["means2d"]
            dstate.accumulate(m2d, out.meta["radii"], cam.width, cam.height)
        opt.step()
        for group in opt.param_groups:
            if group["name"] == "means":
                group["lr"] *= mean_decay
        with torch.no_grad():
            params["quats"].data = F.normalize(params["quats"].data, dim=-1)
        if densifying and it > 0 and (it - d_start) % cfg.densify_every == 0 and it != d_start:
            params = refine(params, opt, dstate, cfg.densify_cfg, extent * 2, generator=gen)
        if it % 25 == 0 or it == cfg.iterations - 1:
            with torch.no_grad():
                mse = ((out.rgb - gt) ** 2).mean()
                history.append({"iteration": it, "loss": float(loss),
                                "psnr": float(-10 * torch.log10(mse.clamp_min(1e-10))),
                                "n": int(params["means"].shape[0]),
                                "t": time.perf_counter() - t0})
        if progress is not None:
            def preview(p=params, d=degree):
                with torch.no_grad():
                    return render(p, cams[[0]], d).rgb[0].detach()

            progress(it + 1, cfg.iterations, preview)
    # final prune of invisible/transparent Gaussians
    with torch.no_grad():
        keep = torch.sigmoid(params["opacity_logits"]) >= cfg.densify_cfg.prune_opacity
        g = Gaussians(*(params[k].detach() for k in ("means", "quats", "log_scales",
                                                      "opacity_logits", "sh"))).subset(keep)
        g.sh[:] = g.sh * sh_rest_scale.to(g.sh)
        app = tuple(t.detach() for t in corr.transforms()) if cfg.appearance else None
        refined = None
        if cfg.refine_cameras:
            refined = corr.cameras(cams, list(range(n_views))).resized(w0, h0)
            refined = Cameras(refined.viewmats.detach(), refined.Ks.detach(), w0, h0)
    return FitResult(g, history, app, refined)


def render_gaussians(g: Gaussians, cams: Cameras, background=(1.0, 1.0, 1.0), backend="auto",
                     chunk: int = 8):
    """Render ``g`` for every camera (no grad, chunked): (rgb 0..1, alpha, depth, depth_median)."""
    outs = []
    with torch.no_grad():
        bg = torch.tensor(background, dtype=g.means.dtype, device=g.device)
        for s in range(0, len(cams), chunk):
            check_interrupt()
            c = cams[list(range(s, min(s + chunk, len(cams))))].to(g.device)
            o = rasterize(g.means, F.normalize(g.quats, dim=-1), g.scales, g.opacities, g.sh,
                          c.viewmats, c.Ks, c.width, c.height, sh_degree=g.sh_degree,
                          backgrounds=bg.expand(len(c), 3), backend=backend)
            outs.append((o.rgb.clamp(0, 1), o.alpha, o.depth, o.depth_median))
    return tuple(torch.cat(t) for t in zip(*outs))
