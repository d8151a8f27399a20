"""Regenerate ``nodes/core_schemas.json``: the core ComfyUI node definitions OrbitForge workflows use.

``python -m orbitforge.bench core_schemas [--comfyui PATH] [--out FILE] [--nodes A,B] [--all]``

Imports ComfyUI from ``--comfyui`` or ``$COMFYUI_PATH`` (CPU mode), loads its built-in
``comfy_extras`` nodes the way ComfyUI's ``main.py`` does (``nodes.init_extra_nodes``, async; no
custom nodes, no API nodes), reads each node's definition like the ``/object_info`` route (V1
``INPUT_TYPES``/``RETURN_TYPES``, V3 ``GET_NODE_INFO_V1``) and writes the normalised schemas used
by :mod:`orbitforge.nodes.workflow_check`. Model and input folders are pointed at an empty
directory while reading, so file-list combos come out empty and are marked ``dynamic_options``
(the checker does not check membership for them). Prints one JSON object (a summary).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.machinery
import json
import os
import sys
import tempfile
import types

from ..nodes.workflow_check import CORE_SCHEMAS_PATH, normalize_node_info

# The core nodes OrbitForge workflows may use (extend with --nodes, or take every one with --all).
DEFAULT_NODES = [
    # loading, saving, previews
    "LoadImage", "LoadImageMask", "ImageOnlyCheckpointLoader", "CheckpointLoaderSimple",
    "CLIPVisionLoader", "CLIPVisionEncode", "VAELoader", "UNETLoader", "CLIPLoader",
    "SaveImage", "PreviewImage", "SaveAnimatedWEBP", "SaveAnimatedPNG", "Preview3D", "SaveGLB",
    # latents and VAE
    "VAEDecode", "VAEEncode", "VAEDecodeTiled", "VAEEncodeTiled", "EmptyLatentImage",
    # sampling
    "KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced", "KSamplerSelect",
    "BasicScheduler", "KarrasScheduler", "ExponentialScheduler", "SplitSigmas",
    "SplitSigmasDenoise", "RandomNoise", "DisableNoise", "CFGGuider", "BasicGuider",
    "DualCFGGuider", "SamplerEulerAncestral", "SamplerDPMPP_2M_SDE",
    "ModelSamplingDiscrete", "ModelSamplingContinuousEDM",
    # video / 3D conditioning
    "SV3D_Conditioning", "SVD_img2vid_Conditioning", "StableZero123_Conditioning",
    "VideoTriangleCFGGuidance", "VideoLinearCFGGuidance", "ConditioningZeroOut",
    "CLIPTextEncode",
    # images and masks
    "ImageScale", "ImageScaleBy", "ImageBatch", "ImageFromBatch", "RepeatImageBatch",
    "ImageInvert", "ImageCrop", "ImageCompositeMasked", "EmptyImage", "GetImageSize",
    "JoinImageWithAlpha", "SplitImageWithAlpha", "InvertMask", "MaskToImage", "ImageToMask",
    "SolidMask", "GrowMask", "ThresholdMask",
    # primitives
    "PrimitiveInt", "PrimitiveFloat", "PrimitiveString", "PrimitiveStringMultiline",
    "PrimitiveBoolean",
]


def _stub_torchvision() -> None:
    """ComfyUI imports torchvision in a few model files at import time; when it cannot be
    imported (CPU torch without a matching torchvision), put a stand-in that fails only on use."""
    try:
        import torchvision  # noqa: F401

        return
    except Exception:  # noqa: BLE001 - any failure to import: use the stand-in
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]

    def _missing(*_a, **_k):
        raise RuntimeError("torchvision is not installed")

    def _getattr(name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _missing

    tv, tr = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")
    for m in (tv, tr):
        m.__spec__ = importlib.machinery.ModuleSpec(m.__name__, None)
        m.__getattr__ = _getattr
    tv.transforms = tr
    sys.modules["torchvision"], sys.modules["torchvision.transforms"] = tv, tr


def load_comfyui(path: str, empty_dir: str):
    """Import ComfyUI (CPU) and its built-in extra nodes; returns the ``nodes`` module."""
    path = os.path.abspath(path)
    if not os.path.isfile(os.path.join(path, "nodes.py")):
        raise ValueError(f"{path} is not a ComfyUI checkout (no nodes.py); pass --comfyui or set "
                         f"COMFYUI_PATH")
    if path not in sys.path:
        sys.path.insert(0, path)
    _stub_torchvision()
    saved = sys.argv
    sys.argv = [saved[0], "--cpu"]
    try:
        import comfy.cli_args

        comfy.cli_args.args.cpu = True
        # ComfyUI's nodes.py puts comfy/ first on sys.path, where comfy/utils.py would shadow the
        # top-level ``utils`` package; main.py imports that package first, and so do we.
        importlib.import_module("utils.install_util")
        import folder_paths

        for name, (paths, exts) in list(folder_paths.folder_names_and_paths.items()):
            folder_paths.folder_names_and_paths[name] = ([empty_dir], exts)
        folder_paths.set_input_directory(empty_dir)
        if hasattr(folder_paths, "filename_list_cache"):
            folder_paths.filename_list_cache.clear()
        nodes = importlib.import_module("nodes")
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    finally:
        sys.argv = saved
    return nodes


def node_info(cls) -> dict:
    """What ComfyUI's ``/object_info`` route returns for a node class."""
    if hasattr(cls, "GET_NODE_INFO_V1"):
        return cls.GET_NODE_INFO_V1()
    it = cls.INPUT_TYPES()
    rt = tuple(getattr(cls, "RETURN_TYPES", ()) or ())
    return {"input": it, "input_order": {k: list(v.keys()) for k, v in it.items()},
            "output": rt, "output_name": getattr(cls, "RETURN_NAMES", None) or rt,
            "output_node": bool(getattr(cls, "OUTPUT_NODE", False))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orbitforge.bench core_schemas",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"),
                    help="ComfyUI checkout (default $COMFYUI_PATH)")
    ap.add_argument("--out", default=CORE_SCHEMAS_PATH, help="output JSON file")
    ap.add_argument("--nodes", default="", help="extra comma-separated node types")
    ap.add_argument("--all", action="store_true", help="every loaded core node")
    ap.add_argument("--json", action="store_true", help="(accepted; output is always JSON)")
    args = ap.parse_args(argv)
    if not args.comfyui:
        raise ValueError("no ComfyUI checkout: pass --comfyui PATH or set COMFYUI_PATH")

    with tempfile.TemporaryDirectory() as empty:
        nodes = load_comfyui(args.comfyui, empty)
        mapping = nodes.NODE_CLASS_MAPPINGS
        wanted = sorted(mapping) if args.all else list(dict.fromkeys(
            DEFAULT_NODES + [n.strip() for n in args.nodes.split(",") if n.strip()]))
        schemas, missing, failed = {}, [], {}
        for name in wanted:
            if name not in mapping:
                missing.append(name)
                continue
            try:
                schemas[name] = normalize_node_info(node_info(mapping[name]))
            except Exception as e:  # noqa: BLE001 - one broken definition must not stop the table
                failed[name] = f"{type(e).__name__}: {e}"
    try:
        version = importlib.import_module("comfyui_version").__version__
    except Exception:  # noqa: BLE001 - older checkouts have no comfyui_version.py
        version = "unknown"
    doc = {
        "comment": "Core ComfyUI node schemas for orbitforge.nodes.workflow_check; regenerate "
                   "with: python -m orbitforge.bench core_schemas --comfyui PATH",
        "comfyui_version": version,
        "frontend_only": ["Note", "MarkdownNote", "PrimitiveNode", "Reroute"],
        "nodes": dict(sorted(schemas.items())),
    }
    out = os.path.abspath(args.out)
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, out)
    print(json.dumps({"out": out, "comfyui_version": version, "nodes": len(schemas),
                      "missing": missing, "failed": failed}))
    return 1 if (missing and not args.all) or failed else 0


if __name__ == "__main__":
    sys.exit(main())
