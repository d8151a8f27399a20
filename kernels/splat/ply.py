"""The standard 3DGS PLY (what common splat viewers open), read and written without extra deps.

Binary little-endian, one ``vertex`` element of float32 properties, in this order:
``x y z nx ny nz f_dc_0..2 f_rest_0..(3*(K-1)-1) opacity scale_0..2 rot_0..3``. Normals are
zero; ``f_rest`` is channel-major (all R coefficients, then G, then B); opacity is a logit,
scales are logs, rotation is a wxyz quaternion (unnormalised).
"""

from __future__ import annotations

import os
import re

import numpy as np
import torch

from ..atomic import atomic_write
from .gaussians import Gaussians

_MAX_HEADER = 64 * 1024
_END_HEADER = re.compile(rb"\nend_header[ \t\r]*\n")


def property_names(k: int) -> list[str]:
    """The float32 ``vertex`` properties of a standard 3DGS PLY, in file order, for ``k`` SH
    coefficients per colour channel (1 for degree 0 ... 16 for degree 3): position, zero normals,
    ``f_dc_0..2``, ``f_rest_*`` (channel-major), opacity (a logit), log scales, quaternion wxyz
    (graphdeco-inria/gaussian-splatting, ``scene/gaussian_model.py``:
    ``GaussianModel.construct_list_of_attributes``)."""
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * (k - 1))]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    return names


def gaussians_to_array(g: Gaussians) -> np.ndarray:
    """``[N, P]`` float32 rows in the PLY property order."""
    g = g.detach().to("cpu", torch.float32)
    n, k = g.sh.shape[0], g.sh.shape[1]
    rest = g.sh[:, 1:, :].permute(0, 2, 1).reshape(n, -1)  # channel-major
    cols = [g.means, torch.zeros(n, 3), g.sh[:, 0, :], rest, g.opacity_logits[:, None],
            g.log_scales, g.quats]
    arr = torch.cat(cols, 1).numpy().astype("<f4")
    assert arr.shape[1] == len(property_names(k))
    return arr


def ply_bytes(g: Gaussians) -> bytes:
    """The 3DGS PLY file of ``g`` (header + float32 rows)."""
    if len(g) == 0:
        raise ValueError("refusing to write a PLY with 0 Gaussians")
    arr = gaussians_to_array(g)
    if not np.isfinite(arr).all():
        raise ValueError("refusing to write a PLY with NaN/inf parameters")
    names = property_names(g.sh.shape[1])
    header = "ply\nformat binary_little_endian 1.0\n"
    header += f"element vertex {arr.shape[0]}\n"
    header += "".join(f"property float {p}\n" for p in names)
    header += "end_header\n"
    return header.encode("ascii") + arr.tobytes()


def write_ply(path: str, g: Gaussians) -> str:
    """Write atomically: a temp file in the same folder, then ``os.replace``."""
    return atomic_write(path, ply_bytes(g))


_PLY_TYPES = {"float": "f4", "float32": "f4", "double": "f8", "float64": "f8", "uchar": "u1",
              "uint8": "u1", "char": "i1", "int8": "i1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4",
              "uint32": "u4"}


_REQUIRED = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1",
             "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def _parse_header(path: str, head: bytes, lists: bool = False) -> tuple[str, list, int]:
    """``(format, [(element, count, [(name, numpy type)])], data offset)`` of a PLY header;
    ``ValueError`` naming ``path`` and the offending line for anything malformed. With ``lists``
    (mesh PLYs), a list property is ``(name, "list:<count type>")``."""
    m = _END_HEADER.search(head)
    if not head.startswith(b"ply") or m is None:
        raise ValueError(f"{path!r} is not a PLY file (no 'ply' magic / 'end_header' line in the "
                         f"first {_MAX_HEADER // 1024} KiB)")
    fmt, elements = None, []
    for ln in head[:m.start()].decode("ascii", "replace").splitlines()[1:]:
        parts = ln.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        bad = ValueError(f"{path!r}: malformed PLY header line {ln.strip()[:80]!r}")
        if parts[0] == "format":
            if len(parts) != 3 or fmt is not None:
                raise bad
            fmt = parts[1]
        elif parts[0] == "element":
            if len(parts) != 3 or not parts[2].isdigit():
                if len(parts) == 3 and parts[2].lstrip("-").isdigit():
                    raise ValueError(f"{path!r}: element {parts[1]!r} has a negative count "
                                     f"{parts[2]}")
                raise bad
            if any(e[0] == parts[1] for e in elements):
                raise ValueError(f"{path!r}: element {parts[1]!r} is declared twice")
            elements.append((parts[1], int(parts[2]), []))
        elif parts[0] == "property":
            if not elements:
                raise ValueError(f"{path!r}: property before any element")
            if len(parts) >= 2 and parts[1] == "list":
                if not lists:
                    raise ValueError(f"{path!r} has list properties (a mesh PLY?), not a 3DGS "
                                     "splat PLY; load meshes with a mesh loader")
                if len(parts) != 5 or parts[2] not in _PLY_TYPES or parts[3] not in _PLY_TYPES:
                    raise bad
                parts = ["property", "list:" + _PLY_TYPES[parts[2]], parts[4]]
            elif len(parts) != 3:
                raise bad
            if parts[1] not in _PLY_TYPES and not parts[1].startswith("list:"):
                raise ValueError(f"{path!r}: unknown property type {parts[1]!r}")
            props = elements[-1][2]
            if any(p[0] == parts[2] for p in props):
                raise ValueError(f"{path!r}: property {parts[2]!r} of element "
                                 f"{elements[-1][0]!r} is declared twice")
            props.append((parts[2], _PLY_TYPES.get(parts[1], parts[1])))
        else:
            raise bad
    return fmt, elements, m.end()


def read_ply(path: str) -> Gaussians:
    """Read a 3DGS PLY; refuses malformed or foreign files with a ``ValueError`` naming why.

    Sizes are checked against the file size before anything is allocated, and the file must end
    exactly where its elements end (no silent trailing bytes)."""
    if not os.path.isfile(path):
        raise ValueError(f"no such PLY file: {path!r}")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        fmt, elements, offset = _parse_header(path, f.read(_MAX_HEADER))
        if fmt != "binary_little_endian":
            raise ValueError(f"{path!r} is {fmt!r} PLY; 3DGS PLYs are binary_little_endian")
        if not elements or elements[0][0] != "vertex":
            raise ValueError(f"{path!r} has no leading 'vertex' element")
        _, count, props = elements[0]
        names = [p[0] for p in props]
        missing = [r for r in _REQUIRED if r not in names]
        if missing:
            raise ValueError(f"{path!r} is not a 3DGS splat PLY: missing properties {missing}")
        rest_names = [nm for nm in names if nm.startswith("f_rest_")]
        n_rest = len(rest_names)
        if n_rest % 3 != 0 or (n_rest // 3 + 1) not in (1, 4, 9, 16):
            raise ValueError(f"{path!r}: {n_rest} f_rest properties do not match SH degree 0-3")
        if sorted(rest_names) != sorted(f"f_rest_{i}" for i in range(n_rest)):
            raise ValueError(f"{path!r}: f_rest properties are not f_rest_0..f_rest_{n_rest - 1}")
        dtype = np.dtype([(nm, "<" + t) for nm, t in props])
        expected = offset + sum(n * np.dtype([(nm, "<" + t) for nm, t in pr]).itemsize
                                for _, n, pr in elements)
        if count == 0:
            raise ValueError(f"{path!r} holds 0 Gaussians")
        if size < expected:
            raise ValueError(f"{path!r} is truncated: header promises {count} Gaussians "
                             f"({count * dtype.itemsize} bytes), file holds {size - offset} bytes "
                             "of data")
        if size > expected:
            raise ValueError(f"{path!r} has {size - expected} bytes after the data its header "
                             "declares (corrupt or not a 3DGS PLY)")
        f.seek(offset)
        data = f.read(count * dtype.itemsize)
        if len(data) < count * dtype.itemsize:  # the file shrank while reading
            raise ValueError(f"{path!r} is truncated")
    v = np.frombuffer(data, dtype=dtype, count=count)

    def cols(keys):
        return torch.from_numpy(np.stack([v[k].astype(np.float32) for k in keys], 1))

    k = n_rest // 3 + 1
    means = cols(["x", "y", "z"])
    dc = cols(["f_dc_0", "f_dc_1", "f_dc_2"])
    rest = cols([f"f_rest_{i}" for i in range(n_rest)]) if n_rest else torch.zeros(count, 0)
    rest = rest.reshape(count, 3, k - 1).permute(0, 2, 1)
    sh = torch.cat([dc[:, None, :], rest], 1)
    g = Gaussians(means, cols(["rot_0", "rot_1", "rot_2", "rot_3"]),
                  cols(["scale_0", "scale_1", "scale_2"]), cols(["opacity"])[:, 0], sh)
    if not all(torch.isfinite(t).all() for t in g.tensors()):
        raise ValueError(f"{path!r} holds NaN/inf values")
    return g


def min_data_bytes(fmt: str, elements: list) -> int:
    """The fewest data bytes a PLY with these elements can have (a list counts as empty; ASCII
    rows need at least one character per value): compared with the file size before a reader
    allocates what the header promises."""
    total = 0
    for _, count, props in elements:
        if fmt == "ascii":
            total += count * 2 * max(1, len(props))
        else:
            total += count * sum(np.dtype(t[5:] if t.startswith("list:") else t).itemsize
                                 for _, t in props)
    return total
