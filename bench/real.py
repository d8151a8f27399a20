"""``python -m orbitforge.bench real --dir DIR [--objects a,b] [--json]``: real generated orbits.

Each object folder of ``DIR`` holds one generated SV3D orbit: ``00.png`` ... ``20.png`` in SV3D's
frame order (frame ``f`` at azimuth ``(f + 1) * 360 / 21`` of the static orbit, frame 20 the
input view at azimuth 0) on a white background. Nobody knows the true geometry, so everything
is measured at **held-out views**: frames with ``f % 3 == 1`` (7 of 21) are never given to the
reconstruction, the other 14 are. Per object, through the public node classes exactly as a
workflow would run them:

1. ``OrbitForgeOrbitCameras`` (sv3d_static at ``--elevation``, ``--radius``, SV3D's 33.8 deg);
   masks are the views' non-white pixels (``kernels.splat.fit.masks_from_background``) after the
   animation grid's 1-px cell borders along the image edges are painted white;
   ``--calibrate auto`` (default, as the reconstruction nodes' ``calibrate`` option; ``on``:
   always; ``off``: the nominal static orbit) self-calibrates the cameras of the 14 training
   views once, exactly as the nodes do (``nodes.calibrate.reconstruction_calibration``): from
   their silhouettes (``kernels.geometry.calibrate``, the method of
   ``OrbitForgeCalibrateOrbit``), and for a dynamic orbit then photometrically (every view
   registered to a short 3DGS fit of all of them, ``kernels.splat.register.register_orbit``);
   the silhouette calibration also moves the held-out cameras (``apply_calibration``:
   elevation offset, fov/distance scales, smooth per-view corrections at their azimuths), so
   held-out views never inform the calibration; the nodes then run with ``calibrate`` off;
2. ``OrbitForgeGaussianReconstruct`` on the 14 views (node defaults, ``--iters`` steps);
3. ``OrbitForgeSDFMesh`` on the 14 views + masks + the fitted Gaussians, linked as the shipped
   workflows link them (node defaults; ``--mesh-without-gaussians``: views + masks only);
4. the held-out cameras: ``--held-out-cameras registered`` (default) registers each held-out
   frame to the fitted scene with the scene frozen (``kernels.splat.register``: the orbit
   camera within +-24 deg elevation / +-20 deg azimuth of the prediction whose render matches
   the frame), as pose-free view-synthesis evaluations (BARF, NoPe-NeRF) measure test views.
   SV3D's dynamic orbit adds a random walk to the frames' azimuths (``gen_dynamic_loop``), so
   no calibration of the other frames can predict a held-out frame's camera to better than a
   few degrees, and that error would be measured instead of the scene. The predicted cameras'
   numbers are reported beside (``predicted``); ``--held-out-cameras predicted`` measures at
   those only. Registration uses the splat, never the mesh or the masks;
5. ``OrbitForgeGaussianRender`` at the held-out cameras: ``splat_psnr``, ``splat_ssim``; the
   mesh rendered there (``kernels.mesh.render``, vertex colours unlit): ``mesh_silhouette_iou``
   (coverage > 0.5 against the held-out masks, mean over views), ``mesh_psnr`` (inside the
   union of the rendered and the held-out masks), and ``roughness_deg``
   (``kernels.metrics.roughness_deg``: mean angle between a face normal and its
   0.03-neighbourhood's area-weighted normal, mesh scaled to a largest extent of 1, 4000 faces
   drawn by area, seed 0);
6. ``wall_s``: calibration + fit + mesh (registration and evaluation renders excluded), with
   the parts in ``times``.

A contact sheet per object (``<out>/<name>.png``) stacks, for the 7 held-out frames: the held-out
views / the splat renders / the coloured mesh / the mesh shaded grey (its shape without colour).
Prints ``{"objects": {name: {...}}, "mean": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from . import pick

FRAMES = 21
KEYS = ("splat_psnr", "splat_ssim", "mesh_silhouette_iou", "mesh_psnr", "roughness_deg", "wall_s")


def held_out_frames(n: int = FRAMES) -> list:
    return [f for f in range(n) if f % 3 == 1]


def train_frames(n: int = FRAMES) -> list:
    return [f for f in range(n) if f % 3 != 1]


def load_orbit(folder: str) -> torch.Tensor:
    """``[21,H,W,3]`` float views ``00.png``..``20.png`` of one object folder."""
    from PIL import Image

    paths = [os.path.join(folder, f"{f:02d}.png") for f in range(FRAMES)]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise ValueError(f"{folder!r} lacks {len(missing)} of the frames 00.png..20.png (first: "
                         f"{missing[0]}); each object folder needs SV3D's 21 frames")
    views = []
    for p in paths:
        with Image.open(p) as im:
            rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        rgb, a = rgba[..., :3], rgba[..., 3:]
        views.append(torch.from_numpy(rgb * a + (1 - a)))  # transparent -> white
    shapes = {tuple(v.shape) for v in views}
    if len(shapes) != 1:
        raise ValueError(f"frames of {folder!r} differ in size: {sorted(shapes)}")
    return erase_edge_lines(torch.stack(views))


def erase_edge_lines(views: torch.Tensor, margin: int = 5) -> torch.Tensor:
    """Paint white every non-white blob that lies entirely within ``margin`` px of the image
    edges: frames cut from an animation's grid keep bits of the cells' 1-px borders, which are
    no part of the object and would enter its masks."""
    from scipy import ndimage

    from ..kernels.splat.fit import masks_from_background

    out = views.clone()
    m = masks_from_background(views).numpy() > 0.5  # [N,H,W]
    n, h, w = m.shape
    inner = np.zeros((h, w), bool)
    inner[margin:h - margin, margin:w - margin] = True
    for i in range(n):
        lab, k = ndimage.label(m[i], structure=np.ones((3, 3)))
        if k == 0:
            continue
        touches_inner = np.zeros(k + 1, bool)
        touches_inner[np.unique(lab[inner & m[i]])] = True
        edge_only = ~touches_inner[lab] & m[i]
        out[i][torch.from_numpy(edge_only)] = 1.0
    return out


def _grey(mesh):
    import trimesh

    return trimesh.Trimesh(np.asarray(mesh.vertices), np.asarray(mesh.faces), process=False)


def contact_sheet(rows, path: str) -> None:
    """Rows of ``[N,H,W,3]`` image batches -> one PNG (written atomically)."""
    import io

    from PIL import Image

    from ..kernels.atomic import atomic_write

    grid = np.concatenate([np.concatenate(list(r.numpy()), 1) for r in rows], 0)
    buf = io.BytesIO()
    Image.fromarray((grid.clip(0, 1) * 255 + 0.5).astype(np.uint8)).save(buf, format="PNG")
    atomic_write(path, buf.getvalue())


def _evaluate(g, tm, cams, gt, gm) -> dict:
    """Held-out metrics of the splat ``g`` and the mesh ``tm`` at ``cams`` against the views
    ``gt`` and masks ``gm`` (plus the renders, for the contact sheet)."""
    from ..kernels.mesh.render import render_mesh
    from ..kernels.metrics import psnr, ssim
    from ..nodes.gaussians import GaussianRender

    splat, _, _ = GaussianRender().render(g, cams, "median", "1, 1, 1")
    mr = render_mesh(tm, cams, ss=2, ambient=1.0, diffuse=0.0)  # vertex colours, unlit
    grey = render_mesh(_grey(tm), cams, ss=1, occlusion=False)["rgb"]
    cover = (mr["mask"] > 0.5).float()
    inter = (cover * gm).flatten(1).sum(1)
    union = ((cover + gm) > 0).float().flatten(1).sum(1).clamp_min(1)
    m_union = ((cover + gm) > 0).float()
    return {"splat_psnr": round(float(psnr(splat, gt)), 3),
            "splat_ssim": round(float(ssim(splat, gt)), 4),
            "mesh_silhouette_iou": round(float((inter / union).mean()), 4),
            "mesh_psnr": round(float(psnr(mr["rgb"], gt, mask=m_union)), 3),
            "splat": splat, "mesh_rgb": mr["rgb"], "grey": grey}


def run_object(name: str, folder: str, a) -> dict:
    from ..kernels.mesh.core_mesh import mesh_items
    from ..kernels.metrics import roughness_deg
    from ..kernels.splat.fit import masks_from_background
    from ..nodes.cameras import OrbitCameras
    from ..nodes.gaussians import GaussianReconstruct
    from ..nodes.host.geometry import read_splat
    from ..nodes.mesh import SDFMesh

    views = load_orbit(folder)  # [21,H,W,3]
    h, w = views.shape[1:3]
    masks = masks_from_background(views)  # [21,H,W]
    tr, te = train_frames(), held_out_frames()
    cams, _ = OrbitCameras().make("sv3d_static", FRAMES, a.elevation, a.radius, 33.8, w, h, 0,
                                  "0", "0, 0, 0")
    times = {}
    t_all = time.perf_counter()
    cam_tr, cam_te = cams[tr], cams[te]
    report = None
    if a.calibrate != "off":
        # what the reconstruction nodes' ``calibrate`` option runs, once, on the training
        # views; its silhouette calibration also moves the held-out cameras
        from ..kernels.geometry.calibrate import apply_calibration
        from ..nodes.calibrate import reconstruction_calibration

        t = time.perf_counter()
        cam_tr, res, reg = reconstruction_calibration(views[tr], masks[tr], cam_tr, a.calibrate)
        if res is not None:
            cam_te = apply_calibration(res, cam_te)
            report = {k: v for k, v in res.to_dict().items() if k != "cameras"}
            if reg is not None:
                report["registered"] = reg.to_dict()
        times["calibrate_s"] = round(time.perf_counter() - t, 2)

    t = time.perf_counter()
    rec = GaussianReconstruct()
    kw = {}
    if a.fit_options:
        kw.update(json.loads(a.fit_options))
    sh = GaussianReconstruct.INPUT_TYPES()["required"]["sh_degree"][1]["default"]
    g, _ = rec.reconstruct(views[tr], cam_tr, a.iters, 256, kw.pop("sh_degree", sh), a.seed,
                           mask=masks[tr], calibrate="off", **kw)
    times["fit_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    mesh = SDFMesh().build(cam_tr, a.grid, "fast", 1, True, 50000, 5, "vertex", 1024,
                           images=views[tr], masks=masks[tr], calibrate="off",
                           gaussians=None if a.mesh_without_gaussians else g)[0]
    times["mesh_s"] = round(time.perf_counter() - t, 2)
    wall = time.perf_counter() - t_all

    cam_pred = cam_te
    reg = None
    if a.held_out_cameras == "registered":
        # the held-out frames' own cameras, found with the scene frozen (their views never
        # inform the fit): SV3D's dynamic orbits put frames at azimuths no neighbour predicts
        from ..kernels.splat.register import register_views

        t = time.perf_counter()
        reg = register_views(read_splat(g, "gaussians"), views[te], cam_pred)
        cam_te = reg.cameras
        times["register_held_out_s"] = round(time.perf_counter() - t, 2)
    gt, gm = views[te], masks[te]
    tm = mesh_items(mesh)[0].to_trimesh(0)  # the node's MESH (core class in ComfyUI v0.33)
    ev = _evaluate(g, tm, cam_te, gt, gm)
    out = {
        **{k: ev[k] for k in KEYS[:4]},
        "roughness_deg": round(roughness_deg(tm), 2),
        "wall_s": round(wall, 2),
        "times": times,
        "gaussians": len(read_splat(g, "gaussians")),
        "faces": int(mesh.faces.shape[1]),
        "elevation": a.elevation,
        "calibrate": a.calibrate,
        "held_out_cameras": a.held_out_cameras,
    }
    if reg is not None:
        pred = _evaluate(g, tm, cam_pred, gt, gm)
        out["predicted"] = {k: pred[k] for k in KEYS[:4]}
        out["registration"] = {k: v for k, v in reg.to_dict().items() if k.startswith("d_")}
    if report is not None:
        out["calibration"] = report if isinstance(report, (dict, str)) else str(report)
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        sheet = os.path.join(a.out, f"{name}.png")
        contact_sheet([gt, ev["splat"], ev["mesh_rgb"], ev["grey"]], sheet)
        out["contact_sheet"] = sheet
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orbitforge.bench real", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="folder of object folders (00.png..20.png each)")
    ap.add_argument("--objects", default="", help="comma-separated object names (default: all)")
    ap.add_argument("--elevation", type=float, default=0.0,
                    help="elevation of the static SV3D orbit the cameras are made at (degrees)")
    ap.add_argument("--radius", type=float, default=2.0, help="camera distance")
    ap.add_argument("--calibrate", choices=["auto", "on", "off"], default="auto",
                    help="camera self-calibration of the training views first, as the nodes' "
                         "calibrate option (auto: only when the cameras explain the "
                         "silhouettes poorly); off: the static orbit as given")
    ap.add_argument("--held-out-cameras", choices=["registered", "predicted"],
                    default="registered",
                    help="cameras the held-out frames are measured at: registered (default: "
                         "each frame's orbit camera found by rendering the fitted scene, frozen, "
                         "against it, as pose-free view-synthesis evaluations do) or predicted "
                         "(the calibration carried over to the frames' nominal cameras; both are "
                         "reported with registered)")
    ap.add_argument("--iters", type=int, default=600, help="Gaussian Reconstruct iterations")
    ap.add_argument("--grid", type=int, default=128, help="SDF Mesh resolution")
    ap.add_argument("--mesh-without-gaussians", action="store_true",
                    help="do not connect the fitted Gaussians to SDF Mesh (the shipped "
                         "workflows connect them)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fit-options", default="",
                    help="extra Gaussian Reconstruct inputs as JSON (e.g. to compare settings)")
    ap.add_argument("--out", default=os.path.join("/tmp", "orbitforge_bench_real"),
                    help="folder for the contact sheets ('' = none)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if not os.path.isdir(a.dir):
        raise SystemExit(f"--dir {a.dir!r} is not a folder")
    names = sorted(d for d in os.listdir(a.dir) if os.path.isdir(os.path.join(a.dir, d)))
    if a.objects:
        names = pick(a.objects, names, "object", f" in {a.dir!r}")
    if not names:
        raise SystemExit(f"no object folders in {a.dir!r}")
    from ..kernels.splat.fit import FitConfig

    fc = FitConfig()
    objects = {}
    for n in names:
        objects[n] = run_object(n, os.path.join(a.dir, n), a)
        if not a.json:
            print(n, json.dumps(objects[n]), file=sys.stderr)
    mean = {k: round(float(np.mean([o[k] for o in objects.values()])), 4) for k in KEYS}
    mean["min_splat_psnr"] = min(o["splat_psnr"] for o in objects.values())
    mean["min_mesh_silhouette_iou"] = min(o["mesh_silhouette_iou"] for o in objects.values())
    if all("predicted" in o for o in objects.values()):
        mean["predicted"] = {k: round(float(np.mean([o["predicted"][k] for o in
                                                     objects.values()])), 4) for k in KEYS[:4]}
    out = {"bench": "real", "dir": a.dir, "elevation": a.elevation, "radius": a.radius,
           "fit": {"appearance": fc.appearance, "robust": fc.robust,
                   "refine_cameras": fc.refine_cameras, "options": a.fit_options},
           "calibrate": a.calibrate, "held_out_cameras": a.held_out_cameras,
           "iters": a.iters, "grid": a.grid,
           "threads": torch.get_num_threads(), "objects": objects, "mean": mean}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
