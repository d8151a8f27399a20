"""Mesh nodes: views (+ masks, + Gaussians' depth) -> watertight coloured MESH; save; turntable.

MESH outputs are the host's own ``MESH`` class (ComfyUI >= v0.33: vertex colours, normals, uvs +
texture filled, so every core mesh node takes them) or a stand-in with the same attributes; MESH
inputs take any core mesh (padded batches, RGBA or linear colours, uvs + texture, PBR maps). Inside
a node the mesh is a :class:`..kernels.mesh_types.ColoredMesh`; :mod:`.host.geometry` converts.
"""

from __future__ import annotations

import os
import re

import torch

from ..kernels import cameras as K
from ..kernels.atomic import atomic_write_all
from ..kernels.core_mesh import glb_bytes
from ..kernels.mesh_types import ColoredMesh
from . import host
from .calibrate import CALIBRATE_CHOICES, CALIBRATE_TOOLTIP, calibrate_for_reconstruction
from .host import geometry

COLOR_MODES = ["vertex", "texture", "none"]
DEPTH_CHOICES = ["auto", "mvs", "gaussians", "depth", "none"]
FORMATS = ["glb", "obj", "ply"]
MAX_GRID_BYTES = 8 * 2**30  # refuse grids above ~8 GiB of working memory


def _render_gaussians(gaussians, cams):
    """Median depth [C,H,W], alpha [C,H,W], rgb [C,H,W,3] of the Gaussians from ``cams``."""
    from ..kernels.rasterize import rasterize

    g = gaussians
    dev = g.means.device
    c = cams.to(device=dev)
    depth, alpha, rgb = [], [], []
    with torch.no_grad():
        for i in range(len(c)):  # one view at a time bounds memory
            out = rasterize(g.means, g.quats, g.scales, g.opacities, g.sh, c.viewmats[i:i + 1],
                            c.Ks[i:i + 1], c.width, c.height, sh_degree=g.sh_degree,
                            backgrounds=torch.ones(1, 3, device=dev))
            depth.append(out.depth_median[0, ..., 0].float().cpu())
            alpha.append(out.alpha[0, ..., 0].float().cpu())
            rgb.append(out.rgb[0].float().clamp(0, 1).cpu())
    return torch.stack(depth), torch.stack(alpha), torch.stack(rgb)


class SDFMesh:
    DESCRIPTION = (
        "Reconstructs a watertight, coloured mesh from orbit views: visual hull carved from the "
        "masks (soft voting, sub-voxel silhouette distance), further carved by depth (plane-"
        "sweep stereo on the views behind the hull, the Gaussians' median depth, or given depth "
        "maps; depth may carve concavities, never holes), then refined against the views by "
        "NeuS-style volume rendering (a short polish in mode fast, to convergence in mode "
        "neural), marching cubes, largest component, optional smoothing, decimation, vertex "
        "colours or a baked UV texture from the views.")
    CATEGORY = "OrbitForge/mesh"
    FUNCTION = "build"
    RETURN_TYPES = ("MESH",)
    RETURN_NAMES = ("mesh",)
    OUTPUT_TOOLTIPS = ("The mesh as a core MESH (vertex colours, normals; uvs + texture when "
                       "baked): feeds core mesh nodes too.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "cameras": ("CAMERAS", {"tooltip": "One camera per view (the orbit the views were "
                        "made with)."}),
            "resolution": ("INT", {"default": 128, "min": 16, "max": 1024, "step": 8,
                           "tooltip": "Voxel grid resolution per axis over the unit box. 128: "
                           "~15 s in mode fast on 2 CPU cores, most of it the polish; 192-256: "
                           "finer, the polish's cost grows with the voxel count (set "
                           "polish_steps 0 for seconds)."}),
            "mode": (["fast", "neural"], {"default": "fast", "tooltip": "fast: hull + depth "
                     "fusion, then a short photometric polish (polish_steps of NeuS-style volume "
                     "rendering of the SDF grid against the views; ~15 s in all at resolution "
                     "128 on 2 CPU cores). neural: the same refinement run to convergence "
                     "(neural_iterations; needs images; minutes; measured more accurate than "
                     "fast on every benchmark mesh)."}),
            "min_background_views": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip":
                                     "A voxel is carved when at least this many views see it on "
                                     "background. Raise to 2-3 for imperfect generated masks."}),
            "watertight": ("BOOLEAN", {"default": True, "tooltip": "Repair to a closed manifold "
                           "(error if impossible)."}),
            "target_faces": ("INT", {"default": 50000, "min": 0, "max": 10_000_000, "tooltip":
                             "Decimate to about this many faces (0 = keep all)."}),
            "smooth_iterations": ("INT", {"default": 5, "min": 0, "max": 200, "tooltip":
                                  "Taubin smoothing iterations (0 = off); removes voxel steps "
                                  "without shrinking."}),
            "color": (COLOR_MODES, {"default": "vertex", "tooltip": "vertex: colours per vertex "
                      "from the views; texture: xatlas UV unwrap + baked texture; none."}),
            "texture_size": ("INT", {"default": 1024, "min": 64, "max": 8192, "step": 64,
                             "tooltip": "Texture side in pixels (color = texture)."}),
            "depth_source": (DEPTH_CHOICES, {"default": "auto", "tooltip": "Depth that carves "
                             "concavities the silhouettes miss. mvs: stereo on the views (needs "
                             "images; seconds); gaussians: median depth of the connected "
                             "gaussians; depth: the depth_maps input; none: hull only; auto: mvs "
                             "with images, else gaussians if connected, else none."}),
        }, "optional": {
            "images": ("IMAGE", {"tooltip": "The views [B,H,W,3], one per camera (colours; "
                       "without them colours come from the Gaussians)."}),
            "masks": ("MASK", {"tooltip": "Object masks [B,H,W] (1 = object), one per camera. "
                      "Without them the Gaussians' alpha is used."}),
            "gaussians": ("SPLAT", {"tooltip": "A SPLAT scene (ours or core's): its renders stand "
                          "in for missing images/masks, and their median depth is used with "
                          "depth_source gaussians."}),
            "depth_maps": ("MASK", {"tooltip": "Depth maps [B,H,W], camera-space z in world "
                           "units (0 = no depth), one per camera; used with depth_source "
                           "depth."}),
            "neural_iterations": ("INT", {"default": 400, "min": 10, "max": 20000, "tooltip":
                                  "Optimisation steps of mode neural (each renders 4096 rays)."}),
            "polish_steps": ("INT", {"default": 100, "min": 0, "max": 5000, "tooltip":
                             "Photometric polish steps of mode fast (needs images; ~0.1 s each "
                             "at resolution 128 on 2 CPU cores; 0 = off: the fused hull + depth "
                             "field as is)."}),
            "calibrate": (CALIBRATE_CHOICES, {"default": "auto", "tooltip": CALIBRATE_TOOLTIP
                          + " Needs masks; the mesh lives in the calibrated cameras' frame."}),
        }}

    def build(self, cameras, resolution, mode, min_background_views, watertight, target_faces,
              smooth_iterations, color, texture_size, depth_source="auto", images=None,
              masks=None, gaussians=None, depth_maps=None, neural_iterations=400,
              polish_steps=100, calibrate="auto"):
        from ..kernels import mesh_extract, mesh_pipeline

        cams = cameras
        if gaussians is not None:
            gaussians = geometry.read_splat(gaussians, "gaussians")
        if images is None and masks is None and gaussians is None:
            raise ValueError("no views: connect images + masks, or gaussians")
        n = len(cams)
        if n == 0:
            raise ValueError("cameras is empty; connect the orbit the views were made with")
        for name, t in (("images", images), ("masks", masks), ("depth_maps", depth_maps)):
            if t is not None and t.shape[0] != n:
                raise ValueError(f"{name} has {t.shape[0]} frames but there are {n} cameras; "
                                 "give one view per camera")
        if images is not None and masks is not None and images.shape[1:3] != masks.shape[1:3]:
            raise ValueError(f"images are {images.shape[2]}x{images.shape[1]} but masks "
                             f"{masks.shape[2]}x{masks.shape[1]}; resize one to match")
        need = mesh_extract.estimate_grid_bytes(resolution)
        if need > MAX_GRID_BYTES:
            raise ValueError(f"resolution {resolution} needs about {need / 2**30:.1f} GiB; lower "
                             "the resolution")
        if mode not in mesh_pipeline.MODES:
            raise ValueError(f"unknown mode {mode!r}; use one of {mesh_pipeline.MODES}")
        if int(neural_iterations) < 1:
            raise ValueError(f"neural_iterations must be >= 1, got {neural_iterations}")
        if int(polish_steps) < 0:
            raise ValueError(f"polish_steps must be >= 0 (0 = off), got {polish_steps}")
        if mode == "neural" and images is None and gaussians is None:
            raise ValueError("mode 'neural' fits the views' colours: connect images (or "
                             "gaussians to render them from), or use mode 'fast'")
        if mode == "neural" or int(polish_steps) > 0:  # the refinement's grids
            from ..kernels.neural_sdf import estimate_bytes

            if estimate_bytes(resolution) > MAX_GRID_BYTES:
                what, fix = (("mode neural", "use resolution <= 384 (128-192 recommended)")
                             if mode == "neural" else
                             ("the polish of mode fast", "set polish_steps to 0 or use "
                              "resolution <= 384"))
                raise ValueError(f"{what} at resolution {resolution} needs about "
                                 f"{estimate_bytes(resolution) / 2**30:.1f} GiB; {fix}")
        if depth_source not in DEPTH_CHOICES:
            raise ValueError(f"depth_source must be one of {DEPTH_CHOICES}, got {depth_source!r}")
        if depth_source == "auto":
            depth_source = ("mvs" if images is not None and n >= 2 else
                            "gaussians" if gaussians is not None else "none")
        if depth_source == "mvs" and images is None:
            raise ValueError("depth_source 'mvs' needs images; connect them or pick another "
                             "depth_source")
        if depth_source == "gaussians" and gaussians is None:
            raise ValueError("depth_source 'gaussians' needs the gaussians input; connect it or "
                             "pick another depth_source")
        if depth_source == "depth" and depth_maps is None:
            raise ValueError("depth_source 'depth' needs the depth_maps input")
        ref = masks if masks is not None else images
        if ref is not None:
            h, w = ref.shape[1], ref.shape[2]
            if abs(w / h - cams.width / cams.height) > 1e-3:
                raise ValueError(f"views are {w}x{h} but cameras {cams.width}x{cams.height} "
                                 "(different aspect ratio); use the cameras of these views")
            cams = cams.resized(w, h)
        if depth_maps is not None and depth_source == "depth":
            if ref is not None and depth_maps.shape[1:3] != ref.shape[1:3]:
                raise ValueError(f"depth_maps are {depth_maps.shape[2]}x{depth_maps.shape[1]} "
                                 f"but the views {ref.shape[2]}x{ref.shape[1]}; resize to match")
            if ref is None:
                cams = cams.resized(depth_maps.shape[2], depth_maps.shape[1])
        K.check_cameras_see_object(cams)
        if masks is not None:
            cams = calibrate_for_reconstruction(images, masks, cams, calibrate)
        cams = cams.to(device="cpu")
        if gaussians is not None and (masks is None or images is None):
            _, alpha, grgb = mesh_pipeline.gaussians_depth(gaussians, cams)
            masks = alpha if masks is None else masks
            images = grgb if images is None else images
        if masks is None:
            raise ValueError("masks are needed with images (connect a MASK, e.g. from background "
                             "removal) or connect gaussians")
        masks = masks.float().cpu()
        imgs = None if images is None else images[..., :3].float().cpu()
        neural = None
        steps = 4 + (int(polish_steps) if imgs is not None else 0)
        if mode == "neural":
            from ..kernels.neural_sdf import NeuralSDFConfig

            neural = NeuralSDFConfig(iterations=int(neural_iterations))
            steps = 4 + neural.iterations
        prog = host.Progress(steps)
        mesh = mesh_pipeline.reconstruct_mesh(
            masks, cams, resolution, images=imgs, depth_source=depth_source,
            depths=None if depth_maps is None else depth_maps.float().cpu(), gaussians=gaussians,
            min_background_views=min_background_views, max_bytes=MAX_GRID_BYTES,
            progress=lambda i, t: prog.update(i), keep_components=1, watertight=watertight,
            target_faces=target_faces, smooth_iterations=smooth_iterations, mode=mode,
            neural=neural, interrupt=host.check_interrupt, polish_steps=int(polish_steps))
        out = mesh_pipeline.color_mesh(mesh, imgs, cams, masks, color, texture_size)
        prog.update(steps)
        return (geometry.make_mesh(_to_device(out, host.intermediate_device())),)


def _to_device(m: ColoredMesh, dev) -> ColoredMesh:
    mv = lambda t: None if t is None else t.to(dev)
    return ColoredMesh(mv(m.vertices), mv(m.faces), mv(m.vertex_colors), mv(m.uv), mv(m.texture))


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _next_path(folder: str, base: str, ext: str) -> str:
    pat = re.compile(re.escape(base) + r"_(\d{5})_\." + re.escape(ext) + r"$")
    nums = [int(m.group(1)) for f in os.listdir(folder) if (m := pat.match(f))]
    return os.path.join(folder, f"{base}_{(max(nums) + 1) if nums else 1:05d}_.{ext}")


def _attach_pbr(tm, pbr) -> None:
    """PBR maps of a core MESH (metallic-roughness, normal, emissive ``[1, H, W, 3]``) onto the
    trimesh material of a textured mesh, so a GLB keeps them."""
    mat = getattr(getattr(tm, "visual", None), "material", None)
    if not pbr or mat is None or not hasattr(mat, "metallicRoughnessTexture"):
        return
    from PIL import Image

    def img(t):
        a = (t[0, ..., :3].detach().cpu().float().clamp(0, 1).numpy() * 255).round()
        return Image.fromarray(a.astype("uint8"))

    for key, attr in (("metallic_roughness", "metallicRoughnessTexture"),
                      ("normal_map", "normalTexture"), ("emissive", "emissiveTexture")):
        t = pbr.get(key)
        if isinstance(t, torch.Tensor) and t.ndim == 4:
            setattr(mat, attr, img(t))
    if "metallic_roughness" in pbr:
        mat.metallicFactor, mat.roughnessFactor = 1.0, 1.0
    if "emissive" in pbr:
        mat.emissiveFactor = [1.0, 1.0, 1.0]


def export_mesh_bytes(mesh: ColoredMesh, fmt: str, stem: str) -> dict:
    """``{filename: bytes}`` for one batch item: the mesh file first (OBJ textures add an MTL
    and a PNG next to it)."""
    pbr = getattr(mesh, "pbr", None)
    if fmt == "glb":  # vertex colours as linear COLOR_0, as glTF defines them (and core writes)
        return {f"{stem}.glb": glb_bytes(mesh, 0, prepare=lambda t: _attach_pbr(t, pbr))}
    tm = mesh.to_trimesh(0)
    _attach_pbr(tm, pbr)
    if fmt == "ply":
        if mesh.texture is not None:  # PLY has no texture: bake the texture to vertex colours
            tm.visual = tm.visual.to_color()
        return {f"{stem}.ply": tm.export(file_type="ply")}
    from trimesh.exchange.obj import export_obj

    if mesh.texture is not None:
        text, files = export_obj(tm, include_texture=True, return_texture=True,
                                 mtl_name=f"{stem}.mtl")
        out = {f"{stem}.obj": text.encode()}
        for name, data in files.items():
            out[name] = data
        return out
    return {f"{stem}.obj": export_obj(tm, include_color=True).encode()}


class SaveMesh:
    DESCRIPTION = (
        "Saves a MESH (with its vertex colours or texture) as GLB, OBJ or PLY in the output "
        "folder, atomically. Takes any MESH (a padded batch saves one file per item). The path "
        "and the FILE_3D output feed core Preview 3D / Save 3D Model.")
    CATEGORY = "OrbitForge/mesh"
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "FILE_3D")
    RETURN_NAMES = ("model_file", "model_3d")
    OUTPUT_TOOLTIPS = ("Path of the (first) saved file relative to the output folder, for "
                       "Preview3D's model_file.",
                       "The (first) saved file as a 3D file, for core Preview 3D by link.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "mesh": ("MESH", {"tooltip": "The mesh to save (OrbitForge or core MESH)."}),
            "filename_prefix": ("STRING", {"default": "orbitforge/mesh", "tooltip": "Path "
                                "relative to the output folder; a counter is appended."}),
            "format": (FORMATS, {"default": "glb", "tooltip": "glb: one file, colours/texture "
                       "embedded (best for viewers); obj: + .mtl/.png for textures; ply: vertex "
                       "colours."}),
        }}

    def save(self, mesh, filename_prefix, format):
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
        items = geometry.read_mesh(mesh, "mesh")
        for i, m in enumerate(items):
            if m.vertices.shape[1] == 0 or m.faces.shape[1] == 0:
                raise ValueError(f"mesh {i} is empty (no faces); nothing to save")
        folder, subfolder, base = host.prepare_output_folder(filename_prefix or "mesh")
        base = _SAFE.sub("_", base) or "mesh"
        results, first, first_full = [], None, None
        for m in items:
            path = _next_path(folder, base, format)
            stem = os.path.splitext(os.path.basename(path))[0]
            files = export_mesh_bytes(m, format, stem)  # OBJ + MTL + PNG appear together
            atomic_write_all([(os.path.join(folder, name), data) for name, data in files.items()])
            fname = os.path.basename(path)
            results.append({"filename": fname, "subfolder": subfolder, "type": "output"})
            if first is None:
                first = f"{subfolder}/{fname}" if subfolder else fname
                first_full = path
        return {"ui": {"3d": results}, "result": (first, geometry.make_file3d(first_full))}


class MeshTurntable:
    DESCRIPTION = ("Renders a MESH (with its colours) from an orbit of cameras into IMAGE frames, "
                   "for a quick look without a 3D viewer (CPU ray casting).")
    CATEGORY = "OrbitForge/mesh"
    FUNCTION = "render"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("Turntable frames [F,H,W,3] on a white background.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "mesh": ("MESH", {"tooltip": "One mesh (ours or any core MESH; a batch is refused)."}),
            "frames": ("INT", {"default": 24, "min": 1, "max": 720, "tooltip": "Number of "
                       "frames over one full turn."}),
            "elevation": ("FLOAT", {"default": 15.0, "min": -89.0, "max": 89.0, "tooltip":
                          "Camera elevation in degrees."}),
            "size": ("INT", {"default": 384, "min": 32, "max": 4096, "step": 8, "tooltip":
                     "Frame width and height in pixels."}),
            "radius": ("FLOAT", {"default": K.DEFAULT_RADIUS, "min": 0.1, "max": 100.0,
                       "tooltip": "Camera distance (the mesh lives in the unit box)."}),
            "fov": ("FLOAT", {"default": K.SV3D_FOV_DEG, "min": 1.0, "max": 170.0, "tooltip":
                    "Vertical field of view in degrees."}),
        }, "optional": {
            "occlusion_and_shadows": ("BOOLEAN", {"default": False, "tooltip": "Shade with "
                                      "ambient occlusion and cast shadows (reads shape better "
                                      "on uncoloured meshes; about 2x slower)."}),
        }}

    def render(self, mesh, frames, elevation, size, radius, fov, occlusion_and_shadows=False):
        from ..kernels.mesh_render import render_mesh

        items = geometry.read_mesh(mesh, "mesh", single=True)
        if items[0].faces.shape[1] == 0:
            raise ValueError("the mesh is empty (no faces); nothing to render")
        el, az = K.uniform_orbit(int(frames), (float(elevation),))
        cams = K.make_orbit_cameras(el, az, radius, fov, size, size)
        prog = host.Progress(int(frames))
        shade = bool(occlusion_and_shadows)
        out = render_mesh(items[0].to_trimesh(0), cams, occlusion=shade, shadows=shade,
                          progress=lambda i, t: prog.update(i))
        return (out["rgb"].to(host.intermediate_device()),)


NODE_CLASS_MAPPINGS = {
    "OrbitForgeSDFMesh": SDFMesh,
    "OrbitForgeSaveMesh": SaveMesh,
    "OrbitForgeMeshTurntable": MeshTurntable,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "OrbitForgeSDFMesh": "OrbitForge SDF Mesh",
    "OrbitForgeSaveMesh": "OrbitForge Save Mesh",
    "OrbitForgeMeshTurntable": "OrbitForge Mesh Turntable",
}
