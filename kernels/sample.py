"""The bundled sample: spot (Keenan Crane, public domain) and its 21-view SV3D-orbit renders.

Files live in ``<package>/assets/`` (located relative to this file, so the pack is
self-contained). The sample orbit is made by ``python -m orbitforge.bench.assets``:

* the object is spot **normalised** (largest bounding-box extent 1, bbox centred at the origin)
  and then **turned 180 degrees about +y** so that its face looks along +z, the OrbitForge
  "front" (spot's file has it facing -z). Azimuth 0 -- the last frame, SV3D's conditioning
  view -- therefore shows spot's face. :func:`load_sample_mesh` returns exactly this mesh: use it
  as the ground truth when evaluating a reconstruction of the sample;
* cameras: SV3D static orbit, elevation 10 degrees, fov 33.8 degrees, 256x256, radius
  :data:`SAMPLE_RADIUS` (2.2, the smallest radius in 0.05 steps keeping spot >= 5 px inside
  every frame; at 2.0 its feet leave the image);
* images: RGBA PNGs, alpha = coverage (2x2 supersampled), colour already composited on white.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import trimesh

from .geometry.cameras import Cameras

ASSETS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
SAMPLE_DIR = os.path.join(ASSETS_DIR, "sample_orbit")
SPOT_DIR = os.path.join(ASSETS_DIR, "spot")

SAMPLE_ELEVATION = 10.0
SAMPLE_RADIUS = 2.2
SAMPLE_FOV = 33.8
SAMPLE_SIZE = 256
SAMPLE_SS = 2
SPOT_YAW_DEG = 180.0  # turn spot's face from -z to +z (OrbitForge front)


def spot_mesh_path() -> str:
    """Path of the bundled, unmodified ``spot_triangulated.obj`` (texture next to it)."""
    path = os.path.join(SPOT_DIR, "spot_triangulated.obj")
    if not os.path.isfile(path):
        raise ValueError(f"bundled spot mesh missing at {path}; reinstall the OrbitForge pack")
    return path


def load_sample_mesh() -> trimesh.Trimesh:
    """Spot exactly as rendered in the sample orbit: textured, normalised, facing +z."""
    from .mesh.render import load_mesh, normalize_mesh

    mesh, _, _ = normalize_mesh(load_mesh(spot_mesh_path()))
    mesh.apply_transform(trimesh.transformations.rotation_matrix(np.deg2rad(SPOT_YAW_DEG),
                                                                 [0.0, 1.0, 0.0]))
    return mesh


def sample_frame_paths() -> list:
    names = sorted(f for f in os.listdir(SAMPLE_DIR)
                   if f.startswith("frame_") and f.endswith(".png"))
    return [os.path.join(SAMPLE_DIR, n) for n in names]


def load_sample_orbit():
    """The bundled 21-view orbit of spot.

    Returns ``(images [N,H,W,3] float32 0..1 on white, masks [N,H,W] float32 (1 = object),
    Cameras)``, CPU tensors, frames in SV3D order (the last is the input view, azimuth 0).
    """
    from PIL import Image

    cam_path = os.path.join(SAMPLE_DIR, "cameras.json")
    if not os.path.isdir(SAMPLE_DIR) or not os.path.isfile(cam_path):
        raise ValueError(f"bundled sample orbit missing in {SAMPLE_DIR}; regenerate it with "
                         "`python -m orbitforge.bench.assets`")
    cams = Cameras.load_json(cam_path)
    paths = sample_frame_paths()
    if len(paths) != len(cams):
        raise ValueError(f"sample orbit has {len(paths)} frames but {len(cams)} cameras; "
                         "regenerate it with `python -m orbitforge.bench.assets`")
    rgba = []
    for p in paths:
        with Image.open(p) as im:
            rgba.append(np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0)
    arr = torch.from_numpy(np.stack(rgba))  # [N, H, W, 4]
    return arr[..., :3].contiguous(), arr[..., 3].contiguous(), cams
