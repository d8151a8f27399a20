"""Orbit self-calibration: views (+ masks) + nominal CAMERAS -> refined CAMERAS + a report.

Also :func:`calibrate_for_reconstruction`, the ``calibrate`` option of Gaussian Reconstruct and
SDF Mesh.
"""

from __future__ import annotations

import hashlib
import json
import logging

import torch

from ..kernels.geometry.calibrate import (
    AUTO,
    CalibrationConfig,
    calibrate_orbit,
    check_calibration_inputs,
)
from ..kernels.geometry.cameras import DEFAULT_RADIUS, SV3D_FOV_DEG, Cameras, orbit_cameras
from ..kernels.splat.fit import masks_from_background
from ..kernels.splat.register import register_orbit
from . import host
from .cameras import parse_color

log = logging.getLogger("orbitforge")

ORBIT_MODES = ["given cameras", "SV3D static orbit, elevation unknown",
               "SV3D dynamic orbit, unknown"]
PER_VIEW = ["auto", "on", "off"]
CALIBRATE_CHOICES = ["auto", "off", "on"]
CALIBRATE_TOOLTIP = (
    "Camera self-calibration before the reconstruction (Calibrate Orbit's method). auto: score "
    "how well the cameras explain the views' silhouettes (a tenth of a second); unless they "
    "explain them well (consistency >= 0.95), search the orbit's elevation (and per-view "
    "corrections for a dynamic orbit) and use the result when it explains the views clearly "
    "better; for a dynamic orbit then register every view to a short 3DGS fit of all of "
    "them (tens of seconds on a CPU); off: use the cameras as given; on: always search. "
    "Generated orbits (SV3D_u: elevation of the input photo; SV3D_p dynamic orbits) rarely "
    "match nominal cameras.")


def _views_masks(views, mask, background) -> torch.Tensor:
    if views is None and isinstance(mask, torch.Tensor) and mask.ndim == 3:
        return mask.float().cpu()
    if not isinstance(views, torch.Tensor) or views.ndim != 4:
        got = tuple(views.shape) if isinstance(views, torch.Tensor) else type(views)
        raise ValueError(f"views must be an IMAGE [B,H,W,3], got {got}")
    if mask is not None:
        if mask.ndim != 3 or tuple(mask.shape) != tuple(views.shape[:3]):
            raise ValueError(f"mask must be [B,H,W] = {list(views.shape[:3])} to match the "
                             f"views, got {list(mask.shape)}")
        return mask.float().cpu()
    return masks_from_background(views[..., :3].float().cpu(), background)


def calibrate_for_reconstruction(views, mask, cams: Cameras, calibrate: str,
                                 background=(1.0, 1.0, 1.0)) -> Cameras:
    """The ``calibrate`` option of the reconstruction nodes: ``cams`` or calibrated cameras
    (at the cameras' own image size); logs the report. ``views`` IMAGE or None (then ``mask``
    gives the silhouettes)."""
    return reconstruction_calibration(views, mask, cams, calibrate, background)[0]


def reconstruction_calibration(views, mask, cams: Cameras, calibrate: str,
                               background=(1.0, 1.0, 1.0)):
    """``(cameras, CalibrationResult or None, Registration or None)`` of the ``calibrate``
    option. Silhouette calibration first; when it finds a dynamic orbit (per-view corrections
    used) and the views are given, every view is then registered to a short 3DGS fit of all
    of them (``kernels.splat.register.register_orbit``): the per-view silhouette corrections
    are smooth along the orbit, a generated dynamic orbit's cameras are not."""
    if calibrate not in CALIBRATE_CHOICES:
        raise ValueError(f"calibrate must be one of {CALIBRATE_CHOICES}, got {calibrate!r}")
    if calibrate == "off":
        return cams, None, None
    masks = _views_masks(views, mask, background)
    if calibrate == "auto":
        try:  # auto calibrates what it can and leaves the rest to the node's own checks
            check_calibration_inputs(masks, cams)
        except ValueError as e:
            log.info("OrbitForge calibration (auto) skipped: %s", e)
            return cams, None, None
    cfg = CalibrationConfig(**AUTO) if calibrate == "auto" else \
        CalibrationConfig(per_view="auto")
    rgb = views[..., :3].float().cpu() if isinstance(views, torch.Tensor) else None
    key = _cache_key(masks, cams, calibrate, rgb, background)
    hit = _CACHE.get(key)
    if hit is None:
        bar = host.Progress(10)
        res = calibrate_orbit(masks, cams.to(device="cpu"), cfg,
                              progress=lambda i, t: bar.update(i * 10 // t),
                              interrupt=host.check_interrupt)
        reg = None
        if res.calibrated and res.per_view_used and rgb is not None:
            reg = _register(rgb, res.cameras, masks, background)
        hit = _CACHE[key] = (res, reg)
        while len(_CACHE) > 4:
            _CACHE.pop(next(iter(_CACHE)))
    res, reg = hit
    log.info("OrbitForge calibration (%s): %s", calibrate, res.message)
    if reg is not None:
        log.info("OrbitForge calibration (%s): %s", calibrate, _registration_summary(reg))
        return reg.cameras.to(device="cpu"), res, reg
    return (res.cameras.to(device="cpu") if res.calibrated else cams), res, None


def _register(views, cams: Cameras, masks, background):
    """``register_orbit`` on the host's torch device; cameras back on the CPU."""
    bar = host.Progress(100)
    dev = host.torch_device()
    reg = register_orbit(views.to(dev), cams.to(device=dev), masks.to(dev), background,
                         progress=lambda i, t: bar.update(i * 100 // t))
    reg.cameras = reg.cameras.to(device="cpu")
    return reg


def _registration_summary(reg) -> str:
    return (f"views registered to a short 3DGS fit of all of them: elevation corrections up to "
            f"{float(reg.d_elevation.abs().max()):.1f} deg, azimuth up to "
            f"{float(reg.d_azimuth.abs().max()):.1f} deg, mean colour error "
            f"{float(reg.mse_before.mean()):.5f} -> {float(reg.mse_after.mean()):.5f}")


# Gaussian Reconstruct and SDF Mesh usually get the same views and cameras: calibrate once.
_CACHE: dict = {}


def _cache_key(masks: torch.Tensor, cams: Cameras, mode: str, views=None,
               background=(1.0, 1.0, 1.0)) -> str:
    h = hashlib.sha1()
    for t in (masks, cams.viewmats, cams.Ks) + (() if views is None else (views,)):
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    h.update(f"{mode}|{cams.width}x{cams.height}|{tuple(masks.shape)}|{views is None}|"
             f"{tuple(background)}".encode())
    return h.hexdigest()


class CalibrateOrbit:
    DESCRIPTION = (
        "Finds the cameras of an orbit of views from their silhouettes (self-calibration). A "
        "coarse visual hull is carved with candidate cameras and reprojected; each view's "
        "silhouette is compared with the hull of the OTHER views (leave-one-out IoU): the "
        "consistency score. A global search over the orbit's elevation (seconds), optionally "
        "the field of view, then for dynamic orbits smooth per-view elevation/azimuth "
        "corrections (azimuth kept increasing). The distance is set so the object's largest "
        "extent is 1 (the unit box the mesh nodes carve in). For dynamic orbits every view is "
        "then registered to a short 3DGS fit of all views (photometric). Views no orbit "
        "explains (e.g. unrelated images) are refused: the cameras come back unchanged and the "
        "report says so with the score.")
    CATEGORY = "OrbitForge/cameras"
    FUNCTION = "calibrate"
    RETURN_TYPES = ("CAMERAS", "STRING", "STRING")
    RETURN_NAMES = ("cameras", "report", "report_json")
    OUTPUT_TOOLTIPS = (
        "The refined cameras (the given/nominal ones unchanged when refused or not better).",
        "Human-readable report: status, consistency before/after, elevation, fov and distance "
        "scale, per-view corrections.",
        "The same report as JSON (status, score_before, score_after, elevation_deg, fov_deg, "
        "distance_scale, per_view, ...).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "views": ("IMAGE", {"tooltip": "The orbit's views [B,H,W,3], in orbit order "
                          "(SV3D: its 21 frames as generated, the input view last)."}),
                "orbit": (ORBIT_MODES, {"default": "SV3D static orbit, elevation unknown",
                          "tooltip": "given cameras: refine the connected CAMERAS; SV3D static "
                          "orbit: frame f at azimuth (f+1)*360/B, one unknown elevation; SV3D "
                          "dynamic orbit: the same azimuths as a start, elevation and azimuth "
                          "per view unknown (smooth along the orbit)."}),
                "per_view": (PER_VIEW, {"default": "auto", "tooltip": "Per-view corrections "
                             "(dynamic orbits) after the global search. auto: tried when the "
                             "global result is below 0.85 consistency, kept when it gains at "
                             "least 0.05 over it (static orbits gain less by fitting noise); "
                             "on/off: always/never. The dynamic SV3D mode always runs them."}),
            },
            "optional": {
                "cameras": ("CAMERAS", {"tooltip": "Nominal cameras of the views (orbit 'given "
                            "cameras'; ignored by the SV3D modes)."}),
                "mask": ("MASK", {"tooltip": "Object masks [B,H,W] (1 = object). Without it: "
                         "every pixel that differs from the background colour."}),
                "background": ("STRING", {"default": "1, 1, 1", "tooltip": "Background colour "
                               "'r, g, b' in 0..1 of the views (for masks when none is given)."}),
                "fov": ("FLOAT", {"default": SV3D_FOV_DEG, "min": 1.0, "max": 170.0,
                        "step": 0.1, "tooltip": "SV3D modes: the vertical field of view "
                        "(SV3D: 33.8 degrees)."}),
                "search_fov": ("BOOLEAN", {"default": False, "tooltip": "Also search the field "
                               "of view (+-25 %). Silhouettes see the perspective only weakly: "
                               "leave off when the fov is known."}),
                "normalize_distance": ("BOOLEAN", {"default": True, "tooltip": "Set the camera "
                                       "distance so the object's largest extent is 1 (the unit "
                                       "box of the mesh nodes); off keeps the given distance."}),
                "photometric": (PER_VIEW, {"default": "auto", "tooltip": "Then register every "
                                "view to a short 3DGS fit of all of them (its elevation and "
                                "azimuth, by rendering; tens of seconds on a CPU). auto: for "
                                "dynamic orbits (per-view corrections used), whose frames sit "
                                "at cameras no smooth correction follows; on: always; off: "
                                "silhouettes only."}),
            },
        }

    def calibrate(self, views, orbit, per_view, cameras=None, mask=None, background="1, 1, 1",
                  fov=SV3D_FOV_DEG, search_fov=False, normalize_distance=True,
                  photometric="auto"):

        if orbit not in ORBIT_MODES:
            raise ValueError(f"orbit must be one of {ORBIT_MODES}, got {orbit!r}")
        for name, v in (("per_view", per_view), ("photometric", photometric)):
            if v not in PER_VIEW:
                raise ValueError(f"{name} must be one of {PER_VIEW}, got {v!r}")
        bg = parse_color(background)
        masks = _views_masks(views, mask, bg)
        n, h, w = masks.shape
        if orbit == "given cameras":
            if not isinstance(cameras, Cameras):
                raise ValueError("orbit 'given cameras' needs the cameras input (CAMERAS); "
                                 "connect them or pick an SV3D mode")
            cams = cameras.to(device="cpu")
        else:
            cams = orbit_cameras("sv3d_static", n, 0.0, DEFAULT_RADIUS, fov, w, h)
        pv = {"auto": "auto", "on": True, "off": False}[per_view]
        if orbit == "SV3D dynamic orbit, unknown":
            pv = True
        cfg = CalibrationConfig(per_view=pv, search_fov=bool(search_fov),
                                  normalize_distance=bool(normalize_distance))
        bar = host.Progress(10)
        res = calibrate_orbit(masks, cams, cfg, progress=lambda i, t: bar.update(i * 10 // t),
                                interrupt=host.check_interrupt)
        report = res.report()
        log.info("OrbitForge Calibrate Orbit: %s", res.message)
        d = res.to_dict()
        d.pop("cameras")
        out = res.cameras
        refused = res.status == "refused"
        if not refused and (photometric == "on" or (photometric == "auto" and res.calibrated
                                                    and res.per_view_used)):
            reg = _register(views[..., :3].float().cpu(), out, masks, bg)
            out = reg.cameras
            report += "\n" + _registration_summary(reg)
            d["registration"] = reg.to_dict()
        return (out.to(device=host.intermediate_device()), report, json.dumps(d))


NODE_CLASS_MAPPINGS = {"OrbitForgeCalibrateOrbit": CalibrateOrbit}
NODE_DISPLAY_NAME_MAPPINGS = {"OrbitForgeCalibrateOrbit": "Calibrate Orbit (OrbitForge)"}
