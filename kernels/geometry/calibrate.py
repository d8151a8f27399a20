"""Camera self-calibration of an orbit from its silhouettes (host-free).

Generated orbits (SV3D_u, SV3D_p's dynamic orbit, other image->multi-view models) come with
cameras nobody knows exactly: the elevation of an SV3D_u orbit is the input photo's, a dynamic
orbit's elevation wanders per frame, the field of view is nominal. This module finds the orbit
that best explains the views' silhouettes, in the camera convention of :mod:`.cameras`.

**Consistency score** (:func:`orbit_consistency`). The masks are area-downsampled to ``size``
pixels; a coarse voxel grid (``resolution``^3 over a cube every camera sees, see
:func:`_carve_box`) is projected into every view. For view ``i`` the *leave-one-out hull* is the
set of voxels every *other* view sees on its object (a voxel projecting outside an image counts
as background there: orbit views frame the whole object); it is reprojected into view ``i`` (voxel
centres splatted, then a 3x3 morphological closing fills the gaps between them) and compared
with mask ``i`` by IoU. The score is the mean IoU over views. Leaving the view out is what makes
the score discriminative: with all views the hull reprojects inside every mask by
construction. Wrong cameras make the other views carve away what view ``i`` shows (or leave
what it does not), so the score peaks at the true orbit (spot, 21 views at 128 px, default
settings: 0.93 at the true elevation 20 degrees, 0.85 at 10, 0.73 at 0). All leave-one-out
hulls come from one projection pass: a voxel is in hull ``i`` when no view, or only view
``i``, sees it on background.

**Search** (:func:`calibrate_orbit`):

1. global: one elevation offset for all views over ``elevation_range`` (coarse steps, then a
   1-degree refinement and a parabola through the best three); with ``search_fov`` also a
   field-of-view scale (``tan(fov/2)`` scaled by ``fov_scales``, the distance by the inverse
   so the object keeps its world size: only the perspective changes). Off by default: the
   silhouettes barely see the perspective (spot: 0.9357 / 0.9361 / 0.9365 at the true fov and
   at tan scales 0.95 / 1.05), so a known fov (SV3D's 33.8 degrees) is better kept;
2. per view (``per_view``, for dynamic orbits): smooth corrections, band-limited Fourier
   series of the given azimuth (``elevation_harmonics`` for the elevation: SV3D's dynamic orbit
   is a sum of sines of 1..4 cycles per orbit, box-smoothed; ``azimuth_harmonics`` for the
   azimuth, whose constant term -- a turn of the whole scene about +y -- silhouettes cannot
   see and stays 0), found by pattern search on the full consistency score minus
   ``smoothness`` x the corrections' mean squared slope; azimuths must keep increasing along
   the orbit. Being functions of the azimuth, the corrections also apply to other cameras of
   the same orbit (held-out frames: :func:`apply_calibration`). Per-view searches that score
   each view against the others' hull one view at a time (coordinate descent, dynamic
   programming along the orbit) were tried first: they drift into a tilted orbit (elevation
   errors of 15 degrees on a +-15 degree wave) that the joint search does not;
3. distance: with ``normalize_distance`` the radius is scaled so the visual hull's largest
   extent (:func:`object_extent`, a finer 96^3 grid) is 1, the OrbitForge object convention
   (the mesh nodes carve in the unit box, so an object left larger would be clipped). With 21
   views around, the hull's extent is the object's within a voxel or two (spot: 2.217 for the
   true 2.2).

**Refusal**: when the best score stays below ``min_score`` (views that no orbit explains, e.g.
unrelated images) the result keeps the given cameras (``calibrated=False``) and says so with the
score; cameras that already explain the views (calibration gains less than ``min_gain``) are
also kept.

Circular-motion self-calibration from silhouettes goes back to Mendonca, Wong and Cipolla,
"Epipolar geometry from profiles under circular motion" (TPAMI 2001); Hernandez, Schmitt and
Cipolla, "Silhouette coherence for camera calibration under circular motion" (TPAMI 2007)
score candidate cameras by how well the visual hull reprojects into the silhouettes, as here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .cameras import Cameras, make_orbit_cameras
from .visual_hull import voxel_grid

MIN_VIEWS = 4


@dataclass
class CalibrationConfig:
    """Settings of :func:`calibrate_orbit` (defaults: a few seconds on 2 CPU cores)."""

    size: int = 64  # scoring image side in pixels (masks are area-downsampled)
    resolution: int = 48  # voxel grid of the coarse hull (per axis)
    margin: float = 1.25  # carve box half-size / half the frame width at the origin's depth
    elevation_range: tuple = (-60.0, 60.0)  # global search: elevation offsets (degrees)
    elevation_step: float = 5.0  # coarse step of the global search (then 1 degree)
    fov_scales: tuple = (0.8, 0.9, 1.0, 1.11, 1.25)  # global search: tan(fov/2) scales
    search_fov: bool = False  # silhouettes barely see the perspective: off by default
    # smooth per-view corrections (dynamic orbits) after the global search: True, False, or
    # "auto": only when the global result scores below per_view_below, kept only when it gains
    # at least per_view_min_gain (measured on six real SV3D orbits, 21 views: the static-looking
    # girl, glove and horse gain 0.005-0.025 over the global result by fitting generation
    # noise; toycar, sofa and train 0.06-0.24, and their held-out frames confirm it)
    per_view: object = False
    per_view_below: float = 0.85
    per_view_min_gain: float = 0.05
    elevation_harmonics: int = 4  # per-view elevation: Fourier harmonics over the orbit
    azimuth_harmonics: int = 2  # per-view azimuth: Fourier harmonics (0 = azimuths as given)
    view_step: float = 8.0  # first pattern-search step of the per-view search (degrees)
    smoothness: float = 1e-6  # weight of the corrections' mean squared slope (deg^2 / rad^2)
    normalize_distance: bool = True  # scale the radius so the hull's largest extent is 1
    # below: no orbit explains the views -> refuse (measured: frames of different real objects
    # 0.13-0.16, renders of unrelated boxes/spheres/tori 0.50-0.56; the real SV3D orbits
    # 0.65-0.92 once calibrated)
    min_score: float = 0.6
    min_gain: float = 0.005  # calibrated cameras must beat the given ones by this much
    # skip the search when the given cameras already score this much (None = always search)
    skip_above: Optional[float] = None


# The default path of the reconstruction nodes: check the given cameras (a tenth of a second);
# search only when they do not explain the views well (below 0.95), and replace them only when
# the search finds clearly better ones. Exact cameras of clean 128 px renders score 0.82-0.935
# (the cow's thin legs lowest) and the search keeps them (spurious gains up to 0.005, the
# teapot's); on 14 training views of the real orbits the elevations it finds gain 0.013-0.018
# (horse, glove, girl: the girl scores 0.905 at the nominal 0 degrees and -9 degrees is worth
# 2.2 dB of held-out splat PSNR), so neither threshold may be higher.
AUTO = dict(per_view="auto", skip_above=0.95, min_gain=0.01)


@dataclass
class CalibrationResult:
    """What :func:`calibrate_orbit` found. ``cameras`` is the given object when not calibrated."""

    cameras: Cameras
    calibrated: bool
    status: str  # "calibrated", "kept" (already consistent) or "refused" (no orbit explains)
    message: str
    score_before: float
    score_after: float  # of the returned cameras
    best_score: float  # of the best cameras found (== score_after when calibrated)
    elevation_deg: float  # mean elevation of the best cameras found
    elevation_offset_deg: float  # global offset added to the given elevations
    fov_deg: float
    fov_scale: float  # tan(fov/2) of the result / of the given cameras
    radius: float  # mean camera distance of the best cameras found
    distance_scale: float  # radius of the result / of the given cameras
    # per view, of the best cameras found (applied only when calibrated): dicts with view,
    # elevation, azimuth, d_elevation, d_azimuth (vs the given), iou_before, iou_after
    per_view: list = field(default_factory=list)
    # the smooth per-view corrections as functions of the given azimuth a (radians):
    # d_elevation(a) = elevation_offset_deg + sum_k c[2k] cos((k+1) a) + c[2k+1] sin((k+1) a)
    # with c = elevation_harmonics (likewise d_azimuth with azimuth_harmonics), see
    # apply_calibration
    elevation_harmonics: list = field(default_factory=list)
    azimuth_harmonics: list = field(default_factory=list)
    per_view_used: bool = False
    wall_s: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("cameras")
        d["cameras"] = self.cameras.to_dict()
        return d

    def report(self) -> str:
        lines = [self.message,
                 f"consistency (mean leave-one-out silhouette IoU): before {self.score_before:.3f}"
                 f", after {self.score_after:.3f}" + (
                     "" if self.calibrated else f" (best found {self.best_score:.3f})"),
                 f"elevation {self.elevation_deg:.1f} deg (offset {self.elevation_offset_deg:+.1f})"
                 f", fov {self.fov_deg:.1f} deg (tan scale {self.fov_scale:.3f}), distance "
                 f"{self.radius:.3f} (scale {self.distance_scale:.3f}), {self.wall_s:.1f} s"]
        if self.per_view:
            lines.append("view: elevation azimuth (d_elev d_azim) IoU before -> after")
            for p in self.per_view:
                lines.append(f"{p['view']:3d}: {p['elevation']:6.1f} {p['azimuth']:6.1f} "
                             f"({p['d_elevation']:+5.1f} {p['d_azimuth']:+5.1f}) "
                             f"{p['iou_before']:.3f} -> {p['iou_after']:.3f}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def check_calibration_inputs(masks: torch.Tensor, cams: Cameras) -> None:
    """``ValueError`` naming the problem (and the fix) before any work."""
    if not isinstance(cams, Cameras):
        raise ValueError(f"cameras must be a CAMERAS value, got {type(cams).__name__}")
    if not isinstance(masks, torch.Tensor) or masks.ndim != 3:
        got = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks)
        raise ValueError(f"masks must be a [N, H, W] tensor (1 = object), got {got}")
    n, h, w = masks.shape
    if n < MIN_VIEWS:
        raise ValueError(f"calibration needs at least {MIN_VIEWS} views of the orbit, got {n}; "
                         "give the whole orbit (e.g. all 21 SV3D frames)")
    if n != len(cams):
        raise ValueError(f"{n} views but {len(cams)} cameras; give one camera per view")
    if abs(w / h - cams.width / cams.height) > 1e-3:
        raise ValueError(f"views are {w}x{h} but the cameras {cams.width}x{cams.height} (another "
                         "aspect ratio); give the cameras of these views")
    fwd = cams.viewmats[:, 2, :3].double()  # camera +z (viewing direction) in world
    to_origin = torch.nn.functional.normalize(-cams.centers.double(), dim=-1)
    off = torch.rad2deg(torch.acos((fwd * to_origin).sum(-1).clamp(-1, 1)))
    bad = torch.nonzero(off > 1.0).flatten().tolist()
    if bad:
        raise ValueError(f"camera(s) {bad} do not look at the origin (off by "
                         f"{[round(float(off[i]), 1) for i in bad]} degrees): calibration "
                         "refines orbit cameras around the object at the origin; use orbit "
                         "cameras (Orbit Cameras / SV3D) or an SV3D mode")
    if not torch.isfinite(masks).all():
        raise ValueError("masks contain NaN/inf values; fix the node that produced them")
    flat = masks.reshape(n, -1).float()
    empty = torch.nonzero(flat.amax(-1) < 0.5).flatten().tolist()
    if empty:
        raise ValueError(f"view(s) {empty} have no object pixel (mask < 0.5 everywhere): "
                         "calibration needs the object's silhouette in every view; check the "
                         "mask polarity (1 = object), the background colour, or drop those views")
    full = torch.nonzero((flat >= 0.5).float().mean(-1) > 0.97).flatten().tolist()
    if full:
        raise ValueError(f"view(s) {full} are object almost everywhere (mask >= 0.5 on > 97% of "
                         "the image): no silhouette to calibrate from; give a MASK or the views' "
                         "background colour")


def _prepare_masks(masks: torch.Tensor, size: int) -> torch.Tensor:
    """``[N, h, w]`` bool at ``size`` pixels on the longest side (area average >= 0.5)."""
    n, h, w = masks.shape
    s = size / max(h, w)
    hh, ww = max(8, round(h * s)), max(8, round(w * s))
    m = F.interpolate(masks[:, None].float().cpu(), size=(hh, ww), mode="area")[:, 0]
    return m >= 0.5


def _carve_box(cams: Cameras, margin: float) -> float:
    """Half-size of a cube around the origin: ``margin`` x the half-height of the smallest
    frame at the origin's depth (an object framed by every view lies inside)."""
    half = (cams.radius.double() * torch.tan(torch.deg2rad(cams.fov.double()) / 2)).min()
    return float(half) * margin


# ----------------------------------------------------------------------------------------------
# Consistency score
# ----------------------------------------------------------------------------------------------


def _project_pixels(pts: torch.Tensor, cams: Cameras):
    """Pixel index ``[C, P]`` (long, -1 outside the image or behind the camera)."""
    vm = cams.viewmats.to(pts)
    K = cams.Ks.to(pts)
    pc = torch.einsum("cij,pj->cpi", vm[:, :3, :3], pts) + vm[:, None, :3, 3]  # [C, P, 3]
    z = pc[..., 2]
    zs = z.clamp_min(1e-6)
    j = torch.floor(K[:, None, 0, 0] * pc[..., 0] / zs + K[:, None, 0, 2])
    i = torch.floor(K[:, None, 1, 1] * pc[..., 1] / zs + K[:, None, 1, 2])
    W, H = cams.width, cams.height
    ok = (z > 0) & (j >= 0) & (j < W) & (i >= 0) & (i < H)
    lin = (i * W + j).long()
    return torch.where(ok, lin, torch.full_like(lin, -1))


def _silhouettes(lin: torch.Tensor, member: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Splat voxels (``member`` ``[M, P]`` bool) at pixels ``lin`` ``[M, P]`` -> closed
    silhouettes ``[M, h, w]`` bool."""
    M = lin.shape[0]
    sel = member & (lin >= 0)
    idx = (lin + torch.arange(M, device=lin.device)[:, None] * (h * w))[sel]
    sil = torch.zeros(M * h * w, dtype=torch.float32, device=lin.device)
    sil[idx] = 1.0
    sil = sil.reshape(M, 1, h, w)
    sil = -F.max_pool2d(-F.max_pool2d(sil, 3, 1, 1), 3, 1, 1)  # closing: fill splat gaps
    return sil[:, 0] > 0.5


def _iou(sil: torch.Tensor, fg: torch.Tensor) -> torch.Tensor:
    inter = (sil & fg).flatten(1).sum(-1).float()
    union = (sil | fg).flatten(1).sum(-1).float()
    return inter / union.clamp_min(1)


def _grid_points(cams: Cameras, resolution: int, margin: float) -> torch.Tensor:
    half = _carve_box(cams, margin)
    return voxel_grid(resolution, (-half,) * 3, (half,) * 3).reshape(-1, 3)  # [P, 3]


def _hull_sets(fg: torch.Tensor, cams: Cameras, pts: torch.Tensor):
    """The voxels that lie in some leave-one-out hull: ``(points [S, 3], carver [S])`` where
    ``carver`` is -1 for voxels every view sees on its object (the full hull: in every
    leave-one-out hull) and ``c`` for voxels only view ``c`` sees on background (or outside
    its image): they are in the hull of the views other than ``c`` only. Views are applied one
    after the other to the voxels still in play, so the cost is a few times the grid, not the
    grid times the views."""
    C, h, w = fg.shape
    flat = fg.reshape(C, -1)
    alive = torch.arange(pts.shape[0])
    carver = torch.full((pts.shape[0],), -1, dtype=torch.long)
    for c in range(C):
        p = pts[alive]
        lin = _project_pixels(p, cams[c])[0]  # [A]
        out = ~(flat[c][lin.clamp_min(0)] & (lin >= 0))
        first = out & (carver[alive] < 0)
        carver[alive[first]] = c
        alive = alive[~(out & ~first)]  # drop voxels carved a second time
    return pts[alive], carver[alive]


def _loo_scores(fg: torch.Tensor, cams: Cameras, pts: torch.Tensor) -> torch.Tensor:
    """Leave-one-out silhouette IoU per view ``[C]``; ``cams`` at the masks' size."""
    C, h, w = fg.shape
    hp, carver = _hull_sets(fg, cams, pts)
    lin = _project_pixels(hp, cams)  # [C, S]
    member = (carver[None] < 0) | (carver[None] == torch.arange(C)[:, None])  # [C, S]
    return _iou(_silhouettes(lin, member, h, w), fg)


def orbit_consistency(masks: torch.Tensor, cams: Cameras, size: int = 64, resolution: int = 48,
                      margin: float = 1.25) -> tuple[float, torch.Tensor]:
    """``(score, per_view [N])``: mean leave-one-out silhouette IoU of ``cams`` for ``masks``
    ``[N, H, W]`` (1 = object); 1 = every view's silhouette is exactly what the others' visual
    hull shows. See the module doc."""
    check_calibration_inputs(masks, cams)
    with torch.inference_mode(False), torch.no_grad(), _single_thread():
        fg = _prepare_masks(masks, size)
        c = cams.resized(fg.shape[2], fg.shape[1]).to(device="cpu", dtype=torch.float32)
        per = _loo_scores(fg, c, _grid_points(c, resolution, margin))
    return float(per.mean()), per


def held_out_consistency(masks: torch.Tensor, cams: Cameras, held_masks: torch.Tensor,
                         held_cams: Cameras, size: int = 64, resolution: int = 48,
                         margin: float = 1.25) -> torch.Tensor:
    """Silhouette IoU per held-out view ``[M]``: the visual hull of ``masks`` ``[N, H, W]``
    seen by ``cams``, reprojected into ``held_cams`` and compared with ``held_masks``
    ``[M, H, W]`` (same size). A check of a calibration on views it did not see."""
    check_calibration_inputs(masks, cams)
    if held_masks.ndim != 3 or held_masks.shape[1:] != masks.shape[1:] or \
            held_masks.shape[0] != len(held_cams):
        raise ValueError(f"held_masks must be [{len(held_cams)}, {masks.shape[1]}, "
                         f"{masks.shape[2]}], got {list(held_masks.shape)}")
    with torch.inference_mode(False), torch.no_grad(), _single_thread():
        fg = _prepare_masks(masks, size)
        hfg = _prepare_masks(held_masks, size)
        h, w = fg.shape[1:]
        c = cams.resized(w, h).to(device="cpu", dtype=torch.float32)
        hc = held_cams.resized(w, h).to(device="cpu", dtype=torch.float32)
        hp, carver = _hull_sets(fg, c, _grid_points(c, resolution, margin))
        hull = hp[carver < 0]
        lin = _project_pixels(hull, hc)
        return _iou(_silhouettes(lin, torch.ones_like(lin, dtype=torch.bool), h, w), hfg)


# ----------------------------------------------------------------------------------------------
# Calibration
# ----------------------------------------------------------------------------------------------


def _fov_from_tan_scale(fov: torch.Tensor, s: float) -> torch.Tensor:
    return torch.rad2deg(2 * torch.atan(s * torch.tan(torch.deg2rad(fov.double()) / 2)))


def _build(el, az, r, fov, w, h) -> Cameras:
    el = np.clip(np.asarray(el, dtype=np.float64), -89.0, 89.0)
    return make_orbit_cameras(el, np.asarray(az, dtype=np.float64) % 360.0,
                              np.asarray(r, dtype=np.float64), np.asarray(fov, dtype=np.float64),
                              w, h)


class _Problem:
    """The masks at scoring size and the given orbit's parameters (numpy, degrees)."""

    def __init__(self, fg: torch.Tensor, cams: Cameras, cfg: CalibrationConfig):
        self.fg = fg
        self.C, self.h, self.w = fg.shape
        self.cfg = cfg
        self.el0 = cams.elevation.double().numpy().copy()
        self.az0 = cams.azimuth.double().numpy().copy()
        self.r0 = cams.radius.double().numpy().copy()
        self.fov0 = cams.fov.double().numpy().copy()
        self.evals = 0

    def cams(self, de=0.0, s=1.0, dev=None, dav=None, rscale=1.0, w=None, h=None) -> Cameras:
        el = self.el0 + de + (0 if dev is None else dev)
        az = self.az0 + (0 if dav is None else dav)
        fov = _fov_from_tan_scale(torch.from_numpy(self.fov0), s).numpy()
        return _build(el, az, self.r0 / s * rscale, fov, w or self.w, h or self.h)

    def coarse(self) -> "_Problem":
        """The same problem at 3/4 of the scoring size and voxel resolution (for the large
        steps of the per-view search: about half the cost per score)."""
        fg = _prepare_masks(self.fg.float(), max(16, self.cfg.size * 3 // 4))
        cfg = dataclasses.replace(self.cfg, size=max(16, self.cfg.size * 3 // 4),
                                  resolution=max(8, self.cfg.resolution * 3 // 4))
        q = _Problem.__new__(_Problem)
        q.__dict__.update(self.__dict__)
        q.fg, q.cfg = fg, cfg
        q.C, q.h, q.w = fg.shape
        return q

    def score(self, cams: Cameras) -> torch.Tensor:
        self.evals += 1
        return _loo_scores(self.fg, cams, _grid_points(cams, self.cfg.resolution,
                                                       self.cfg.margin))


def _parabola_peak(xs, ys) -> float:
    """Vertex of the parabola through three (x, y) points around a maximum (else the best x)."""
    (x0, x1, x2), (y0, y1, y2) = xs, ys
    den = (x0 - x1) * (x0 - x2) * (x1 - x2)
    if abs(den) < 1e-12:
        return x1
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / den
    b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / den
    if a >= 0:
        return x1
    return float(np.clip(-b / (2 * a), min(xs), max(xs)))


def _global_search(p: _Problem, check) -> tuple[float, float, float]:
    """Best (elevation offset, tan fov scale, score): coarse elevation steps at the given fov,
    the fov scales at the best elevation, 1-degree steps around it and a parabola through the
    best three, then the fov scale once more (+-5 %)."""
    cfg = p.cfg
    step = float(cfg.elevation_step)
    # keep every view within [-89, 89]
    lo = max(float(cfg.elevation_range[0]), -89.0 - float(p.el0.min()))
    hi = min(float(cfg.elevation_range[1]), 89.0 - float(p.el0.max()))
    if hi < lo:
        lo = hi = 0.0
    grid = np.arange(lo, hi + 1e-6, step)
    if lo <= 0.0 <= hi:
        grid = np.unique(np.concatenate([grid, [0.0]]))
    memo = {}

    def at(de, s):
        key = (round(float(de), 4), round(float(s), 5))
        if key not in memo:
            check()
            memo[key] = float(p.score(p.cams(float(de), float(s))).mean())
        return memo[key]

    best = max(grid.tolist(), key=lambda d: at(d, 1.0))
    s_best = 1.0
    if cfg.search_fov:
        s_best = max([1.0] + [float(s) for s in cfg.fov_scales], key=lambda s: at(best, s))
    fine = [d for d in np.arange(best - step + 1.0, best + step - 0.5, 1.0).tolist()
            if lo - 1e-6 <= d <= hi + 1e-6]
    b = max(fine + [best], key=lambda d: at(d, s_best))
    if b - 1.0 >= lo - 1e-6 and b + 1.0 <= hi + 1e-6:
        d = _parabola_peak((b - 1.0, b, b + 1.0), (at(b - 1.0, s_best), at(b, s_best),
                                                   at(b + 1.0, s_best)))
        if at(d, s_best) >= at(b, s_best):
            b = d
    if cfg.search_fov:
        s_best = max((s_best, s_best / 1.05, s_best * 1.05), key=lambda s: at(b, s))
    return b, s_best, at(b, s_best)


def _fourier(phase: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``sum_k coef[2k] cos((k+1) phase) + coef[2k+1] sin((k+1) phase)`` per view."""
    out = np.zeros_like(phase)
    for k in range(coef.size // 2):
        out += coef[2 * k] * np.cos((k + 1) * phase) + coef[2 * k + 1] * np.sin((k + 1) * phase)
    return out


def _per_view(p: _Problem, de: float, s: float, score0: float, check, progress,
              give_up_below: Optional[float] = None):
    """Smooth per-view corrections: returns (d_elevation [C], d_azimuth [C], score, extra
    elevation offset, elevation harmonics, azimuth harmonics).

    The corrections are band-limited Fourier series over the orbit's phase (the given
    azimuth): ``elevation_harmonics`` for the elevation (SV3D's dynamic orbit is a sum of
    sines of 1..4 cycles per orbit, box-smoothed) and ``azimuth_harmonics`` for the azimuth
    (its constant term is a rotation of the whole scene about +y, which silhouettes cannot
    see, so it is fixed at 0). Pattern search on the full consistency score minus
    ``smoothness`` x the mean squared slope of the corrections (degrees per radian of orbit),
    from steps of ``view_step`` degrees halved down to 0.25; candidate orbits whose azimuths
    stop increasing along the orbit are rejected."""
    cfg = p.cfg
    C = p.C
    phase = np.deg2rad(p.az0)  # [C] radians (the series are periodic: no unwrapping needed)
    az_unw = np.rad2deg(np.unwrap(phase))  # for the increasing-azimuth check
    ke, ka = int(cfg.elevation_harmonics), int(cfg.azimuth_harmonics)
    n_e = 1 + 2 * ke  # offset + harmonics
    theta = np.zeros(n_e + 2 * ka)
    order = np.sign(az_unw[-1] - az_unw[0]) or 1.0
    kk = np.concatenate([[0.0], np.repeat(np.arange(1, ke + 1), 2),
                         np.repeat(np.arange(1, ka + 1), 2)])
    lam = float(cfg.smoothness) / C

    def corrections(t):
        dev = t[0] + _fourier(phase, t[1:n_e])
        dav = _fourier(phase, t[n_e:]) if ka else np.zeros(C)
        return dev, dav

    coarse = p.coarse()
    prob = coarse

    def objective(t):
        dev, dav = corrections(t)
        az = az_unw + dav
        if np.any(order * np.diff(az) <= 0.5):
            return -np.inf, None
        el = p.el0 + de + dev
        if np.any(np.abs(el) > 89.0):
            return -np.inf, None
        check()
        sc = float(prob.score(prob.cams(de, s, dev, dav)).mean())
        return sc - lam * float(np.sum((kk * t) ** 2)) * C / 2, sc

    best, best_sc = objective(theta)
    start_sc = best_sc
    step = float(cfg.view_step)
    levels = max(int(round(math.log2(step / 0.5))) + 1, 1)
    for level in range(levels):
        if prob is coarse and step < 1.5:  # the small steps on the full-size problem
            if give_up_below is not None and best_sc - start_sc < give_up_below:
                # the large steps found (almost) nothing: the small ones will not either
                return np.zeros(C), np.zeros(C), score0, 0.0, np.zeros(0), np.zeros(0)
            prob = p
            best, best_sc = objective(theta)
        improved = True
        sweeps = 0
        while improved and sweeps < 4:
            improved = False
            sweeps += 1
            for j in range(theta.size):
                for sign in (1.0, -1.0):
                    t = theta.copy()
                    t[j] += sign * step
                    v, sc = objective(t)
                    moved = False
                    while v > best + 1e-5:  # keep going while it pays
                        theta, best, best_sc, moved = t, v, sc, True
                        t = theta.copy()
                        t[j] += sign * step
                        v, sc = objective(t)
                    if moved:
                        improved = True
                        break
        if progress is not None:
            progress(level + 1, levels)
        step /= 2
    dev, dav = corrections(theta)
    return dev, dav, best_sc, theta[0], theta[1:n_e], theta[n_e:]


def object_extent(masks: torch.Tensor, cams: Cameras, resolution: int = 96,
                  size: int = 192, margin: float = 1.25) -> float:
    """Largest bounding-box extent (world units, along the world axes) of the visual hull of
    ``masks`` ``[N, H, W]`` seen by ``cams`` (a voxel outside an image counts as background
    there), NaN when the hull is empty."""
    fg = _prepare_masks(masks, size)
    c = cams.resized(fg.shape[2], fg.shape[1]).to(device="cpu", dtype=torch.float32)
    hp, carver = _hull_sets(fg, c, _grid_points(c, resolution, margin))
    inside = hp[carver < 0]
    if inside.shape[0] == 0:
        return float("nan")
    voxel = 2 * _carve_box(c, margin) / resolution
    return float((inside.amax(0) - inside.amin(0)).max()) + voxel


@contextlib.contextmanager
def _single_thread():
    """Run on one CPU thread: the work is many small tensor ops, which OpenMP threads slow
    down (measured 30x slower with 2 threads on a busy 2-core machine), restored after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def calibrate_orbit(masks: torch.Tensor, cams: Cameras,
                    config: Optional[CalibrationConfig] = None,
                    progress: Optional[Callable[[int, int], None]] = None,
                    interrupt: Optional[Callable[[], None]] = None) -> CalibrationResult:
    """Refine the orbit ``cams`` (one per view, in orbit order) so the silhouettes ``masks``
    ``[N, H, W]`` (1 = object) agree; see the module doc for the method.

    ``cams`` are the nominal cameras (e.g. SV3D's static orbit at a guessed elevation): the
    global search adds one elevation offset and a field-of-view scale, the per-view search
    (``config.per_view``) corrections per view. The result's cameras are orbit cameras
    (looking at the origin, +y up) at the given image size, or the given ``cams`` unchanged
    when calibration is refused or gains nothing. ``progress(done, total)`` after each stage,
    ``interrupt()`` before each score evaluation (may raise to stop).
    """
    t0 = time.perf_counter()
    cfg = config or CalibrationConfig()
    check_calibration_inputs(masks, cams)
    if int(cfg.size) < 16 or int(cfg.resolution) < 8:
        raise ValueError(f"size must be >= 16 and resolution >= 8, got {cfg.size}, "
                         f"{cfg.resolution}")
    if cfg.per_view not in (True, False, "auto"):
        raise ValueError(f"per_view must be True, False or 'auto', got {cfg.per_view!r}")
    check = interrupt or (lambda: None)
    total = 3 if cfg.per_view is False else 10
    eh, ah = np.zeros(0), np.zeros(0)
    with torch.inference_mode(False), torch.no_grad(), _single_thread():
        fg = _prepare_masks(masks, int(cfg.size))
        p = _Problem(fg, cams, cfg)
        given = cams.resized(p.w, p.h).to(device="cpu", dtype=torch.float32)
        per0 = p.score(given)
        score0 = float(per0.mean())
        if progress is not None:
            progress(1, total)
        if cfg.skip_above is not None and score0 >= cfg.skip_above:
            return _kept(cams, score0, per0, cfg, t0)
        de, s, best = _global_search(p, check)
        if progress is not None:
            progress(2, total)
        dev = np.zeros(p.C)
        dav = np.zeros(p.C)
        used = False
        if cfg.per_view is True or (cfg.per_view == "auto" and best < cfg.per_view_below):
            sub = None if progress is None else (lambda i, t: progress(2 + 7 * i // t, total))
            # auto: give up after the large steps when they gained less than half of what
            # keeping the result needs (static orbits; saves the small steps' cost)
            pv = _per_view(p, de, s, best, check, sub, None if cfg.per_view is True else
                           cfg.per_view_min_gain / 2)
            if cfg.per_view is True or pv[2] >= best + cfg.per_view_min_gain:
                dev, dav, best, d0, eh, ah = pv
                dev = dev - d0  # the constant part goes into the global offset
                de += d0
                used = True
        found = p.cams(de, s, dev, dav)
        per1 = p.score(found)
        best = float(per1.mean())
        rscale = 1.0
        if cfg.normalize_distance:
            ext = object_extent(masks, found, margin=cfg.margin)
            if math.isfinite(ext) and ext > 1e-6:
                rscale = 1.0 / ext
        if progress is not None:
            progress(total, total)
    out = p.cams(de, s, dev, dav, rscale=rscale, w=cams.width, h=cams.height)
    gain = best - score0
    if best < cfg.min_score:
        status, ok = "refused", False
        msg = (f"refused: no orbit explains these views (best consistency {best:.3f} < "
               f"{cfg.min_score}; given cameras {score0:.3f}); cameras left unchanged. Are the "
               "views one object seen around an orbit, with masks of the object?")
    elif gain < cfg.min_gain:
        status, ok = "kept", False
        msg = (f"kept: the given cameras already explain the views (consistency {score0:.3f}; "
               f"the best calibration found {best:.3f}, gain {gain:+.3f} < {cfg.min_gain})")
    else:
        status, ok = "calibrated", True
        msg = (f"calibrated: consistency {score0:.3f} -> {best:.3f}"
               + (" (per-view orbit)" if used else " (static orbit)"))
    per_view = [{"view": i, "elevation": float(out.elevation[i]),
                 "azimuth": float(out.azimuth[i]),
                 "d_elevation": float(de + dev[i]), "d_azimuth": float(dav[i]),
                 "iou_before": float(per0[i]), "iou_after": float(per1[i])}
                for i in range(p.C)]
    return CalibrationResult(
        cameras=out if ok else cams, calibrated=ok, status=status, message=msg,
        score_before=score0, score_after=best if ok else score0, best_score=best,
        elevation_deg=float(out.elevation.double().mean()), elevation_offset_deg=float(de),
        fov_deg=float(out.fov.double().mean()), fov_scale=float(s),
        radius=float(out.radius.double().mean()), distance_scale=float(rscale / s),
        per_view=per_view, elevation_harmonics=[float(x) for x in eh],
        azimuth_harmonics=[float(x) for x in ah], per_view_used=used,
        wall_s=time.perf_counter() - t0)


def _kept(cams: Cameras, score0: float, per0: torch.Tensor, cfg: CalibrationConfig,
          t0: float) -> CalibrationResult:
    """The result for given cameras that already explain the views (no search run)."""
    return CalibrationResult(
        cameras=cams, calibrated=False, status="kept",
        message=(f"kept: the given cameras explain the views (consistency {score0:.3f} >= "
                 f"{cfg.skip_above}); no search run"),
        score_before=score0, score_after=score0, best_score=score0,
        elevation_deg=float(cams.elevation.double().mean()), elevation_offset_deg=0.0,
        fov_deg=float(cams.fov.double().mean()), fov_scale=1.0,
        radius=float(cams.radius.double().mean()), distance_scale=1.0,
        per_view=[{"view": i, "elevation": float(cams.elevation[i]),
                   "azimuth": float(cams.azimuth[i]), "d_elevation": 0.0, "d_azimuth": 0.0,
                   "iou_before": float(per0[i]), "iou_after": float(per0[i])}
                  for i in range(len(cams))],
        wall_s=time.perf_counter() - t0)


def apply_calibration(result: CalibrationResult, cams: Cameras) -> Cameras:
    """The calibration found for one set of nominal cameras applied to other nominal cameras
    of the same orbit (e.g. held-out frames of it): the elevation offset, the field-of-view
    and distance scales, and the smooth per-view corrections evaluated at their azimuths.
    Returns ``cams`` unchanged when the result was not calibrated."""
    if not result.calibrated:
        return cams
    phase = np.deg2rad(cams.azimuth.double().numpy())
    dev = _fourier(phase, np.asarray(result.elevation_harmonics, dtype=np.float64))
    dav = _fourier(phase, np.asarray(result.azimuth_harmonics, dtype=np.float64))
    el = cams.elevation.double().numpy() + result.elevation_offset_deg + dev
    fov = _fov_from_tan_scale(cams.fov, result.fov_scale).numpy()
    r = cams.radius.double().numpy() * result.distance_scale
    return _build(el, cams.azimuth.double().numpy() + dav, r, fov, cams.width, cams.height)
