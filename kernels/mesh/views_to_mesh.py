"""Orbit views (+ masks, + Gaussians, + depth maps) -> coloured mesh: the ``SDF Mesh`` node's
one entry point, :func:`views_to_mesh`.

It validates everything before any work (view and camera counts and sizes, grid memory, mode,
the depth source), resolves ``depth_source="auto"``, renders connected Gaussians **once** for
whatever they stand in for (missing masks -> alpha, missing images -> rgb, depth source
``gaussians`` -> median depth) or add to (given masks that disagree are widened by the
alpha), then runs :func:`.pipeline.reconstruct_mesh` and :func:`.pipeline.color_mesh`.
:func:`gaussians_to_mesh_file` does the same and writes a file (``python -m orbitforge demo``).
"""

from __future__ import annotations

import os
from typing import Callable, Optional

import torch

from ..geometry.cameras import Cameras, check_cameras_see_object
from .types import ColoredMesh

COLOR_MODES = ("vertex", "texture", "none")
DEPTH_CHOICES = ("auto", "mvs", "gaussians", "depth", "none")
MAX_GRID_BYTES = 8 * 2**30  # refuse grids above ~8 GiB of working memory


def check_views_to_mesh(cams: Cameras, resolution: int, mode: str, depth_source: str,
                        images=None, masks=None, gaussians=None, depth_maps=None,
                        neural_iterations: int = 400, polish_steps: int = 100,
                        max_bytes: int = MAX_GRID_BYTES) -> tuple[Cameras, str]:
    """``ValueError`` naming the input and the fix for anything :func:`views_to_mesh` cannot
    use; else ``(cameras at the views' size, the depth source with "auto" resolved)``."""
    from . import extract as mesh_extract, pipeline as mesh_pipeline
    from .neural_sdf import estimate_bytes

    if images is None and masks is None and gaussians is None:
        raise ValueError("no views: connect images + masks, or gaussians")
    n = len(cams)
    if n == 0:
        raise ValueError("cameras is empty; connect the orbit the views were made with")
    for name, t in (("images", images), ("masks", masks), ("depth_maps", depth_maps)):
        if t is not None and t.shape[0] != n:
            raise ValueError(f"{name} has {t.shape[0]} frames but there are {n} cameras; "
                             "give one view per camera")
    if images is not None and masks is not None and images.shape[1:3] != masks.shape[1:3]:
        raise ValueError(f"images are {images.shape[2]}x{images.shape[1]} but masks "
                         f"{masks.shape[2]}x{masks.shape[1]}; resize one to match")
    need = mesh_extract.estimate_grid_bytes(resolution)
    if need > max_bytes:
        raise ValueError(f"resolution {resolution} needs about {need / 2**30:.1f} GiB; lower "
                         "the resolution")
    if mode not in mesh_pipeline.MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {mesh_pipeline.MODES}")
    if int(neural_iterations) < 1:
        raise ValueError(f"neural_iterations must be >= 1, got {neural_iterations}")
    if int(polish_steps) < 0:
        raise ValueError(f"polish_steps must be >= 0 (0 = off), got {polish_steps}")
    if mode == "neural" and images is None and gaussians is None:
        raise ValueError("mode 'neural' fits the views' colours: connect images (or "
                         "gaussians to render them from), or use mode 'fast'")
    if (mode == "neural" or int(polish_steps) > 0) and estimate_bytes(resolution) > max_bytes:
        what, fix = (("mode neural", "use resolution <= 384 (128-192 recommended)")
                     if mode == "neural" else
                     ("the polish of mode fast", "set polish_steps to 0 or use "
                      "resolution <= 384"))
        raise ValueError(f"{what} at resolution {resolution} needs about "
                         f"{estimate_bytes(resolution) / 2**30:.1f} GiB; {fix}")
    if depth_source not in DEPTH_CHOICES:
        raise ValueError(f"depth_source must be one of {list(DEPTH_CHOICES)}, got "
                         f"{depth_source!r}")
    if depth_source == "auto":
        depth_source = ("mvs" if images is not None and n >= 2 else
                        "gaussians" if gaussians is not None else "none")
    if depth_source == "mvs" and images is None:
        raise ValueError("depth_source 'mvs' needs images; connect them or pick another "
                         "depth_source")
    if depth_source == "gaussians" and gaussians is None:
        raise ValueError("depth_source 'gaussians' needs the gaussians input; connect it or "
                         "pick another depth_source")
    if depth_source == "depth" and depth_maps is None:
        raise ValueError("depth_source 'depth' needs the depth_maps input")
    ref = masks if masks is not None else images
    if ref is not None:
        h, w = ref.shape[1], ref.shape[2]
        if abs(w / h - cams.width / cams.height) > 1e-3:
            raise ValueError(f"views are {w}x{h} but cameras {cams.width}x{cams.height} "
                             "(different aspect ratio); use the cameras of these views")
        cams = cams.resized(w, h)
    if depth_maps is not None and depth_source == "depth":
        if ref is not None and depth_maps.shape[1:3] != ref.shape[1:3]:
            raise ValueError(f"depth_maps are {depth_maps.shape[2]}x{depth_maps.shape[1]} "
                             f"but the views {ref.shape[2]}x{ref.shape[1]}; resize to match")
        if ref is None:
            cams = cams.resized(depth_maps.shape[2], depth_maps.shape[1])
    check_cameras_see_object(cams)
    return cams, depth_source


def views_to_mesh(cams: Cameras, resolution: int = 128, mode: str = "fast",
                  depth_source: str = "auto", images: Optional[torch.Tensor] = None,
                  masks: Optional[torch.Tensor] = None, gaussians=None,
                  depth_maps: Optional[torch.Tensor] = None, neural_iterations: int = 400,
                  polish_steps: int = 100, min_background_views: int = 1,
                  watertight: bool = True, target_faces: int = 50000,
                  smooth_iterations: int = 5, color: str = "vertex", texture_size: int = 1024,
                  calibrate: Optional[Callable] = None, progress: Optional[Callable] = None,
                  interrupt: Optional[Callable] = None,
                  max_bytes: int = MAX_GRID_BYTES,
                  silhouette_tolerance: Optional[float] = None) -> ColoredMesh:
    """Watertight coloured mesh from orbit views (see the module doc).

    ``images`` ``[C, H, W, 3|4]``, ``masks`` ``[C, H, W]`` (1 = object), ``gaussians`` a
    :class:`.splat.gaussians.Gaussians` (renders stand in for missing images/masks; their alpha
    widens given masks when the views disagree; median depth for
    ``depth_source="gaussians"``), ``depth_maps`` ``[C, H, W]`` camera z (``"depth"``).
    ``calibrate(images, masks, cams) -> cams`` runs after validation when masks are given;
    ``progress(step, total)``; ``interrupt()`` may raise to stop. ``silhouette_tolerance``:
    pixels of silhouette disagreement the hull forgives, None = automatic (see
    :func:`.pipeline.reconstruct_mesh`).
    """
    from . import pipeline as mesh_pipeline
    from .neural_sdf import NeuralSDFConfig

    if color not in COLOR_MODES:
        raise ValueError(f"color must be one of {list(COLOR_MODES)}, got {color!r}")
    cams, depth_source = check_views_to_mesh(cams, resolution, mode, depth_source, images, masks,
                                             gaussians, depth_maps, neural_iterations,
                                             polish_steps, max_bytes)
    if masks is not None and calibrate is not None:
        cams = calibrate(images, masks, cams)
    cams = cams.to(device="cpu")
    depths = None if depth_maps is None else depth_maps.float().cpu()
    fit_alpha = None
    if gaussians is not None:
        dmed, alpha, grgb = mesh_pipeline.gaussians_depth(gaussians, cams)  # the one render
        if masks is None:
            masks = alpha
        else:  # the fit's silhouettes widen disagreeing masks (see reconstruct_mesh)
            fit_alpha = alpha
        images = grgb if images is None else images
        if depth_source == "gaussians":  # the median depth just rendered, not a second render
            depth_source, depths = "depth", dmed
    if masks is None:
        raise ValueError("masks are needed with images (connect a MASK, e.g. from background "
                         "removal) or connect gaussians")
    masks = masks.float().cpu()
    imgs = None if images is None else images[..., :3].float().cpu()
    neural = None
    steps = 4 + (int(polish_steps) if imgs is not None else 0)
    if mode == "neural":
        neural = NeuralSDFConfig(iterations=int(neural_iterations))
        steps = 4 + neural.iterations
    report = (lambda i, t: None) if progress is None else (lambda i, t: progress(i, steps))
    mesh = mesh_pipeline.reconstruct_mesh(
        masks, cams, resolution, images=imgs, depth_source=depth_source, depths=depths,
        min_background_views=min_background_views, max_bytes=max_bytes, progress=report,
        keep_components=1, watertight=watertight, target_faces=target_faces,
        smooth_iterations=smooth_iterations, mode=mode, neural=neural, interrupt=interrupt,
        polish_steps=int(polish_steps), silhouette_tolerance=silhouette_tolerance,
        fit_alpha=fit_alpha)
    out = mesh_pipeline.color_mesh(mesh, imgs, cams, masks, color, texture_size)
    report(steps, steps)
    return out


def gaussians_to_mesh_file(g, images: torch.Tensor | None, masks: torch.Tensor | None,
                           cams: Cameras, path: str, resolution: int = 128,
                           depth_source: str = "mvs", target_faces: int = 50000) -> str:
    """Reconstruct the mesh of a fitted scene and write it (GLB/OBJ/PLY by ``path``'s
    extension) atomically; returns ``path``.

    The SDF Mesh node's path (:func:`views_to_mesh`, mode fast): hull from
    ``masks`` + depth (``"mvs"`` on ``images`` by default; ``"gaussians"`` = the Gaussians'
    median depth) + vertex colours from ``images``; missing images/masks are rendered from the
    Gaussians ``g`` (rgb / alpha).
    """
    from .export import check_mesh_format, write_mesh

    check_mesh_format(os.path.splitext(path)[1], f"the extension of mesh path {path!r}")
    cams = cams.to(device="cpu", dtype=torch.float32)
    mesh = views_to_mesh(cams, resolution, "fast", depth_source, images=images, masks=masks,
                         gaussians=g, target_faces=target_faces, smooth_iterations=5,
                         color="vertex")
    return write_mesh(mesh, path)
