"""Seeded generators of malformed inputs, and the harness that feeds them to a reader.

Test-only code (shared by ``test_fuzz_readers.py`` and ``test_torn_files.py``). Every generator
takes a ``random.Random`` and returns a list of :class:`Case`; the same seed gives the same cases,
so a failure report (``reader/case-name``) reproduces exactly.

The contract a reader must meet for every case (:func:`run_cases`):

* it returns a result that passes the case's ``check`` (a correct load), or
* it raises ``ValueError`` whose message names the file (its path or base name) -- never another
  exception type;
* the peak of Python-tracked memory (tracemalloc: Python objects and numpy buffers) during the
  case stays below ``4 * file size + 100 MB``.
"""

from __future__ import annotations

import json
import math
import os
import random
import tracemalloc
from dataclasses import dataclass
from typing import Any, Callable, Iterable, List, Optional

MEM_FACTOR = 4
MEM_SLACK = 100 * 2**20


@dataclass
class Case:
    name: str
    data: Any  # bytes for file readers, anything for in-memory inputs
    expect: str = "either"  # "ok", "error" or "either"
    check: Optional[Callable[[Any], None]] = None  # asserts a successful result is correct


@dataclass
class Outcome:
    name: str
    kind: str  # "ok", "valueerror", or an exception type name
    message: str
    peak: int
    size: int


# ----------------------------------------------------------------------------------------------
# Byte-level mutations
# ----------------------------------------------------------------------------------------------

GARBAGE = [b"\x00", b"\xff" * 7, b"\n", b"\r\n", b"nan", b"-1", b"1e999", b"{", b"[[[", b"\x80\x81",
           b"end_header\n", b"ply\n", b"PK\x03\x04", b"\x89PNG", b"glTF", b'"', b"\\", b"%s%n"]


def truncations(rng: random.Random, base: bytes, n: int, lo: int = 0) -> List[Case]:
    cuts = sorted({0, 1, len(base) - 1, len(base) // 2, lo}
                  | {rng.randrange(lo, max(lo + 1, len(base))) for _ in range(n)})
    return [Case(f"truncate@{c}", base[:c]) for c in cuts if 0 <= c < len(base)][:n + 2]


def bit_flips(rng: random.Random, base: bytes, n: int, lo: int = 0, hi: Optional[int] = None,
              bits: int = 1) -> List[Case]:
    hi = len(base) if hi is None else hi
    out = []
    for _ in range(n):
        b = bytearray(base)
        where = []
        for _ in range(bits):
            i = rng.randrange(lo, hi)
            b[i] ^= 1 << rng.randrange(8)
            where.append(i)
        out.append(Case(f"bitflip@{','.join(map(str, where))}", bytes(b)))
    return out


def splices(rng: random.Random, base: bytes, n: int) -> List[Case]:
    """Inserted, deleted, duplicated and overwritten byte ranges; appended garbage."""
    out = []
    for k in range(n):
        i = rng.randrange(len(base))
        j = min(len(base), i + rng.randrange(1, 64))
        op = k % 5
        if op == 0:
            g = rng.choice(GARBAGE)
            out.append(Case(f"insert@{i}:{g[:8]!r}", base[:i] + g + base[i:]))
        elif op == 1:
            out.append(Case(f"delete@{i}-{j}", base[:i] + base[j:]))
        elif op == 2:
            out.append(Case(f"duplicate@{i}-{j}", base[:j] + base[i:j] + base[j:]))
        elif op == 3:
            junk = bytes(rng.randrange(256) for _ in range(j - i))
            out.append(Case(f"overwrite@{i}-{j}", base[:i] + junk + base[j:]))
        else:
            tail = rng.choice(GARBAGE) * rng.randrange(1, 9)
            out.append(Case(f"append:{tail[:8]!r}", base + tail))
    return out


def foreign(rng: random.Random, n: int = 8) -> List[Case]:
    """Files of other kinds and pure noise."""
    out = [Case("empty", b""), Case("one-byte", b"\x00"), Case("text", b"hello world\n"),
           Case("json-null", b"null"), Case("utf16-bom", "\ufeff{}".encode("utf-16")),
           Case("png-magic", b"\x89PNG\r\n\x1a\n" + b"\x00" * 32),
           Case("zip-magic", b"PK\x03\x04" + b"\x00" * 40)]
    for k in range(n):
        out.append(Case(f"noise{k}",
                        bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4096)))))
    return out


# ----------------------------------------------------------------------------------------------
# JSON-level mutations
# ----------------------------------------------------------------------------------------------

HOSTILE_VALUES = [None, True, -1, 0, 2**64, -(2**63), 1e308, float("nan"), float("inf"), "",
                  "garbage", [], {}, [[[]]], {"a": {"b": {"c": None}}}, [None] * 5, "1" * 200,
                  [1, "x", None], 0.5]


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:6]):
            yield from _paths(v, prefix + (i,))


def _get(obj, path):
    for p in path:
        obj = obj[p]
    return obj


def json_mutations(rng: random.Random, base: Any, n: int) -> List[Case]:
    """Structured edits of a JSON document: replaced values (wrong types, huge/negative numbers,
    NaN, nested garbage), deleted and renamed keys, shortened and lengthened lists."""
    paths = [p for p in _paths(base) if p]
    out = []
    for k in range(n):
        doc = json.loads(json.dumps(base))
        path = rng.choice(paths)
        parent, key = _get(doc, path[:-1]), path[-1]
        op = k % 4
        if op == 0 or op == 3:
            v = rng.choice(HOSTILE_VALUES)
            parent[key] = v
            label = f"set{list(path)}={json.dumps(v)[:20]}"
        elif op == 1:
            if isinstance(parent, dict):
                del parent[key]
                label = f"del{list(path)}"
            else:
                parent.append(parent[key])
                label = f"extend{list(path[:-1])}"
        else:
            tgt = parent[key]
            if isinstance(tgt, list) and tgt:
                tgt.pop(rng.randrange(len(tgt)))
                label = f"shorten{list(path)}"
            elif isinstance(parent, dict):
                parent[str(key) + "_x"] = parent.pop(key)
                label = f"rename{list(path)}"
            else:
                parent[key] = [parent[key]]
                label = f"wrap{list(path)}"
        out.append(Case("json:" + label, json.dumps(doc).encode()))
    return out


def json_text_cases(base: Any) -> List[Case]:
    """Text-level JSON hazards: duplicated keys, NaN tokens, deep nesting, huge numbers."""
    txt = json.dumps(base)
    out = [Case("json:deep-nesting", b"[" * 100000 + b"]" * 100000),
           Case("json:deep-dict", b'{"a":' * 50000 + b"1" + b"}" * 50000),
           Case("json:huge-int", b"1" + b"0" * 5000),
           Case("json:huge-float", b"1e999999"),
           Case("json:NaN-token", b"NaN"),
           Case("json:not-utf8", b"\xff\xfe\xfd"),
           Case("json:array", json.dumps([base]).encode()),
           Case("json:string", b'"cameras"')]
    if txt.startswith("{") and len(txt) > 2:
        first_key_end = txt.index(":")
        key = txt[1:first_key_end]
        out.append(Case("json:duplicated-first-key", ("{" + key + ": null, " + txt[1:]).encode()))
        out.append(Case("json:duplicated-key-last", (txt[:-1] + ", " + key + ": 1}").encode()))
    return out


# ----------------------------------------------------------------------------------------------
# The harness
# ----------------------------------------------------------------------------------------------


def run_cases(reader: Callable[[str], Any], cases: Iterable[Case], folder: str, filename: str,
              names_file: bool = True) -> List[Outcome]:
    """Write each case to ``folder/filename`` and call ``reader(path)``; returns the outcomes.
    Raises nothing: a failing reader shows up as an outcome whose ``kind`` is the exception."""
    path = os.path.join(folder, filename)
    outcomes = []
    tracemalloc.start()
    try:
        for case in cases:
            with open(path, "wb") as f:
                f.write(case.data)
            outcomes.append(_run_one(lambda: reader(path), case, len(case.data),
                                     [path, os.path.basename(path)] if names_file else None))
    finally:
        tracemalloc.stop()
    return outcomes


def run_inputs(func: Callable[[Any], Any], cases: Iterable[Case],
               names: List[str]) -> List[Outcome]:
    """In-memory inputs (node tensors): ``func(case.data)``; a ``ValueError`` must name one of
    ``names`` (the input's name)."""
    outcomes = []
    tracemalloc.start()
    try:
        for case in cases:
            outcomes.append(_run_one(lambda: func(case.data), case, 0, names))
    finally:
        tracemalloc.stop()
    return outcomes


def _run_one(call, case: Case, size: int, names: Optional[List[str]]) -> Outcome:
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        result = call()
    except ValueError as e:
        peak = tracemalloc.get_traced_memory()[1] - base
        msg = str(e)
        if names is not None and not any(n in msg for n in names):
            return Outcome(case.name, "unnamed-valueerror", msg, peak, size)
        if case.expect == "ok":
            return Outcome(case.name, "refused-valid", msg, peak, size)
        return Outcome(case.name, "valueerror", msg, peak, size)
    except BaseException as e:  # noqa: BLE001 - any other exception is what the fuzz looks for
        if isinstance(e, KeyboardInterrupt):
            raise
        peak = tracemalloc.get_traced_memory()[1] - base
        return Outcome(case.name, type(e).__name__, str(e)[:200], peak, size)
    peak = tracemalloc.get_traced_memory()[1] - base
    if case.expect == "error":
        return Outcome(case.name, "accepted-invalid", "", peak, size)
    if case.check is not None:
        try:
            case.check(result)
        except AssertionError as e:
            return Outcome(case.name, "wrong-load", str(e)[:200], peak, size)
    return Outcome(case.name, "ok", "", peak, size)


def failures(outcomes: List[Outcome]) -> List[str]:
    """Human-readable lines for every outcome that breaks the contract (empty = all good)."""
    bad = []
    for o in outcomes:
        limit = MEM_FACTOR * o.size + MEM_SLACK
        if o.kind not in ("ok", "valueerror"):
            bad.append(f"{o.name}: {o.kind}: {o.message}")
        elif o.peak > limit:
            bad.append(f"{o.name}: peak memory {o.peak / 2**20:.1f} MB > {limit / 2**20:.1f} MB")
    return bad


def peak_ratio(outcomes: List[Outcome]) -> float:
    """Worst ``peak / (4 * size + 100 MB)`` over the rejected cases (<= 1 meets the target)."""
    r = [o.peak / (MEM_FACTOR * o.size + MEM_SLACK) for o in outcomes if o.kind == "valueerror"]
    return max(r) if r else 0.0


def finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# ----------------------------------------------------------------------------------------------
# 3DGS PLY (kernels/splat/ply.py)
# ----------------------------------------------------------------------------------------------

PLY_TYPES = {"float": "<f4", "double": "<f8", "uchar": "u1", "int": "<i4", "short": "<i2"}


def ply_scene(rng: random.Random, n: int, k: int):
    """``(props, values)``: the 3DGS property list and float32 columns of a random scene."""
    import numpy as np

    from orbitforge.kernels.splat.ply import property_names

    names = property_names(k)
    gen = np.random.default_rng(rng.randrange(2**32))
    values = {nm: gen.standard_normal(n).astype(np.float32) for nm in names}
    return [("float", nm) for nm in names], values


def ply_bytes(props, values, n: int, count=None, fmt="binary_little_endian", extra=(),
              end=b"end_header\n", after=b"", elements_after="") -> bytes:
    import numpy as np

    # one field per declared property (duplicates allowed: f0, f1, ...)
    dt = np.dtype([(f"f{i}", PLY_TYPES.get(t, "<f4")) for i, (t, _) in enumerate(props)])
    arr = np.zeros(n, dt)
    for i, (_, nm) in enumerate(props):
        arr[f"f{i}"] = values[nm]
    head = "ply\n" + (f"format {fmt} 1.0\n" if fmt else "") + "".join(extra)
    head += f"element vertex {n if count is None else count}\n"
    head += "".join(f"property {t} {nm}\n" for t, nm in props) + elements_after
    return head.encode() + end + arr.tobytes() + after


def _ply_check(values, n, k):
    """A loaded Gaussians equals the scene ``values`` exactly."""
    import torch

    def check(g):
        assert len(g) == n, f"{len(g)} Gaussians, expected {n}"
        assert g.sh.shape[1] == k, f"SH {g.sh.shape[1]} coefficients, expected {k}"
        col = lambda names: torch.stack([torch.from_numpy(values[c]) for c in names], 1)  # noqa
        assert torch.equal(g.means, col(["x", "y", "z"])), "means differ"
        assert torch.equal(g.opacity_logits, torch.from_numpy(values["opacity"])), "opacity"
        assert torch.equal(g.quats, col([f"rot_{i}" for i in range(4)])), "rotations differ"
        assert torch.equal(g.log_scales, col([f"scale_{i}" for i in range(3)])), "scales"
        assert torch.equal(g.sh[:, 0], col(["f_dc_0", "f_dc_1", "f_dc_2"])), "sh dc"
        rest = col([f"f_rest_{i}" for i in range(3 * (k - 1))]) if k > 1 else None
        if rest is not None:
            assert torch.equal(g.sh[:, 1:], rest.reshape(n, 3, k - 1).permute(0, 2, 1)), "rest"
    return check


def ply_cases(rng: random.Random) -> List[Case]:
    import numpy as np

    out: List[Case] = []
    for k, n in ((1, 3), (4, 5), (16, 2)):
        props, values = ply_scene(rng, n, k)
        good = ply_bytes(props, values, n)
        head_len = good.index(b"end_header\n") + len(b"end_header\n")
        ok = _ply_check(values, n, k)
        tag = f"k{k}:"
        out.append(Case(tag + "valid", good, "ok", ok))
        # counts
        for c in (0, -1, -(2**63), n + 1, n - 1, 10**12, 2**63, 2**64 + 1, 10**40):
            out.append(Case(tag + f"count={c}", ply_bytes(props, values, n, count=c),
                            "error" if c != n else "ok"))
        for c in ("abc", "1e3", "0x10", "", "5 5", "3.0", "+3", "\u00b3"):
            out.append(Case(tag + f"count={c!r}", ply_bytes(props, values, n, count=c), "error"))
        # duplicated / missing / renamed / retyped properties
        for i in rng.sample(range(len(props)), min(6, len(props))):
            dup = props[:i + 1] + [props[i]] + props[i + 1:]
            out.append(Case(tag + f"dup-{props[i][1]}", ply_bytes(dup, values, n), "error"))
            gone = props[:i] + props[i + 1:]
            optional = props[i][1] in ("nx", "ny", "nz")  # normals are not used by 3DGS
            out.append(Case(tag + f"missing-{props[i][1]}", ply_bytes(gone, values, n),
                            "ok" if optional else "error", ok if optional else None))
            bad = list(props)
            bad[i] = (rng.choice(["float128", "half", "list", "", "list uchar int"]), props[i][1])
            head = ply_bytes(props, values, n).replace(
                f"property float {props[i][1]}\n".encode(),
                f"property {bad[i][0]} {props[i][1]}\n".encode(), 1)
            out.append(Case(tag + f"type-{bad[i][0]!r}-{props[i][1]}", head, "error"))
        for extra_name in ("nx2", "f_rest_99"):
            more = props + [("float", extra_name)]
            vals = dict(values, **{extra_name: np.zeros(n, np.float32)})
            out.append(Case(tag + f"extra-{extra_name}", ply_bytes(more, vals, n),
                            "ok" if extra_name == "nx2" else "error",
                            ok if extra_name == "nx2" else None))
        # semantics-preserving rewrites: must load exactly
        shuffled = list(props)
        rng.shuffle(shuffled)
        out.append(Case(tag + "shuffled-properties", ply_bytes(shuffled, values, n), "ok", ok))
        as_double = [("double", nm) for _, nm in props]
        out.append(Case(tag + "double-properties", ply_bytes(as_double, values, n), "ok", ok))
        out.append(Case(tag + "comments", ply_bytes(props, values, n, extra=[
            "comment made by fuzz\n", "obj_info x\n", "comment end_header\n"]), "ok", ok))
        out.append(Case(tag + "crlf-end", ply_bytes(props, values, n, end=b"end_header\r\n"),
                        "ok", ok))
        # formats and header lines
        for fmt in ("ascii", "binary_big_endian", "", "binary_little_endian 1.0 extra", "\x00"):
            out.append(Case(tag + f"format={fmt!r}", ply_bytes(props, values, n, fmt=fmt), "error"))
        for line in ("format binary_little_endian 1.0\n", "element\n", "property float\n",
                     "property\n", "bogus line\n", "element face 1\n", "\x00\x01\x02\n"):
            out.append(Case(tag + f"line={line.strip()!r}", ply_bytes(
                props, values, n, extra=[line]), "error"))
        out.append(Case(tag + "no-end_header", good.replace(b"end_header\n", b"end_headr\n"),
                        "error"))
        out.append(Case(tag + "no-magic", b"plx" + good[3:], "error"))
        out.append(Case(tag + "huge-comment-header", good.replace(
            b"ply\n", b"ply\n" + b"comment " + b"x" * 70000 + b"\n", 1), "error"))
        out.append(Case(tag + "mesh-face-element", ply_bytes(
            props, values, n, elements_after="element face 1\nproperty list uchar int "
            "vertex_indices\n", after=b"\x03" + b"\x00" * 12), "error"))
        out.append(Case(tag + "second-element-with-data", ply_bytes(
            props, values, n, elements_after="element extra 2\nproperty float a\n",
            after=b"\x00" * 8), "ok", ok))
        out.append(Case(tag + "second-element-missing-data", ply_bytes(
            props, values, n, elements_after="element extra 2\nproperty float a\n"), "error"))
        out.append(Case(tag + "duplicated-element", ply_bytes(
            props, values, n, elements_after=f"element vertex {n}\nproperty float x\n",
            after=b"\x00" * 4 * n), "error"))
        # NaN / inf in the data
        for bad in (np.nan, np.inf, -np.inf):
            nm = rng.choice([p[1] for p in props])
            vals = dict(values)
            vals[nm] = values[nm].copy()
            vals[nm][rng.randrange(n)] = bad
            unused = nm in ("nx", "ny", "nz")
            out.append(Case(tag + f"{bad}-in-{nm}", ply_bytes(props, vals, n),
                            "ok" if unused else "error", ok if unused else None))
        # trailing bytes
        for tail in (b"\x00", b"\n", b"garbage" * 10, b"\x00" * 4 * len(props)):
            out.append(Case(tag + f"trailing-{len(tail)}", good + tail, "error"))
        # byte-level noise: header flips must load identically or fail, data flips decode as-is
        out += truncations(rng, good, 10)
        for c in bit_flips(rng, good, 10, 0, head_len):
            c.check = ok
            out.append(c)
        for c in bit_flips(rng, good, 6, head_len):
            vals = _decode_like(c.data[head_len:], props)
            finite_all = all(np.isfinite(v).all() for nm, v in vals.items()
                             if nm not in ("nx", "ny", "nz"))
            c.check = _ply_check(vals, n, k)
            c.expect = "ok" if finite_all else "error"
            out.append(c)
        out += splices(rng, good, 10)
    out += foreign(rng)
    return out


def _decode_like(data: bytes, props):
    import numpy as np

    dt = np.dtype([(nm, PLY_TYPES[t]) for t, nm in props])
    arr = np.frombuffer(data, dt)
    return {nm: arr[nm].astype(np.float32) for _, nm in props}


# ----------------------------------------------------------------------------------------------
# cameras.json (Cameras.load_json / Load Cameras)
# ----------------------------------------------------------------------------------------------


def cameras_sane(c) -> None:
    """Invariants of any loaded CAMERAS."""
    import torch

    n = len(c)
    assert n >= 1 and c.viewmats.shape == (n, 4, 4) and c.Ks.shape == (n, 3, 3)
    assert isinstance(c.width, int) and isinstance(c.height, int) and c.width > 0 < c.height
    for t in (c.viewmats, c.Ks, c.elevation, c.azimuth, c.radius):
        assert torch.isfinite(t).all(), "non-finite camera values"
    assert c.elevation.shape == c.azimuth.shape == c.radius.shape == (n,)


def cameras_cases(rng: random.Random) -> List[Case]:
    import torch

    from orbitforge.kernels.geometry.cameras import make_orbit_cameras

    out: List[Case] = []
    for n in (1, 3, 21):
        cams = make_orbit_cameras(torch.linspace(-20, 40, n), torch.linspace(0, 300, n), 2.0,
                                  33.8, 64, 48)
        doc = cams.to_dict()
        good = json.dumps(doc).encode()

        def same(c, ref=cams):
            cameras_sane(c)
            assert torch.allclose(c.viewmats, ref.viewmats) and torch.allclose(c.Ks, ref.Ks)
            assert (c.width, c.height) == (ref.width, ref.height)

        tag = f"n{n}:"
        out.append(Case(tag + "valid", good, "ok", same))
        out.append(Case(tag + "pretty", json.dumps(doc, indent=2).encode(), "ok", same))
        lean = {k: doc[k] for k in ("viewmats", "Ks", "width", "height")}
        out.append(Case(tag + "no-orbit-fields", json.dumps(lean).encode(), "ok", same))
        out.append(Case(tag + "unknown-key", json.dumps(dict(doc, extra=[1, 2])).encode(), "ok",
                        same))
        for key in ("viewmats", "Ks", "width", "height"):
            out.append(Case(tag + f"missing-{key}", json.dumps(
                {k: v for k, v in doc.items() if k != key}).encode(), "error"))
        out.append(Case(tag + "empty-lists", json.dumps(dict(doc, viewmats=[], Ks=[])).encode(),
                        "error"))
        out.append(Case(tag + "ks-count-mismatch",
                        json.dumps(dict(doc, Ks=doc["Ks"] + doc["Ks"][:1]))
                        .encode(), "error"))
        out.append(Case(tag + "scaled-pose", json.dumps(dict(doc, viewmats=[
            [[2 * x for x in row] for row in m] for m in doc["viewmats"]])).encode(), "error"))
        for w in (0, -64, 64.5, "64", True, 10**30, float("inf")):
            out.append(Case(tag + f"width={w!r}", json.dumps(dict(doc, width=w)).encode(), "error"))
        for c in json_mutations(rng, doc, 40):
            c.check = cameras_sane
            out.append(c)
        out += json_text_cases(doc)
        out += truncations(rng, good, 6)
        for c in bit_flips(rng, good, 12) + splices(rng, good, 8):
            c.check = cameras_sane
            out.append(c)
    out += foreign(rng)
    return out


# ----------------------------------------------------------------------------------------------
# UI workflow JSON (check-workflow)
# ----------------------------------------------------------------------------------------------


def workflow_cases(rng: random.Random, docs: List[Any]) -> List[Case]:
    """Mutations of real UI workflows (``docs``: parsed workflows the checker accepts)."""
    out: List[Case] = []
    for w, doc in enumerate(docs):
        good = json.dumps(doc).encode()
        tag = f"w{w}:"
        out.append(Case(tag + "valid", good, "ok"))
        for key in ("nodes", "links"):
            out.append(Case(tag + f"missing-{key}", json.dumps(
                {k: v for k, v in doc.items() if k != key}).encode(), "error"))
        node = doc["nodes"][0]
        for field in ("inputs", "outputs", "widgets_values", "id", "type"):
            for v in (None, 5, "x", [None], [[1]], {"a": 1}, [{"link": "x", "name": 3}]):
                d = json.loads(good)
                d["nodes"][0][field] = v
                out.append(Case(tag + f"node0.{field}={json.dumps(v)}", json.dumps(d).encode()))
        for v in ([None], [[1, 2]], [["a", "b", "c", "d", "e", "f"]], [{"id": 1}], {"x": 1}, 7,
                  [[10**30, 1, 0, 2, 0, "IMAGE"]], [[1, 1, -5, 2, 10**20, "IMAGE"]]):
            d = json.loads(good)
            d["links"] = v
            out.append(Case(tag + f"links={json.dumps(v)[:30]}", json.dumps(d).encode()))
        d = json.loads(good)
        d["nodes"].append(node)
        out.append(Case(tag + "duplicated-node", json.dumps(d).encode(), "error"))
        out += json_mutations(rng, doc, 45)
        out += truncations(rng, good, 5)
        out += bit_flips(rng, good, 8) + splices(rng, good, 5)
    out += json_text_cases(docs[0]) + foreign(rng, 4)
    return out


# ----------------------------------------------------------------------------------------------
# Hi3D checkpoints (.safetensors / .pt), kernels/diffusion/hi3d_checkpoint.py
# ----------------------------------------------------------------------------------------------


class Evil:
    """Unpickling this runs ``open(marker, 'w')``: a reader that executes pickles leaves the
    marker file behind."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        import builtins

        return (builtins.open, (self.marker, "w"))


def small_state_dict(rng: random.Random):
    import torch

    g = torch.Generator().manual_seed(rng.randrange(2**31))
    return {"module.model.diffusion_model.input_blocks.0.0.weight": torch.randn(4, 3, 3, 3,
                                                                                generator=g),
            "module.model.diffusion_model.out.2.bias": torch.randn(4, generator=g),
            "module.first_stage_model.w": torch.randn(2, 5, generator=g).half(),
            "module.cond.idx": torch.arange(6, dtype=torch.int64),
            "module.scalar": torch.tensor(1.5)}


def safetensors_bytes(header: dict, data: bytes, pad_len: Optional[int] = None) -> bytes:
    h = json.dumps(header).encode()
    n = len(h) if pad_len is None else pad_len
    return n.to_bytes(8, "little", signed=n < 0) + h + data


def _same_sd(ref):
    import torch

    def check(res):
        sd = res[0] if isinstance(res, tuple) else res
        want = {k.replace("module.", ""): v for k, v in ref.items()}
        assert set(sd) == set(want), f"keys {sorted(sd)[:4]} != {sorted(want)[:4]}"
        for k, v in want.items():
            assert sd[k].dtype == v.dtype and torch.equal(sd[k], v), f"{k} differs"
    return check


def _stable_storage_keys(data: bytes) -> bytes:
    """The legacy torch format names storages by their memory address: rename them 0, 1, ...
    (same length) so the same seed gives the same bytes."""
    import re

    keys = []
    for m in re.finditer(rb"X(.{4})(\d{6,24})", data, re.S):
        if int.from_bytes(m.group(1), "little") == len(m.group(2)) and m.group(2) not in keys:
            keys.append(m.group(2))
    for i, k in enumerate(keys):
        data = data.replace(b"X" + len(k).to_bytes(4, "little") + k,
                            b"X" + len(k).to_bytes(4, "little") + str(i).zfill(len(k)).encode())
    return data


def checkpoint_file_cases(rng: random.Random, marker: str) -> List[tuple]:
    """``[(extension, Case)]`` for :func:`read_state_dict`."""
    import io

    import torch
    from safetensors.torch import save

    out = []
    sd = small_state_dict(rng)
    # --- safetensors
    good = save(sd)
    hlen = int.from_bytes(good[:8], "little")
    header = json.loads(good[8:8 + hlen])
    data = good[8 + hlen:]
    ok = _same_sd(sd)
    st = [Case("st:valid", good, "ok", ok),
          Case("st:metadata", safetensors_bytes(dict(header, __metadata__={"a": "b"}), data), "ok",
               ok)]
    for n in (0, 1, 7, len(good), 2**63 - 1, 2**64 - 1, 10**12):
        st.append(Case(f"st:header-len={n}", n.to_bytes(8, "little") + good[8:], "error"))
    first = sorted(k for k in header if k != "__metadata__")[0]
    for field, vals in (("dtype", ["F99", "", 5, None, "I64", "BOOL", "F16"]),
                        ("shape", [[-1], [10**12, 10**12], [], [2**64], "4", [1.5], None, [0]]),
                        ("data_offsets", [[0, 10**15], [10, 0], [-4, 8], [0], None, "x",
                                          [0, 2**64], [len(data), len(data) + 8]])):
        for v in vals:
            h = json.loads(json.dumps(header))
            h[first][field] = v
            st.append(Case(f"st:{field}={json.dumps(v)}", safetensors_bytes(h, data)))
    for k in range(6):
        h = json.loads(json.dumps(header))
        key = rng.choice([k for k in h if k != "__metadata__"])
        h[key] = rng.choice(HOSTILE_VALUES)
        st.append(Case(f"st:entry{k}-garbage", safetensors_bytes(h, data)))
    st.append(Case("st:meta-not-strings", safetensors_bytes(dict(header, __metadata__={"a": [1]}),
                                                            data)))
    dup = json.dumps(header)
    dup = dup[:-1] + ", " + json.dumps(first) + ": " + json.dumps(header[first]) + "}"
    st.append(Case("st:duplicated-key", len(dup).to_bytes(8, "little") + dup.encode() + data))
    st.append(Case("st:trailing", good + b"\x00" * 16))
    st += truncations(rng, good, 12) + bit_flips(rng, good, 25) + splices(rng, good, 15)
    st += json_mutations(rng, header, 15)  # header replaced: bytes are JSON only (no length)
    out += [(".safetensors", c) for c in st]
    # --- torch pickles (zip and legacy)
    for fmt, zipfmt in (("pt", True), ("legacy", False)):
        buf = io.BytesIO()
        torch.save({"module": sd}, buf, _use_new_zipfile_serialization=zipfmt)
        good = _stable_storage_keys(buf.getvalue())
        pt = [Case(f"{fmt}:valid", good, "ok", ok)]
        for name, obj in (("evil-top", Evil(marker)), ("evil-value",
                                                       {"module": {"a": Evil(marker)}}),
                          ("evil-key", {"module": {"a": torch.zeros(1)}, "x": [Evil(marker)]}),
                          ("int-values", {"module": {"a": 1, "b": torch.zeros(1)}}),
                          ("int-keys", {1: torch.zeros(1)}), ("list", [torch.zeros(1)]),
                          ("nested", {"module": {"a": {"b": {"c": torch.zeros(1)}}}}),
                          ("strings", {"a": "b"}), ("empty", {}), ("none", None),
                          ("dup-after-strip", {"module.a": torch.zeros(1), "a": torch.ones(1)}),
                          ("optimizer-state", {"module": sd, "optimizer": {"lr": 0.1}})):
            b = io.BytesIO()
            torch.save(obj, b, _use_new_zipfile_serialization=zipfmt)
            b = io.BytesIO(_stable_storage_keys(b.getvalue()))
            expect = "ok" if name == "optimizer-state" else "error"
            pt.append(Case(f"{fmt}:{name}", b.getvalue(), expect, ok if expect == "ok" else None))
        pt += truncations(rng, good, 15) + bit_flips(rng, good, 30) + splices(rng, good, 12)
        out += [(".pt", c) for c in pt]
    out += [(".pt", c) for c in foreign(rng, 4)] + [(".safetensors", c) for c in foreign(rng, 4)]
    return out


def stage2_layout_cases(rng: random.Random) -> List[Case]:
    """Stage-2 UNet state dicts (tiny config, real key layout) with wrong keys, shapes, dtypes;
    ``data`` is the (engine-prefixed) state dict as read from a file."""
    import torch

    from orbitforge.bench.tiny_hi3d import random_unet_state_dict, tiny_config

    cfg = tiny_config(model_channels=8, context_dim=8)
    sd = random_unet_state_dict(cfg, seed=rng.randrange(1000))
    keys = sorted(sd)
    pre = "model.diffusion_model."

    def check(res):
        unet, got = res
        assert got == cfg, f"config {got} != {cfg}"
        assert set(unet) == set(sd) and all(torch.equal(unet[k], sd[k]) for k in sd)

    def pack(d, prefix=pre):
        return {prefix + k: v for k, v in d.items()}

    out = [Case("valid-engine", pack(sd), "ok", check), Case("valid-bare", pack(sd, ""),
                                                             "ok", check),
           Case("valid-with-vae", {**pack(sd), "first_stage_model.w": torch.zeros(3)}, "ok", check),
           Case("no-unet", {"first_stage_model.w": torch.zeros(3)}, "error")]
    specials = ["input_blocks.0.0.weight", "out.2.weight", "label_emb.0.0.weight",
                "time_embed.0.weight", "input_blocks.1.0.out_layers.3.weight"]
    for k in range(70):
        d = dict(sd)
        key = specials[k % len(specials)] if k < 25 else rng.choice(keys)
        op = k % 7
        t = d[key]
        if op == 0:
            del d[key]
            label = f"missing:{key}"
        elif op == 1:
            d[key + "_extra"] = torch.zeros(2)
            label = f"extra:{key}"
        elif op == 2:
            d[key] = torch.zeros(())
            label = f"0d:{key}"
        elif op == 3:
            d[key] = torch.zeros((0,) + tuple(t.shape[1:]))
            label = f"zero-rows:{key}"
        elif op == 4:
            d[key] = t.to(rng.choice([torch.int64, torch.bool, torch.uint8, torch.int32]))
            label = f"dtype-{d[key].dtype}:{key}"
        elif op == 5:
            d[key] = t.reshape(-1) if t.ndim > 1 else t[None].repeat(2, 1)
            label = f"reshaped:{key}"
        else:
            d[key] = torch.zeros(tuple(s + 1 for s in t.shape))
            label = f"grown:{key}"
        out.append(Case(label, pack(d), "error"))
    return out


# ----------------------------------------------------------------------------------------------
# Mesh files (kernels/mesh/render.py: load_mesh)
# ----------------------------------------------------------------------------------------------


def mesh_sane(m) -> None:
    import numpy as np

    v, f = np.asarray(m.vertices), np.asarray(m.faces)
    assert len(f) > 0 and f.ndim == 2 and f.shape[1] == 3, f"faces {f.shape}"
    assert v.ndim == 2 and v.shape[1] == 3 and np.isfinite(v).all(), "vertices not finite"
    assert f.min() >= 0 and f.max() < len(v), "face index out of range"
    m.copy()  # trimesh computes colours lazily: a loaded mesh must survive that


def mesh_cases(rng: random.Random) -> List[tuple]:
    """``[(extension, Case)]`` for :func:`load_mesh`: OBJ, PLY, GLB, STL, OFF."""
    import struct

    import numpy as np
    import trimesh

    box = trimesh.creation.box()
    box.visual.vertex_colors = np.tile([200, 30, 30, 255], (len(box.vertices), 1))
    nv, nf = len(box.vertices), len(box.faces)
    out = []
    for ext in ("obj", "ply", "glb", "stl", "off"):
        good = box.export(file_type=ext)
        good = good.encode() if isinstance(good, str) else good

        def same(m, ref=box):
            mesh_sane(m)
            assert len(m.faces) == len(ref.faces), f"{len(m.faces)} faces"
            assert np.allclose(np.sort(np.asarray(m.vertices), 0)[[0, -1]],
                               np.sort(ref.vertices, 0)[[0, -1]], atol=1e-5), "bounds differ"

        cs = [Case(f"{ext}:valid", good, "ok", same)]
        cs += truncations(rng, good, 10)
        cs += bit_flips(rng, good, 18) + splices(rng, good, 12)
        if ext == "ply":
            for c in (-1, 0, 10**12, 2**63, nv + 1, "x"):
                cs.append(Case(f"ply:vertex-count={c}", good.replace(
                    f"element vertex {nv}\n".encode(), f"element vertex {c}\n".encode(), 1)))
                cs.append(Case(f"ply:face-count={c}", good.replace(
                    f"element face {nf}\n".encode(), f"element face {c}\n".encode(), 1)))
            cs.append(Case("ply:dup-property", good.replace(b"property float x\n",
                                                            b"property float x\nproperty float "
                                                            b"x\n")))
            cs.append(Case("ply:list-count-255", good.replace(b"end_header\n", b"end_header\n", 1)
                           [:good.index(b"end_header\n") + 11] + b"\xff" + good[good.index(
                               b"end_header\n") + 12:]))
        if ext == "glb":
            for off, what in ((8, "total-length"), (12, "json-length"), (20 + len(good) % 4, "x")):
                for v in (0, 3, 2**31, 2**32 - 1):
                    b = bytearray(good)
                    b[off:off + 4] = struct.pack("<I", v)
                    cs.append(Case(f"glb:{what}={v}", bytes(b)))
            jl = struct.unpack("<I", good[12:16])[0]
            gltf = json.loads(good[20:20 + jl])
            for c in json_mutations(rng, gltf, 30):
                j = c.data + b" " * (-len(c.data) % 4)
                cs.append(Case("glb:" + c.name, good[:12] + struct.pack("<I", len(j)) + good[16:20]
                               + j + good[20 + jl:]))
        if ext == "stl":
            for v in (0, 1, 2**32 - 1, nf + 1):
                cs.append(Case(f"stl:count={v}", good[:80] + struct.pack("<I", v) + good[84:]))
        if ext == "obj":
            cs += [Case("obj:face-out-of-range", good + b"f 1 2 999\n"),
                   Case("obj:face-negative", good + b"f -1 -2 -999\n"),
                   Case("obj:face-zero", good + b"f 0 1 2\n"),
                   Case("obj:nan-vertex", b"v nan 0 0\n" + good),
                   Case("obj:inf-vertex", good.replace(b"v ", b"v 1e999 ", 1)),
                   Case("obj:no-faces", b"v 0 0 0\nv 1 0 0\nv 0 1 0\n"),
                   Case("obj:garbage-lines", good + b"vt x y\nvn\nusemtl \x00\nmtllib ../../x\n"),
                   Case("obj:huge-index", good + b"f 1 2 99999999999999999999\n")]
        if ext == "off":
            cs += [Case("off:huge-counts", b"OFF\n1000000000000 1000000000000 0\n0 0 0\n"),
                   Case("off:negative", b"OFF\n-3 -1 0\n0 0 0\n3 0 1 2\n")]
        out += [("." + ext, c) for c in cs]
    out += [(".obj", c) for c in foreign(rng, 3)] + [(".glb", c) for c in foreign(rng, 3)]
    out += [(".ply", c) for c in foreign(rng, 3)]
    for _, c in out:
        if c.check is None:
            c.check = mesh_sane
    return out


# ----------------------------------------------------------------------------------------------
# IMAGE / MASK tensors given to nodes
# ----------------------------------------------------------------------------------------------

BIG = 16384  # a 16k x 16k IMAGE, as a stride-0 view (no memory of its own)


def image_variants(rng: random.Random, n: int, h: int, w: int) -> List[Case]:
    """IMAGE inputs for a node expecting ``n`` views of ``h x w``: ``data`` is the tensor."""
    import numpy as np
    import torch

    g = torch.Generator().manual_seed(rng.randrange(2**31))
    base = torch.rand(n, h, w, 3, generator=g)
    out = [Case("valid", base, "ok"), Case("rgba", torch.cat([base, torch.ones(n, h, w, 1)], -1),
                                           "ok"),
           Case("rgba-empty-alpha", torch.cat([base, torch.zeros(n, h, w, 1)], -1)),
           Case("float64", base.double(), "ok"), Case("float16", base.half(), "ok"),
           Case("non-contiguous", base.transpose(1, 2).contiguous().transpose(1, 2), "ok"),
           Case("out-of-range", base * 255 - 3),
           Case("expanded", torch.rand(1, 1, 1, 3).expand(n, h, w, 3), "ok")]
    for shape in ((h, w, 3), (1, n, h, w, 3), (n, h, w), (n, 3, h, w), (n, h, w, 1), (n, h, w, 2),
                  (n, h, w, 5), (0, h, w, 3), (n, 0, w, 3), (n, h, 0, 3), (n + 1, h, w, 3),
                  (max(1, n - 1), h, w, 3), (n, h + 1, w, 3), (n, 1, 1, 3), (n, h * 2, w * 2, 3),
                  (n, h, w * 3, 3)):
        out.append(Case(f"shape{list(shape)}", torch.rand(shape, generator=g)))
    for dt in (torch.uint8, torch.int32, torch.int64, torch.bool, torch.complex64):
        out.append(Case(f"dtype-{dt}", (base * 255).to(dt) if dt != torch.bool else base > 0.5,
                        "error"))
    for v in (float("nan"), float("inf"), -float("inf")):
        for _ in range(2):
            t = base.clone()
            t[rng.randrange(n), rng.randrange(h), rng.randrange(w), rng.randrange(3)] = v
            out.append(Case(f"pixel={v}", t, "error"))
    for obj in (None, 3, "image", [[0.5]], base.numpy(), np.zeros((n, h, w, 3), np.float32), {}):
        out.append(Case(f"not-a-tensor-{type(obj).__name__}", obj, "error"))
    return out


def mask_variants(rng: random.Random, n: int, h: int, w: int) -> List[Case]:
    import torch

    g = torch.Generator().manual_seed(rng.randrange(2**31))
    m = torch.zeros(n, h, w)
    m[:, h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1
    out = [Case("mask-valid", m, "ok"), Case("mask-bool", m > 0.5, "ok"),
           Case("mask-soft", m * 0.9 + 0.05, "ok"), Case("mask-float64", m.double(), "ok"),
           Case("mask-empty", torch.zeros(n, h, w)),
           Case("mask-all-0.4", torch.full((n, h, w), 0.4)),
           Case("mask-full", torch.ones(n, h, w)), Case("mask-inverted", 1 - m)]
    one_empty = m.clone()
    one_empty[rng.randrange(n)] = 0
    out.append(Case("mask-one-view-empty", one_empty))
    for shape in ((n, h, w, 1), (h, w), (n, h, w - 1), (n + 1, h, w), (n, w + 1, h), (0, h, w),
                  (n, 0, w), (1, n, h, w)):
        out.append(Case(f"mask-shape{list(shape)}", torch.rand(shape, generator=g), "error"))
    for v in (float("nan"), float("inf")):
        t = m.clone()
        t[rng.randrange(n), rng.randrange(h), rng.randrange(w)] = v
        out.append(Case(f"mask={v}", t, "error"))
    for dt in (torch.uint8, torch.int64):
        out.append(Case(f"mask-dtype-{dt}", m.to(dt), "error"))
    out.append(Case("mask-none", None))  # optional inputs: None is "not connected"
    for obj in (1.0, "mask", [[1]]):
        out.append(Case(f"mask-not-a-tensor-{type(obj).__name__}", obj, "error"))
    return out


def big_image_cases() -> List[Case]:
    """16k x 16k inputs as stride-0 views: checking them must not allocate a copy."""
    import torch

    px = torch.full((1, 1, 1, 3), 0.5)
    nan = torch.full((1, 1, 1, 3), float("nan"))
    return [Case("16k-valid", px.expand(1, BIG, BIG, 3), "ok"),
            Case("16k-nan", nan.expand(1, BIG, BIG, 3), "error"),
            Case("16k-mask", torch.ones(1, 1, 1).expand(1, BIG, BIG), "ok")]


# ----------------------------------------------------------------------------------------------
# Every reader, as the tests run it (one place: tests and the summary below use these)
# ----------------------------------------------------------------------------------------------


def fuzz_ply(folder: str) -> List[Outcome]:
    from orbitforge.kernels.splat.ply import read_ply

    return run_cases(read_ply, ply_cases(random.Random(1801)), folder, "scene.ply")


def fuzz_cameras(folder: str) -> List[Outcome]:
    from orbitforge.nodes.sample import LoadCameras

    return run_cases(lambda p: LoadCameras().load(p)[0], cameras_cases(random.Random(1802)),
                     folder, "cameras.json")


def fuzz_workflow(folder: str) -> List[Outcome]:
    """check-workflow reports problems per file (the CLI prints ``FILE: problem``); a file with
    problems counts as a refusal naming the file."""
    import glob

    from orbitforge.workflow_tools.check import check_files
    from orbitforge.workflow_tools.schema import load_core_schemas

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    docs = []
    for p in sorted(glob.glob(os.path.join(repo, "example_workflows", "*.json"))):
        with open(p) as f:
            docs.append(json.load(f))
    core = load_core_schemas()

    def check(path):
        problems = check_files([path], core=core)[path]
        assert isinstance(problems, list) and all(isinstance(p, str) for p in problems)
        if problems:
            raise ValueError(f"{path}: " + "; ".join(problems))
        return problems

    return run_cases(check, workflow_cases(random.Random(1803), docs), folder, "workflow.json")


def fuzz_checkpoint_files(folder: str) -> List[Outcome]:
    """safetensors and torch pickles (zip and legacy); raises AssertionError if a pickled
    ``__reduce__`` ran (it would create the marker file)."""
    from orbitforge.kernels.diffusion.hi3d_checkpoint import read_state_dict

    marker = os.path.join(folder, "PWNED")
    cases = checkpoint_file_cases(random.Random(1804), marker)
    outcomes = []
    for ext in (".safetensors", ".pt"):
        outcomes += run_cases(read_state_dict, [c for e, c in cases if e == ext], folder,
                              "model" + ext)
    assert not os.path.exists(marker), "a pickled __reduce__ was executed"
    return outcomes


def fuzz_stage2_layout(folder: str) -> List[Outcome]:
    """What Load Hi3D Refiner validates after reading: in memory, plus a few through the file."""
    from safetensors.torch import save

    from orbitforge.kernels.diffusion.hi3d_checkpoint import (
        load_stage2_unet,
        stage2_from_state_dict,
    )

    cases = stage2_layout_cases(random.Random(1805))
    src = os.path.join(folder, "stage2.safetensors")
    outcomes = run_inputs(lambda sd: stage2_from_state_dict(sd, src), cases, [src])
    files = [Case(c.name + "@file", save({k: v.contiguous() for k, v in c.data.items()}),
                  c.expect, c.check) for c in cases[:4] + cases[-3:]]
    return outcomes + run_cases(load_stage2_unet, files, folder, "stage2.safetensors")


def fuzz_mesh(folder: str) -> List[Outcome]:
    from orbitforge.kernels.mesh.render import load_mesh

    cases = mesh_cases(random.Random(1806))
    outcomes = []
    for ext in sorted({e for e, _ in cases}):
        outcomes += run_cases(load_mesh, [c for e, c in cases if e == ext], folder, "mesh" + ext)
    return outcomes


def fuzz_images(folder: str = "") -> List[Outcome]:
    """(views, mask) pairs through the checks each image-taking node runs before its work:
    Gaussian Reconstruct / 4D (``check_views``), SDF Mesh (visual hull ``masks``, colouring
    ``images``), Depth Refiner (square ``views`` and ``depth``)."""
    import torch

    from orbitforge.kernels.diffusion.depth_condition import check_refine_inputs
    from orbitforge.kernels.geometry import visual_hull
    from orbitforge.kernels.geometry.cameras import make_orbit_cameras
    from orbitforge.kernels.mesh import color as mesh_color
    from orbitforge.kernels.splat.fit import check_views

    rng = random.Random(1807)
    n, h, w = 3, 24, 32
    cams = make_orbit_cameras([10.0] * n, [0.0, 120.0, 240.0], 2.0, 33.8, w, h)
    good_img = torch.rand(n, h, w, 3)
    good_mask = torch.zeros(n, h, w)
    good_mask[:, 6:18, 8:24] = 1
    imgs, masks = image_variants(rng, n, h, w), mask_variants(rng, n, h, w)
    for c in masks:  # masks that are valid in shape but hold no object: the fit refuses them
        if c.name in ("mask-empty", "mask-all-0.4", "mask-one-view-empty"):
            c.expect = "error"
    refine = lambda v, d: check_refine_inputs("hi3d_stage2", v, d, None, 64, 1.0, 2.0)  # noqa
    out = run_inputs(lambda v: check_views(v, cams, good_mask), imgs, ["views"])
    out += run_inputs(lambda m: check_views(good_img, cams, m), masks, ["mask"])
    out += run_inputs(lambda v: mesh_color._check_views(v, cams, good_mask), imgs, ["images"])
    out += run_inputs(lambda m: mesh_color._check_views(good_img, cams, m),
                      mask_variants(rng, n, h, w), ["masks"])
    out += run_inputs(lambda m: visual_hull._check_masks_cams(m, cams),
                      mask_variants(rng, n, h, w), ["masks"])
    out += run_inputs(lambda v: refine(v, torch.rand(n, w, w, 3)), image_variants(rng, n, w, w),
                      ["views"])
    out += run_inputs(lambda d: refine(torch.rand(n, w, w, 3), d), image_variants(rng, n, w, w),
                      ["depth"])
    from orbitforge.kernels.inputs import check_mask

    big_cams = make_orbit_cameras([0.0], [0.0], 2.0, 33.8, BIG, BIG)
    big = big_image_cases()
    out += run_inputs(lambda v: check_views(v, big_cams), big[:2], ["views"])
    out += run_inputs(lambda m: check_mask(m, "mask"), big[2:], ["mask"])
    return out


READERS = {"3dgs-ply": fuzz_ply, "mesh": fuzz_mesh, "cameras.json": fuzz_cameras,
           "workflow-json": fuzz_workflow, "hi3d-checkpoint": fuzz_checkpoint_files,
           "hi3d-stage2-layout": fuzz_stage2_layout, "images-masks": fuzz_images}


def summary(names: Optional[List[str]] = None) -> dict:
    """Run readers, return per reader: cases, outcome kinds, contract failures, worst memory
    ratio (tracemalloc peak / (4 x size + 100 MB) over refused cases), seconds; and the growth
    of this process's peak RSS while the cases ran (catches allocations tracemalloc cannot see,
    e.g. torch's)."""
    import collections
    import importlib
    import resource
    import tempfile
    import time

    for mod in ("trimesh", "safetensors.torch", "orbitforge.kernels.mesh.render",
                "orbitforge.kernels.mesh.color", "orbitforge.kernels.splat.fit",
                "orbitforge.kernels.diffusion.hi3d_checkpoint", "orbitforge.nodes.refiner",
                "orbitforge.nodes.sample", "orbitforge.workflow_tools.check"):
        importlib.import_module(mod)  # imports are not the readers' memory
    res = {}
    for name in names or list(READERS):
        with tempfile.TemporaryDirectory() as d:
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            t = time.perf_counter()
            outs = READERS[name](d)
            dt = time.perf_counter() - t
            rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        res[name] = {"cases": len(outs), "kinds": dict(collections.Counter(o.kind for o in outs)),
                     "failures": failures(outs), "peak_ratio": round(peak_ratio(outs), 4),
                     "max_peak_mb": round(max(o.peak for o in outs) / 2**20, 2),
                     "seconds": round(dt, 2), "rss_growth_mb": round((rss1 - rss0) / 1024, 1)}
    return res


if __name__ == "__main__":  # python tests/fuzz.py [reader ...]: JSON summary
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    print(json.dumps(summary(sys.argv[1:] or None), indent=1))
