"""Validate ComfyUI UI-format workflows offline, and convert them to the API (prompt) format.

Pure Python: no ComfyUI import. Node schemas come from two places:

* the pack's own node classes (``NODE_CLASS_MAPPINGS``), read through ``INPUT_TYPES()``;
* ``core_schemas*.json`` beside this file: the core ComfyUI nodes our workflows may use, one
  snapshot per supported host (``core_schemas.json``: v0.3.64; ``core_schemas_v0.33.0.json``:
  v0.33.0), written by ``python -m orbitforge.bench core_schemas`` from a ComfyUI checkout or a
  running server's ``/object_info``. A workflow must pass against every snapshot.

Inputs of V3 nodes may declare a union type (``"STRING,FILE_3D_GLB,..."``) with a ``widgetType``:
the frontend then draws that widget (and saves its value) while links of any listed type connect.

The UI format is what the ComfyUI frontend saves (schema version 0.4): top-level ``nodes``,
``links`` (``[id, from_node, from_slot, to_node, to_slot, type]``), ``last_node_id``,
``last_link_id``, ``groups``, ``config``, ``extra``, ``version``. Widget values are positional in
``widgets_values``, in the order the frontend creates widgets:

* every widget input (INT/FLOAT/STRING/BOOLEAN/COMBO that is not ``forceInput``), required inputs
  first, then optional ones, in definition order -- also when the widget was turned into a socket;
* right after an INT widget with ``control_after_generate`` (or, when that option is absent, an INT
  widget named ``seed``/``noise_seed``) comes a "control_after_generate" value (fixed, increment,
  decrement, randomize); after a COMBO with ``control_after_generate`` comes that value and a
  "control_filter_list" string;
* a node whose required COMBO input has ``image_upload`` (LoadImage, LoadImageMask) gets an
  ``upload`` widget (value "image") after its last required input.

None of these extra values is sent to the API. ``Note``, ``MarkdownNote``, ``Reroute`` and
``PrimitiveNode`` exist only in the frontend: they have no schema and their contents are not
validated; ``ui_to_api`` follows reroutes and applies primitive values to the widgets they drive,
like the frontend's ``graphToPrompt``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from collections.abc import Iterable
from typing import Any

CORE_SCHEMAS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "core_schemas.json")


def core_schema_files() -> list[str]:
    """Every host snapshot beside this file (``core_schemas.json`` first)."""
    import glob  # noqa: PLC0415

    here = os.path.dirname(CORE_SCHEMAS_PATH)
    rest = sorted(set(glob.glob(os.path.join(here, "core_schemas*.json"))) - {CORE_SCHEMAS_PATH})
    return [CORE_SCHEMAS_PATH] + rest

# Frontend-only node types: no backend class, never sent to the API.
NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
REROUTE = "Reroute"
PRIMITIVE = "PrimitiveNode"
FRONTEND_ONLY = NOTE_TYPES | {REROUTE, PRIMITIVE}

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
UPLOAD_FLAGS = ("image_upload", "video_upload", "animated_image_upload", "audio_upload")
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")
COMBO_CONTROL_VALUES = CONTROL_VALUES + ("increment-wrap",)
MODE_NEVER, MODE_BYPASS = 2, 4  # LGraphEventMode: muted, bypassed

# Frontend extensions that append widgets of their own after the node's inputs (never sent to
# the API): Preview3D and SaveGLB get the 3D viewer widget, whose saved value is "" or the
# last file shown; web/preview3d.js gives our Save Mesh / Save Gaussians the same widget.
FRONTEND_TRAILING_WIDGETS = {"Preview3D": 1, "Preview3DAnimation": 1, "SaveGLB": 1,
                             "OrbitForgeSaveMesh": 1, "OrbitForgeSaveGaussians": 1}

# Options copied from an input definition into a schema entry.
_KEEP_OPTIONS = ("default", "min", "max", "step", "round", "multiline", "control_after_generate",
                 "forceInput", "multi_select") + UPLOAD_FLAGS


# ----------------------------------------------------------------------------------------------
# Schemas
# ----------------------------------------------------------------------------------------------

def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return str(v)


def normalize_input(name: str, section: str, spec: Any) -> dict:
    """One input definition (``("INT", {...})``, ``(["a", "b"],)``, ``("COMBO", {"options": ...})``)
    as a schema entry: name, section, type, widget, and the options that matter for validation."""
    if not isinstance(spec, (list, tuple)) or not spec:
        spec = (spec,)
    typ, opts = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    entry: dict = {"name": name, "section": section}
    if isinstance(typ, (list, tuple)):
        entry["type"] = "COMBO"
        options = list(typ)
    else:
        entry["type"] = str(typ)
        options = list(opts.get("options") or []) if entry["type"] == "COMBO" else None
    if options is not None:
        entry["options"] = _jsonable(options)
        # Lists read from folders (models, input images) depend on the installation.
        entry["dynamic_options"] = (not options) or bool(opts.get("remote"))
    for k in _KEEP_OPTIONS:
        if opts.get(k) is not None:
            entry[k] = _jsonable(opts[k])
    if opts.get("widgetType") and entry["type"] not in WIDGET_TYPES:
        entry["widget_type"] = str(opts["widgetType"])  # a union input drawn as this widget
    entry["widget"] = widget_type(entry) in WIDGET_TYPES and not opts.get("forceInput", False)
    return entry


def widget_type(inp: dict) -> str:
    """The widget an input is drawn as: its ``widgetType`` when it has one, else its type."""
    return inp.get("widget_type") or inp["type"]


def normalize_node_info(info: dict) -> dict:
    """A ComfyUI ``/object_info`` entry (``input``, ``input_order``, ``output``, ``output_name``,
    ``output_node``) as a schema: ``{"inputs": [...], "outputs": [...], "output_names": [...],
    "output_node": bool}``."""
    inputs = []
    order = info.get("input_order") or {}
    for section in ("required", "optional"):
        defs = (info.get("input") or {}).get(section) or {}
        names = order.get(section) or list(defs.keys())
        for name in names:
            if name in defs:
                inputs.append(normalize_input(name, section, defs[name]))
    outputs = ["COMBO" if isinstance(t, (list, tuple)) else str(t) for t in info.get("output") or ()]
    names = list(info.get("output_name") or outputs)
    return {"inputs": inputs, "outputs": outputs, "output_names": [str(n) for n in names],
            "output_node": bool(info.get("output_node", False))}


def schema_from_class(cls) -> dict:
    """Schema of a node class: V1 class attributes, or V3's ``GET_NODE_INFO_V1()``."""
    if hasattr(cls, "GET_NODE_INFO_V1"):
        return normalize_node_info(cls.GET_NODE_INFO_V1())
    input_types = cls.INPUT_TYPES()
    rt = tuple(getattr(cls, "RETURN_TYPES", ()) or ())
    return normalize_node_info({
        "input": input_types,
        "input_order": {k: list(v.keys()) for k, v in input_types.items() if isinstance(v, dict)},
        "output": rt,
        "output_name": getattr(cls, "RETURN_NAMES", None) or rt,
        "output_node": getattr(cls, "OUTPUT_NODE", False),
    })


@functools.lru_cache(maxsize=4)
def _load_core(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return data.get("nodes", data)


def load_core_schemas(path: str | None = None) -> dict:
    """``{node_type: schema}`` of the core ComfyUI nodes (``core_schemas.json``)."""
    return _load_core(os.path.abspath(path or CORE_SCHEMAS_PATH))


def _pack_classes() -> dict:
    from . import NODE_CLASS_MAPPINGS

    return NODE_CLASS_MAPPINGS


class _Schemas:
    """Schema lookup: pack classes first (read lazily, errors kept), then core."""

    def __init__(self, node_classes: dict | None, core: dict | None):
        self.classes = _pack_classes() if node_classes is None else node_classes
        self.core = load_core_schemas() if core is None else core
        self._cache: dict = {}

    def get(self, node_type: str) -> tuple[dict | None, str | None]:
        if node_type in self._cache:
            return self._cache[node_type]
        if node_type in self.classes:
            try:
                res = (schema_from_class(self.classes[node_type]), None)
            except Exception as e:  # noqa: BLE001 - a broken INPUT_TYPES is a problem to report
                msg = f"cannot read the inputs of node type '{node_type}': {type(e).__name__}: {e}"
                res = (None, msg)
        elif node_type in self.core:
            res = (self.core[node_type], None)
        else:
            res = (None, None)
        self._cache[node_type] = res
        return res


# ----------------------------------------------------------------------------------------------
# Widget layout (what the frontend puts in widgets_values)
# ----------------------------------------------------------------------------------------------

def _has_control(inp: dict, name_fallback: bool = True) -> bool:
    cag = inp.get("control_after_generate")
    if inp["type"] == "INT":
        if cag is None:
            return name_fallback and inp["name"] in ("seed", "noise_seed")
        return bool(cag)
    return inp["type"] == "COMBO" and bool(cag)


def widget_layout(schema: dict, name_fallback: bool = True,
                  legacy_force_input: bool = False) -> list[tuple[str, dict]]:
    """The frontend's widgets of a node, in ``widgets_values`` order, as ``(kind, input)`` with
    kind one of ``input`` (sent to the API), ``control``, ``filter``, ``upload``, ``dummy``.

    ``name_fallback=False`` drops the seed/noise_seed control widget that the frontend adds when
    the definition does not say; ``legacy_force_input`` adds the placeholder values that frontends
    before 1.16 saved for ``forceInput`` inputs of widget types."""
    slots: list[tuple[str, dict]] = []
    upload = None
    inputs = schema.get("inputs", [])
    n_required = sum(1 for i in inputs if i["section"] == "required")
    for k, inp in enumerate(inputs):
        if inp["widget"]:
            slots.append(("input", inp))
            if _has_control(inp, name_fallback):
                slots.append(("control", inp))
                if inp["type"] == "COMBO":
                    slots.append(("filter", inp))
            if inp["section"] == "required" and upload is None and any(
                    inp.get(f) for f in UPLOAD_FLAGS) and inp["type"] == "COMBO":
                upload = inp
        elif legacy_force_input and inp.get("forceInput") and inp["type"] in WIDGET_TYPES:
            slots.append(("dummy", inp))
            if _has_control(inp, name_fallback):
                slots.append(("control", inp))
        if k == n_required - 1 and upload is not None:
            slots.append(("upload", upload))
    if n_required == 0 and upload is not None:  # pragma: no cover - uploads are required inputs
        slots.append(("upload", upload))
    return slots


def _match_layout(schema: dict, node_type: str, values: list) -> tuple[list, str | None]:
    """Pick the layout that explains ``len(values)``; error text when none does."""
    candidates = [widget_layout(schema)]
    for nf, lf in ((False, False), (True, True), (False, True)):
        alt = widget_layout(schema, name_fallback=nf, legacy_force_input=lf)
        if alt not in candidates:
            candidates.append(alt)
    extra = FRONTEND_TRAILING_WIDGETS.get(node_type, 0)
    primary = candidates[0]
    # Positions where the current frontend saves a control value: an alternative layout that
    # reads an actual control word there as a widget value is the wrong explanation.
    control_at = [p for p, (kind, _i) in enumerate(primary)
                  if kind == "control" and p < len(values) and isinstance(values[p], str)
                  and values[p] in COMBO_CONTROL_VALUES]
    for k, lay in enumerate(candidates):
        if not len(lay) <= len(values) <= len(lay) + extra:
            continue
        if k and any(p >= len(lay) or lay[p][0] != "control" for p in control_at):
            continue
        return lay, None
    lay = candidates[0]
    names = [(inp["name"] if kind == "input" else f"{inp['name']}:{kind}") for kind, inp in lay]
    # Fewer values than widgets: the missing ones are reported per input by the caller.
    if len(values) < len(lay):
        return lay, None
    return lay, (f"has {len(values)} widget values but its widgets are {len(lay)}: {names}")


# ----------------------------------------------------------------------------------------------
# Values and types
# ----------------------------------------------------------------------------------------------

def check_value(inp: dict, value: Any) -> str | None:
    """Why ``value`` is not acceptable for widget input ``inp`` (None when it is)."""
    t = widget_type(inp)
    if t == "INT":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                isinstance(value, float) and not value.is_integer()):
            return f"value {value!r} is not an integer"
    elif t == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"value {value!r} is not a number"
    elif t == "BOOLEAN":
        if not isinstance(value, bool):
            return f"value {value!r} is not a boolean (true/false)"
    elif t == "STRING":
        if not isinstance(value, str):
            return f"value {value!r} is not a string"
    elif t == "COMBO":
        opts = inp.get("options") or []
        if inp.get("multi_select"):
            return None
        if not isinstance(value, (str, int, float)):
            return f"value {value!r} is not one of the options"
        if opts and not inp.get("dynamic_options") and value not in opts:
            shown = opts if len(opts) <= 12 else opts[:12] + ["..."]
            return f"value {value!r} is not one of {shown}"
        return None
    else:
        return None  # custom widget types: not validated
    if t in ("INT", "FLOAT"):
        lo, hi = inp.get("min"), inp.get("max")
        if lo is not None and value < lo:
            return f"value {value!r} is below min {lo}"
        if hi is not None and value > hi:
            return f"value {value!r} is above max {hi}"
    return None


def types_match(out_type: Any, in_type: Any) -> bool:
    """The frontend's link rule: ``*`` matches anything, comma-separated unions match when they
    share a type, COMBO outputs feed COMBO inputs."""
    if isinstance(out_type, (list, tuple)):
        out_type = "COMBO"
    if isinstance(in_type, (list, tuple)):
        in_type = "COMBO"
    out_s, in_s = str(out_type), str(in_type)
    if out_s in ("*", "") or in_s in ("*", ""):
        return True
    return bool({t.strip() for t in out_s.split(",")} & {t.strip() for t in in_s.split(",")})


# ----------------------------------------------------------------------------------------------
# The graph
# ----------------------------------------------------------------------------------------------

def _norm_links(raw: Any, problems: list) -> dict:
    """``{id: (origin_id, origin_slot, target_id, target_slot, type)}`` from array or object
    links."""
    links: dict = {}
    for k, ln in enumerate(raw or []):
        if isinstance(ln, dict):
            try:
                lid = ln["id"]
                rec = (ln["origin_id"], int(ln["origin_slot"]), ln["target_id"],
                       int(ln["target_slot"]), ln.get("type", "*"))
            except (KeyError, TypeError, ValueError):
                problems.append(f"links[{k}]: malformed link object {ln!r}")
                continue
        elif isinstance(ln, (list, tuple)) and len(ln) >= 6:
            try:
                lid = ln[0]
                rec = (ln[1], int(ln[2]), ln[3], int(ln[4]), ln[5])
            except (TypeError, ValueError):
                problems.append(f"links[{k}]: malformed link {ln!r}")
                continue
        else:
            problems.append(f"links[{k}]: a link is [id, from_node, from_slot, to_node, to_slot, "
                            f"type], got {ln!r}")
            continue
        if not (_is_id(lid) and _is_id(rec[0]) and _is_id(rec[2])):
            problems.append(f"links[{k}]: link and node ids must be numbers or strings, got "
                            f"{ln!r:.80}")
            continue
        if lid in links:
            problems.append(f"link {lid}: duplicate link id")
            continue
        links[lid] = rec
    return links


def _is_id(v: Any) -> bool:
    return isinstance(v, (int, str)) and not isinstance(v, bool)


def _structure_problems(ui: dict) -> list[str]:
    """The JSON shapes the checks below rely on (LiteGraph's saved format): a malformed file gets
    these messages instead of the checker failing on it."""
    out = []
    if ui.get("links") is not None and not isinstance(ui.get("links"), list):
        out.append(f"workflow: 'links' must be a list, got {type(ui['links']).__name__}")
    for k, n in enumerate(ui.get("nodes") or []):
        if not isinstance(n, dict):
            out.append(f"nodes[{k}]: a node is a JSON object, got {type(n).__name__}")
            continue
        where = f"nodes[{k}]"
        if "id" in n and not _is_id(n["id"]):
            out.append(f"{where}: node id must be a number or string, got {n['id']!r:.40}")
        if "type" in n and not isinstance(n["type"], str):
            out.append(f"{where}: node type must be a string, got {n['type']!r:.40}")
        for sec, key, scalar in (("inputs", "link", True), ("outputs", "links", False)):
            items = n.get(sec)
            if items is None:
                continue
            if not isinstance(items, list):
                out.append(f"{where}: '{sec}' must be a list, got {type(items).__name__}")
                continue
            for j, it in enumerate(items):
                if not isinstance(it, dict):
                    out.append(f"{where}.{sec}[{j}]: a slot is a JSON object, got "
                               f"{type(it).__name__}")
                    continue
                v = it.get(key)
                ok = v is None or (_is_id(v) if scalar else
                                   isinstance(v, list) and all(_is_id(x) for x in v))
                if not ok:
                    out.append(f"{where}.{sec}[{j}]: '{key}' must be "
                               f"{'a link id or null' if scalar else 'a list of link ids'}, got "
                               f"{v!r:.40}")
        wv = n.get("widgets_values")
        if wv is not None and not isinstance(wv, (list, dict)):
            out.append(f"{where}: 'widgets_values' must be a list or object, got "
                       f"{type(wv).__name__}")
    return out


def _label(node: dict) -> str:
    return f"node {node.get('id')} ({node.get('type')})"


class _Graph:
    def __init__(self, ui: dict, problems: list):
        self.nodes: dict = {}
        for k, n in enumerate(ui.get("nodes") or []):
            if not isinstance(n, dict) or "id" not in n or "type" not in n:
                problems.append(f"nodes[{k}]: a node needs 'id' and 'type'")
                continue
            if n["id"] in self.nodes:
                problems.append(f"{_label(n)}: duplicate node id")
                continue
            self.nodes[n["id"]] = n
        self.links = _norm_links(ui.get("links"), problems)

    def input_link(self, node: dict, slot: int) -> tuple | None:
        inputs = node.get("inputs") or []
        if 0 <= slot < len(inputs):
            lid = inputs[slot].get("link")
            if lid is not None and lid in self.links:
                return self.links[lid]
        return None

    def resolve_source(self, link: tuple) -> tuple[dict | None, int, list]:
        """Follow reroutes upstream: ``(source_node or None, slot, [reroute ids])``."""
        seen = []
        node, slot = self.nodes.get(link[0]), link[1]
        while node is not None and node.get("type") == REROUTE:
            if node["id"] in seen:
                return None, slot, seen
            seen.append(node["id"])
            up = self.input_link(node, 0)
            if up is None:
                return None, slot, seen
            node, slot = self.nodes.get(up[0]), up[1]
        return node, slot, seen


def _widget_values(node: dict) -> tuple[list, dict | None]:
    wv = node.get("widgets_values")
    if isinstance(wv, dict):
        return [], wv
    return list(wv or []), None


def check_workflow(ui_json: dict, node_classes: dict | None = None,
                   core: dict | None = None) -> list[str]:
    """Problems found in a UI-format workflow (empty list: valid).

    ``node_classes`` defaults to the pack's ``NODE_CLASS_MAPPINGS``, ``core`` to
    ``core_schemas.json``. Every message names the node id and type, and the input or link."""
    problems: list[str] = []
    if not isinstance(ui_json, dict):
        return [f"a UI workflow is a JSON object, got {type(ui_json).__name__}"]
    if "nodes" not in ui_json or not isinstance(ui_json.get("nodes"), list):
        if ui_json and all(isinstance(v, dict) and "class_type" in v for v in ui_json.values()):
            return [("this is an API-format prompt, not a UI workflow (save it from the ComfyUI "
                     "menu with Save/Export, not Export (API))")]
        return ["not a UI workflow: missing the 'nodes' list"]
    for key in ("links", "version"):
        if key not in ui_json:
            problems.append(f"workflow: missing top-level '{key}'")
    if isinstance(ui_json.get("definitions"), dict) and ui_json["definitions"].get("subgraphs"):
        problems.append("workflow: subgraphs are not supported by this checker; unpack them")

    shape = _structure_problems(ui_json)
    if shape:
        return problems + shape
    schemas = _Schemas(node_classes, core)
    g = _Graph(ui_json, problems)

    # last ids: the frontend allocates new ids above them.
    int_ids = [i for i in g.nodes if isinstance(i, int)]
    if int_ids and isinstance(ui_json.get("last_node_id"), (int, float)) and max(
            int_ids) > ui_json["last_node_id"]:
        problems.append(f"workflow: last_node_id {ui_json['last_node_id']} is below the highest "
                        f"node id {max(int_ids)}")
    link_ids = [i for i in g.links if isinstance(i, int)]
    if link_ids and isinstance(ui_json.get("last_link_id"), (int, float)) and max(
            link_ids) > ui_json["last_link_id"]:
        problems.append(f"workflow: last_link_id {ui_json['last_link_id']} is below the highest "
                        f"link id {max(link_ids)}")

    # Link table against node slots.
    for lid, (oid, oslot, tid, tslot, ltype) in g.links.items():
        src, dst = g.nodes.get(oid), g.nodes.get(tid)
        if src is None or dst is None:
            problems.append(f"link {lid}: joins missing node {oid if src is None else tid}")
            continue
        outs, ins = src.get("outputs") or [], dst.get("inputs") or []
        if not 0 <= oslot < len(outs):
            problems.append(f"link {lid}: {_label(src)} has no output slot {oslot}")
        elif lid not in (outs[oslot].get("links") or []):
            problems.append(f"link {lid}: not listed in the links of {_label(src)} output "
                            f"'{outs[oslot].get('name')}'")
        if not 0 <= tslot < len(ins):
            problems.append(f"link {lid}: {_label(dst)} has no input slot {tslot}")
        elif ins[tslot].get("link") != lid:
            problems.append(f"link {lid}: {_label(dst)} input '{ins[tslot].get('name')}' holds "
                            f"link {ins[tslot].get('link')}, not {lid}")
    for node in g.nodes.values():
        for k, inp in enumerate(node.get("inputs") or []):
            lid = inp.get("link")
            if lid is None:
                continue
            rec = g.links.get(lid)
            if rec is None:
                problems.append(f"{_label(node)} input '{inp.get('name')}': link {lid} is not in "
                                f"the links table")
            elif rec[2] != node["id"] or rec[3] != k:
                problems.append(f"{_label(node)} input '{inp.get('name')}': link {lid} targets "
                                f"node {rec[2]} slot {rec[3]}, not this input (slot {k})")
        for k, out in enumerate(node.get("outputs") or []):
            for lid in out.get("links") or []:
                rec = g.links.get(lid)
                if rec is None:
                    problems.append(f"{_label(node)} output '{out.get('name')}': link {lid} is "
                                    f"not in the links table")
                elif rec[0] != node["id"] or rec[1] != k:
                    problems.append(f"{_label(node)} output '{out.get('name')}': link {lid} "
                                    f"starts at node {rec[0]} slot {rec[1]}, not here")

    # Nodes.
    for node in g.nodes.values():
        ntype = node["type"]
        if ntype in FRONTEND_ONLY:
            continue
        schema, err = schemas.get(ntype)
        if err:
            problems.append(f"{_label(node)}: {err}")
            continue
        if schema is None:
            problems.append(f"{_label(node)}: unknown node type '{ntype}' (neither an OrbitForge "
                            f"node nor a core node in core_schemas.json)")
            continue
        problems.extend(_check_node(g, node, schema, schemas))
    return problems


def _check_node(g: _Graph, node: dict, schema: dict, schemas: _Schemas) -> list[str]:
    out: list[str] = []
    lab = _label(node)
    by_name = {i["name"]: i for i in schema["inputs"]}
    active = node.get("mode", 0) not in (MODE_NEVER, MODE_BYPASS)

    # Sockets: names, and link types.
    linked: set = set()
    for k, slot in enumerate(node.get("inputs") or []):
        name = slot.get("name")
        inp = by_name.get(name)
        lid = slot.get("link")
        if inp is None:
            # Unlinked widget slots of frontend-only widgets (LoadImage's "upload", Preview3D's
            # viewer) are saved by frontends >= 1.16 and dropped on queueing: harmless.
            if not (slot.get("widget") and lid is None):
                out.append(f"{lab}: input slot {k} '{name}' is not an input of {node['type']}")
            continue
        if lid is None or lid not in g.links:
            continue
        linked.add(name)
        if not inp["widget"] and slot.get("widget"):
            pass  # legacy converted widget of an input that is now a socket: fine
        src, sslot, _ = g.resolve_source(g.links[lid])
        if src is None or src["type"] in FRONTEND_ONLY:
            continue  # dangling reroute (reported below) or primitive (not validated)
        src_schema, _err = schemas.get(src["type"])
        if src_schema is None:
            continue  # reported on the source node
        if not 0 <= sslot < len(src_schema["outputs"]):
            out.append(f"{lab} input '{name}': linked from output slot {sslot} of {_label(src)}, "
                       f"which has only {len(src_schema['outputs'])} outputs")
            continue
        otype = src_schema["outputs"][sslot]
        if not types_match(otype, inp["type"]):
            out.append(f"{lab} input '{name}' ({inp['type']}): linked from {_label(src)} output "
                       f"{sslot} '{src_schema['output_names'][sslot]}' of type {otype}")
    for k, slot in enumerate(node.get("outputs") or []):
        if k >= len(schema["outputs"]) and slot.get("links"):
            out.append(f"{lab}: output slot {k} '{slot.get('name')}' does not exist on "
                       f"{node['type']} ({len(schema['outputs'])} outputs)")

    # Widget values.
    values, named = _widget_values(node)
    if named is not None:
        layout = [("input", i) for i in schema["inputs"] if i["widget"]]
    else:
        layout, err = _match_layout(schema, node["type"], values)
        if err:
            out.append(f"{lab}: {err}")
    seen_values: dict = {}
    for pos, (kind, inp) in enumerate(layout):
        if named is not None:
            if inp["name"] not in named:
                continue
            value = named[inp["name"]]
        else:
            if pos >= len(values):
                continue
            value = values[pos]
        if kind == "input":
            seen_values[inp["name"]] = value
            if inp["name"] in linked:
                continue  # the link supplies the value
            why = check_value(inp, value)
            if why:
                out.append(f"{lab} input '{inp['name']}': {why}")
        elif kind == "control":
            allowed = COMBO_CONTROL_VALUES if inp["type"] == "COMBO" else CONTROL_VALUES
            # old frontends saved a boolean "randomize" toggle here
            if not isinstance(value, bool) and value not in allowed:
                out.append(f"{lab} input '{inp['name']}' control_after_generate: value {value!r} "
                           f"is not one of {list(allowed)}")

    # Required inputs.
    if active:
        for inp in schema["inputs"]:
            if inp["section"] != "required" or inp["name"] in linked:
                continue
            if inp["widget"]:
                if inp["name"] not in seen_values:
                    dflt = (f" (the frontend would silently use the default {inp['default']!r})"
                            if "default" in inp else "")
                    out.append(f"{lab} input '{inp['name']}': required widget has no value in "
                               f"widgets_values and no link{dflt}")
            else:
                out.append(f"{lab} input '{inp['name']}' ({inp['type']}): required input is not "
                           f"connected")

    # Primitive-driven widgets: the primitive's value replaces the widget value.
    for slot in node.get("inputs") or []:
        lid = slot.get("link")
        inp = by_name.get(slot.get("name"))
        if lid is None or lid not in g.links or inp is None or not inp["widget"]:
            continue
        src, _s, _ = g.resolve_source(g.links[lid])
        if src is not None and src["type"] == PRIMITIVE:
            pv, _named = _widget_values(src)
            if pv:
                why = check_value(inp, pv[0])
                if why:
                    out.append(f"{lab} input '{inp['name']}': from {_label(src)}: {why}")

    # Reroute chains that end nowhere.
    for slot in node.get("inputs") or []:
        lid = slot.get("link")
        if lid is None or lid not in g.links:
            continue
        src, _s, via = g.resolve_source(g.links[lid])
        if src is None and via:
            out.append(f"{lab} input '{slot.get('name')}': reroute chain {via} has no source")
    return out


# ----------------------------------------------------------------------------------------------
# UI -> API
# ----------------------------------------------------------------------------------------------

def _api_value(v: Any) -> Any:
    # Arrays mean links in the API format; the frontend wraps array widget values.
    return {"__value__": v} if isinstance(v, list) else v


def _resolve_for_api(g: _Graph, link: tuple, depth: int = 0):
    """``("link", node_id, slot)``, ``("value", v)`` or None, like the frontend's resolveInput."""
    if depth > len(g.nodes) + 1:
        return None
    node, slot = g.nodes.get(link[0]), link[1]
    if node is None:
        return None
    t, mode = node.get("type"), node.get("mode", 0)
    if t == REROUTE:
        up = g.input_link(node, 0)
        return None if up is None else _resolve_for_api(g, up, depth + 1)
    if t == PRIMITIVE:
        vals, _named = _widget_values(node)
        return ("value", vals[0]) if vals else None
    if t in NOTE_TYPES or mode == MODE_NEVER:
        return None
    if mode == MODE_BYPASS:
        # Pass-through: the input at the same index when its type matches, else the first input
        # of the output's type.
        outs = node.get("outputs") or []
        otype = outs[slot].get("type") if 0 <= slot < len(outs) else None
        ins = node.get("inputs") or []
        order = ([slot] if 0 <= slot < len(ins) else []) + [k for k in range(len(ins)) if k != slot]
        for k in order:
            if ins[k].get("link") is not None and types_match(ins[k].get("type"), otype) and (
                    otype is not None):
                up = g.input_link(node, k)
                if up is not None:
                    return _resolve_for_api(g, up, depth + 1)
        return None
    return ("link", str(node["id"]), int(slot))


def ui_to_api(ui_json: dict, node_classes: dict | None = None,
              core: dict | None = None) -> dict:
    """The API ("prompt") format of a UI workflow: ``{"<id>": {"class_type", "inputs"}}``.

    Widgets are mapped by the frontend's widget order, links become ``[source_id, slot]``,
    reroutes are followed, primitive nodes' values applied, Note/MarkdownNote/Reroute/
    PrimitiveNode and muted nodes skipped, bypassed nodes routed around. Raises ``ValueError``
    for a node type without a schema (run :func:`check_workflow` first)."""
    problems: list[str] = []
    g = _Graph(ui_json, problems)
    schemas = _Schemas(node_classes, core)
    api: dict = {}
    for node in g.nodes.values():
        t = node["type"]
        if t in FRONTEND_ONLY or node.get("mode", 0) in (MODE_NEVER, MODE_BYPASS):
            continue
        schema, err = schemas.get(t)
        if schema is None:
            raise ValueError(f"{_label(node)}: {err or f'unknown node type {t!r}'}; run "
                             f"check-workflow on the file first")
        inputs: dict = {}
        values, named = _widget_values(node)
        if named is not None:
            for inp in schema["inputs"]:
                if inp["widget"] and inp["name"] in named:
                    inputs[inp["name"]] = _api_value(named[inp["name"]])
        else:
            layout, _err = _match_layout(schema, t, values)
            for pos, (kind, inp) in enumerate(layout):
                if kind != "input":
                    continue
                if pos < len(values):
                    inputs[inp["name"]] = _api_value(values[pos])
                elif "default" in inp:  # short widgets_values: the frontend keeps defaults
                    inputs[inp["name"]] = _api_value(inp["default"])
        for slot in node.get("inputs") or []:
            lid = slot.get("link")
            if lid is None or lid not in g.links:
                continue
            res = _resolve_for_api(g, g.links[lid])
            if res is None:
                if isinstance(inputs.get(slot["name"]), list):
                    del inputs[slot["name"]]
                continue
            if res[0] == "value":
                inputs[slot["name"]] = _api_value(res[1])
            else:
                inputs[slot["name"]] = [res[1], res[2]]
        api[str(node["id"])] = {"class_type": t, "inputs": inputs}
    # Drop links to nodes that are not in the prompt (as the frontend does).
    for entry in api.values():
        for k, v in list(entry["inputs"].items()):
            if isinstance(v, list) and len(v) == 2 and v[0] not in api:
                del entry["inputs"][k]
    return api


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------

MAX_WORKFLOW_BYTES = 32 * 2**20  # bounds the memory json.load may take


def check_files(paths: Iterable[str], node_classes: dict | None = None,
                core: dict | None = None) -> dict:
    """``{path: [problems]}`` for workflow files: against ``core`` when given, else against every
    host snapshot (a problem found with only some hosts names them)."""
    cores = [(None, core)] if core is not None else [
        (_snapshot_version(f), load_core_schemas(f)) for f in core_schema_files()]
    result = {}
    for p in paths:
        try:
            if os.path.getsize(p) > MAX_WORKFLOW_BYTES:
                result[p] = [f"{os.path.getsize(p)} bytes: larger than the "
                             f"{MAX_WORKFLOW_BYTES >> 20} MiB a UI workflow may have"]
                continue
            with open(p, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            result[p] = [f"cannot read JSON: {e}"]
            continue
        except RecursionError:
            result[p] = ["cannot read JSON: nested too deeply"]
            continue
        per_host = [(v, check_workflow(data, node_classes, c)) for v, c in cores]
        seen: dict = {}
        for v, probs in per_host:
            for pr in probs:
                seen.setdefault(pr, []).append(v)
        result[p] = [pr if len(vs) == len(cores) else
                     f"{pr} (with ComfyUI {', '.join(str(v) for v in vs)})"
                     for pr, vs in seen.items()]
    return result


def _snapshot_version(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return str(json.load(f).get("comfyui_version", os.path.basename(path)))


def check_workflow_main(argv) -> int:
    """``python -m orbitforge check-workflow [--core FILE] [--api] FILE [FILE...]``.

    Prints ``FILE: problem`` lines, or ``OK FILE``; with ``--api`` also the API format of each valid
    file as JSON. Exit status 1 when any file has problems, 2 on usage errors."""
    argv = list(argv)
    core_path, show_api, files = None, False, []
    it = iter(argv)
    for a in it:
        if a in ("-h", "--help"):
            print(check_workflow_main.__doc__.strip().replace("``", ""))
            return 0
        if a == "--core":
            core_path = next(it, None)
            if core_path is None:
                print("--core needs a file", file=sys.stderr)
                return 2
        elif a == "--api":
            show_api = True
        else:
            files.append(a)
    if not files:
        print("usage: python -m orbitforge check-workflow [--core FILE] [--api] FILE [FILE...]",
              file=sys.stderr)
        return 2
    core = load_core_schemas(core_path) if core_path else None
    bad = 0
    for path, probs in check_files(files, core=core).items():
        if probs:
            bad += 1
            for p in probs:
                print(f"{path}: {p}")
        else:
            print(f"OK {path}")
            if show_api:
                with open(path, encoding="utf-8") as f:
                    print(json.dumps(ui_to_api(json.load(f), core=core), indent=1))
    return 1 if bad else 0
