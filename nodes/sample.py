"""Inputs without models: the bundled sample orbit, and CAMERAS from a cameras.json file."""

from __future__ import annotations

import os

from ..kernels.geometry.cameras import Cameras
from ..kernels.sample import SAMPLE_DIR, load_sample_orbit
from . import host
from .host import files as host_files


class LoadSampleOrbit:
    DESCRIPTION = (
        "Loads the bundled sample: 21 views of spot (Keenan Crane, public domain) rendered on the "
        "SV3D static orbit (elevation 10, radius 2.2, fov 33.8, 256x256; the last frame is the "
        "input view at azimuth 0), with their object masks and exact cameras. Stands in for an "
        "SV3D orbit so the reconstruction nodes can be tried without any model file.")
    CATEGORY = "OrbitForge/inputs"
    FUNCTION = "load"
    RETURN_TYPES = ("IMAGE", "MASK", "CAMERAS")
    RETURN_NAMES = ("views", "masks", "cameras")
    OUTPUT_TOOLTIPS = ("The 21 views [21,256,256,3] on white, in SV3D orbit order.",
                       "Object masks [21,256,256] (1 = object; alpha coverage).",
                       "The cameras of the views, same order (y-up, azimuth 0 on +z).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "frames": ("INT", {"default": 21, "min": 1, "max": 21, "tooltip": "How many views to "
                       "keep, evenly spaced over the orbit (21 = all; the input view, azimuth 0, "
                       "is always kept). Fewer views = faster, sparser reconstruction."}),
        }}

    def load(self, frames):
        images, masks, cams = load_sample_orbit()
        n = images.shape[0]
        frames = int(frames)
        if not 1 <= frames <= n:
            raise ValueError(f"frames must be between 1 and {n} (the sample has {n} views), "
                             f"got {frames}")
        if frames < n:
            # evenly spaced, always ending at the input view (the last frame)
            idx = [round(n - 1 - k * n / frames) for k in range(frames)][::-1]
            images, masks, cams = images[idx], masks[idx], cams[idx]
        dev = host.intermediate_device()
        return (images.to(dev), masks.to(dev), cams)


class LoadCameras:
    DESCRIPTION = (
        "Loads CAMERAS from a cameras.json file (the format Cameras.save_json writes: viewmats "
        "world->camera OpenCV, Ks in pixels, width, height; y-up, azimuth 0 on +z). Use it to "
        "reconstruct your own views with known cameras.")
    CATEGORY = "OrbitForge/cameras"
    FUNCTION = "load"
    RETURN_TYPES = ("CAMERAS",)
    RETURN_NAMES = ("cameras",)
    OUTPUT_TOOLTIPS = ("The cameras in the file, in file order.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "path": ("STRING", {"default": "sample_orbit/cameras.json", "tooltip": "Path of a "
                     "cameras.json: absolute, relative to the ComfyUI input folder, or "
                     "'sample_orbit/cameras.json' for the bundled sample's cameras."}),
        }}

    def load(self, path):
        full = resolve_cameras_path(path)
        return (Cameras.load_json(full),)  # ValueError naming the file and the problem


def resolve_cameras_path(path: str) -> str:
    """Absolute path of a cameras.json, or ValueError naming where it was looked for."""
    p = (path or "").strip()
    if not p:
        raise ValueError("path is empty; give the path of a cameras.json file")
    tried = []
    if os.path.isabs(p):
        tried.append(p)
    else:
        if p.replace("\\", "/").startswith("sample_orbit/"):
            tried.append(os.path.join(os.path.dirname(SAMPLE_DIR), p))
        tried.append(os.path.join(host_files.input_directory(), p))
    for t in tried:
        if os.path.isfile(t):
            return t
    raise ValueError(f"cameras file {path!r} not found (looked in {tried}); give an absolute path "
                     "or a path relative to the ComfyUI input folder")


NODE_CLASS_MAPPINGS = {
    "OrbitForgeLoadSampleOrbit": LoadSampleOrbit,
    "OrbitForgeLoadCameras": LoadCameras,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "OrbitForgeLoadSampleOrbit": "Load Sample Orbit (OrbitForge)",
    "OrbitForgeLoadCameras": "Load Cameras JSON (OrbitForge)",
}
