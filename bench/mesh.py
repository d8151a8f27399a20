"""Mesh reconstruction benchmark (the protocol of SyncDreamer's ``eval_mesh.py``).

    python -m orbitforge.bench mesh --mesh PATH [--views 21] [--res 256] [--grid 128]
                                    [--orbit dynamic|static] [--radius 2.2]
                                    [--source images|gaussians] [--depth mvs|none]
                                    [--mode fast|neural] [--polish N] [--neural-iters N]
                                    [--shading flat|ao] [--points N] [--json]

    python -m orbitforge.bench mesh --zoo [NAMES] [--texture noise] [--sheet PNG] [--json]
    python -m orbitforge.bench mesh --mesh PATH --degrade generated [--json]

``--zoo``: the procedural shape zoo of bench/zoo.py (box with a through-hole, L-bracket with
fillet and chamfer, gear, torus, mug, plate with holes, sphere-cube; constructive geometry, no
files) and the five shared meshes of ``--meshes-dir`` when present, each through the same path
as ``--mesh``; per shape chamfer, IoU, F-score, roughness (ours and ground truth), genus (ours,
ground truth, and what the orbit sees through), wall time, pass/fail against the targets, plus a
contact sheet (bench/mesh_zoo.py). ``--mesh zoo:NAME`` runs one zoo shape. A zoo name that does
not exist, or a mesh file without volume, is refused with a ``ValueError`` naming it.

``--degrade generated``: the same mesh twice at ``--res`` (default 128 then): from clean renders
and from views degraded the way generated orbits disagree (bench/degrade.py: per-view camera
error, colour drift, warp, 512 -> 128 px, 256-colour palette, thresholded masks; the pipeline
gets the nominal cameras), ``{"clean": {...}, "degraded": {...}}`` with chamfer, iou,
fscore_001, roughness_deg, and ``roughness_ratio`` (degraded / clean).

Orbit (``--orbit``, reported as ``orbit`` in the JSON, with the camera ``elevations``): the
default is **SV3D's dynamic orbit**
(``kernels.geometry.cameras.sv3d_dynamic_orbit(10, 21, seed=0)``: 21 azimuths with elevations
varying roughly between -40 and +60 degrees). This is the orbit the SV3D paper generates for its
3D-reconstruction experiments (SV3D^p, dynamic orbits), i.e. the realistic setting for the pack's
image -> orbit -> mesh path, so it is the benchmark setting. ``--orbit static`` (one ring at
``--elevation``) is kept for comparison: a single ring cannot see tops/undersides, so the visual
hull stays loose there (measured worse on every mesh).

Depth source: ``--source images`` (default) uses ``--depth mvs``: hull-bounded plane-sweep
stereo on the views (kernels/mesh/mvs.py, seconds on a CPU) -- chosen over the Gaussians' median
depth because a CPU 3DGS fit takes minutes (outside the 30 s budget) and its depth measured
worse than the hull (spot: median splat depth after a 500-iteration CPU fit, IoU 0.88; hull
0.96). ``--depth none`` is the hull alone.

The fast path (``--mode fast``) ends with a short photometric polish of the fused field
(``--polish`` steps, default 100, of NeuS-style volume rendering of an SDF grid against the
views, kernels/mesh/neural_sdf.py ``POLISH``; ``--polish 0`` = the fused hull + depth field alone,
reported as ``polish_steps``). ``--mode neural`` runs that refinement to convergence and also
reports the fast path's own mesh from the same run (``fast``: chamfer, iou, fscore_001) so the
two can be compared side by side.

Chamfer noise floor: with 100k independent samples per mesh the metric of a mesh against
itself is ~0.0025 (sample spacing), which hides differences near the goal (0.003).
``chamfer`` keeps the SyncDreamer protocol (100k points); ``chamfer_hi`` repeats it with
``--points`` (default 1M) samples, and ``chamfer_floor``/``chamfer_floor_hi`` are the GT
mesh against itself at both sample counts (what a perfect reconstruction would score).

Shading (``--shading``, reported as ``shading``): the views are shaded view-independently by
one fixed light (kernels/mesh/render.py). ``ao`` (default): the light with cast shadows and
ambient occlusion, as a path tracer (and a generative model's views) shade an object; still
view independent. ``flat`` (the default before the fast path's photometric polish, kept for
comparison): no shadows, constant ambient, so on an untextured mesh every surface facing away
from the light is one flat grey that no photometric method can read depth from.

Renders ground-truth views + masks of the (normalised) mesh on the chosen orbit, hands the
pack's own fast path only images, masks and cameras (never ground-truth depth), and prints one
JSON object: chamfer, iou, fscore_001, wall_s and cpu_s (process CPU time: on a shared
machine wall time overstates; reconstruction, including the Gaussian fit for
``--source gaussians``), faces, watertight, peak_rss_mb, plus per-stage times. With open3d
importable, the same depth maps the pipeline fused (gaussians source) are also fused with
Open3D's UniformTSDFVolume and reported side by side; otherwise ``open3d`` says why it was
skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import torch

from . import peak_rss_mb

# the test meshes beside the checkout (``../shared/meshes``), where they are
DEFAULT_MESHES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "shared", "meshes")


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _open3d_tsdf(depths, rgb, cams, res: int) -> dict:
    try:
        import open3d as o3d
    except Exception as e:  # noqa: BLE001
        return {"skipped": f"open3d not importable ({type(e).__name__})"}
    import numpy as np

    t = time.time()
    vol = o3d.pipelines.integration.UniformTSDFVolume(
        length=1.2, resolution=res, sdf_trunc=3 * 1.2 / res,
        color_type=o3d.pipelines.integration.TSDFVolumeColorType.RGB8,
        origin=np.array([-0.6, -0.6, -0.6]))
    for i in range(len(cams)):
        K = cams.Ks[i].double().numpy()
        intr = o3d.camera.PinholeCameraIntrinsic(cams.width, cams.height, K[0, 0], K[1, 1],
                                                 K[0, 2] - 0.5, K[1, 2] - 0.5)
        col = o3d.geometry.Image((rgb[i].numpy() * 255).astype(np.uint8))
        dep = o3d.geometry.Image(depths[i].numpy().astype(np.float32))
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            col, dep, depth_scale=1.0, depth_trunc=10.0, convert_rgb_to_intensity=False)
        vol.integrate(rgbd, intr, cams.viewmats[i].double().numpy())
    m = vol.extract_triangle_mesh()
    return {"wall_s": time.time() - t, "mesh": m}


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m orbitforge.bench mesh", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mesh", default=None, help="ground-truth mesh (OBJ/PLY/GLB), or "
                    "zoo:NAME for a procedural zoo shape")
    ap.add_argument("--zoo", nargs="?", const="all", default=None,
                    help="run the procedural shape zoo (bench/zoo.py) plus the five shared "
                         "meshes of --meshes-dir; optionally a comma list of names")
    ap.add_argument("--meshes-dir", default=DEFAULT_MESHES_DIR,
                    help="folder with the shared test meshes for --zoo (skipped if absent)")
    ap.add_argument("--sheet", default="output/bench_mesh_zoo.png",
                    help="contact sheet PNG of --zoo (ground truth | ours, two views each)")
    ap.add_argument("--seed", type=int, default=0, help="zoo shape seed (0 = canonical)")
    ap.add_argument("--texture", choices=["none", "noise"], default="none",
                    help="--zoo: paint every shape with a seeded procedural albedo (noise) "
                         "before rendering, as generated views have texture; none = the "
                         "plain grey material (the shared meshes keep their own texture)")
    ap.add_argument("--views", type=int, default=21)
    ap.add_argument("--res", type=int, default=None,
                    help="view size in pixels (default 256; 128 with --degrade)")
    ap.add_argument("--degrade", choices=["generated"], default=None,
                    help="also reconstruct from views degraded the way generated orbits "
                         "disagree (bench/degrade.py) and report both side by side")
    ap.add_argument("--degrade-seed", type=int, default=0)
    ap.add_argument("--grid", type=int, default=128, help="voxel grid resolution")
    ap.add_argument("--depth", choices=["mvs", "none"], default="mvs",
                    help="depth source with --source images")
    ap.add_argument("--mvs-size", type=int, default=128, help="plane-sweep image size")
    ap.add_argument("--points", type=int, default=1_000_000,
                    help="surface samples for chamfer_hi (0 = skip)")
    ap.add_argument("--elevation", type=float, default=10.0)
    ap.add_argument("--orbit", choices=["static", "dynamic"], default="dynamic",
                    help="SV3D's dynamic orbit (seed 0, the default: SV3D's 3D setting) or the "
                         "static orbit (one ring at --elevation)")
    ap.add_argument("--radius", type=float, default=2.2,
                    help="camera distance (2.2 keeps a unit-box object inside the frame)")
    ap.add_argument("--source", choices=["images", "gaussians"], default="images")
    ap.add_argument("--fit-iters", type=int, default=300, help="3DGS iterations (gaussians)")
    ap.add_argument("--k", type=int, default=1, help="min_background_views")
    ap.add_argument("--silhouette-tolerance", type=float, default=None,
                    help="pixels of silhouette disagreement the hull forgives (default: "
                         "automatic, 1 when the views disagree, else 0)")
    ap.add_argument("--smooth", type=int, default=0, help="Taubin iterations")
    ap.add_argument("--faces", type=int, default=0, help="decimation target (0 = none)")
    ap.add_argument("--no-watertight", action="store_true")
    ap.add_argument("--mode", choices=["fast", "neural"], default="fast")
    ap.add_argument("--neural-iters", type=int, default=400, help="steps of --mode neural")
    ap.add_argument("--polish", type=int, default=None,
                    help="photometric polish steps of --mode fast (default: the pipeline's, "
                         "100; 0 = the fused hull + depth field alone)")
    ap.add_argument("--shading", choices=["ao", "flat"], default="ao",
                    help="ground-truth view shading: ao = one light with cast shadows and "
                         "ambient occlusion; flat = the same light, no shadows")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    return ap


def orbit_cameras(a):
    """The benchmark's cameras for arguments ``a`` (orbit, elevation, views, radius, res)."""
    from ..kernels.geometry.cameras import make_orbit_cameras, sv3d_dynamic_orbit, sv3d_static_orbit

    if a.orbit == "static":
        el, az = sv3d_static_orbit(a.elevation, a.views)
    else:
        el, az = sv3d_dynamic_orbit(a.elevation, a.views, seed=0)
    return el, make_orbit_cameras(el, az, a.radius, 33.8, a.res, a.res)


def run_one(gt, a, extra: bool = True, degrade: str | None = None) -> tuple[dict, object]:
    """Render ``gt`` (normalised here) on the orbit of ``a``, reconstruct with the pack's mesh
    path, evaluate; returns ``(result dict, (our mesh, gt, masks, cameras))``. ``extra``: the
    chamfer_hi / fast / open3d side results of the single-mesh run. ``degrade``: a preset of
    bench/degrade.py: the views are rendered degraded (and masked by thresholding), the
    pipeline still gets the nominal cameras."""
    from ..kernels.mesh.neural_sdf import POLISH
    from ..kernels.mesh.render import normalize_mesh, render_mesh
    from ..kernels.metrics import evaluate_mesh

    gt, _, _ = normalize_mesh(gt)
    el, cams = orbit_cameras(a)
    shade = a.shading == "ao"
    if degrade:
        from .degrade import preset, render_degraded

        images, masks, cams = render_degraded(gt, cams, a.degrade_seed, preset(degrade),
                                              occlusion=shade, shadows=shade)
    else:
        views = render_mesh(gt, cams, occlusion=shade, shadows=shade)
        images, masks = views["rgb"], views["mask"]  # ground-truth depth is NOT used

    t0 = time.time()
    c0 = _cpu_s()
    stages = {}
    depths = None
    if a.source == "gaussians":
        from ..kernels.mesh.pipeline import gaussians_depth
        from ..kernels.splat.fit import FitConfig, fit_gaussians

        cfg = FitConfig(iterations=a.fit_iters)
        res = fit_gaussians(images, cams, masks, cfg)
        stages["fit_s"] = time.time() - t0
        t1 = time.time()
        depths, _, _ = gaussians_depth(res.gaussians, cams)
        stages["depth_render_s"] = time.time() - t1
    t1 = time.time()
    from ..kernels.mesh.pipeline import reconstruct_mesh

    dsrc = "depth" if depths is not None else a.depth
    neural = None
    if a.mode == "neural":
        from ..kernels.mesh.neural_sdf import NeuralSDFConfig

        neural = NeuralSDFConfig(iterations=a.neural_iters)
    same = dict(images=images, depth_source=dsrc, depths=depths, mvs_size=a.mvs_size,
                min_background_views=a.k, keep_components=1, watertight=not a.no_watertight,
                target_faces=a.faces, smooth_iterations=a.smooth, polish_steps=a.polish,
                silhouette_tolerance=a.silhouette_tolerance)
    mesh = reconstruct_mesh(masks, cams, a.grid, timings=stages, mode=a.mode, neural=neural,
                            **same)
    stages["mesh_s"] = time.time() - t1
    wall = time.time() - t0
    cpu = _cpu_s() - c0
    q = evaluate_mesh(mesh, gt)
    if extra and a.points > 0:
        from ..kernels.metrics import chamfer

        q["chamfer_hi"] = chamfer(mesh, gt, n=a.points)
        q["chamfer_floor"] = chamfer(gt, gt, n=100_000)
        q["chamfer_floor_hi"] = chamfer(gt, gt, n=a.points)
    fast_q = None
    if extra and a.mode == "neural":  # the fast path's mesh from the same inputs
        fm = reconstruct_mesh(masks, cams, a.grid, **same)
        fq = evaluate_mesh(fm, gt)
        fast_q = {k: fq[k] for k in ("chamfer", "iou", "fscore_001")}
    out = {"source": a.source, "mode": a.mode, "views": a.views, "res": a.res,
           "grid": a.grid, "orbit": a.orbit, "shading": a.shading,
           "elevations": [round(float(e), 1) for e in el],
           "depth_source": "gaussians median" if depths is not None else a.depth,
           **{k: q[k] for k in ("chamfer_hi", "chamfer_floor", "chamfer_floor_hi") if k in q},
           "chamfer": q["chamfer"], "iou": q["iou"], "fscore_001": q["fscore_001"],
           "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "faces": len(mesh.faces),
           "watertight": bool(mesh.is_watertight), "peak_rss_mb": round(peak_rss_mb(), 1),
           "stages": {k: round(v, 3) for k, v in stages.items()},
           "silhouette_tolerance_px": mesh.metadata["silhouette_tolerance_px"],
           "silhouette_disagreement": mesh.metadata["silhouette_disagreement"],
           "threads": a.threads,
           "polish_steps": (None if a.mode == "neural" else
                            POLISH.iterations if a.polish is None else a.polish)}
    if fast_q is not None:
        out["fast"] = fast_q
        out["neural_iters"] = a.neural_iters
    if extra and depths is not None:
        o3 = _open3d_tsdf(depths, images, cams, a.grid)
        if "mesh" in o3:
            import numpy as np
            import trimesh

            m = o3["mesh"]
            tm = trimesh.Trimesh(np.asarray(m.vertices), np.asarray(m.triangles), process=True)
            if len(tm.faces):
                q3 = evaluate_mesh(tm, gt)
                out["open3d"] = {"wall_s": round(o3["wall_s"], 3), **q3,
                                 "watertight": bool(tm.is_watertight)}
            else:
                out["open3d"] = {"wall_s": round(o3["wall_s"], 3), "error": "empty mesh"}
        else:
            out["open3d"] = o3
    elif extra:
        out["open3d"] = {"skipped": "no depth maps are fused with --source images"}
    return out, (mesh, gt, masks, cams)


def main(argv=None) -> int:
    a = _parser().parse_args(argv)
    if a.res is None:
        a.res = 128 if a.degrade else 256
    torch.set_num_threads(a.threads)
    if a.zoo is not None:
        from .mesh_zoo import run_zoo

        print(json.dumps(run_zoo(a, run_one)))
        return 0
    if a.mesh is None:
        raise SystemExit("bench mesh: give --mesh PATH (or zoo:NAME) or --zoo")
    from .zoo import load_or_make

    _, gt = load_or_make(a.mesh, a.seed)
    if a.degrade:
        from ..kernels.metrics import roughness_deg

        both = {}
        for name, deg in (("clean", None), ("degraded", a.degrade)):
            r, (mesh, _, _, _) = run_one(gt, a, extra=False, degrade=deg)
            both[name] = {k: r[k] for k in ("chamfer", "iou", "fscore_001", "wall_s", "faces")}
            both[name]["roughness_deg"] = round(roughness_deg(mesh), 2)
        rc, rd = both["clean"]["roughness_deg"], both["degraded"]["roughness_deg"]
        out = {"mesh": a.mesh, "degrade": a.degrade, "degrade_seed": a.degrade_seed,
               "res": a.res, "grid": a.grid, "orbit": a.orbit, **both,
               "roughness_ratio": round(rd / max(rc, 1e-9), 3)}
        print(json.dumps(out))
        return 0
    out, _ = run_one(gt, a)
    out = {"mesh": a.mesh, **out}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
