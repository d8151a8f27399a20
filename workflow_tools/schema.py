"""Node schemas as the ComfyUI frontend sees them, and the widget layout it saves.

Pure Python: no ComfyUI import. Schemas come from two places:

* the pack's own node classes (``NODE_CLASS_MAPPINGS``), read through ``INPUT_TYPES()`` (or V3's
  ``GET_NODE_INFO_V1()``);
* ``core_schemas*.json`` beside this file: the core ComfyUI nodes our workflows may use, one
  snapshot per supported host (``core_schemas.json``: v0.3.64; ``core_schemas_v0.33.0.json``:
  v0.33.0), written by ``python -m orbitforge.bench core_schemas`` from a ComfyUI checkout or a
  running server's ``/object_info``. A workflow must pass against every snapshot.

Inputs of V3 nodes may declare a union type (``"STRING,FILE_3D_GLB,..."``) with a ``widgetType``:
the frontend then draws that widget (and saves its value) while links of any listed type connect.

Widget values are positional in a node's ``widgets_values``, in the order the frontend creates
widgets (:func:`widget_layout`):

* every widget input (INT/FLOAT/STRING/BOOLEAN/COMBO that is not ``forceInput``), required inputs
  first, then optional ones, in definition order -- also when the widget was turned into a socket;
* right after an INT widget with ``control_after_generate`` (or, when that option is absent, an INT
  widget named ``seed``/``noise_seed``) comes a "control_after_generate" value (fixed, increment,
  decrement, randomize); after a COMBO with ``control_after_generate`` comes that value and a
  "control_filter_list" string;
* a node whose required COMBO input has ``image_upload`` (LoadImage, LoadImageMask) gets an
  ``upload`` widget (value "image") after its last required input.

None of these extra values is sent to the API. ``Note``, ``MarkdownNote``, ``Reroute`` and
``PrimitiveNode`` exist only in the frontend (:data:`FRONTEND_ONLY`): they have no schema.
"""

from __future__ import annotations

import functools
import json
import math
import os
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
    outputs = ["COMBO" if isinstance(t, (list, tuple)) else str(t)
               for t in info.get("output") or ()]
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
    from ..nodes import NODE_CLASS_MAPPINGS

    return NODE_CLASS_MAPPINGS


class Schemas:
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
        seed = inp["name"] in ("seed", "noise_seed")
        # a mode name ("fixed") on a seed only sets where frontend 1.49 starts the control that
        # every current frontend adds to a seed anyway; graphs saved before a node declared it
        # may come from frontends that added none, like graphs of undeclared seeds
        if cag is None or (seed and isinstance(cag, str)):
            return name_fallback and seed
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


def match_layout(schema: dict, node_type: str, values: list) -> tuple[list, str | None]:
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
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value)):
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


