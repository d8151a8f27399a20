"""Regenerate a host snapshot ``workflow_tools/core_schemas*.json``: the core node definitions
OrbitForge workflows use, as one ComfyUI version serves them.

``python -m orbitforge.bench core_schemas [--comfyui PATH | --url http://127.0.0.1:8188]
[--out FILE] [--nodes A,B] [--all]``

With ``--url`` the definitions come from a running ComfyUI's ``/object_info`` (exactly what the
frontend reads); otherwise ComfyUI is imported from ``--comfyui`` or ``$COMFYUI_PATH`` (CPU mode)
and its built-in
``comfy_extras`` nodes the way ComfyUI's ``main.py`` does (``nodes.init_extra_nodes``, async; no
custom nodes, no API nodes), reads each node's definition like the ``/object_info`` route (V1
``INPUT_TYPES``/``RETURN_TYPES``, V3 ``GET_NODE_INFO_V1``) and writes the normalised schemas used
by :mod:`orbitforge.workflow_tools`. Model and input folders are pointed at an empty
directory while reading, so file-list combos come out empty and are marked ``dynamic_options``
(the checker does not check membership for them). Prints one JSON object (a summary).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
import tempfile

from ..workflow_tools.schema import CORE_SCHEMAS_PATH, normalize_node_info
from . import host_stubs

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
# Core 3D nodes of newer hosts (v0.33: SPLAT, FILE_3D, mesh post-processing); absent in older
# ones, which is not an error.
NEWER_NODES = [
    "SplatToFile3D", "File3DToSplat", "RenderSplat", "CreateCameraInfo", "TransformSplat",
    "GetSplatCount", "MergeSplat", "SplatToMesh", "PreviewGaussianSplat", "SaveGaussianSplat",
    "MeshToFile3D", "GetMeshInfo", "RotateMesh", "MergeMeshes", "DecimateMesh", "RemeshMesh",
    "UnwrapMesh", "FillHoles", "WeldVertices", "MeshSmoothNormals", "RenderMesh", "Load3D",
]


def snapshot_path(version: str) -> str:
    """Where the snapshot of ``version`` lives: ``core_schemas.json`` for v0.3.64 (the first
    host snapshot), ``core_schemas_v<version>.json`` for any other."""
    if version == "0.3.64":
        return CORE_SCHEMAS_PATH
    return os.path.join(os.path.dirname(CORE_SCHEMAS_PATH), f"core_schemas_v{version}.json")


def fetch_object_info(url: str) -> tuple[dict, str]:
    """``(/object_info, version)`` of a running ComfyUI (version from ``/system_stats``)."""
    import urllib.request  # noqa: PLC0415

    base = url.rstrip("/")
    with urllib.request.urlopen(base + "/object_info", timeout=120) as r:
        info = json.loads(r.read())
    version = "unknown"
    try:
        with urllib.request.urlopen(base + "/system_stats", timeout=30) as r:
            version = json.loads(r.read()).get("system", {}).get("comfyui_version") or version
    except Exception:  # noqa: BLE001 - older servers: no version in system_stats
        pass
    return info, version


def load_comfyui(path: str, empty_dir: str):
    """Import ComfyUI (CPU) and its built-in extra nodes; returns the ``nodes`` module."""
    if not os.path.isfile(os.path.join(os.path.abspath(path), "nodes.py")):
        raise ValueError(f"{path} is not a ComfyUI checkout (no nodes.py); pass --comfyui or set "
                         f"COMFYUI_PATH")
    host_stubs.import_comfyui(path, keep_stubs=True)
    saved = sys.argv
    sys.argv = [saved[0], "--cpu"]
    try:
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
    ap.add_argument("--url", default=None, help="a running ComfyUI (reads its /object_info)")
    ap.add_argument("--out", default=None, help="output JSON file (default: the snapshot of "
                    "the host's version, workflow_tools/core_schemas[_vVERSION].json)")
    ap.add_argument("--nodes", default="", help="extra comma-separated node types")
    ap.add_argument("--all", action="store_true", help="every loaded core node")
    ap.add_argument("--json", action="store_true", help="(accepted; output is always JSON)")
    args = ap.parse_args(argv)
    if not args.comfyui and not args.url:
        raise ValueError("no ComfyUI: pass --url of a running server, --comfyui PATH or set "
                         "COMFYUI_PATH")
    extra = [n.strip() for n in args.nodes.split(",") if n.strip()]
    schemas, missing, failed = {}, [], {}

    def take(names, infos):
        wanted = sorted(names) if args.all else list(dict.fromkeys(DEFAULT_NODES + extra))
        if not args.all:
            wanted += [n for n in NEWER_NODES if n in names and n not in wanted]
        for name in wanted:
            if name not in names:
                missing.append(name)
                continue
            try:
                schemas[name] = normalize_node_info(infos(name))
            except Exception as e:  # noqa: BLE001 - one broken definition must not stop the table
                failed[name] = f"{type(e).__name__}: {e}"

    if args.url:
        info, version = fetch_object_info(args.url)
        take(set(info), lambda n: info[n])
    else:
        with tempfile.TemporaryDirectory() as empty:
            nodes = load_comfyui(args.comfyui, empty)
            mapping = nodes.NODE_CLASS_MAPPINGS
            take(set(mapping), lambda n: node_info(mapping[n]))
        try:
            version = importlib.import_module("comfyui_version").__version__
        except Exception:  # noqa: BLE001 - older checkouts have no comfyui_version.py
            version = "unknown"
    doc = {
        "comment": "Core ComfyUI node schemas for orbitforge.workflow_tools; regenerate "
                   "with: python -m orbitforge.bench core_schemas --url http://HOST:PORT "
                   "(or --comfyui PATH)",
        "comfyui_version": version,
        "frontend_only": ["Note", "MarkdownNote", "PrimitiveNode", "Reroute"],
        "nodes": dict(sorted(schemas.items())),
    }
    out = os.path.abspath(args.out or snapshot_path(version))
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
