"""Synthetic "generated orbit" degradations of ground-truth mesh renders, deterministic per seed.

A generative model's orbit (SV3D, Hi3D, ...) is not a clean render: its views disagree a little
with each other and with any single 3D object, while the reconstruction still assumes the
nominal orbit cameras. :func:`render_degraded` renders a mesh so that its views disagree the
same ways, and hands back the **nominal** cameras, never the ones actually rendered from:

1. **camera error**: each view is rendered at a perturbed camera (azimuth and elevation
   uniformly within +-``az_deg`` / ``el_deg``, distance within +-``dist_frac``);
2. **colour drift**: per view and channel ``c' = gain * c ** gamma`` with ``gain`` and ``gamma``
   uniformly within ``1 +- gain`` / ``1 +- gamma`` (on the object only: the background stays
   the plain colour a generator's views are composited on);
3. **warp**: a smooth per-view displacement field (bicubic upsampling of a random
   ``warp_grid`` x ``warp_grid`` control grid) whose largest displacement is ``warp`` times the
   image size;
4. **low resolution**: rendered at ``render_res`` (512) and area-downsampled to the cameras'
   size (e.g. 128);
5. **palette quantisation**: 256 colours with Floyd-Steinberg dithering (Pillow's
   ``Image.quantize``), as GIF/PNG-8 exports of generated orbits carry;
6. **masks by thresholding the background** (``kernels.splat.fit.masks_from_background``), not the
   renderer's exact coverage.

Every random draw comes from ``numpy.random.default_rng(seed)`` in a fixed order
(:func:`draw_degradations`), so a seed gives the same views bit for bit. Each stage can be
switched off (set its amplitude to 0, ``palette=0``, ``render_res=0``) to measure it alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..kernels.geometry.cameras import Cameras, make_orbit_cameras
from ..kernels.mesh.render import render_mesh
from ..kernels.splat.fit import masks_from_background


@dataclass(frozen=True)
class DegradeConfig:
    """Amplitudes of the degradations; the defaults are the ``generated`` preset."""

    az_deg: float = 2.0  # per-view azimuth error, uniform +-
    el_deg: float = 2.0  # per-view elevation error, uniform +-
    dist_frac: float = 0.02  # per-view relative camera-distance error, uniform +-
    gain: float = 0.10  # per-view, per-channel gain 1 +- gain
    gamma: float = 0.10  # per-view, per-channel gamma 1 +- gamma
    warp: float = 0.015  # largest warp displacement as a fraction of the image size
    warp_grid: int = 4  # control points per side of the warp field (smoothness)
    render_res: int = 512  # render size before downsampling to the cameras' size; 0 = theirs
    palette: int = 256  # palette colours (0 = no quantisation)
    dither: bool = True  # Floyd-Steinberg dithering when quantising
    mask_tol: float = 0.04  # background threshold of the masks (max channel difference)


PRESETS = {
    "generated": DegradeConfig(),
    "none": DegradeConfig(az_deg=0, el_deg=0, dist_frac=0, gain=0, gamma=0, warp=0,
                          render_res=0, palette=0),
}


def preset(name: str) -> DegradeConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown degradation preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


@dataclass
class Degradations:
    """The per-view draws of one seed (what :func:`render_degraded` applied)."""

    d_azimuth: np.ndarray  # [N] degrees
    d_elevation: np.ndarray  # [N] degrees
    dist_scale: np.ndarray  # [N]
    gain: np.ndarray  # [N, 3]
    gamma: np.ndarray  # [N, 3]
    warp_ctrl: np.ndarray  # [N, 2, G, G] control displacements in -1..1 before scaling


def draw_degradations(n: int, seed: int, cfg: DegradeConfig = DegradeConfig()) -> Degradations:
    """All random numbers of a degraded orbit of ``n`` views, in a fixed order."""
    if n < 1:
        raise ValueError(f"need at least one view, got {n}")
    g = max(2, int(cfg.warp_grid))
    rng = np.random.default_rng(seed)
    u = lambda *s: rng.uniform(-1.0, 1.0, size=s)  # noqa: E731
    return Degradations(d_azimuth=u(n) * cfg.az_deg, d_elevation=u(n) * cfg.el_deg,
                        dist_scale=1.0 + u(n) * cfg.dist_frac, gain=1.0 + u(n, 3) * cfg.gain,
                        gamma=1.0 + u(n, 3) * cfg.gamma, warp_ctrl=u(n, 2, g, g))


def perturb_cameras(cams: Cameras, d: Degradations) -> Cameras:
    """The cameras the views are really rendered from (orbit parameters moved by ``d``)."""
    el = (cams.elevation.double().numpy() + d.d_elevation).clip(-89.0, 89.0)
    az = cams.azimuth.double().numpy() + d.d_azimuth
    r = cams.radius.double().numpy() * d.dist_scale
    return make_orbit_cameras(el, az, r, cams.fov.double().numpy(), cams.width, cams.height)


def color_drift(images: torch.Tensor, cover: torch.Tensor, gain: torch.Tensor,
                gamma: torch.Tensor) -> torch.Tensor:
    """``images`` [N,H,W,3] with ``gain * c ** gamma`` ([N,3] each) where ``cover`` [N,H,W] is 1."""
    drift = (gain[:, None, None] * images.clamp(0, 1) ** gamma[:, None, None]).clamp(0, 1)
    m = cover[..., None]
    return m * drift + (1 - m) * images


def warp_field(ctrl: torch.Tensor, h: int, w: int, amplitude: float) -> torch.Tensor:
    """Smooth displacements [N,H,W,2] in pixels (x, y), largest length ``amplitude * max(h,w)``."""
    d = F.interpolate(ctrl, size=(h, w), mode="bicubic", align_corners=True)  # [N,2,H,W]
    d = d.permute(0, 2, 3, 1)
    peak = d.norm(dim=-1).flatten(1).amax(-1).clamp_min(1e-12)  # [N]
    return d / peak[:, None, None, None] * (amplitude * max(h, w))


def warp_images(images: torch.Tensor, disp: torch.Tensor, background) -> torch.Tensor:
    """Resample ``images`` [N,H,W,C] at ``pixel + disp`` [N,H,W,2]; outside = ``background``."""
    n, h, w, c = images.shape
    bg = torch.as_tensor(background, dtype=images.dtype).reshape(1, 1, 1, -1)
    j, i = torch.meshgrid(torch.arange(w, dtype=images.dtype) + 0.5,
                          torch.arange(h, dtype=images.dtype) + 0.5, indexing="xy")
    x = (j + disp[..., 0]) / w * 2 - 1
    y = (i + disp[..., 1]) / h * 2 - 1
    grid = torch.stack([x, y], -1)  # [N,H,W,2]
    out = F.grid_sample((images - bg).permute(0, 3, 1, 2), grid, mode="bilinear",
                        padding_mode="zeros", align_corners=False)
    return out.permute(0, 2, 3, 1) + bg


def quantize_palette(images: torch.Tensor, colors: int = 256, dither: bool = True) -> torch.Tensor:
    """Each view [N,H,W,3] reduced to its own ``colors``-colour palette (Pillow, median cut)."""
    from PIL import Image

    if not 2 <= colors <= 256:
        raise ValueError(f"palette colours must be 2..256, got {colors}")
    mode = Image.Dither.FLOYDSTEINBERG if dither else Image.Dither.NONE
    out = []
    for im in images:
        u8 = (im.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
        q = Image.fromarray(u8, "RGB").quantize(colors=colors, dither=mode).convert("RGB")
        out.append(torch.from_numpy(np.asarray(q, dtype=np.float32) / 255.0))
    return torch.stack(out)


def render_degraded(mesh, cameras: Cameras, seed: int = 0,
                    config: Optional[DegradeConfig] = None, background=(1.0, 1.0, 1.0),
                    return_info: bool = False, **render_kwargs):
    """Render ``mesh`` as a generated orbit would show it at the nominal ``cameras``.

    Args:
        mesh: a (normalised) ``trimesh.Trimesh``.
        cameras: the nominal cameras; the output images have their size.
        seed: seed of every random draw (same seed, same views).
        config: amplitudes (default :data:`PRESETS` ``["generated"]``).
        render_kwargs: passed to :func:`kernels.mesh.render.render_mesh` (e.g. ``occlusion``,
            ``shadows``).

    Returns ``(images [N,H,W,3], masks [N,H,W], nominal cameras)`` -- plus, with
    ``return_info``, a dict with the ``true_cameras`` rendered from and the
    :class:`Degradations` drawn.
    """
    cfg = config or PRESETS["generated"]
    if cfg.render_res and cfg.render_res < max(cameras.width, cameras.height):
        raise ValueError(f"render_res {cfg.render_res} is below the cameras' size "
                         f"{cameras.width}x{cameras.height}; render larger and downsample")
    n, w, h = len(cameras), cameras.width, cameras.height
    d = draw_degradations(n, seed, cfg)
    true = perturb_cameras(cameras.to("cpu"), d)
    if cfg.render_res:
        s = cfg.render_res / max(w, h)
        big = true.resized(max(1, round(w * s)), max(1, round(h * s)))
    else:
        big = true
    r = render_mesh(mesh, big, background=background, **render_kwargs)
    rgb, cover = r["rgb"], r["mask"]  # [N,H',W',3], [N,H',W']
    if cfg.gain or cfg.gamma:
        rgb = color_drift(rgb, cover, torch.from_numpy(d.gain).float(),
                          torch.from_numpy(d.gamma).float())
    if cfg.warp:
        disp = warp_field(torch.from_numpy(d.warp_ctrl).float(), big.height, big.width, cfg.warp)
        rgb = warp_images(rgb, disp, background)
    if (big.width, big.height) != (w, h):
        rgb = F.interpolate(rgb.permute(0, 3, 1, 2), size=(h, w), mode="area").permute(0, 2, 3, 1)
    rgb = rgb.clamp(0, 1)
    if cfg.palette:
        rgb = quantize_palette(rgb, cfg.palette, cfg.dither)
    masks = masks_from_background(rgb, background, cfg.mask_tol)
    nominal = cameras.to("cpu")
    if return_info:
        return rgb, masks, nominal, {"true_cameras": true, "degradations": d}
    return rgb, masks, nominal


def only(stage: str, base: DegradeConfig = DegradeConfig()) -> DegradeConfig:
    """``base`` with every stage but one switched off (``camera``, ``color``, ``warp``,
    ``resolution``, ``palette``): to measure or test one degradation alone."""
    off = dict(az_deg=0.0, el_deg=0.0, dist_frac=0.0, gain=0.0, gamma=0.0, warp=0.0,
               render_res=0, palette=0)
    keep = {"camera": ("az_deg", "el_deg", "dist_frac"), "color": ("gain", "gamma"),
            "warp": ("warp",), "resolution": ("render_res",), "palette": ("palette",)}
    if stage not in keep:
        raise ValueError(f"unknown degradation stage {stage!r}; choose one of {sorted(keep)}")
    for k in keep[stage]:
        off.pop(k)
    return replace(base, **off)
