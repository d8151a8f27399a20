"""Writes the shipped ComfyUI workflows (UI format, schema 0.4) into this folder.

This folder is ``example_workflows/``: ComfyUI's Templates browser lists every ``*.json`` in a
custom node's ``example_workflows/`` (with the same-name ``.jpg`` as its thumbnail).

    python example_workflows/make_workflows.py            # all *.json
    python example_workflows/make_workflows.py --check    # exit 1 when a file differs

The graphs are built from the node schemas (the pack's INPUT_TYPES and
orbitforge/workflow_tools/core_schemas*.json), so every ``widgets_values`` list is in the order the
ComfyUI frontend creates widgets (see ``orbitforge.workflow_tools.schema.widget_layout``; the
builder is ``orbitforge.workflow_tools.graph.WorkflowBuilder``). Edit the graphs here, not the JSON
by hand;
``python -m orbitforge check-workflow example_workflows/*.json`` validates the result against
every host snapshot. Thumbnails (.jpg) are made by ``example_workflows/make_thumbnails.py``.
"""

from __future__ import annotations

import json
import os
import sys

from orbitforge.workflow_tools.graph import WorkflowBuilder
from orbitforge.workflow_tools.schema import Schemas

HERE = os.path.dirname(os.path.abspath(__file__))

NOTE_COLOR, NOTE_BG = "#432", "#653"
GROUP_COLORS = {"input": "#3f789e", "views": "#8A8", "3d": "#b06634", "mesh": "#a1309b",
                "preview": "#88A", "4d": "#b58b2a"}


# Node modules the workflows use beyond the registered ones (new modules awaiting registration
# are picked up here too, so the JSON can be written before nodes/__init__.py lists them).
EXTRA_MODULES = ("sample", "diffusion2", "gaussians4d")


def node_classes() -> dict:
    import importlib  # noqa: PLC0415

    from orbitforge.nodes import NODE_CLASS_MAPPINGS  # noqa: PLC0415

    classes = dict(NODE_CLASS_MAPPINGS)
    for mod in EXTRA_MODULES:
        try:
            classes.update(importlib.import_module(f"orbitforge.nodes.{mod}").NODE_CLASS_MAPPINGS)
        except ImportError:
            pass
    return classes


# Save Mesh / Save Gaussians carry the inline 3D viewer (web/preview3d.js): room for it.
SAVE_3D_SIZE = (340, 380)


class Graph(WorkflowBuilder):
    """A shipped workflow: the pack's builder over the registered nodes plus EXTRA_MODULES."""

    def __init__(self, title: str):
        super().__init__(title, Schemas(node_classes(), None))

    def note(self, text: str, pos, size=(420, 300), title: str = "Read me"):
        return super().note(text, pos, size, title, color=NOTE_COLOR, bgcolor=NOTE_BG)

    # The nodes several workflows share, with the settings they ship with (one place each).
    def image_and_sv3d(self, y: int) -> tuple:
        """The object photo (LoadImage) and the SV3D_p checkpoint below it, at x = 20."""
        img = self.node("LoadImage", (20, y), (320, 340), image="example.png")
        ckpt = self.node("ImageOnlyCheckpointLoader", (20, y + 390), (320, 100),
                         ckpt_name="sv3d_p.safetensors")
        return img, ckpt

    def reconstruct(self, pos, iterations: int = 1000, resolution: int = 256) -> dict:
        return self.node("OrbitForgeGaussianReconstruct", pos, (340, 330), iterations=iterations,
                         resolution=resolution, sh_degree=1, seed=0, background="1, 1, 1",
                         mask_weight=0.1, view_weights="")

    def render(self, pos, width: int) -> dict:
        return self.node("OrbitForgeGaussianRender", pos, (width, 160), depth_mode="median",
                         background="1, 1, 1")

    def save_webp(self, pos, width: int, title: str, prefix: str, fps: float) -> dict:
        return self.node("SaveAnimatedWEBP", pos, (width, 380), title, filename_prefix=prefix,
                         fps=fps, lossless=False, quality=90, method="default")

    def mesh_nodes(self, x: int, resolution: int, min_background_views: int, prefix: str,
                   preview_height: int) -> tuple:
        """SDF Mesh -> Save Mesh (GLB) -> Preview 3D, in a column at ``x``; linked by
        :meth:`link_mesh`."""
        sdf = self.node("OrbitForgeSDFMesh", (x, 20), (340, 380), resolution=resolution,
                        mode="fast", min_background_views=min_background_views, watertight=True,
                        target_faces=0, smooth_iterations=5, color="vertex", texture_size=1024)
        save_mesh = self.node("OrbitForgeSaveMesh", (x, self.below(sdf)), SAVE_3D_SIZE,
                              filename_prefix=prefix, format="glb")
        p3d = self.node("Preview3D", (x, self.below(save_mesh)), (340, preview_height))
        return sdf, save_mesh, p3d

    def link_mesh(self, orbit: dict, recon: dict, mesh: tuple, masks: bool = False) -> None:
        """The views and cameras (and masks) of ``orbit`` and the Gaussians of ``recon`` into the
        nodes of :meth:`mesh_nodes`, and on to the saved file and its preview."""
        sdf, save_mesh, p3d = mesh
        self.link(orbit, "cameras", sdf, "cameras")
        self.link(orbit, "views", sdf, "images")
        if masks:
            self.link(orbit, "masks", sdf, "masks")
        self.link(recon, "gaussians", sdf, "gaussians")
        self.link(sdf, "mesh", save_mesh, "mesh")
        self.link(save_mesh, "model_file", p3d, "model_file")


# SV3D's static orbit at its training size (SV3D Sampler and SV3D Orbit take the same widgets).
SV3D_ORBIT = {"width": 576, "height": 576, "frames": 21, "orbit": "static", "elevation": 10.0,
              "cond_aug": 1e-5, "object_scale": 0.85, "orbit_seed": 0}


# ----------------------------------------------------------------------------------------------
# Notes
# ----------------------------------------------------------------------------------------------

MODELS_SV3D = """\
**Model files** (ComfyUI `models/` folder):

| file | folder | from |
|---|---|---|
| `sv3d_p.safetensors` | `models/checkpoints/` | huggingface.co/stabilityai/sv3d (gated: accept the licence) |

`sv3d_u.safetensors` also works but ignores the orbit (fixed cameras)."""

MODELS_REFINER = """\
| `second_stage.safetensors` (or Hi3D's `second_stage.pt`) | `models/orbitforge_refiner/` | Hi3D stage 2 (huggingface.co/hbyang/Hi3D); convert the .pt once with `python -m orbitforge convert-hi3d second_stage.pt second_stage.safetensors` |"""

MODELS_D2 = """\
**Model files** (ComfyUI `models/` folder):

| file | folder | from |
|---|---|---|
| `sv3d_p.safetensors` | `models/checkpoints/` | huggingface.co/stabilityai/sv3d (gated) |
| `svd_xt.safetensors` | `models/checkpoints/` | huggingface.co/stabilityai/stable-video-diffusion-img2vid-xt (gated) |"""


# ----------------------------------------------------------------------------------------------
# The workflows
# ----------------------------------------------------------------------------------------------

def sample_views_to_mesh() -> Graph:
    """Reconstruction only: the bundled sample orbit -> 3D Gaussians (PLY) + mesh (GLB). CPU, no
    model files."""
    g = Graph("orbitforge_sample_views_to_mesh")
    note = g.note(
        "# Views -> Gaussians -> mesh (no model files)\n\n"
        "Runs on the **CPU** with the bundled sample: 21 views of *spot* (Keenan Crane, public "
        "domain) on SV3D's orbit, with masks and exact cameras. Nothing to download.\n\n"
        "**Model files: none.**\n\n"
        "1. *Load Sample Orbit* gives views, masks and cameras (replace it with an SV3D orbit, or "
        "your own views + *Load Cameras JSON*).\n"
        "2. *Gaussian Reconstruct* fits 3D Gaussians (300 steps at 128 px: about a minute on a "
        "CPU; raise iterations to 1000-3000 and resolution to 256 for a sharper result).\n"
        "3. *Save Gaussians PLY* writes `output/orbitforge/sample_splat_00001.ply` (open it in "
        "any 3DGS viewer).\n"
        "4. *SDF Mesh* carves a watertight, vertex-coloured mesh; *Save Mesh* writes "
        "`output/orbitforge/sample_mesh_00001_.glb`, shown in its own viewer and by *Preview 3D*.\n"
        "5. *Gaussian Render* at the in-between cameras shows views the fit never saw "
        "(a turntable of the splat).",
        (20, 20), (440, 470))
    load = g.node("OrbitForgeLoadSampleOrbit", (20, 540), (300, 110), frames=21)
    views_prev = g.node("PreviewImage", (20, 720), (300, 320), "Input views")
    recon = g.reconstruct((500, 20), iterations=300, resolution=128)
    save_ply = g.node("OrbitForgeSaveGaussians", (500, g.below(recon)), SAVE_3D_SIZE,
                      filename_prefix="orbitforge/sample_splat")
    fit_prev = g.node("PreviewImage", (500, g.below(save_ply)), (340, 320),
                      "Fit at the training cameras")
    mesh = g.mesh_nodes(890, 128, 1, "orbitforge/sample_mesh", 400)
    interp = g.node("OrbitForgeInterpolateCameras", (1280, 20), (320, 130), per_gap=1,
                    closed=True)
    render = g.render((1280, g.below(interp)), 320)
    turn_prev = g.node("PreviewImage", (1280, g.below(render)), (320, 320),
                       title="Splat turntable (unseen in-between views)")
    plot_prev = g.node("PreviewImage", (1280, g.below(turn_prev)), (320, 320), "Camera path")

    g.link(load, "views", views_prev, "images")
    g.link(load, "views", recon, "views")
    g.link(load, "cameras", recon, "cameras")
    g.link(load, "masks", recon, "mask")
    g.link(recon, "gaussians", save_ply, "gaussians")
    g.link(recon, "renders", fit_prev, "images")
    g.link_mesh(load, recon, mesh, masks=True)
    g.link(load, "cameras", interp, "cameras")
    g.link(recon, "gaussians", render, "gaussians")
    g.link(interp, "cameras", render, "cameras")
    g.link(render, "image", turn_prev, "images")
    g.link(interp, "path_plot", plot_prev, "images")
    g.group("Input (bundled sample)", [load, views_prev], GROUP_COLORS["input"])
    g.group("3D Gaussians", [recon, save_ply, fit_prev], GROUP_COLORS["3d"])
    g.group("Mesh", list(mesh), GROUP_COLORS["mesh"])
    g.group("Previews", [interp, render, turn_prev, plot_prev], GROUP_COLORS["preview"])
    del note
    return g


def image_to_mesh_sv3d() -> Graph:
    """One image -> SV3D orbit with HarmonyView guidance -> 3DGS -> SDF mesh -> GLB."""
    g = Graph("orbitforge_image_to_mesh_sv3d")
    g.note(
        "# Image -> 3D mesh (SV3D + HarmonyView + 3DGS + SDF mesh)\n\n"
        + MODELS_SV3D + "\n\n"
        "**Input:** an object photo in `input/` (RGBA, or any image: LoadImage's alpha becomes "
        "the mask; a plain background works when it is uniform).\n\n"
        "1. *SV3D Sampler* generates 21 views on SV3D's static orbit (576 px, 50 Euler steps) "
        "with **HarmonyView** guidance (s1 = 2 consistency, s2 = 1 diversity); set *guidance* to "
        "`triangle` for the official SV3D CFG. About 1-2 min on a 24 GB GPU.\n"
        "2. *Gaussian Reconstruct* fits 3D Gaussians to the views with their exact cameras "
        "(1000 steps at 256 px; seconds on a GPU).\n"
        "3. *SDF Mesh* carves a watertight coloured mesh from the Gaussians' alpha and depth; "
        "*Save Mesh* writes a GLB (shown in *Preview 3D*).\n"
        "4. The splat is saved as a 3DGS PLY and rendered on a 36-frame turntable.",
        (20, 20), (460, 560))
    img, ckpt = g.image_and_sv3d(630)
    sv3d = g.node("OrbitForgeSV3DSampler", (520, 20), (360, 560), **SV3D_ORBIT, steps=50,
                  guidance="harmonyview", min_cfg=1.0, max_cfg=2.5, s1=2.0, s2=1.0, seed=23,
                  restore_input_view=True)
    views_prev = g.node("PreviewImage", (520, 630), (360, 360), "SV3D orbit views")
    views_save = g.save_webp((520, 1040), 360, "Orbit video", "orbitforge/orbit", 10.0)
    recon = g.reconstruct((920, 20))
    save_ply = g.node("OrbitForgeSaveGaussians", (920, g.below(recon)), SAVE_3D_SIZE,
                      filename_prefix="orbitforge/splat")
    mesh = g.mesh_nodes(1300, 192, 2, "orbitforge/mesh", 420)
    orbit = g.node("OrbitForgeOrbitCameras", (920, g.below(save_ply)), (340, 390),
                   "Turntable cameras",
                   orbit="uniform", frames=36, elevation=10.0, fov=33.8, width=512, height=512,
                   seed=0, elevations="10", keyframes="0, 0, 0; 20, 30, 340")
    render = g.render((1680, 20), 320)
    turn = g.save_webp((1680, 230), 320, "Splat turntable", "orbitforge/turntable", 12.0)
    plot_prev = g.node("PreviewImage", (1680, 660), (320, 320), "Camera path")

    g.link(ckpt, "MODEL", sv3d, "model")
    g.link(ckpt, "CLIP_VISION", sv3d, "clip_vision")
    g.link(ckpt, "VAE", sv3d, "vae")
    g.link(img, "IMAGE", sv3d, "image")
    g.link(img, "MASK", sv3d, "mask")
    g.link(sv3d, "views", views_prev, "images")
    g.link(sv3d, "views", views_save, "images")
    g.link(sv3d, "views", recon, "views")
    g.link(sv3d, "cameras", recon, "cameras")
    g.link(recon, "gaussians", save_ply, "gaussians")
    g.link_mesh(sv3d, recon, mesh)
    g.link(recon, "gaussians", render, "gaussians")
    g.link(orbit, "cameras", render, "cameras")
    g.link(render, "image", turn, "images")
    g.link(orbit, "path_plot", plot_prev, "images")
    g.group("Input", [img, ckpt], GROUP_COLORS["input"])
    g.group("SV3D orbit (HarmonyView)", [sv3d, views_prev, views_save], GROUP_COLORS["views"])
    g.group("3D Gaussians", [recon, save_ply, orbit], GROUP_COLORS["3d"])
    g.group("Mesh", list(mesh), GROUP_COLORS["mesh"])
    g.group("Turntable", [render, turn, plot_prev], GROUP_COLORS["preview"])
    return g


def image_to_hires_views() -> Graph:
    """One image -> SV3D orbit (modular: conditioning + HarmonyView GUIDER + SamplerCustomAdvanced)
    -> 3DGS depth -> Hi3D depth-conditioned refiner -> 1024 px views."""
    g = Graph("orbitforge_image_to_hires_views")
    g.note(
        "# Image -> high-resolution orbit views (SV3D + depth-conditioned refiner)\n\n"
        + MODELS_SV3D.replace("`sv3d_u.safetensors` also works but ignores the orbit (fixed "
                              "cameras).", "")
        + "\n" + MODELS_REFINER + "\n\n"
        "Without the Hi3D file, connect the SV3D MODEL to the refiner instead: it then runs the "
        "*anchored* mode (no depth; the `mode` output says which ran).\n\n"
        "1. *SV3D Orbit* builds SV3D's conditioning and cameras; *HarmonyView Guider* + core "
        "*SamplerCustomAdvanced* sample 21 views at 576 px (Karras sigmas 700 -> 0.002, rho 7, "
        "50 Euler steps: SV3D's official schedule).\n"
        "2. A quick 3DGS fit of the views gives multi-view-consistent depth (*Gaussian "
        "Render*, median depth).\n"
        "3. *Depth-Conditioned Refiner* (Hi3D stage 2) re-generates the orbit at 1024 px "
        "conditioned on views + depth (25 steps). Needs ~40 GB of GPU memory at 1024 px for 21 "
        "frames; lower *target_size* to 768 or 512 on smaller GPUs.",
        (20, 20), (480, 640))
    img, ckpt = g.image_and_sv3d(710)
    cond = g.node("OrbitForgeSV3DOrbit", (540, 20), (340, 330), **SV3D_ORBIT)
    guider = g.node("OrbitForgeHarmonyViewGuider", (540, 400), (340, 290), mode="harmonyview",
                    s1=2.0, s2=1.0, concat_scale=4.0, schedule="constant", min_cfg=1.0,
                    max_cfg=2.5)
    noise = g.node("RandomNoise", (540, 740), (340, 110), noise_seed=23)
    sampler = g.node("KSamplerSelect", (540, 900), (340, 80), sampler_name="euler")
    sigmas = g.node("KarrasScheduler", (540, 1030), (340, 160), steps=50, sigma_max=700.0,
                    sigma_min=0.002, rho=7.0)
    sample = g.node("SamplerCustomAdvanced", (920, 20), (300, 120))
    decode = g.node("VAEDecode", (920, 190), (300, 60))
    low_prev = g.node("PreviewImage", (920, 300), (300, 320), "SV3D views (576 px)")
    recon = g.reconstruct((1260, 20))
    render = g.render((1260, g.below(recon)), 340)
    depth_prev = g.node("PreviewImage", (1260, g.below(render)), (340, 320), "3DGS depth")
    loader = g.node("OrbitForgeLoadRefiner", (1640, 20), (360, 90),
                    ckpt_name="second_stage.safetensors")
    refine = g.node("OrbitForgeDepthRefiner", (1640, 160), (360, 470), target_size=1024,
                    steps=25, cfg_min=1.0, cfg_max=2.0, anchor_strength=1.0, cond_aug=0.02,
                    seed=0, elevation=10.0, depth_kind="near_bright", vae_chunk=4)
    save = g.node("SaveImage", (2040, 20), (360, 380), "High-resolution views",
                  filename_prefix="orbitforge/hires/view")
    save_webp = g.save_webp((2040, 450), 360, "High-resolution orbit", "orbitforge/hires/orbit",
                            10.0)

    g.link(ckpt, "CLIP_VISION", cond, "clip_vision")
    g.link(ckpt, "VAE", cond, "vae")
    g.link(img, "IMAGE", cond, "image")
    g.link(img, "MASK", cond, "mask")
    g.link(ckpt, "MODEL", guider, "model")
    g.link(cond, "positive", guider, "positive")
    g.link(noise, "NOISE", sample, "noise")
    g.link(guider, "guider", sample, "guider")
    g.link(sampler, "SAMPLER", sample, "sampler")
    g.link(sigmas, "SIGMAS", sample, "sigmas")
    g.link(cond, "latent", sample, "latent_image")
    g.link(sample, "output", decode, "samples")
    g.link(ckpt, "VAE", decode, "vae")
    g.link(decode, "IMAGE", low_prev, "images")
    g.link(decode, "IMAGE", recon, "views")
    g.link(cond, "cameras", recon, "cameras")
    g.link(recon, "gaussians", render, "gaussians")
    g.link(cond, "cameras", render, "cameras")
    g.link(render, "depth", depth_prev, "images")
    g.link(loader, "model", refine, "model")
    g.link(ckpt, "CLIP_VISION", refine, "clip_vision")
    g.link(ckpt, "VAE", refine, "vae")
    g.link(decode, "IMAGE", refine, "views")
    g.link(cond, "input_view", refine, "input_image")
    g.link(cond, "cameras", refine, "cameras")
    g.link(render, "depth", refine, "depth")
    g.link(refine, "views", save, "images")
    g.link(refine, "views", save_webp, "images")
    g.group("Input", [img, ckpt], GROUP_COLORS["input"])
    g.group("SV3D orbit (HarmonyView guider)", [cond, guider, noise, sampler, sigmas],
            GROUP_COLORS["views"])
    g.group("Sample + decode", [sample, decode, low_prev], GROUP_COLORS["views"])
    g.group("Depth from 3D Gaussians", [recon, render, depth_prev], GROUP_COLORS["3d"])
    g.group("Hi3D depth-conditioned refiner", [loader, refine], GROUP_COLORS["mesh"])
    g.group("Save", [save, save_webp], GROUP_COLORS["preview"])
    return g


def image_to_4d() -> Graph:
    """One image -> Diffusion² V x F matrix (SVD-XT x SV3D_p) -> 4D Gaussians (PLY sequence)."""
    g = Graph("orbitforge_image_to_4d")
    g.note(
        "# Image -> 4D (Diffusion² + 4D Gaussian reconstruction)\n\n" + MODELS_D2 + "\n\n"
        "**Input:** an object photo in `input/` (first frame of the motion).\n\n"
        "1. *Diffusion² Sampler* makes a reference orbit (SV3D_p) and a reference video "
        "(SVD-XT) from the image, then samples the V x F matrix (views x frames) with both "
        "models composed in x0 space. Defaults are small (8 views x 8 frames at 576 px) so it fits "
        "a 24 GB GPU; the paper uses 21 x 25.\n"
        "2. *4D Gaussian Reconstruct* fits one Gaussian scene per frame (the first fully, the "
        "rest warm-started) and writes a PLY per frame under `output/orbitforge/4d/`.\n"
        "3. *Gaussian Sequence Frame* picks one frame as an ordinary SPLAT (save it, mesh it, "
        "render it, also with core splat nodes).",
        (20, 20), (480, 560))
    img = g.node("LoadImage", (20, 630), (320, 340), image="example.png")
    svd = g.node("ImageOnlyCheckpointLoader", (20, 1020), (320, 100), "Video model (SVD-XT)",
                 ckpt_name="svd_xt.safetensors")
    sv3d = g.node("ImageOnlyCheckpointLoader", (20, 1170), (320, 100),
                  title="Multi-view model (SV3D_p)", ckpt_name="sv3d_p.safetensors")
    d2 = g.node("OrbitForgeDiffusion2Sampler", (540, 20), (380, 820), prompt_type="image",
                views=8, frames=8, size=576, elevation=10.0, steps=50, seed=0)
    grid_prev = g.node("PreviewImage", (540, 890), (380, 380),
                       title="Views x frames (rows = views)")
    rec4d = g.node("OrbitForgeGaussian4DReconstruct", (960, 20), (360, 480), frames_per_view=8,
                   iterations=1000, warm_iterations=300, resolution=256, sh_degree=0, seed=0,
                   filename_prefix="orbitforge/4d/seq")
    turn = g.save_webp((960, 550), 360, "4D turntable", "orbitforge/4d/turntable", 8.0)
    pick = g.node("OrbitForgeGaussianSequenceFrame", (1360, 20), (320, 90), time_step=0)
    save_ply = g.node("OrbitForgeSaveGaussians", (1360, 160), (320, 110),
                      filename_prefix="orbitforge/4d/frame")

    g.link(svd, "MODEL", d2, "video_model")
    g.link(sv3d, "MODEL", d2, "multiview_model")
    g.link(sv3d, "CLIP_VISION", d2, "clip_vision")
    g.link(sv3d, "VAE", d2, "vae")
    g.link(img, "IMAGE", d2, "prompt")
    g.link(d2, "grid", grid_prev, "images")
    g.link(d2, "frames", rec4d, "views")
    g.link(d2, "cameras", rec4d, "cameras")
    g.link(rec4d, "turntable", turn, "images")
    g.link(rec4d, "sequence", pick, "sequence")
    g.link(pick, "gaussians", save_ply, "gaussians")
    g.group("Input", [img, svd, sv3d], GROUP_COLORS["input"])
    g.group("Diffusion² (views x frames)", [d2, grid_prev], GROUP_COLORS["views"])
    g.group("4D Gaussians", [rec4d, turn, pick, save_ply], GROUP_COLORS["4d"])
    return g


WORKFLOWS = {
    "orbitforge_sample_views_to_mesh": sample_views_to_mesh,
    "orbitforge_image_to_mesh_sv3d": image_to_mesh_sv3d,
    "orbitforge_image_to_hires_views": image_to_hires_views,
    "orbitforge_image_to_4d": image_to_4d,
}


def render_json(name: str) -> str:
    return json.dumps(WORKFLOWS[name]().json(), indent=1, ensure_ascii=False) + "\n"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in argv
    names = [a for a in argv if not a.startswith("--")] or list(WORKFLOWS)
    bad = 0
    for name in names:
        path = os.path.join(HERE, name + ".json")
        try:
            text = render_json(name)
        except ValueError as e:  # a node the graph needs is not registered
            print(f"SKIP {name}: {e}")
            bad += 1
            continue
        if check:
            old = open(path, encoding="utf-8").read() if os.path.exists(path) else None
            if old != text:
                print(f"DIFFERS {path}")
                bad += 1
            continue
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
        print(f"wrote {path}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
