"""ComfyUI glue: thin class-attribute ("V1") nodes. Host access lives in :mod:`.host` only."""

from importlib import import_module

# One module per topic; each exports NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS.
NODE_MODULES = [
    "cameras",
    "calibrate",
    "sample",
    "gaussians",
    "priors",
    "mesh",
    "sv3d",
    "refiner",
    "cd_score",
    "diffusion2",
    "gaussians4d",
]

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
for _name in NODE_MODULES:
    _mod = import_module(f".{_name}", __name__)
    NODE_CLASS_MAPPINGS.update(_mod.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_mod.NODE_DISPLAY_NAME_MAPPINGS)
