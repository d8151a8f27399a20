"""The fast mesh path end to end: views (+ masks, + a depth source) -> coloured mesh / file.

One function, :func:`reconstruct_mesh`, shared by the ``OrbitForgeSDFMesh`` node, ``python -m
orbitforge demo`` (:func:`.views_to_mesh.gaussians_to_mesh_file`) and ``bench mesh``:

1. visual hull field from the masks (:func:`.geometry.visual_hull.hull_sdf`, narrow band),
   forgiving a pixel of silhouette disagreement when the views disagree (generated orbits;
   :func:`.geometry.visual_hull.resolve_tolerance`), the masks then widened by a connected
   fit's silhouettes (``fit_alpha``; :func:`.geometry.visual_hull.add_fit_silhouettes`);
2. depth that carves concavities the silhouettes cannot see, from ``depth_source``:

   * ``"mvs"`` -- hull-bounded plane-sweep stereo on the views themselves (:mod:`.mvs`). The
     default: seconds on a CPU, and it needs nothing but the views.
   * ``"gaussians"`` -- the median depth rendered from fitted 3D Gaussians (the fit itself
     costs minutes on a CPU, so this is for when a fit exists anyway; measured on spot, splat
     depth from a short CPU fit scored *worse* than the hull alone (IoU 0.88 against 0.96),
     and the fusion below only lets depth carve where several views agree, never deeper than
     ``max_carve``);
   * ``"depth"`` -- given depth maps (camera z, 0 = none);
   * ``"none"`` -- the hull alone;
3. TSDF fusion + :func:`.tsdf.combine_hull_tsdf` (depth may carve, never punch holes);
4. the fused field refined by NeuS-style volume rendering against the views
   (:mod:`.neural_sdf`, needs the images): ``mode="fast"`` runs the short
   :data:`.neural_sdf.POLISH` schedule (``polish_steps``, default 100, ~12 s at 128^3 on two CPU
   cores; 0 = off: the fused field as is), ``mode="neural"`` the full one (minutes);
5. marching cubes, largest component, smoothing, decimation, watertight repair;
6. colours from the views (:mod:`.color`).
"""

from __future__ import annotations

import logging
import time

import torch
import trimesh

from ..geometry.cameras import Cameras
from ..geometry.visual_hull import (DEFAULT_BBOX, FIT_MIN_IOU, add_fit_silhouettes,
                                    check_fit_alpha, resolve_tolerance)
from .tsdf import MAX_CARVE

log = logging.getLogger(__name__)

DEPTH_SOURCES = ("mvs", "gaussians", "depth", "none")
MODES = ("fast", "neural")


def gaussians_depth(gaussians, cams: Cameras) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Median depth ``[C, H, W]``, alpha ``[C, H, W]``, rgb ``[C, H, W, 3]`` of Gaussians."""
    from ..splat.fit import render_gaussians

    rgb, alpha, _, dmed = render_gaussians(gaussians, cams)
    return (dmed[..., 0].float().cpu(), alpha[..., 0].float().cpu(),
            rgb.float().clamp(0, 1).cpu())


def reconstruct_mesh(masks: torch.Tensor, cams: Cameras, resolution: int = 128,
                     images: torch.Tensor | None = None, depth_source: str = "mvs",
                     depths: torch.Tensor | None = None, gaussians=None, mvs_size: int = 128,
                     min_background_views: int = 1, max_carve: float = MAX_CARVE,
                     min_weight: float = 1.5, bbox=DEFAULT_BBOX, max_bytes: int | None = None,
                     progress=None, timings: dict | None = None, mvs_options: dict | None = None,
                     mode: str = "fast", neural=None, interrupt=None,
                     polish_steps: int | None = None, feature_smooth: int = 10,
                     silhouette_tolerance: float | None = None,
                     fit_alpha: torch.Tensor | None = None, **finish) -> trimesh.Trimesh:
    """masks ``[C, H, W]`` (+ images ``[C, H, W, 3]`` for ``"mvs"``, ``gaussians`` for
    ``"gaussians"``, ``depths`` ``[C, H, W]`` for ``"depth"``) -> finished ``trimesh.Trimesh``.

    ``finish`` goes to :func:`.extract.finish_mesh` (keep_components, watertight,
    target_faces, smooth_iterations), with ``feature_smooth`` passes of bilateral normal
    filtering (:func:`.extract.bilateral_normal_smooth`: flat faces flat, edges sharp;
    0 = off). The fused field is refined with
    :func:`.neural_sdf.refine_sdf` when there are ``images``: ``mode="fast"`` by ``polish_steps``
    steps of :data:`.neural_sdf.POLISH` (None = its default 100; 0 = no refinement),
    ``mode="neural"`` (needs ``images``) by ``neural`` (a :class:`.neural_sdf.NeuralSDFConfig`,
    default the full schedule). ``interrupt()`` is called every step and may raise to stop.
    ``silhouette_tolerance``: pixels of silhouette disagreement the hull forgives
    (:func:`.geometry.visual_hull.hull_sdf`); None = automatic
    (:func:`.geometry.visual_hull.resolve_tolerance`: 1 px when the views' silhouettes disagree,
    as generated orbits' do, 0 when they agree, as renders' do). ``fit_alpha`` ``[C, H, W]``:
    the alpha of a 3D fit of the same views at ``cams`` (connected Gaussians); when the hull
    forgives disagreement (tolerance > 0) the masks are widened by it
    (:func:`.geometry.visual_hull.add_fit_silhouettes`; not when it does not match them: a
    warning), else it is unused. The returned mesh's ``metadata`` holds
    ``silhouette_tolerance_px``, ``silhouette_disagreement`` and ``fit_silhouettes`` (whether
    ``fit_alpha`` was used).
    Raises ``ValueError`` for a missing or bad input before any work.
    """
    import dataclasses

    from . import extract as mesh_extract, mvs, neural_sdf

    if depth_source not in DEPTH_SOURCES:
        raise ValueError(f"depth_source must be one of {DEPTH_SOURCES}, got {depth_source!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "neural" and images is None:
        raise ValueError("mode 'neural' fits the views' colours: connect the images, or use "
                         "mode 'fast'")
    if polish_steps is not None and int(polish_steps) < 0:
        raise ValueError(f"polish_steps must be >= 0 (0 = off), got {polish_steps}")
    if int(feature_smooth) < 0:
        raise ValueError(f"feature_smooth must be >= 0 (0 = off), got {feature_smooth}")
    if fit_alpha is not None:
        check_fit_alpha(masks, fit_alpha)
    finish["feature_smooth"] = int(feature_smooth)
    C = masks.shape[0]
    if depth_source == "mvs":
        if images is None:
            raise ValueError("depth_source 'mvs' needs the images; connect them or use "
                             "depth_source 'none'")
        if images.shape[:3] != masks.shape:
            raise ValueError(f"images {tuple(images.shape)} must match masks "
                             f"{tuple(masks.shape)} (one [H, W, 3] image per mask)")
        if C < 2:
            raise ValueError("depth_source 'mvs' needs at least 2 views; use 'none'")
        opts = dict(mvs_options or {})
        imgs = images[..., :3].float()

        def depth_fn(field):
            return mvs.mvs_depth(imgs, masks.float(), cams, field, bbox, size=mvs_size, **opts)

        dsrc = depth_fn
    elif depth_source == "gaussians":
        if gaussians is None:
            raise ValueError("depth_source 'gaussians' needs GAUSSIANS; connect them or use 'mvs'")
        dsrc, _, _ = gaussians_depth(gaussians, cams)
    elif depth_source == "depth":
        if depths is None or tuple(depths.shape) != tuple(masks.shape):
            raise ValueError(f"depth_source 'depth' needs depth maps shaped like the masks "
                             f"{tuple(masks.shape)}, got "
                             f"{None if depths is None else tuple(depths.shape)}")
        dsrc = depths.float()
    else:
        dsrc = None
    if mode == "neural":
        cfg, stage = neural or neural_sdf.NeuralSDFConfig(), "neural_s"
    else:
        steps = neural_sdf.POLISH.iterations if polish_steps is None else int(polish_steps)
        cfg = dataclasses.replace(neural_sdf.POLISH, iterations=steps)
        stage = "polish_s"
    t = time.time()
    tol, disagreement = resolve_tolerance(masks.float(), cams, silhouette_tolerance)
    if timings is not None and disagreement is not None:
        timings["disagreement_s"] = time.time() - t
    widened = False
    if fit_alpha is not None and tol > 0:  # disagreeing views: what the fit covers stays
        masks, fit_iou = add_fit_silhouettes(masks, fit_alpha.to(masks.device))
        widened = bool(fit_iou.min() >= FIT_MIN_IOU)
        if not widened:
            log.warning("OrbitForge SDF Mesh: the connected Gaussians do not match the masks "
                        "(silhouette IoU %.2f in the worst view, below %.2f): not fitted to "
                        "these views at these cameras, so they do not widen the hull",
                        float(fit_iou.min()), FIT_MIN_IOU)
    if images is None or cfg.iterations == 0:
        mesh = mesh_extract.reconstruct_fast(
            masks.float(), cams, resolution, depths=dsrc,
            min_background_views=min_background_views, bbox=bbox, min_weight=min_weight,
            max_carve=max_carve, max_bytes=max_bytes, progress=progress, timings=timings,
            silhouette_tolerance=tol, **finish)
    else:
        mesh = _reconstruct_refined(masks.float(), images[..., :3].float(), cams, resolution,
                                    dsrc, min_background_views, bbox, min_weight, max_carve,
                                    max_bytes, progress, timings, cfg, stage, interrupt, finish,
                                    tol)
    mesh.metadata["silhouette_tolerance_px"] = tol
    mesh.metadata["silhouette_disagreement"] = disagreement
    mesh.metadata["fit_silhouettes"] = widened
    return mesh


def _reconstruct_refined(masks, images, cams, resolution, dsrc, min_background_views, bbox,
                         min_weight, max_carve, max_bytes, progress, timings, cfg, stage,
                         interrupt, finish, tolerance: float = 0.0) -> trimesh.Trimesh:
    """The fused field, refined by :func:`.neural_sdf.refine_sdf` with ``cfg``, then finished;
    the refinement's time goes to ``timings[stage]``."""
    from . import extract as mesh_extract, neural_sdf
    from .render import render_mesh

    tm = {} if timings is None else timings
    total = 3 + cfg.iterations
    sub = None if progress is None else (lambda i, t: progress(i, total))
    field, hull = mesh_extract.fast_field(masks, cams, resolution, dsrc, min_background_views,
                                          bbox, min_weight, max_carve, max_bytes, sub, tm,
                                          silhouette_tolerance=tolerance)
    t = time.time()
    first = mesh_extract.field_to_mesh(field, bbox, keep_components=1, watertight=False,
                                       feature_smooth=0)
    init_depth = render_mesh(first, cams)["depth"]  # where the sampling band goes
    tm["refine_init_s"] = time.time() - t
    t = time.time()
    fit_progress = None if progress is None else (lambda i, n: progress(2 + i, total))
    refined = neural_sdf.refine_sdf(field, hull, images, masks, cams, init_depth, bbox, cfg,
                                    progress=fit_progress, interrupt=interrupt)
    tm[stage] = time.time() - t
    t = time.time()
    mesh = mesh_extract.field_to_mesh(refined, bbox, **finish)
    tm["extract_s"] = time.time() - t
    if progress is not None:
        progress(total, total)
    return mesh


def color_mesh(mesh: trimesh.Trimesh, images: torch.Tensor | None, cams: Cameras,
               masks: torch.Tensor | None = None, color: str = "vertex",
               texture_size: int = 1024):
    """``trimesh`` -> :class:`.types.ColoredMesh` with vertex colours (``"vertex"``), a
    baked UV texture (``"texture"``) or none (``"none"`` or no images)."""
    from . import color as mesh_color
    from .types import ColoredMesh

    if color not in ("vertex", "texture", "none"):
        raise ValueError(f"color must be 'vertex', 'texture' or 'none', got {color!r}")
    if color == "none" or images is None:
        return ColoredMesh.from_trimesh(mesh)
    imgs = images[..., :3].float().cpu()
    m = None if masks is None else masks.float().cpu()
    if color == "vertex":
        out = ColoredMesh.from_trimesh(mesh)
        out.vertex_colors = mesh_color.vertex_colors(mesh, imgs, cams, m)[None].float()
        return out
    v, f, uv, tex = mesh_color.bake_texture(mesh, imgs, cams, m, texture_size)
    return ColoredMesh(v, f, None, uv, tex)
