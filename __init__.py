"""OrbitForge: one image -> orbit views -> 3D Gaussians -> mesh, and 4D, as ComfyUI nodes.

ComfyUI imports this folder as a package (any folder name under ``custom_nodes/``); ``pip install
-e .`` installs it as ``orbitforge``. Everything inside uses relative imports.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "web"  # web/preview3d.js: core's inline 3D viewer on Save Mesh / Save Gaussians
__version__ = "0.2.0"
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
