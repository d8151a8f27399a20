"""Thumbnails (.jpg next to each workflow .json) and the README pictures, from real results.

    python example_workflows/make_thumbnails.py --ply SPLAT.ply [--glb MESH.glb]

``--ply`` is the Gaussians the reconstruction-only workflow saved (``OrbitForgeSaveGaussians``,
e.g. ``output/orbitforge/sample_splat_00001.ply`` after queueing
``orbitforge_sample_views_to_mesh.json``; or the same nodes run from Python). Without ``--glb`` the
mesh is rebuilt from it with the workflow's own SDF Mesh settings. Everything shown is computed:

* ``orbitforge_sample_views_to_mesh.jpg`` / ``..._result.jpg``: the bundled input views, the
  fitted Gaussians rendered at the in-between cameras (views the fit never saw) and the mesh
  rendered from the same cameras;
* the model workflows' thumbnails show the bundled sample in the role the models play (input
  view, orbit) next to the reconstruction of it, captioned as such: no model output is faked.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from PIL import Image, ImageDraw, ImageFont

HERE = os.path.dirname(os.path.abspath(__file__))
BG = (255, 255, 255)
INK = (30, 30, 30)
ACCENT = (176, 102, 52)
MAX_BYTES = 150 * 1024


def font(size: int):
    return ImageFont.load_default(size=size)


def to_pil(img: torch.Tensor, cell: int) -> Image.Image:
    arr = (img[..., :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(arr).resize((cell, cell), Image.LANCZOS)


def strip(images: torch.Tensor, cell: int, gap: int = 4) -> Image.Image:
    n = images.shape[0]
    out = Image.new("RGB", (n * cell + (n - 1) * gap, cell), BG)
    for i in range(n):
        out.paste(to_pil(images[i], cell), (i * (cell + gap), 0))
    return out


def board(title: str, rows: list, width: int, subtitle: str = "") -> Image.Image:
    """Title bar + labelled rows (label, PIL image), centred."""
    tf, lf, sf = font(max(14, width // 32)), font(max(11, width // 56)), font(max(10, width // 64))
    pad = max(6, width // 80)
    heights = [pad + tf.size + pad // 2]
    if subtitle:
        heights.append(sf.size + pad // 2)
    for label, im in rows:
        heights.append(lf.size + 4 + im.height + pad)
    out = Image.new("RGB", (width, sum(heights) + pad), BG)
    d = ImageDraw.Draw(out)
    y = pad
    d.text((pad, y), title, font=tf, fill=INK)
    y += tf.size + pad // 2
    if subtitle:
        d.text((pad, y), subtitle, font=sf, fill=(90, 90, 90))
        y += sf.size + pad // 2
    for label, im in rows:
        d.text((pad, y), label, font=lf, fill=ACCENT)
        y += lf.size + 4
        out.paste(im, ((width - im.width) // 2, y))
        y += im.height + pad
    return out


def save_jpg(img: Image.Image, path: str) -> None:
    for q in (88, 80, 72, 64, 56):
        tmp = path + ".tmp.jpg"
        img.save(tmp, "JPEG", quality=q, optimize=True, progressive=True)
        if os.path.getsize(tmp) <= MAX_BYTES:
            os.replace(tmp, path)
            print(f"wrote {path} ({os.path.getsize(path) // 1024} KB, q={q})")
            return
    os.replace(tmp, path)
    raise SystemExit(f"{path} is over {MAX_BYTES} bytes even at quality 56")


def results(ply: str, glb: str | None, pick: list):
    """(inputs [k], splat renders at in-between cameras [k], mesh renders [k]) for ``pick``."""
    import trimesh

    from orbitforge.kernels.geometry.cameras import interpolate_orbit
    from orbitforge.kernels.mesh.render import render_mesh
    from orbitforge.kernels.sample import load_sample_orbit
    from orbitforge.kernels.splat.fit import render_gaussians
    from orbitforge.kernels.splat.frame import from_splat_frame
    from orbitforge.kernels.splat.ply import read_ply

    images, masks, cams = load_sample_orbit()
    g = from_splat_frame(read_ply(ply))  # saved PLYs are in the 3DGS frame (y down)
    between = interpolate_orbit(cams, 1)[pick]
    with torch.no_grad():
        splat, _, _, _ = render_gaussians(g, between)
    if glb is None:
        from orbitforge.kernels.mesh.core_mesh import mesh_items
        from orbitforge.nodes.mesh import SDFMesh

        sys.path.insert(0, HERE)
        from make_workflows import WORKFLOWS, node_classes

        wf = WORKFLOWS["orbitforge_sample_views_to_mesh"]().json()
        from orbitforge.workflow_tools.api import ui_to_api

        api = ui_to_api(wf, node_classes())
        (sdf,) = [n["inputs"] for n in api.values() if n["class_type"] == "OrbitForgeSDFMesh"]
        kw = {k: v for k, v in sdf.items() if not isinstance(v, list)}
        (mesh,) = SDFMesh().build(cams, images=images, masks=masks, gaussians=g, **kw)
        tm = mesh_items(mesh)[0].to_trimesh(0)  # the node's MESH (core class in ComfyUI v0.33)
    else:
        tm = trimesh.load(glb, force="mesh")
    mesh_rgb = render_mesh(tm, between)["rgb"]
    return images[[(p + 1) % 21 for p in pick]], splat, mesh_rgb, len(g), len(tm.faces)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ply", required=True, help="Gaussians saved by the sample workflow")
    ap.add_argument("--glb", default=None, help="its mesh (default: rebuilt from --ply)")
    ap.add_argument("--info", default="", help="text appended to the result caption, e.g. "
                    "'300 iterations at 128 px'")
    args = ap.parse_args(argv)

    from orbitforge.kernels.sample import load_sample_orbit

    pick = [0, 3, 6, 9, 12, 15, 18]  # in-between camera k sits between views k and k+1
    inp, splat, mesh_rgb, n_g, n_f = results(args.ply, args.glb, pick)
    cap = f"{n_g} Gaussians, {n_f} faces" + (f"; {args.info}" if args.info else "")

    def result_board(width, cell, title):
        return board(title, [
            ("input views (bundled sample, 21 in all)", strip(inp, cell)),
            ("3D Gaussians rendered at in-between cameras (never seen by the fit)",
             strip(splat, cell)),
            ("SDF mesh (GLB) from the same cameras", strip(mesh_rgb, cell)),
        ], width, subtitle=cap)

    save_jpg(result_board(960, 128, "Views -> 3D Gaussians -> mesh, on the bundled sample"),
             os.path.join(HERE, "orbitforge_sample_views_to_mesh_result.jpg"))
    save_jpg(result_board(512, 66, "Sample views -> Gaussians -> mesh"),
             os.path.join(HERE, "orbitforge_sample_views_to_mesh.jpg"))

    images, _masks, _cams = load_sample_orbit()
    orbit = images[[2, 5, 8, 11, 14, 17, 20]]
    front = images[20:21]
    note = "picture: the bundled sample stands in for the model output (no model files here)"
    for name, title, rows in [
        ("orbitforge_image_to_mesh_sv3d", "Image -> SV3D orbit -> Gaussians -> mesh", [
            ("input image", strip(front, 96)),
            ("SV3D orbit (21 views; shown: bundled sample orbit)", strip(orbit, 66)),
            ("Gaussians + mesh reconstructed from that orbit", strip(
                torch.cat([splat[:3], mesh_rgb[3:6]]), 66)),
        ]),
        ("orbitforge_image_to_hires_views", "Image -> SV3D orbit -> depth-conditioned refiner", [
            ("input image", strip(front, 96)),
            ("576 px SV3D orbit (shown: bundled sample orbit)", strip(orbit, 66)),
            ("3DGS depth that conditions the 1024 px refiner (near = bright)",
             strip(_depth_strip(args.ply, [2, 5, 8, 11, 14, 17, 20]), 66)),
        ]),
        ("orbitforge_image_to_4d", "Image -> Diffusion2 views x frames -> 4D Gaussians", [
            ("input image (frame 0 of the motion)", strip(front, 96)),
            ("one time step = an orbit (shown: static bundled sample orbit)", strip(orbit, 66)),
            ("its 3D Gaussians; 4D = one such scene per frame", strip(splat[:7], 66)),
        ]),
    ]:
        save_jpg(board(title, rows, 512, subtitle=note), os.path.join(HERE, name + ".jpg"))
    print(json.dumps({"gaussians": n_g, "faces": n_f}))
    return 0


def _depth_strip(ply: str, idx: list) -> torch.Tensor:
    from orbitforge.kernels.sample import load_sample_orbit
    from orbitforge.kernels.splat.fit import render_gaussians
    from orbitforge.kernels.splat.frame import from_splat_frame
    from orbitforge.kernels.splat.ply import read_ply
    from orbitforge.nodes.gaussians import depth_to_image

    _i, _m, cams = load_sample_orbit()
    with torch.no_grad():
        _rgb, alpha, _d, median = render_gaussians(from_splat_frame(read_ply(ply)), cams[idx])
    return depth_to_image(median[..., 0], alpha[..., 0])


if __name__ == "__main__":
    sys.exit(main())
