"""UI-format workflow -> API ("prompt") format, like the frontend's ``graphToPrompt``: reroutes
followed, primitive values applied to the widgets they drive, muted nodes dropped, bypassed nodes
routed around."""

from __future__ import annotations

from typing import Any

from .graph import LinkGraph, node_label, widget_values
from .schema import (
    FRONTEND_ONLY,
    MODE_BYPASS,
    MODE_NEVER,
    NOTE_TYPES,
    PRIMITIVE,
    REROUTE,
    Schemas,
    match_layout,
    types_match,
)


def _api_value(v: Any) -> Any:
    # Arrays mean links in the API format; the frontend wraps array widget values.
    return {"__value__": v} if isinstance(v, list) else v


def _resolve_for_api(g: LinkGraph, link: tuple, depth: int = 0):
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
        vals, _named = widget_values(node)
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
    g = LinkGraph(ui_json, problems)
    schemas = Schemas(node_classes, core)
    api: dict = {}
    for node in g.nodes.values():
        t = node["type"]
        if t in FRONTEND_ONLY or node.get("mode", 0) in (MODE_NEVER, MODE_BYPASS):
            continue
        schema, err = schemas.get(t)
        if schema is None:
            raise ValueError(f"{node_label(node)}: {err or f'unknown node type {t!r}'}; run "
                             f"check-workflow on the file first")
        inputs: dict = {}
        values, named = widget_values(node)
        if named is not None:
            for inp in schema["inputs"]:
                if inp["widget"] and inp["name"] in named:
                    inputs[inp["name"]] = _api_value(named[inp["name"]])
        else:
            layout, _err = match_layout(schema, t, values)
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

