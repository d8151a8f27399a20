"""A small picture of a camera path (IMAGE preview for the orbit node), drawn with PIL."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from .cameras import Cameras


def plot_camera_path(cams: Cameras, size: int = 384) -> torch.Tensor:
    """Two panels: the path seen from above (x right, z down, +z = azimuth 0 at the bottom)
    and elevation against frame index. Frame colour goes from blue (first) to red (last);
    the first frame is circled. Returns an IMAGE ``[1, H, W, 3]`` in 0..1."""
    img = Image.new("RGB", (2 * size, size), "white")
    d = ImageDraw.Draw(img)
    n = len(cams)
    c = cams.centers.double().numpy()
    r = max(float(np.abs(c[:, [0, 2]]).max()), 1e-6) * 1.15
    half = size / 2

    def top(p):
        return half + p[0] / r * (half - 10), half + p[2] / r * (half - 10)

    def col(i):
        s = i / max(n - 1, 1)
        return (int(255 * s), 60, int(255 * (1 - s)))

    d.ellipse([half - 6, half - 6, half + 6, half + 6], outline="black")  # the object
    pts = [top(p) for p in c]
    for i in range(n - 1):
        d.line([pts[i], pts[i + 1]], fill=(150, 150, 150), width=2)
    for i, (x, y) in enumerate(pts):
        d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=col(i))
    x0, y0 = pts[0]
    d.ellipse([x0 - 8, y0 - 8, x0 + 8, y0 + 8], outline="black", width=2)
    d.text((6, 4), "top view (+x right, az 0 bottom)", fill="black")
    # elevation panel
    el = cams.elevation.double().numpy()
    lo, hi = min(float(el.min()), -10.0), max(float(el.max()), 30.0)
    for i in range(n):
        x = size + 20 + (size - 40) * i / max(n - 1, 1)
        y = size - 20 - (size - 40) * (el[i] - lo) / (hi - lo)
        d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=col(i))
    yz = size - 20 - (size - 40) * (0 - lo) / (hi - lo)
    d.line([(size + 20, yz), (2 * size - 20, yz)], fill=(200, 200, 200))
    d.text((size + 6, 4), f"elevation {lo:.0f}..{hi:.0f} deg vs frame (n={n})", fill="black")
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
    return arr.unsqueeze(0)


