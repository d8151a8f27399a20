"""glTF colour facts, host-free: the sRGB transfer function and linear ``COLOR_0`` in GLB files.

glTF 2.0 (Khronos, "Meshes" attribute table): ``COLOR_n`` is an "RGB or RGBA vertex color linear
multiplier", stored as float, or unsigned byte / short normalised; ``baseColorTexture`` is sRGB.
trimesh writes and reads vertex colours as they are (uint8), so sRGB colours handed to it land in
``COLOR_0`` unconverted: :func:`glb_add_vertex_colors` writes them linear instead and
:func:`glb_vertex_colors` reads them back at full precision. sRGB transfer: IEC 61966-2-1.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import torch


def srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    c = c.clamp(0, 1)
    return torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    c = c.clamp(0, 1)
    return torch.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)


_GLB_COMPONENTS = {5126: ("<f4", 1.0), 5121: ("u1", 255.0), 5123: ("<u2", 65535.0)}


def glb_chunks(data: bytes) -> tuple[dict, bytes]:
    """A GLB file's JSON (dict) and BIN chunk; ``ValueError`` if it is not a glTF 2.0 GLB."""
    if len(data) < 20 or data[:4] != b"glTF":
        raise ValueError("not a GLB file (no 'glTF' magic)")
    version, length = struct.unpack_from("<II", data, 4)
    if version != 2 or length > len(data):
        raise ValueError(f"GLB version {version}, length {length} for {len(data)} bytes "
                         "(glTF 2.0 expected; truncated?)")
    js, binary, pos = None, b"", 12
    while pos + 8 <= length:
        n, kind = struct.unpack_from("<I4s", data, pos)
        chunk = data[pos + 8:pos + 8 + n]
        if kind == b"JSON":
            js = json.loads(chunk)
        elif kind == b"BIN\0" and not binary:
            binary = bytes(chunk)
        pos += 8 + n
    if js is None:
        raise ValueError("GLB has no JSON chunk")
    return js, binary


def glb_pack(js: dict, binary: bytes) -> bytes:
    """JSON + BIN chunk -> GLB bytes (chunks padded to 4 bytes: JSON with spaces, BIN with 0)."""
    j = json.dumps(js, separators=(",", ":")).encode()
    j += b" " * (-len(j) % 4)
    b = binary + b"\0" * (-len(binary) % 4)
    total = 12 + 8 + len(j) + (8 + len(b) if b else 0)
    out = struct.pack("<4sII", b"glTF", 2, total) + struct.pack("<I4s", len(j), b"JSON") + j
    if b:
        out += struct.pack("<I4s", len(b), b"BIN\0") + b
    return out


def glb_add_vertex_colors(glb: bytes, srgb: torch.Tensor) -> bytes:
    """Add ``COLOR_0`` to the single triangle primitive of ``glb``: sRGB vertex colours ``[N, 3]``
    (0..1) written as linear float32 VEC3, glTF's colour space. A primitive without a material
    gets a matte one (metallic 0, roughness 1, white base colour): glTF's default material is
    fully metallic, which shows vertex colours nearly black in PBR viewers."""
    js, binary = glb_chunks(glb)
    prims = [p for m in js.get("meshes", []) for p in m.get("primitives", [])]
    if len(prims) != 1:
        raise ValueError(f"expected a GLB with one mesh primitive, got {len(prims)}")
    prim = prims[0]
    n = js["accessors"][prim["attributes"]["POSITION"]]["count"]
    if tuple(srgb.shape) != (n, 3):
        raise ValueError(f"vertex colours must be [{n}, 3] for this GLB, got {list(srgb.shape)}")
    lin = srgb_to_linear(srgb.detach().cpu().float()).numpy().astype("<f4")  # [N, 3]
    binary = binary + b"\0" * (-len(binary) % 4)
    views = js.setdefault("bufferViews", [])
    views.append({"buffer": 0, "byteOffset": len(binary), "byteLength": lin.nbytes,
                  "target": 34962})  # ARRAY_BUFFER
    binary += lin.tobytes()
    accessors = js.setdefault("accessors", [])
    accessors.append({"bufferView": len(views) - 1, "componentType": 5126, "count": n,
                      "type": "VEC3"})
    prim["attributes"]["COLOR_0"] = len(accessors) - 1
    if "material" not in prim:
        mats = js.setdefault("materials", [])
        mats.append({"pbrMetallicRoughness": {"baseColorFactor": [1.0, 1.0, 1.0, 1.0],
                                              "metallicFactor": 0.0, "roughnessFactor": 1.0}})
        prim["material"] = len(mats) - 1
    buffers = js.setdefault("buffers", [{}])
    buffers[0]["byteLength"] = len(binary)
    return glb_pack(js, binary)


def glb_vertex_colors(glb: bytes):
    """``COLOR_0`` of a GLB whose meshes hold exactly one primitive, as linear float ``[N, 3|4]``
    (float, or normalised unsigned byte / short); ``None`` when there is no single such
    primitive, the colours live in another file, or the accessor is sparse."""
    js, binary = glb_chunks(glb)
    prims = [p for m in js.get("meshes", []) for p in m.get("primitives", [])]
    if len(prims) != 1 or "COLOR_0" not in prims[0].get("attributes", {}):
        return None
    acc = js["accessors"][prims[0]["attributes"]["COLOR_0"]]
    if "bufferView" not in acc or "sparse" in acc or acc.get("componentType") not in \
            _GLB_COMPONENTS or acc.get("type") not in ("VEC3", "VEC4"):
        return None
    view = js["bufferViews"][acc["bufferView"]]
    if view.get("buffer", 0) != 0 or "uri" in js["buffers"][0]:
        return None
    dtype, scale = _GLB_COMPONENTS[acc["componentType"]]
    width = 3 if acc["type"] == "VEC3" else 4
    item = np.dtype(dtype).itemsize * width
    stride = view.get("byteStride") or item
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    count = acc["count"]
    if count and start + stride * (count - 1) + item > len(binary):
        return None
    raw = np.frombuffer(binary, np.uint8, stride * (count - 1) + item if count else 0, start)
    rows = np.lib.stride_tricks.as_strided(raw, (count, item), (stride, 1)) if count else \
        raw.reshape(0, item)
    vals = np.ascontiguousarray(rows).view(dtype).reshape(count, width).astype(np.float64)
    return vals / scale
