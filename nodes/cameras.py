"""Orbit cameras: the CAMERAS type from orbit settings, and Hi3D interpolation cameras."""

from __future__ import annotations

from ..kernels.geometry.camera_plot import plot_camera_path
from ..kernels.geometry.cameras import (
    DEFAULT_RADIUS,
    ORBITS as ORBIT_TYPES,
    SV3D_FOV_DEG,
    interpolate_orbit,
    orbit_cameras,
)
from . import host

ORBITS = list(ORBIT_TYPES)

# The seed control's starting mode of the pack's deterministic nodes (orbit cameras, fits): the
# frontend gives every INT input named "seed" a control widget that defaults to "randomize",
# which changes the seed after every queue, so pressing Run again would refit (minutes on a CPU)
# instead of reusing ComfyUI's cache. Frontend 1.49 (ComfyUI v0.33) starts the control at the
# mode this option names; 1.27 (v0.3.64) keeps "randomize". Sampling nodes keep the randomize
# convention of core KSampler.
FIXED_SEED = "fixed"


def parse_floats(text: str, what: str) -> list[float]:
    try:
        vals = [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated numbers, got {text!r}") from None
    if not vals:
        raise ValueError(f"{what} is empty; give at least one number, e.g. '0, 20'")
    return vals


def parse_color(text: str, name: str = "background"):
    """An RGB colour typed as three numbers in 0..1 (``'1, 1, 1'``) -> a tuple of floats."""
    try:
        vals = parse_floats(text, name)
    except ValueError:
        vals = []
    if len(vals) != 3 or not all(0 <= v <= 1 for v in vals):
        raise ValueError(f"{name} must be three numbers in 0..1 like '1, 1, 1', got {text!r}")
    return tuple(vals)


def parse_keyframes(text: str) -> list[tuple[float, float, float]]:
    out = []
    for part in text.split(";"):
        if not part.strip():
            continue
        vals = parse_floats(part, "keyframe")
        if len(vals) != 3:
            raise ValueError(f"each keyframe is 'frame, elevation, azimuth'; got {part.strip()!r}")
        out.append(tuple(vals))
    if not out:
        raise ValueError("keyframes is empty; write e.g. '0, 0, 0; 20, 30, 340'")
    return out


class OrbitCameras:
    DESCRIPTION = (
        "Makes a CAMERAS set orbiting the object (y-up world, azimuth 0 looks at the front from "
        "+z, azimuth 90 from +x). sv3d_static is SV3D's official orbit: frame f at "
        "(f+1)*360/frames, the conditioning view last at azimuth 0. Also outputs a plot of the "
        "path.")
    CATEGORY = "OrbitForge/cameras"
    FUNCTION = "make"
    RETURN_TYPES = ("CAMERAS", "IMAGE")
    RETURN_NAMES = ("cameras", "path_plot")
    OUTPUT_TOOLTIPS = ("The cameras, in orbit order.",
                       "Top view of the path and elevation per frame (blue first, red last).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "orbit": (ORBITS, {"default": "sv3d_static", "tooltip": "; ".join(
                f"{o.name}: {o.help}" for o in ORBIT_TYPES.values()) + "."}),
            "frames": ("INT", {"default": 21, "min": 1, "max": 1024, "tooltip": "Number of cameras "
                       "(per ring for 'uniform'). SV3D was trained on 21."}),
            "elevation": ("FLOAT", {"default": 10.0, "min": -90.0, "max": 90.0, "step": 0.5,
                          "tooltip": "Elevation in degrees (SV3D orbits; base of the dynamic "
                                     "one)."}),
            "radius": ("FLOAT", {"default": DEFAULT_RADIUS, "min": 0.1, "max": 100.0, "step": 0.05,
                       "tooltip": "Camera distance from the origin, for an object scaled to a unit "
                       "bounding box."}),
            "fov": ("FLOAT", {"default": SV3D_FOV_DEG, "min": 1.0, "max": 170.0, "step": 0.1,
                    "tooltip": "Vertical field of view in degrees (SV3D: 33.8)."}),
            "width": ("INT", {"default": 576, "min": 8, "max": 8192, "step": 8,
                      "tooltip": "Image width in pixels."}),
            "height": ("INT", {"default": 576, "min": 8, "max": 8192, "step": 8,
                       "tooltip": "Image height in pixels."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1,
                     "control_after_generate": FIXED_SEED,
                     "tooltip": "Seed of the sv3d_dynamic orbit."}),
            "elevations": ("STRING", {"default": "0, 20",
                                      "tooltip": "uniform: comma-separated ring "
                           "elevations in degrees."}),
            "keyframes": ("STRING", {"default": "0, 0, 0; 20, 30, 340", "multiline": True,
                          "tooltip": "keyframed: 'frame, elevation, azimuth' separated by ';'."}),
        }}

    def make(self, orbit, frames, elevation, radius, fov, width, height, seed, elevations,
             keyframes):
        kf = parse_keyframes(keyframes) if orbit == "keyframed" else ()
        rings = parse_floats(elevations, "elevations") if orbit == "uniform" else ()
        cams = orbit_cameras(orbit, frames, elevation, radius, fov, width, height, seed, rings, kf)
        return (cams, plot_camera_path(cams).to(host.intermediate_device()))


class InterpolateCameras:
    DESCRIPTION = ("Hi3D interpolation views: M extra cameras between each pair of adjacent "
                   "cameras (elevation, azimuth and radius interpolated along the orbit).")
    CATEGORY = "OrbitForge/cameras"
    FUNCTION = "interpolate"
    RETURN_TYPES = ("CAMERAS", "IMAGE")
    RETURN_NAMES = ("cameras", "path_plot")
    OUTPUT_TOOLTIPS = ("Only the new in-between cameras, in orbit order.", "Plot of the new path.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "cameras": ("CAMERAS", {"tooltip": "The orbit to densify."}),
            "per_gap": ("INT", {"default": 16, "min": 1, "max": 256, "tooltip": "M: cameras added "
                        "between each adjacent pair (Hi3D uses 16)."}),
            "closed": ("BOOLEAN", {"default": True, "tooltip": "Also fill the gap from the last "
                       "camera back to the first."}),
        }}

    def interpolate(self, cameras, per_gap, closed):
        cams = interpolate_orbit(cameras, per_gap, closed)
        return (cams, plot_camera_path(cams).to(host.intermediate_device()))


NODE_CLASS_MAPPINGS = {
    "OrbitForgeOrbitCameras": OrbitCameras,
    "OrbitForgeInterpolateCameras": InterpolateCameras,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "OrbitForgeOrbitCameras": "Orbit Cameras (OrbitForge)",
    "OrbitForgeInterpolateCameras": "Interpolate Cameras (OrbitForge)",
}
