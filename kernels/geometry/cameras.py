"""Cameras: the ``CAMERAS`` type, orbit parameters <-> intrinsics/extrinsics, orbit generators.

World convention (the ONE convention used everywhere in OrbitForge):

* right-handed world, **+y is up**, the object sits at the origin, normalised so the largest
  bounding-box extent is 1 (the convention of glTF/OBJ files and of the SV3D paper's renders);
* **elevation** in degrees, positive above the equator (camera at +y); SV3D's polar angle is
  ``90 - elevation``;
* **azimuth** in degrees; azimuth 0 puts the camera on the **+z axis looking towards -z** (it
  sees the object's front, as OBJ/glTF "front" is +z); azimuth 90 puts it on **+x**; so the
  azimuth grows **counter-clockwise seen from above** (from +y);
* camera position ``r * (cos(e) sin(a), sin(e), cos(e) cos(a))``, always looking at the origin
  with +y up;
* extrinsics ``viewmats`` are **world -> camera** 4x4 matrices in the **OpenCV** camera frame
  (x right, y down, z forward), as gsplat expects; intrinsics ``Ks`` are in pixels with the
  principal point at ``(W/2, H/2)`` and pixel ``(i, j)`` centred at ``(j + 0.5, i + 0.5)``;
* ``fov`` is the vertical field of view in degrees (square pixels, so ``fx == fy``).

SV3D's generated frame f of the official static orbit is the camera at azimuth
``(f + 1) * 360 / 21`` in this convention; the last frame is the input view at azimuth 0.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from ..atomic import atomic_write

SV3D_FRAMES = 21
SV3D_FOV_DEG = 33.8  # SV3D paper appendix
DEFAULT_RADIUS = 2.0  # unit-box object; the SV3D paper used 1.5-2.0 per object


# ----------------------------------------------------------------------------------------------
# The CAMERAS type
# ----------------------------------------------------------------------------------------------


@dataclass
class Cameras:
    """A batch of N pinhole cameras sharing one image size (the ``CAMERAS`` node type)."""

    viewmats: torch.Tensor  # [N, 4, 4] world -> camera (OpenCV)
    Ks: torch.Tensor  # [N, 3, 3] pixels
    width: int
    height: int
    # Orbit parameters the cameras were made from (degrees, world units). Always filled:
    # ``from_viewmats`` recovers them from poses that look at the origin.
    elevation: torch.Tensor = field(default=None)  # [N]
    azimuth: torch.Tensor = field(default=None)  # [N] in [0, 360)
    radius: torch.Tensor = field(default=None)  # [N]

    def __post_init__(self):
        if self.viewmats.ndim != 3 or self.viewmats.shape[-2:] != (4, 4):
            raise ValueError(f"viewmats must be [N,4,4], got {tuple(self.viewmats.shape)}")
        n = self.viewmats.shape[0]
        if self.Ks.shape != (n, 3, 3):
            raise ValueError(f"Ks must be [{n},3,3], got {tuple(self.Ks.shape)}")
        if self.elevation is None or self.azimuth is None or self.radius is None:
            e, a, r = viewmats_to_orbit(self.viewmats)
            self.elevation = e if self.elevation is None else self.elevation
            self.azimuth = a if self.azimuth is None else self.azimuth
            self.radius = r if self.radius is None else self.radius
        self.width = int(self.width)
        self.height = int(self.height)

    def __len__(self) -> int:
        return self.viewmats.shape[0]

    @property
    def fov(self) -> torch.Tensor:  # [N] vertical fov, degrees
        return torch.rad2deg(2 * torch.atan(0.5 * self.height / self.Ks[:, 1, 1]))

    @property
    def centers(self) -> torch.Tensor:  # [N, 3] camera positions in world
        return camera_centers(self.viewmats)

    def to(self, device=None, dtype=None) -> "Cameras":
        def mv(t):
            return t.to(device=device, dtype=dtype or t.dtype).clone()

        return Cameras(mv(self.viewmats), mv(self.Ks), self.width, self.height,
                       mv(self.elevation), mv(self.azimuth), mv(self.radius))

    def __getitem__(self, idx) -> "Cameras":
        if isinstance(idx, int):
            idx = [idx]
        return Cameras(self.viewmats[idx], self.Ks[idx], self.width, self.height,
                       self.elevation[idx], self.azimuth[idx], self.radius[idx])

    def resized(self, width: int, height: int) -> "Cameras":
        """The same cameras for another image size (intrinsics scaled, same field of view)."""
        K = self.Ks.clone()
        K[:, 0, :] *= width / self.width
        K[:, 1, :] *= height / self.height
        return Cameras(self.viewmats.clone(), K, width, height, self.elevation.clone(),
                       self.azimuth.clone(), self.radius.clone())

    @staticmethod
    def cat(cams: Sequence["Cameras"]) -> "Cameras":
        w, h = cams[0].width, cams[0].height
        for c in cams:
            if (c.width, c.height) != (w, h):
                raise ValueError(f"cannot concatenate cameras of {w}x{h} and {c.width}x{c.height}")
        return Cameras(torch.cat([c.viewmats for c in cams]), torch.cat([c.Ks for c in cams]), w, h,
                       torch.cat([c.elevation for c in cams]), torch.cat([c.azimuth for c in cams]),
                       torch.cat([c.radius for c in cams]))

    # JSON round trip (bundled sample, workflows)
    def to_dict(self) -> dict:
        return {
            "convention": "y-up; azimuth 0 on +z, 90 on +x; viewmats world->camera OpenCV",
            "width": self.width,
            "height": self.height,
            "viewmats": self.viewmats.double().cpu().tolist(),
            "Ks": self.Ks.double().cpu().tolist(),
            "elevation": self.elevation.double().cpu().tolist(),
            "azimuth": self.azimuth.double().cpu().tolist(),
            "radius": self.radius.double().cpu().tolist(),
        }

    @staticmethod
    def from_dict(d: dict) -> "Cameras":
        """Cameras from :meth:`to_dict`'s layout, validated: ``ValueError`` naming the field
        (missing, wrong type or shape, not finite, not a rigid pose / pinhole matrix).
        ``elevation``/``azimuth``/``radius`` are optional (recovered from the poses)."""
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object with viewmats, Ks, width, height; got "
                             f"{type(d).__name__}")
        vm = torch.tensor(_json_array(d, "viewmats", (None, 4, 4)), dtype=torch.float64)
        n = vm.shape[0]
        Ks = torch.tensor(_json_array(d, "Ks", (n, 3, 3)), dtype=torch.float64)
        size = [_json_size(d, k) for k in ("width", "height")]
        R = vm[:, :3, :3]
        eye = torch.eye(3, dtype=vm.dtype).expand_as(R)
        if (vm[:, 3] - torch.tensor([0.0, 0, 0, 1], dtype=vm.dtype)).abs().max() > 1e-6 or \
                (R @ R.transpose(1, 2) - eye).abs().max() > 1e-3 or (torch.det(R) <= 0).any():
            raise ValueError("viewmats must be rigid world->camera poses (orthonormal rotation, "
                             "det +1, last row 0 0 0 1)")
        if (Ks[:, 0, 0] <= 0).any() or (Ks[:, 1, 1] <= 0).any() or \
                (Ks[:, 2] - torch.tensor([0.0, 0, 1], dtype=Ks.dtype)).abs().max() > 1e-6:
            raise ValueError("Ks must be pinhole matrices [[fx,0,cx],[0,fy,cy],[0,0,1]] with "
                             "fx, fy > 0")
        orbit = [torch.tensor(_json_array(d, k, (n,)), dtype=torch.float32) if k in d else None
                 for k in ("elevation", "azimuth", "radius")]
        return Cameras(vm.float(), Ks.float(), size[0], size[1], *orbit)

    def save_json(self, path: str) -> None:
        atomic_write(path, json.dumps(self.to_dict()))

    @staticmethod
    def load_json(path: str) -> "Cameras":
        """Read a cameras.json; ``ValueError`` naming the file and the problem for anything that
        is not one (too large, not JSON, duplicated keys, wrong fields)."""
        try:
            size = os.path.getsize(path)
            if size > MAX_CAMERAS_JSON:
                raise ValueError(f"{size} bytes is more than the {MAX_CAMERAS_JSON >> 20} MiB a "
                                 "cameras file may have")
            with open(path, "rb") as f:
                d = json.loads(f.read().decode("utf-8"), object_pairs_hook=_unique_keys)
            return Cameras.from_dict(d)
        except (ValueError, RecursionError, OSError) as e:  # RecursionError: nesting too deep
            what = "nested too deeply" if isinstance(e, RecursionError) else str(e)
            raise ValueError(f"{path!r} is not a cameras.json (needs viewmats, Ks, width, "
                             f"height): {what}") from None


MAX_CAMERAS_JSON = 16 * 2**20  # ~28k cameras; bounds the memory json.loads may take


def _unique_keys(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError(f"duplicated keys {dup}")
    return dict(pairs)


def _json_array(d: dict, key: str, shape: tuple) -> list:
    """``d[key]`` as nested lists of finite floats of ``shape`` (None: any length >= 1)."""
    if key not in d:
        raise ValueError(f"missing {key!r}")

    def walk(v, dims, where):
        if not dims:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"{key}{where} must be a number, got {type(v).__name__}")
            try:
                x = float(v)
            except OverflowError:
                x = math.inf
            if not math.isfinite(x):
                raise ValueError(f"{key}{where} is not finite ({v!r:.40})")
            return x
        want = dims[0]
        if not isinstance(v, list) or not v or (want is not None and len(v) != want):
            got = f"a list of {len(v)}" if isinstance(v, list) else type(v).__name__
            raise ValueError(f"{key}{where} must be a list of {want or 'one or more'} entries "
                             f"(shape {[s or 'N' for s in shape]}), got {got}")
        return [walk(x, dims[1:], f"{where}[{i}]") for i, x in enumerate(v)]

    return walk(d[key], shape, "")


def _json_size(d: dict, key: str) -> int:
    v = d.get(key)
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65536:
        raise ValueError(f"{key!r} must be an integer number of pixels in 1..65536, got {v!r:.40}")
    return v


# ----------------------------------------------------------------------------------------------
# Orbit parameters <-> poses
# ----------------------------------------------------------------------------------------------


def _as_tensor(x, n: Optional[int] = None) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float64).flatten()
    if n is not None and t.numel() == 1:
        t = t.expand(n).clone()
    return t


def orbit_positions(elevation, azimuth, radius) -> torch.Tensor:
    """Camera centres ``[N, 3]`` for orbit parameters (degrees), convention in module doc."""
    e = torch.deg2rad(_as_tensor(elevation))
    a = torch.deg2rad(_as_tensor(azimuth))
    n = max(e.numel(), a.numel())
    e, a = e.expand(n), a.expand(n)
    r = _as_tensor(radius, n)
    return torch.stack([r * torch.cos(e) * torch.sin(a), r * torch.sin(e),
                        r * torch.cos(e) * torch.cos(a)], -1)


def look_at(eye: torch.Tensor, target: Optional[torch.Tensor] = None,
            up=(0.0, 1.0, 0.0)) -> torch.Tensor:
    """World -> camera (OpenCV) matrices ``[N, 4, 4]`` for cameras at ``eye`` ``[N, 3]`` looking
    at ``target`` (``[N, 3]`` or ``[3]``; default the origin).

    ``up`` is the world direction that appears up in the image (``-y`` of the camera): one
    direction for all (default +y) or one per camera ``[N, 3]``. Where it is parallel to the view
    direction (a camera at the pole) any perpendicular right axis is taken: world +x, or +z where
    +x is parallel too. Floating ``eye`` keeps its dtype and device (other dtypes become float64).
    """
    if not eye.is_floating_point():
        eye = eye.to(torch.float64)
    target = torch.zeros_like(eye) if target is None else target.to(eye).expand_as(eye)
    fwd = torch.nn.functional.normalize(target - eye, dim=-1)  # [N, 3] camera +z
    upv = torch.as_tensor(up, dtype=eye.dtype, device=eye.device).expand_as(fwd)
    right = torch.linalg.cross(fwd, upv)  # [N, 3] camera +x
    bad = right.norm(dim=-1) < 1e-8
    if bad.any():  # up parallel to the view direction
        x = torch.tensor([1.0, 0.0, 0.0], dtype=eye.dtype, device=eye.device)
        z = torch.tensor([0.0, 0.0, 1.0], dtype=eye.dtype, device=eye.device)
        alt = x - (fwd * x).sum(-1, keepdim=True) * fwd  # +x made perpendicular to fwd
        alt = torch.where(alt.norm(dim=-1, keepdim=True) < 1e-8,
                          z - (fwd * z).sum(-1, keepdim=True) * fwd, alt)
        right = torch.where(bad[:, None], alt, right)
    right = torch.nn.functional.normalize(right, dim=-1)
    down = torch.linalg.cross(fwd, right)  # camera +y (down in the image)
    R = torch.stack([right, down, fwd], dim=-2)  # [N, 3, 3] rows: camera axes in world coords
    M = torch.zeros(eye.shape[0], 4, 4, dtype=eye.dtype, device=eye.device)
    M[:, :3, :3] = R
    M[:, :3, 3] = -(R @ eye.unsqueeze(-1)).squeeze(-1)
    M[:, 3, 3] = 1
    return M


def camera_centers(viewmats: torch.Tensor) -> torch.Tensor:
    R = viewmats[:, :3, :3]
    t = viewmats[:, :3, 3:]
    return -(R.transpose(-1, -2) @ t).squeeze(-1)


def viewmats_to_orbit(viewmats: torch.Tensor):
    """Inverse of :func:`orbit_positions` for the camera centres: (elevation, azimuth, radius)."""
    c = camera_centers(viewmats.to(torch.float64))
    r = c.norm(dim=-1).clamp_min(1e-12)
    e = torch.rad2deg(torch.asin((c[:, 1] / r).clamp(-1, 1)))
    a = torch.rad2deg(torch.atan2(c[:, 0], c[:, 2])) % 360.0
    return e.float(), a.float(), r.float()


# ----------------------------------------------------------------------------------------------
# Rays, projection, back-projection (pinhole, pixel (i, j) centred at (j + 0.5, i + 0.5))
# ----------------------------------------------------------------------------------------------


def pixel_rays(Ks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Camera-space directions with z = 1 through every pixel centre ``[C, H, W, 3]``."""
    dev, dt = Ks.device, Ks.dtype
    i = torch.arange(height, device=dev, dtype=dt) + 0.5
    j = torch.arange(width, device=dev, dtype=dt) + 0.5
    v, u = torch.meshgrid(i, j, indexing="ij")  # [H, W]
    fx, fy = Ks[:, 0, 0, None, None], Ks[:, 1, 1, None, None]
    cx, cy = Ks[:, 0, 2, None, None], Ks[:, 1, 2, None, None]
    x = (u - cx) / fx
    y = (v - cy) / fy
    return torch.stack([x, y, torch.ones_like(x)], -1)  # [C, H, W, 3]


def camera_rays(viewmats: torch.Tensor, Ks: torch.Tensor, height: int, width: int):
    """World rays through every pixel centre: ``(origins [C, 3], dirs [C, H, W, 3])``, the
    directions scaled so that the ray parameter t is the camera-space depth z (normalise them
    for unit rays; their norm is then the ray length per unit of z)."""
    d_cam = pixel_rays(Ks, height, width)  # [C, H, W, 3], z = 1
    R = viewmats[:, :3, :3].to(d_cam)  # world -> camera
    return camera_centers(viewmats).to(d_cam), torch.einsum("cji,chwj->chwi", R, d_cam)  # R^T d


def project(points: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor):
    """Project world points into C cameras: ``points`` ``[P, 3]`` (the same points seen by
    every camera) or ``[C, ..., 3]`` (points per camera).

    Returns ``(uv [C, P | ..., 2], z [C, P | ...])``: ``uv`` in pixels, continuous (pixel
    ``(i, j)`` covers ``[j, j+1] x [i, i+1]``); ``z`` the camera-frame depth (positive in front
    of the camera). Points with ``z <= 1e-8`` get ``uv`` from a clamped depth (far off the image,
    finite); callers mask them by ``z``.
    """
    if points.shape[-1] != 3 or points.ndim < 2:
        raise ValueError(f"points must be [P, 3] or [C, ..., 3], got {tuple(points.shape)}")
    vm = viewmats.to(points)  # [C, 4, 4]
    K = Ks.to(points)  # [C, 3, 3]
    if points.ndim == 2:  # shared points
        pc = torch.einsum("cij,pj->cpi", vm[:, :3, :3], points) + vm[:, None, :3, 3]  # [C, P, 3]
    else:
        if points.shape[0] != vm.shape[0]:
            raise ValueError(f"points per camera {tuple(points.shape)} for {vm.shape[0]} cameras")
        flat = points.reshape(points.shape[0], -1, 3)  # [C, M, 3]
        pc = torch.einsum("cij,cmj->cmi", vm[:, :3, :3], flat) + vm[:, None, :3, 3]
        pc = pc.reshape(points.shape)
    z = pc[..., 2]
    zs = z.clamp_min(1e-8)
    shape = (-1,) + (1,) * (pc.ndim - 2)
    u = K[:, 0, 0].reshape(shape) * pc[..., 0] / zs + K[:, 0, 2].reshape(shape)
    v = K[:, 1, 1].reshape(shape) * pc[..., 1] / zs + K[:, 1, 2].reshape(shape)
    return torch.stack([u, v], -1), z


def backproject(depth: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor) -> torch.Tensor:
    """World points ``[C, H, W, 3]`` of every pixel from camera-space z ``depth`` ``[C, H, W, 1]``
    (differentiable in ``depth``)."""
    _, H, W, _ = depth.shape
    rays = pixel_rays(Ks.to(depth.dtype), H, W)  # [C, H, W, 3]
    pc = rays * depth  # camera space
    R = viewmats[:, :3, :3].to(depth.dtype)  # world -> camera
    t = viewmats[:, :3, 3].to(depth.dtype)
    # x_w = R^T (x_c - t)
    return torch.einsum("cji,chwj->chwi", R, pc - t[:, None, None, :])


def intrinsics_from_fov(fov_deg, width: int, height: int, n: int = 1) -> torch.Tensor:
    """``[N, 3, 3]`` pinhole intrinsics for a vertical field of view (degrees)."""
    fov = _as_tensor(fov_deg, n)
    f = 0.5 * height / torch.tan(torch.deg2rad(fov) / 2)
    K = torch.zeros(fov.numel(), 3, 3, dtype=torch.float64)
    K[:, 0, 0] = f
    K[:, 1, 1] = f
    K[:, 0, 2] = width / 2
    K[:, 1, 2] = height / 2
    K[:, 2, 2] = 1
    return K


def make_orbit_cameras(elevation, azimuth, radius=DEFAULT_RADIUS, fov=SV3D_FOV_DEG,
                       width: int = 576, height: int = 576) -> Cameras:
    """Cameras looking at the origin from orbit parameters (degrees; scalars broadcast)."""
    e = _as_tensor(elevation)
    a = _as_tensor(azimuth)
    n = max(e.numel(), a.numel())
    e, a, r = _as_tensor(elevation, n), _as_tensor(azimuth, n), _as_tensor(radius, n)
    if not (e.numel() == a.numel() == r.numel() == n):
        raise ValueError(f"elevation ({e.numel()}), azimuth ({a.numel()}) and radius "
                         f"({r.numel()}) must have one value or the same count")
    if (e.abs() > 90).any():
        raise ValueError(f"elevation must be within [-90, 90] degrees, got {e.tolist()}")
    if (r <= 0).any():
        raise ValueError(f"radius must be positive, got {r.tolist()}")
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    # keep the exact pole away from look_at's degenerate case
    e_pose = e.clamp(-89.999, 89.999)
    vm = look_at(orbit_positions(e_pose, a, r))
    K = intrinsics_from_fov(fov, width, height, n)
    return Cameras(vm.float(), K.float(), width, height, e.float(), (a % 360).float(), r.float())


# ----------------------------------------------------------------------------------------------
# Generators
# ----------------------------------------------------------------------------------------------


def sv3d_static_orbit(elevation: float = 10.0, frames: int = SV3D_FRAMES):
    """The official SV3D_p orbit (``scripts/sampling/simple_video_sample.py``).

    Returns ``(elevations_deg [F], azimuths_deg [F])``: azimuths ``linspace(0, 360, F+1)[1:] % 360``
    made relative to the last, so frame f is at ``(f+1)*360/F`` and the last frame (the
    conditioning view) at 0. The official code's elevation default is 10 degrees.
    """
    az = np.linspace(0, 360, frames + 1)[1:] % 360
    az = (az - az[-1]) % 360
    return np.full(frames, float(elevation)), az


def sv3d_dynamic_orbit(elevation: float = 0.0, frames: int = SV3D_FRAMES, seed: int = 0,
                       samples: int = 84):
    """SV3D's dynamic orbit (``scripts/demo/sv3d_helpers.py: gen_dynamic_loop``), seeded.

    84 samples: elevation = e0 + 84 sines (frequency randint(1,5)*2pi/84, amplitude U(0.5,10),
    phase 0 or pi), circularly box-smoothed (width 5) and redrawn while any |elev| >= 90;
    azimuth steps U(0,2) rescaled to a total of 360 - (360/84)*U(0,2), cumulative from 0. Every
    4th sample gives the frames, rolled so the conditioning frame (azimuth 0) is last. (The
    official code also keeps the 85th azimuth sample, giving 22 azimuths for 21 frames; we drop
    that surplus sample.) Elevations are clamped to [-89, 89].
    """
    rng = np.random.RandomState(seed)
    while True:
        elev = np.full(samples, float(elevation))
        for _ in range(samples):
            freq = rng.randint(1, 5) * (2 * np.pi / samples)
            amp = rng.uniform(0.5, 10)
            phase = rng.choice([0, np.pi])
            elev += np.sin(np.linspace(0, freq * samples, samples, endpoint=False) + phase) * amp
        steps = rng.uniform(0, 2, samples - 1)
        scale = (360 - (360 / samples) * rng.uniform(0, 2)) / steps.sum()
        azim = np.insert(np.cumsum(steps * scale), 0, 0.0)
        pad = 5
        padded = np.concatenate((elev[-pad:], elev, elev[:pad]))
        smooth = np.convolve(padded, np.ones(5) / 5, mode="same")[pad:-pad]
        if np.abs(smooth).max() < 90:
            break
    sub = samples // frames
    az = azim[::sub][:frames]
    el = smooth[::sub][:frames]
    return np.clip(np.roll(el, -1), -89, 89), np.roll(az, -1) % 360


def uniform_orbit(views_per_ring: int, elevations: Sequence[float] = (0.0,),
                  start_azimuth: float = 0.0):
    """Rings of evenly spaced azimuths, one ring per elevation (degrees)."""
    if views_per_ring < 1:
        raise ValueError(f"views_per_ring must be >= 1, got {views_per_ring}")
    els, azs = [], []
    for e in elevations:
        for i in range(views_per_ring):
            els.append(float(e))
            azs.append((start_azimuth + i * 360.0 / views_per_ring) % 360)
    return np.array(els), np.array(azs)


def keyframed_orbit(keyframes: Sequence[Sequence[float]], frames: int):
    """Linear interpolation of ``(frame, elevation, azimuth)`` keyframes over ``frames`` frames.

    Azimuths are unwrapped along the keyframe order, so ``(0, 0, 0), (20, 0, 360)`` is a full turn.
    Frames before the first / after the last keyframe hold its value.
    """
    if len(keyframes) == 0:
        raise ValueError("keyframed_orbit needs at least one (frame, elevation, azimuth) keyframe")
    kf = sorted((float(k[0]), float(k[1]), float(k[2])) for k in keyframes)
    t = np.array([k[0] for k in kf])
    if len(set(t.tolist())) != len(t):
        raise ValueError(f"keyframe frames must be distinct, got {t.tolist()}")
    f = np.arange(frames, dtype=np.float64)
    el = np.interp(f, t, [k[1] for k in kf])
    az = np.interp(f, t, [k[2] for k in kf]) % 360
    return el, az


# ----------------------------------------------------------------------------------------------
# The orbit registry (every node that offers an orbit type reads it from here)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrbitType:
    """A named orbit: ``angles(frames, elevation, seed, elevations, keyframes)`` gives
    ``(elevations_deg [F], azimuths_deg [F])``; ``sv3d`` is the name the SV3D nodes use for the
    orbits of SV3D's official scripts (None: not an SV3D orbit)."""

    name: str
    angles: Callable[..., tuple]
    help: str
    sv3d: Optional[str] = None


ORBITS = {o.name: o for o in (
    OrbitType("sv3d_static", lambda frames, elevation, seed, elevations, keyframes:
              sv3d_static_orbit(elevation, frames),
              "SV3D's official orbit: frame f at (f+1)*360/frames, the input view last at "
              "azimuth 0", sv3d="static"),
    OrbitType("sv3d_dynamic", lambda frames, elevation, seed, elevations, keyframes:
              sv3d_dynamic_orbit(elevation, frames, seed),
              "SV3D's seeded wavy orbit (official gen_dynamic_loop)", sv3d="dynamic"),
    OrbitType("uniform", lambda frames, elevation, seed, elevations, keyframes:
              uniform_orbit(frames, elevations), "rings of frames cameras at the listed "
              "elevations"),
    OrbitType("keyframed", lambda frames, elevation, seed, elevations, keyframes:
              keyframed_orbit(keyframes, frames), "linear between (frame, elevation, azimuth) "
              "keyframes"),
)}
SV3D_ORBITS = {o.sv3d: o.name for o in ORBITS.values() if o.sv3d}  # SV3D node name -> registry


def orbit_angles(orbit: str, frames: int, elevation: float = 10.0, seed: int = 0,
                 elevations: Sequence[float] = (0.0, 20.0),
                 keyframes: Sequence[Sequence[float]] = ((0, 0, 0), (20, 30, 340))):
    """``(elevations_deg [F], azimuths_deg [F])`` (float64 numpy) of a registered orbit;
    ``ValueError`` naming the choices for an unknown one."""
    if orbit not in ORBITS:
        raise ValueError(f"orbit must be one of {list(ORBITS)}, got {orbit!r}")
    return ORBITS[orbit].angles(int(frames), float(elevation), int(seed), elevations, keyframes)


def orbit_cameras(orbit: str, frames: int, elevation: float = 10.0, radius=DEFAULT_RADIUS,
                  fov=SV3D_FOV_DEG, width: int = 576, height: int = 576, seed: int = 0,
                  elevations: Sequence[float] = (0.0, 20.0),
                  keyframes: Sequence[Sequence[float]] = ((0, 0, 0), (20, 30, 340))) -> Cameras:
    """The :class:`Cameras` of a registered orbit (see :func:`orbit_angles`)."""
    el, az = orbit_angles(orbit, frames, elevation, seed, elevations, keyframes)
    return make_orbit_cameras(el, az, radius, fov, width, height)


def interpolate_orbit(cams: Cameras, m: int, closed: bool = True) -> Cameras:
    """Hi3D interpolation views: ``m`` extra cameras between each pair of adjacent cameras.

    Elevation, radius and azimuth (the short way round) are interpolated linearly at fractions
    ``k / (m + 1)``, k = 1..m; with ``closed`` the last camera also connects to the first.
    Returns only the new cameras, ``m * (N if closed else N - 1)`` of them, in orbit order.
    """
    if m < 0:
        raise ValueError(f"m must be >= 0, got {m}")
    n = len(cams)
    pairs = [(i, (i + 1) % n) for i in range(n if closed else n - 1)]
    if n < 2 or m == 0:
        pairs = []
    els, azs, rs = [], [], []
    for i, j in pairs:
        e0, e1 = float(cams.elevation[i]), float(cams.elevation[j])
        a0, a1 = float(cams.azimuth[i]), float(cams.azimuth[j])
        r0, r1 = float(cams.radius[i]), float(cams.radius[j])
        da = ((a1 - a0 + 180.0) % 360.0) - 180.0
        for k in range(1, m + 1):
            s = k / (m + 1)
            els.append(e0 + s * (e1 - e0))
            azs.append(a0 + s * da)
            rs.append(r0 + s * (r1 - r0))
    if not els:
        raise ValueError(f"no interpolation cameras: need >= 2 cameras and m >= 1 (got {n}, {m})")
    fov = float(cams.fov[0])
    return make_orbit_cameras(els, azs, rs, fov, cams.width, cams.height)


# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------


def check_cameras_see_object(cams: Cameras, center=(0.0, 0.0, 0.0), object_radius: float = 0.5):
    """Raise ``ValueError`` when a camera sits inside the object's bounding sphere or when the
    object's centre is behind it or projects outside its image."""
    c = torch.tensor(center, dtype=torch.float32)
    cc = cams.centers
    dist = (cc - c).norm(dim=-1)
    inside = torch.nonzero(dist <= object_radius).flatten().tolist()
    if inside:
        raise ValueError(f"camera(s) {inside} are inside the object (distance "
                         f"{[round(float(dist[i]), 3) for i in inside]} <= object radius "
                         f"{object_radius}); move them further out (larger radius)")
    pc = (cams.viewmats[:, :3, :3] @ c + cams.viewmats[:, :3, 3])  # [N, 3]
    behind = torch.nonzero(pc[:, 2] <= 0).flatten().tolist()
    if behind:
        raise ValueError(f"camera(s) {behind} look away from the object (it is behind them); "
                         "point them at the origin")
    uv = (cams.Ks @ pc.unsqueeze(-1)).squeeze(-1)
    uv = uv[:, :2] / uv[:, 2:]
    out = torch.nonzero((uv[:, 0] < 0) | (uv[:, 0] > cams.width) | (uv[:, 1] < 0)
                        | (uv[:, 1] > cams.height)).flatten().tolist()
    if out:
        raise ValueError(f"camera(s) {out} do not see the object (its centre projects outside "
                         "the image); point them at the origin")


def neighbor_views(cams: Cameras, n: int) -> torch.Tensor:
    """Indices ``[C, n]`` of the ``n`` cameras whose viewing directions (towards the origin) are
    closest in angle to each camera's, excluding itself."""
    c = cams.centers.double()
    d = torch.nn.functional.normalize(c, dim=-1)
    cos = d @ d.T
    cos.fill_diagonal_(-math.inf)
    n = min(int(n), len(cams) - 1)
    return torch.topk(cos, n, dim=1).indices
