"""Regenerate the bundled sample orbit: ``python -m orbitforge.bench.assets [--out DIR]``.

Not a benchmark: renders spot (``assets/spot``) on the SV3D static orbit and writes
``assets/sample_orbit/frame_XXX.png`` (RGBA, alpha = coverage, colour on white),
``cameras.json`` and ``README.txt``. Prints one JSON object (files, sizes, timings, margin).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time

import numpy as np

from ..kernels.atomic import atomic_write
from ..kernels.geometry.cameras import make_orbit_cameras, sv3d_static_orbit
from ..kernels.mesh.render import render_mesh
from ..kernels.sample import (
    SAMPLE_DIR,
    SAMPLE_ELEVATION,
    SAMPLE_FOV,
    SAMPLE_RADIUS,
    SAMPLE_SIZE,
    SAMPLE_SS,
    SPOT_YAW_DEG,
    load_sample_mesh,
)

README = """Sample orbit of spot (OrbitForge demo input)
=============================================

21 views of "Spot" by Keenan Crane (public domain; see ../spot/README.txt), rendered on the CPU
by `python -m orbitforge.bench.assets` (orbitforge/kernels/mesh/render.py, Embree ray casting):

* mesh: spot_triangulated.obj + spot_texture.png, normalised (largest bounding-box extent 1,
  centred at the origin) and turned {yaw:g} degrees about +y so its face looks along +z (the
  OrbitForge front); `orbitforge.kernels.sample.load_sample_mesh()` returns this mesh;
* cameras (cameras.json, `Cameras.load_json`): SV3D static orbit (`sv3d_static_orbit`),
  elevation {elev:g} deg, radius {radius:g}, vertical fov {fov:g} deg, {size}x{size}; frame f is
  at azimuth (f+1)*360/21, the last frame (frame_020) is the input view at azimuth 0;
* shading: texture albedo x (0.45 + 0.55 max(0, n.l)), fixed world light, view independent;
  {ss}x{ss} supersampling;
* PNG: RGBA, alpha = pixel coverage, colour already composited on white.
"""


def _atomic_write(path: str, data: bytes) -> None:
    atomic_write(path, data)


def main(argv=None) -> int:
    from PIL import Image

    ap = argparse.ArgumentParser(prog="python -m orbitforge.bench.assets", description=__doc__)
    ap.add_argument("--out", default=SAMPLE_DIR, help="output folder (default: the bundled one)")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    t0 = time.time()
    mesh = load_sample_mesh()
    el, az = sv3d_static_orbit(SAMPLE_ELEVATION)
    cams = make_orbit_cameras(el, az, SAMPLE_RADIUS, SAMPLE_FOV, SAMPLE_SIZE, SAMPLE_SIZE)
    t1 = time.time()
    out = render_mesh(mesh, cams, ss=SAMPLE_SS)
    t_render = time.time() - t1

    mask = out["mask"]
    border = float(max(mask[:, 0].max(), mask[:, -1].max(), mask[:, :, 0].max(),
                       mask[:, :, -1].max()))
    if border > 0:
        raise ValueError(f"spot touches the image border at radius {SAMPLE_RADIUS}; increase it")
    ys, xs = np.nonzero(mask.amax(0).numpy() > 0)
    n = mask.shape[-1]
    margin = int(min(ys.min(), xs.min(), n - 1 - ys.max(), n - 1 - xs.max()))

    for old in os.listdir(args.out):
        if old.startswith("frame_") and old.endswith(".png"):
            os.unlink(os.path.join(args.out, old))
    sizes = {}
    for k in range(len(cams)):
        rgba = np.concatenate([out["rgb"][k].numpy(), mask[k].numpy()[..., None]], -1)
        buf = io.BytesIO()
        Image.fromarray(np.round(rgba * 255).clip(0, 255).astype(np.uint8), "RGBA").save(
            buf, format="PNG", optimize=True)
        name = f"frame_{k:03d}.png"
        _atomic_write(os.path.join(args.out, name), buf.getvalue())
        sizes[name] = len(buf.getvalue())
    cam_json = json.dumps(cams.to_dict()).encode()
    _atomic_write(os.path.join(args.out, "cameras.json"), cam_json)
    readme = README.format(yaw=SPOT_YAW_DEG, elev=SAMPLE_ELEVATION, radius=SAMPLE_RADIUS,
                           fov=SAMPLE_FOV, size=SAMPLE_SIZE, ss=SAMPLE_SS).encode()
    _atomic_write(os.path.join(args.out, "README.txt"), readme)
    total = sum(sizes.values()) + len(cam_json) + len(readme)
    print(json.dumps({
        "out": args.out, "views": len(cams), "size": SAMPLE_SIZE, "radius": SAMPLE_RADIUS,
        "ss": SAMPLE_SS, "render_s": round(t_render, 3),
        "render_s_per_view": round(t_render / len(cams), 4), "total_s": round(time.time() - t0, 3),
        "min_margin_px": margin, "png_bytes": sum(sizes.values()), "total_bytes": total,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
