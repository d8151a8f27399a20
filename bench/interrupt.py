"""``python -m orbitforge.bench interrupt``: how fast each long node stops after Cancel.

For each stage (the 3DGS fit, SDF Mesh in mode fast with its polish and in mode neural, the 4D
reconstruction, the SV3D sampler and the Diffusion² sampler) the node runs once to completion
while every interrupt check is time-stamped; the longest stretch without a check (node start and
end included) is the worst case a user can hit. Then the interrupt flag is raised from another
thread -- right after the check that opens that longest stretch, and at evenly spaced moments --
and the time from raising the flag to the node raising is measured. After every interrupted run
the output folder (``$ORBITFORGE_OUTPUT``, a temporary folder) must hold no file.

The flag is ComfyUI's own (``comfy.model_management.interrupt_current_processing``, what the
Cancel button sets; progress-bar updates check it as ComfyUI's server does) when ``$COMFYUI_PATH``
names a ComfyUI checkout, else the pack's fallback flag (``nodes.host.request_interrupt``). The
SV3D and Diffusion² nodes need ComfyUI's models (tiny random-weight ones, ``bench/tiny_comfy.py``);
without ComfyUI their kernel loops (``kernels.diffusion.edm.sample_euler`` and
``kernels.dynamic.diffusion2.sample_matrix``) run with a small stand-in denoiser instead, and the
JSON says so (``"what"``).

Target: <= 1 s everywhere on 2 CPU cores, judged on the node thread's CPU seconds (torch runs
with 1 thread here, so they equal the wall clock on an otherwise idle core; on a shared box the
wall clock is inflated by other processes' load -- both are reported, with the load average).
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import threading
import time

import torch

from . import pick, print_result

STAGES = ("fit", "sdf_mesh_fast", "sdf_mesh_neural", "recon4d", "sv3d_sampler", "diffusion2")
TARGET_S = 1.0


# ----------------------------------------------------------------------------------------------
# check tracing
# ----------------------------------------------------------------------------------------------


def _caller() -> str:
    """``file:line`` of the innermost pack frame that is not the host layer or this bench."""
    f, node = sys._getframe(2), None
    while f is not None:
        fn = f.f_code.co_filename.replace(os.sep, "/")
        where = f"{'/'.join(fn.split('/')[-2:])}:{f.f_lineno}"
        if "/kernels/" in fn and not fn.endswith("kernels/interrupt.py"):
            return where
        if node is None and "/nodes/" in fn and not fn.endswith("nodes/host/__init__.py") \
                and f.f_code.co_name != "<lambda>":
            node = where
        f = f.f_back
    return node or "comfy"


_MAIN_CLOCK = []


def main_cpu() -> float:
    """CPU seconds of the main thread (where the node runs), readable from any thread."""
    if not _MAIN_CLOCK:
        _MAIN_CLOCK.append(time.pthread_getcpuclockid(threading.main_thread().ident))
    return time.clock_gettime(_MAIN_CLOCK[0])


class CheckTrace:
    """Time-stamps every interrupt check (the fallback flag's ``is_set``, or ComfyUI's
    ``throw_exception_if_processing_interrupted``) while :attr:`on`."""

    def __init__(self):
        self.on = False
        self.reset()

    def reset(self):
        self.times: list = []
        self.cpu: list = []
        self.locs: list = []

    def hit(self):
        if self.on:
            self.times.append(time.perf_counter())
            self.cpu.append(main_cpu())
            self.locs.append(_caller())

    def gaps(self, t_start, t_end, c_start, c_end) -> dict:
        """Longest stretches without a check, from node start to node end: by wall clock and by
        the node thread's CPU time (what the wall clock would be on an otherwise idle core)."""
        ts = [t_start] + self.times + [t_end]
        cs = [c_start] + self.cpu + [c_end]
        locs = ["node start"] + self.locs + ["node end"]
        order = sorted(range(1, len(ts)), key=lambda i: cs[i - 1] - cs[i])
        k = order[0]
        top = [{"cpu_s": round(cs[i] - cs[i - 1], 4), "wall_s": round(ts[i] - ts[i - 1], 4),
                "from": locs[i - 1], "to": locs[i], "at_s": round(ts[i - 1] - t_start, 3)}
               for i in order[:5]]
        wall = max(ts[i] - ts[i - 1] for i in range(1, len(ts)))
        return {"max_gap_cpu_s": cs[k] - cs[k - 1], "max_gap_wall_s": wall,
                "gap_from": locs[k - 1], "gap_to": locs[k], "gap_start_s": ts[k - 1] - t_start,
                "checks": len(self.times), "top": top}


def install_trace(model_management) -> CheckTrace:
    from ..nodes import host

    trace = CheckTrace()
    if model_management is None:
        class TracedFlag(threading.Event):
            def is_set(self):
                trace.hit()
                return super().is_set()

        host._FALLBACK_FLAG = TracedFlag()
    else:
        real = model_management.throw_exception_if_processing_interrupted

        def traced():
            trace.hit()
            return real()

        model_management.throw_exception_if_processing_interrupted = traced
        import comfy.utils

        # ComfyUI's server checks the flag in every progress-bar update (main.py hijack_progress)
        comfy.utils.set_progress_bar_global_hook(
            lambda *a, **k: model_management.throw_exception_if_processing_interrupted())
    return trace


# ----------------------------------------------------------------------------------------------
# stages: each returns (description, run) where run() calls the node once
# ----------------------------------------------------------------------------------------------


def _sample(res: int):
    from ..kernels.sample import load_sample_orbit

    img, msk, cams = load_sample_orbit()
    if res and res != img.shape[1]:
        img = torch.nn.functional.interpolate(img.permute(0, 3, 1, 2), (res, res), mode="area"
                                              ).permute(0, 2, 3, 1).contiguous()
        msk = torch.nn.functional.interpolate(msk[:, None], (res, res), mode="area")[:, 0]
        cams = cams.resized(res, res)
    return img, msk, cams


def stage_fit(args, _ctx):
    from ..nodes.gaussians import GaussianReconstruct

    img, msk, cams = _sample(256)
    it = args.fit_iters
    return (f"Gaussian Reconstruct, sample orbit 21 x 256², {it} iterations",
            lambda: GaussianReconstruct().reconstruct(img, cams, it, 256, 0, 0, mask=msk))


def stage_sdf_mesh(mode):
    def build(args, _ctx):
        from ..nodes.mesh import SDFMesh

        img, msk, cams = _sample(256)
        r = args.mesh_res
        n = args.neural_iters

        def run():
            return SDFMesh().build(cams, r, mode, 1, True, 20000, 2, "vertex", 256, images=img,
                                   masks=msk, neural_iterations=n, polish_steps=100)
        what = "polish 100 steps" if mode == "fast" else f"{n} neural iterations"
        return f"SDF Mesh mode {mode}, sample orbit 21 x 256², grid {r}, {what}", run
    return build


def stage_recon4d(args, _ctx):
    from ..nodes.gaussians4d import Gaussian4DReconstruct

    img, msk, cams = _sample(128)
    keep = list(range(0, 21, 3))  # 7 views
    n_times = 3
    views = img[keep].repeat_interleave(n_times, 0)  # [V*F, H, W, 3] view-major
    masks = msk[keep].repeat_interleave(n_times, 0)
    c = cams[keep]
    it, wit = args.fit_iters, max(args.fit_iters // 3, 1)
    return (f"Gaussian 4D Reconstruct, 7 views x {n_times} times at 128², {it} + 2 x {wit} "
            "iterations, SSIM confidence, PLY sequence written",
            lambda: Gaussian4DReconstruct().reconstruct(views, c, n_times, it, wit, 0.02, "ssim",
                                                        128, 0, 0, "orbitforge/4d/seq",
                                                        mask=masks))


class _StandIn(torch.nn.Module):
    """A small random conv net as a latent denoiser (kernel paths without ComfyUI's models)."""

    def __init__(self, ch=4, width=64):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(ch, width, 3, padding=1), torch.nn.SiLU(),
                                       torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.SiLU(),
                                       torch.nn.Conv2d(width, ch, 3, padding=1))

    @torch.no_grad()
    def forward(self, x, sigma):
        shp = x.shape
        y = self.net(x.reshape((-1,) + tuple(shp[-3:])).float()).reshape(shp)
        return x / (1 + float(sigma) ** 2) ** 0.5 + 0.1 * y


def _tiny_models(ctx):
    if "models" not in ctx:
        from .tiny_comfy import tiny_clip_vision, tiny_vae, tiny_video_model

        folder = tempfile.mkdtemp(prefix="orbitforge_cv_")
        ctx["tmp"].append(folder)
        ctx["models"] = {"sv3d_p": tiny_video_model("sv3d_p", seed=5, context_dim=1024),
                         "svd": tiny_video_model("svd", seed=0, context_dim=1024),
                         "clip_vision": tiny_clip_vision(folder, projection_dim=1024),
                         "vae": tiny_vae(64)}
    return ctx["models"]


def _image(size=64):
    img = torch.ones(1, size, size, 4)
    img[0, size // 4:3 * size // 4, size // 3:2 * size // 3, :3] = torch.tensor([0.8, 0.2, 0.1])
    img[0, ..., 3] = 0.0
    img[0, size // 4:3 * size // 4, size // 3:2 * size // 3, 3] = 1.0
    return img


def stage_sv3d(args, ctx):
    from ..nodes import host

    steps = args.steps
    if ctx["model_management"] is not None:
        from ..nodes.sv3d import SV3DSampler

        m = _tiny_models(ctx)
        return (f"SV3D Sampler (ComfyUI, tiny SV3D_p), 21 frames at 64², {steps} steps, "
                "HarmonyView",
                lambda: SV3DSampler().run(m["sv3d_p"], m["clip_vision"], m["vae"], _image(), 64,
                                          64, 21, "static", 10.0, 1e-5, 0.85, 0, steps,
                                          "harmonyview", 1.0, 2.5, 2.0, 1.0, 5, True))
    from ..kernels.diffusion import edm

    net = _StandIn()

    def run():
        sig = edm.edm_sigmas(steps, 0.002, 700.0)
        x = edm.initial_noise((21, 4, 72, 72), float(sig[0]), torch.Generator().manual_seed(0))
        prog = host.Progress(steps)
        return edm.sample_euler(net, x, sig, callback=lambda i, *_: prog.update(i + 1))
    return ("kernels.diffusion.edm.sample_euler (stand-in denoiser, no ComfyUI), 21 x 4 x 72², "
            f"{steps} steps", run)


def stage_diffusion2(args, ctx):
    from ..nodes import host

    steps = args.steps
    if ctx["model_management"] is not None:
        from ..nodes.diffusion2 import Diffusion2Sampler

        m = _tiny_models(ctx)
        kw = dict(video_model=m["svd"], multiview_model=m["sv3d_p"],  # noqa: C408
                  clip_vision=m["clip_vision"], vae=m["vae"], prompt=_image()[..., :3],
                  prompt_type="image", views=4, frames=4, size=64, elevation=10.0,
                  multiview_cfg=2.5, video_cfg_min=1.5, video_cfg_max=3.0, motion_bucket_id=127,
                  fps=25, video_cond_aug=0.02, multiview_cond_aug=1e-5,
                  lambda_schedule="constant", lambda_value=0.6, logistic_k=15.0,
                  view_weight_min=0.25, steps=steps, vrs_steps=1, seed=0)
        return (f"Diffusion² Sampler (ComfyUI, tiny SVD + SV3D_p), 4 x 4 at 64², {steps} steps",
                lambda: Diffusion2Sampler().run(**kw))
    from ..kernels.diffusion import edm
    from ..kernels.dynamic.diffusion2 import lambda_schedule, sample_matrix, view_weights

    net = _StandIn()
    n_views, n_frames = 8, 8

    def fn(x, sigma, idx):  # [n, L, 4, h, w]
        return net(x, sigma)

    def run():
        sig = edm.edm_sigmas(steps, 0.002, 700.0)
        x = edm.initial_noise((n_views, n_frames, 4, 72, 72), float(sig[0]),
                              torch.Generator().manual_seed(0))
        lams = lambda_schedule(steps)
        prog = host.Progress(steps + 1)
        return sample_matrix(x, sig, fn, fn, view_weights(n_views), lams, vrs_steps=1,
                             column_chunk=2, row_chunk=2,
                             generator=torch.Generator().manual_seed(1),
                             callback=lambda k, *_: prog.update(k))
    return (f"kernels.dynamic.diffusion2.sample_matrix (stand-in denoiser, no ComfyUI), "
            f"{n_views} x {n_frames} x 4 x 72², {steps} steps", run)


BUILDERS = {"fit": stage_fit, "sdf_mesh_fast": stage_sdf_mesh("fast"),
            "sdf_mesh_neural": stage_sdf_mesh("neural"), "recon4d": stage_recon4d,
            "sv3d_sampler": stage_sv3d, "diffusion2": stage_diffusion2}


# ----------------------------------------------------------------------------------------------
# measurement
# ----------------------------------------------------------------------------------------------


def _files(folder: str) -> list:
    return sorted(os.path.relpath(os.path.join(r, f), folder)
                  for r, _d, fs in os.walk(folder) for f in fs)


def _clear(folder: str) -> None:
    for name in os.listdir(folder):
        p = os.path.join(folder, name)
        shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)


def _raised_at(exc) -> str:
    """``file:line`` of the innermost pack frame of an exception's traceback."""
    import traceback

    where = "?"
    for fr in traceback.extract_tb(exc.__traceback__):
        fn = fr.filename.replace(os.sep, "/")
        if ("/kernels/" in fn or "/nodes/" in fn) and not fn.endswith("kernels/interrupt.py") \
                and not fn.endswith("nodes/host/__init__.py"):
            where = f"{'/'.join(fn.split('/')[-2:])}:{fr.lineno}"
    return where


def interrupted_run(run, delay: float, out: str) -> dict:
    """Run once, raising the flag ``delay`` s after the start; latency = flag -> exception."""
    from ..nodes import host

    excs = host.interrupt_exceptions()
    host.request_interrupt(False)
    fired = {}

    def fire():
        fired["c"], fired["t"] = main_cpu(), time.perf_counter()
        host.request_interrupt(True)

    timer = threading.Timer(delay, fire)
    timer.start()
    try:
        run()
        t1, c1, raised = time.perf_counter(), main_cpu(), False
    except excs as e:
        t1, c1, raised = time.perf_counter(), main_cpu(), True
        fired["where"] = _raised_at(e)
    finally:
        timer.cancel()
    host.request_interrupt(False)
    left = _files(out)
    _clear(out)
    if "t" not in fired:  # finished before the flag went up: no measurement
        return {"delay_s": round(delay, 3), "finished_first": True, "files_left": left}
    res = {"delay_s": round(delay, 3), "latency_s": round(t1 - fired["t"], 4),
           "latency_cpu_s": round(c1 - fired["c"], 4), "raised": raised, "files_left": left}
    if raised:
        res["raised_at"] = fired.get("where")
    if not raised:
        res["note"] = "node returned after the flag (the next node's check would stop the run)"
    return res


def measure(name, run, trace: CheckTrace, out: str, probes: int) -> dict:
    from ..nodes import host

    host.request_interrupt(False)
    trace.reset()
    trace.on = True
    t0, c0 = time.perf_counter(), main_cpu()
    run()
    t1, c1 = time.perf_counter(), main_cpu()
    trace.on = False
    total = t1 - t0
    gaps = trace.gaps(t0, t1, c0, c1)
    written = _files(out)
    _clear(out)
    delays = [gaps["gap_start_s"] + 0.01] + [total * (k + 1) / (probes + 1) for k in range(probes)]
    trace.on = False
    runs = [interrupted_run(run, d, out) for d in delays]
    lat = [r["latency_s"] for r in runs if "latency_s" in r]
    lat_cpu = [r["latency_cpu_s"] for r in runs if "latency_cpu_s" in r]
    worst = max(lat) if lat else None
    worst_cpu = max(lat_cpu) if lat_cpu else None
    ok = (gaps["max_gap_cpu_s"] <= TARGET_S and worst_cpu is not None and worst_cpu <= TARGET_S
          and all(r.get("raised", True) and not r["files_left"] for r in runs))
    return {"uninterrupted_s": round(total, 3), "uninterrupted_cpu_s": round(c1 - c0, 3),
            "files_written_uninterrupted": len(written),
            "checks": gaps["checks"], "max_check_gap_cpu_s": round(gaps["max_gap_cpu_s"], 4),
            "max_check_gap_wall_s": round(gaps["max_gap_wall_s"], 4),
            "max_gap_between": [gaps["gap_from"], gaps["gap_to"]],
            "max_gap_starts_at_s": round(gaps["gap_start_s"], 3),
            "longest_gaps": gaps["top"],
            "max_latency_s": None if worst is None else round(worst, 4),
            "max_latency_cpu_s": None if worst_cpu is None else round(worst_cpu, 4),
            "probes": runs, "ok": bool(ok)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orbitforge.bench interrupt", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma list of {STAGES}")
    ap.add_argument("--probes", type=int, default=3,
                    help="evenly spaced interrupts per stage (plus one at the longest gap)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a shared 2-core box more threads spin-wait; "
                    "1 is the slower, conservative case; 0 = torch's default)")
    ap.add_argument("--fit-iters", type=int, default=150)
    ap.add_argument("--mesh-res", type=int, default=128)
    ap.add_argument("--neural-iters", type=int, default=150)
    ap.add_argument("--steps", type=int, default=8, help="sampler steps")
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    args = ap.parse_args(argv)
    stages = pick(args.stages, STAGES, "stage")
    if args.threads:
        torch.set_num_threads(args.threads)
    # one-time imports a first run would otherwise time (torch.optim imports torch._dynamo on
    # its first optimiser, ~3 s, once per process; ComfyUI has done so before any node runs)
    importlib.import_module("torch._dynamo")

    from ..nodes import host
    from . import tiny_comfy

    model_management = tiny_comfy.load_comfyui()
    trace = install_trace(model_management)
    out = tempfile.mkdtemp(prefix="orbitforge_interrupt_")
    saved = os.environ.get("ORBITFORGE_OUTPUT")
    os.environ["ORBITFORGE_OUTPUT"] = out
    ctx = {"model_management": model_management, "tmp": [out]}
    result = {"mechanism": host.interrupt_mechanism(),
              "flag": ("comfy.model_management.interrupt_current_processing"
                       if model_management is not None
                       else "orbitforge nodes.host.request_interrupt (fallback, no ComfyUI)"),
              "threads": torch.get_num_threads(), "target_s": TARGET_S,
              "target_on": "node-thread CPU seconds (= wall seconds on an idle core)",
              "loadavg_start": [round(v, 2) for v in os.getloadavg()], "stages": {}}
    try:
        for s in stages:
            what, run = BUILDERS[s](args, ctx)
            r = measure(s, run, trace, out, args.probes)
            r = {"what": what, **r}
            result["stages"][s] = r
            if not args.json:
                print(f"{s}: gap {r['max_check_gap_cpu_s']} s cpu / {r['max_check_gap_wall_s']} s "
                      f"wall, latency {r['max_latency_cpu_s']} s cpu / {r['max_latency_s']} s "
                      f"wall, ok {r['ok']}", file=sys.stderr)
    finally:
        if saved is None:
            os.environ.pop("ORBITFORGE_OUTPUT", None)
        else:
            os.environ["ORBITFORGE_OUTPUT"] = saved
        for p in ctx["tmp"]:
            shutil.rmtree(p, ignore_errors=True)
    result["ok"] = all(r["ok"] for r in result["stages"].values())
    result["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    print_result(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
