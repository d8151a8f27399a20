"""Validate ComfyUI UI-format workflows offline, against the pack's nodes and every host snapshot.

Every message names the node id and type, and the input or link. ``Note``, ``MarkdownNote``,
``Reroute`` and ``PrimitiveNode`` exist only in the frontend: their contents are not validated,
reroutes are followed, and a primitive's value is checked against the widget it drives.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

from .graph import LinkGraph, node_label, structure_problems, widget_values
from .schema import (
    COMBO_CONTROL_VALUES,
    CONTROL_VALUES,
    FRONTEND_ONLY,
    MODE_BYPASS,
    MODE_NEVER,
    PRIMITIVE,
    Schemas,
    check_value,
    core_schema_files,
    load_core_schemas,
    match_layout,
    types_match,
)


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

    shape = structure_problems(ui_json)
    if shape:
        return problems + shape
    schemas = Schemas(node_classes, core)
    g = LinkGraph(ui_json, problems)

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
            problems.append(f"link {lid}: {node_label(src)} has no output slot {oslot}")
        elif lid not in (outs[oslot].get("links") or []):
            problems.append(f"link {lid}: not listed in the links of {node_label(src)} output "
                            f"'{outs[oslot].get('name')}'")
        if not 0 <= tslot < len(ins):
            problems.append(f"link {lid}: {node_label(dst)} has no input slot {tslot}")
        elif ins[tslot].get("link") != lid:
            problems.append(f"link {lid}: {node_label(dst)} input '{ins[tslot].get('name')}' holds "
                            f"link {ins[tslot].get('link')}, not {lid}")
    for node in g.nodes.values():
        for k, inp in enumerate(node.get("inputs") or []):
            if inp.get("link") is not None:
                problems.extend(_slot_link_problems(g, node, k, inp, [inp["link"]], "input"))
        for k, out in enumerate(node.get("outputs") or []):
            problems.extend(_slot_link_problems(g, node, k, out, out.get("links") or [], "output"))

    # Nodes.
    for node in g.nodes.values():
        ntype = node["type"]
        if ntype in FRONTEND_ONLY:
            continue
        schema, err = schemas.get(ntype)
        if err:
            problems.append(f"{node_label(node)}: {err}")
            continue
        if schema is None:
            problems.append(f"{node_label(node)}: unknown node type '{ntype}' (neither an "
                            "OrbitForge node nor a core node in core_schemas.json)")
            continue
        problems.extend(_check_node(g, node, schema, schemas))
    return problems


def _slot_link_problems(g: LinkGraph, node: dict, k: int, slot: dict, lids: list,
                        side: str) -> list[str]:
    """A slot's links against the links table: each must exist and end at this slot."""
    out = []
    for lid in lids:
        rec = g.links.get(lid)
        where = f"{node_label(node)} {side} '{slot.get('name')}': link {lid}"
        if rec is None:
            out.append(f"{where} is not in the links table")
        elif side == "input" and (rec[2] != node["id"] or rec[3] != k):
            out.append(f"{where} targets node {rec[2]} slot {rec[3]}, not this input (slot {k})")
        elif side == "output" and (rec[0] != node["id"] or rec[1] != k):
            out.append(f"{where} starts at node {rec[0]} slot {rec[1]}, not here")
    return out


def _check_node(g: LinkGraph, node: dict, schema: dict, schemas: Schemas) -> list[str]:
    out: list[str] = []
    lab = node_label(node)
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
            out.append(f"{lab} input '{name}': linked from output slot {sslot} of "
                       f"{node_label(src)}, which has only {len(src_schema['outputs'])} outputs")
            continue
        otype = src_schema["outputs"][sslot]
        if not types_match(otype, inp["type"]):
            out.append(f"{lab} input '{name}' ({inp['type']}): linked from {node_label(src)} "
                       f"output {sslot} '{src_schema['output_names'][sslot]}' of type {otype}")
    for k, slot in enumerate(node.get("outputs") or []):
        if k >= len(schema["outputs"]) and slot.get("links"):
            out.append(f"{lab}: output slot {k} '{slot.get('name')}' does not exist on "
                       f"{node['type']} ({len(schema['outputs'])} outputs)")

    # Widget values.
    values, named = widget_values(node)
    if named is not None:
        layout = [("input", i) for i in schema["inputs"] if i["widget"]]
    else:
        layout, err = match_layout(schema, node["type"], values)
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
            pv, _named = widget_values(src)
            if pv:
                why = check_value(inp, pv[0])
                if why:
                    out.append(f"{lab} input '{inp['name']}': from {node_label(src)}: {why}")

    # Reroute chains that end nowhere.
    for slot in node.get("inputs") or []:
        lid = slot.get("link")
        if lid is None or lid not in g.links:
            continue
        src, _s, via = g.resolve_source(g.links[lid])
        if src is None and via:
            out.append(f"{lab} input '{slot.get('name')}': reroute chain {via} has no source")
    return out



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

