"""Mesh nodes: views (+ masks, + Gaussians' depth) -> watertight coloured MESH; save; turntable.

MESH outputs are the host's own ``MESH`` class (ComfyUI >= v0.33: vertex colours, normals, uvs +
texture filled, so every core mesh node takes them) or a stand-in with the same attributes; MESH
inputs take any core mesh (padded batches, RGBA or linear colours, uvs + texture, PBR maps). Inside
a node the mesh is a :class:`..kernels.mesh.types.ColoredMesh`; :mod:`.host.geometry` converts.
"""

from __future__ import annotations

import os
import re

from ..kernels.geometry.cameras import DEFAULT_RADIUS, SV3D_FOV_DEG, orbit_cameras
from ..kernels.mesh.export import MESH_FORMATS, check_mesh_format, write_mesh
from ..kernels.mesh.types import ColoredMesh
from ..kernels.mesh.views_to_mesh import COLOR_MODES, DEPTH_CHOICES, views_to_mesh
from . import host
from .calibrate import CALIBRATE_CHOICES, CALIBRATE_TOOLTIP, calibrate_for_reconstruction
from .host import geometry


# What the surface is carved from and how finely (SDF Mesh, required).
_SURFACE = {
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
}


# The mesh's clean-up (SDF Mesh, required).
_CLEANUP = {
    "watertight": ("BOOLEAN", {"default": True, "tooltip": "Repair to a closed manifold "
                   "(error if impossible)."}),
    "target_faces": ("INT", {"default": 50000, "min": 0, "max": 10_000_000, "tooltip":
                     "Decimate to about this many faces (0 = keep all)."}),
    "smooth_iterations": ("INT", {"default": 5, "min": 0, "max": 200, "tooltip":
                          "Taubin smoothing iterations (0 = off); removes voxel steps "
                          "without shrinking."}),
}


# Colours and depth (SDF Mesh, required).
_COLOUR = {
    "color": (list(COLOR_MODES), {"default": "vertex",
                                  "tooltip": "vertex: colours per vertex "
              "from the views; texture: xatlas UV unwrap + baked texture; none."}),
    "texture_size": ("INT", {"default": 1024, "min": 64, "max": 8192, "step": 64,
                     "tooltip": "Texture side in pixels (color = texture)."}),
    "depth_source": (list(DEPTH_CHOICES), {"default": "auto",
                                           "tooltip": "Depth that carves "
                     "concavities the silhouettes miss. mvs: stereo on the views (needs "
                     "images; seconds); gaussians: median depth of the connected "
                     "gaussians; depth: the depth_maps input; none: hull only; auto: mvs "
                     "with images, else gaussians if connected, else none."}),
}


# What the views give besides the cameras (SDF Mesh, optional).
_VIEWS = {
    "images": ("IMAGE", {"tooltip": "The views [B,H,W,3], one per camera (colours; "
               "without them colours come from the Gaussians)."}),
    "masks": ("MASK", {"tooltip": "Object masks [B,H,W] (1 = object), one per camera. "
              "Without them the Gaussians' alpha is used."}),
    "gaussians": ("SPLAT", {"tooltip": "A SPLAT scene fitted to these views (ours or "
                  "core's): its renders stand in for missing images/masks; when the "
                  "views' silhouettes disagree (generated orbits) its alpha widens the "
                  "masks, so the hull keeps what the fit covers; its median depth is "
                  "used with depth_source gaussians."}),
    "depth_maps": ("MASK", {"tooltip": "Depth maps [B,H,W], camera-space z in world "
                   "units (0 = no depth), one per camera; used with depth_source "
                   "depth."}),
}


# The refinement's knobs (SDF Mesh, optional).
_REFINEMENT = {
    "neural_iterations": ("INT", {"default": 400, "min": 10, "max": 20000, "tooltip":
                          "Optimisation steps of mode neural (each renders 4096 rays)."}),
    "polish_steps": ("INT", {"default": 100, "min": 0, "max": 5000, "tooltip":
                     "Photometric polish steps of mode fast (needs images; ~0.1 s each "
                     "at resolution 128 on 2 CPU cores; 0 = off: the fused hull + depth "
                     "field as is)."}),
    "calibrate": (CALIBRATE_CHOICES, {"default": "auto", "tooltip": CALIBRATE_TOOLTIP
                  + " Needs masks; the mesh lives in the calibrated cameras' frame."}),
    "silhouette_tolerance": ("FLOAT", {"default": -1.0, "min": -1.0, "max": 16.0,
                             "step": 0.25, "tooltip": "Pixels by which a view's "
                             "silhouette may disagree with the others before it carves "
                             "alone (what two views carve is always carved). -1 = auto: "
                             "1 px when the views' silhouettes disagree (generated "
                             "orbits: their shapes differ a little from view to view), "
                             "0 when they agree (renders: the exact visual hull)."}),
}


class SDFMesh:
    DESCRIPTION = (
        "Reconstructs a watertight, coloured mesh from orbit views: visual hull carved from the "
        "masks (soft voting, sub-voxel silhouette distance, a pixel of tolerance when the views' "
        "silhouettes disagree as generated orbits' do), further carved by depth (plane-"
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
        return {"required": {**_SURFACE, **_CLEANUP, **_COLOUR},
                "optional": {**_VIEWS, **_REFINEMENT}}

    def build(self, cameras, resolution, mode, min_background_views, watertight, target_faces,
              smooth_iterations, color, texture_size, depth_source="auto", images=None,
              masks=None, gaussians=None, depth_maps=None, neural_iterations=400,
              polish_steps=100, calibrate="auto", silhouette_tolerance=-1.0):
        tol = float(silhouette_tolerance)
        if tol < 0 and tol != -1.0:
            raise ValueError(f"silhouette_tolerance must be -1 (auto) or >= 0 pixels, got "
                             f"{silhouette_tolerance}")
        if gaussians is not None:
            gaussians = geometry.read_splat(gaussians, "gaussians")
        out = views_to_mesh(
            cameras, resolution, mode, depth_source, images=images, masks=masks,
            gaussians=gaussians, depth_maps=depth_maps, neural_iterations=neural_iterations,
            polish_steps=polish_steps, min_background_views=min_background_views,
            watertight=watertight, target_faces=target_faces,
            smooth_iterations=smooth_iterations, color=color, texture_size=texture_size,
            calibrate=lambda i, m, c: calibrate_for_reconstruction(i, m, c, calibrate),
            progress=host.kernel_progress(), interrupt=host.check_interrupt,
            silhouette_tolerance=None if tol < 0 else tol)
        return (geometry.make_mesh(_to_device(out, host.intermediate_device())),)


def _to_device(m: ColoredMesh, dev) -> ColoredMesh:
    mv = lambda t: None if t is None else t.to(dev)
    return ColoredMesh(mv(m.vertices), mv(m.faces), mv(m.vertex_colors), mv(m.uv), mv(m.texture))


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _next_path(folder: str, base: str, ext: str) -> str:
    pat = re.compile(re.escape(base) + r"_(\d{5})_\." + re.escape(ext) + r"$")
    nums = [int(m.group(1)) for f in os.listdir(folder) if (m := pat.match(f))]
    return os.path.join(folder, f"{base}_{(max(nums) + 1) if nums else 1:05d}_.{ext}")


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
            "format": (list(MESH_FORMATS), {"default": "glb",
                                            "tooltip": "glb: one file, colours/texture "
                       "embedded (best for viewers); obj: + .mtl/.png for textures; ply: vertex "
                       "colours."}),
        }}

    def save(self, mesh, filename_prefix, format):
        format = check_mesh_format(format)
        items = geometry.read_mesh(mesh, "mesh")
        for i, m in enumerate(items):
            if m.vertices.shape[1] == 0 or m.faces.shape[1] == 0:
                raise ValueError(f"mesh {i} is empty (no faces); nothing to save")
        folder, subfolder, base = host.prepare_output_folder(filename_prefix or "mesh")
        base = _SAFE.sub("_", base) or "mesh"
        results, first, first_full = [], None, None
        for m in items:
            path = _next_path(folder, base, format)
            write_mesh(m, path)  # OBJ + MTL + PNG appear together
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
            "radius": ("FLOAT", {"default": DEFAULT_RADIUS, "min": 0.1, "max": 100.0,
                       "tooltip": "Camera distance (the mesh lives in the unit box)."}),
            "fov": ("FLOAT", {"default": SV3D_FOV_DEG, "min": 1.0, "max": 170.0, "tooltip":
                    "Vertical field of view in degrees."}),
        }, "optional": {
            "occlusion_and_shadows": ("BOOLEAN", {"default": False, "tooltip": "Shade with "
                                      "ambient occlusion and cast shadows (reads shape better "
                                      "on uncoloured meshes; about 2x slower)."}),
        }}

    def render(self, mesh, frames, elevation, size, radius, fov, occlusion_and_shadows=False):
        from ..kernels.mesh.render import render_mesh

        items = geometry.read_mesh(mesh, "mesh", single=True)
        if items[0].faces.shape[1] == 0:
            raise ValueError("the mesh is empty (no faces); nothing to render")
        cams = orbit_cameras("uniform", frames, elevation, radius, fov, size, size,
                               elevations=(float(elevation),))
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
