"""The link graph of a UI-format workflow: reading one (:class:`LinkGraph`) and building one
(:class:`WorkflowBuilder`, used by ``example_workflows/make_workflows.py`` and the tests).

The UI format is what the ComfyUI frontend saves (schema version 0.4): top-level ``nodes``,
``links`` (``[id, from_node, from_slot, to_node, to_slot, type]``), ``last_node_id``,
``last_link_id``, ``groups``, ``config``, ``extra``, ``version``.
"""

from __future__ import annotations

from typing import Any

from .schema import FRONTEND_TRAILING_WIDGETS, REROUTE, Schemas, widget_layout


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
        if not (is_id(lid) and is_id(rec[0]) and is_id(rec[2])):
            problems.append(f"links[{k}]: link and node ids must be numbers or strings, got "
                            f"{ln!r:.80}")
            continue
        if lid in links:
            problems.append(f"link {lid}: duplicate link id")
            continue
        links[lid] = rec
    return links


def is_id(v: Any) -> bool:
    return isinstance(v, (int, str)) and not isinstance(v, bool)


def structure_problems(ui: dict) -> list[str]:
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
        if "id" in n and not is_id(n["id"]):
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
                ok = v is None or (is_id(v) if scalar else
                                   isinstance(v, list) and all(is_id(x) for x in v))
                if not ok:
                    out.append(f"{where}.{sec}[{j}]: '{key}' must be "
                               f"{'a link id or null' if scalar else 'a list of link ids'}, got "
                               f"{v!r:.40}")
        wv = n.get("widgets_values")
        if wv is not None and not isinstance(wv, (list, dict)):
            out.append(f"{where}: 'widgets_values' must be a list or object, got "
                       f"{type(wv).__name__}")
    return out


def node_label(node: dict) -> str:
    return f"node {node.get('id')} ({node.get('type')})"


class LinkGraph:
    """A saved workflow's nodes by id and links by id; what does not parse is appended to
    ``problems`` and left out."""

    def __init__(self, ui: dict, problems: list):
        self.nodes: dict = {}
        for k, n in enumerate(ui.get("nodes") or []):
            if not isinstance(n, dict) or "id" not in n or "type" not in n:
                problems.append(f"nodes[{k}]: a node needs 'id' and 'type'")
                continue
            if n["id"] in self.nodes:
                problems.append(f"{node_label(n)}: duplicate node id")
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


def widget_values(node: dict) -> tuple[list, dict | None]:
    wv = node.get("widgets_values")
    if isinstance(wv, dict):
        return [], wv
    return list(wv or []), None



# ----------------------------------------------------------------------------------------------
# Building workflows
# ----------------------------------------------------------------------------------------------

# LiteGraph's node layout (ComfyUI frontend 1.27-1.49): the title bar sits above ``pos``, each
# socket row is 20 px, each widget 24 px (20 + 4 margin), plus a bottom margin. The frontend
# enlarges a saved node to this size when it loads the graph, so a layout that stacks nodes by
# their saved sizes must start from it (measured in the v0.33 frontend: Gaussian Reconstruct
# 382 px, SDF Mesh 426 px).
TITLE_HEIGHT = 30
SLOT_HEIGHT = 20
WIDGET_HEIGHT = 24
BODY_MARGIN = 14


def body_height(inputs: int, outputs: int, widgets: int) -> int:
    """The smallest body height (below the title) the frontend gives a node with this many
    socket inputs, outputs and widgets."""
    return SLOT_HEIGHT * max(inputs, outputs) + WIDGET_HEIGHT * widgets + BODY_MARGIN


class WorkflowBuilder:
    """A UI-format workflow under construction, saved the way the frontend saves it.

    :meth:`node` lays a node out from its schema (``widgets_values`` in the frontend's widget
    order, defaults filled in); :meth:`raw_node` takes the saved fields as given, for graphs that
    are hand-made or deliberately malformed (the checker's tests). ``schemas`` defaults to the
    pack's registered nodes and the first host snapshot."""

    def __init__(self, title: str = "workflow", schemas: Schemas | None = None):
        self.title = title
        self.nodes: list = []
        self.links: list = []
        self.groups: list = []
        self._schemas = schemas

    @property
    def schemas(self) -> Schemas:
        if self._schemas is None:
            self._schemas = Schemas(None, None)
        return self._schemas

    # -- nodes ---------------------------------------------------------------------------------
    def node(self, type_: str, pos=(0, 0), size=(320, 160), /, title: str | None = None,
             **values) -> dict:
        """A node of ``type_`` with widget ``values`` by input name (the rest: defaults)."""
        schema, err = self.schemas.get(type_)
        if schema is None:
            raise ValueError(f"no schema for {type_}: {err}")
        names = {i["name"] for i in schema["inputs"]}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"{type_} has no inputs {sorted(unknown)}")
        wv = []
        for kind, inp in widget_layout(schema):
            if kind == "input":
                if inp["name"] in values:
                    wv.append(values[inp["name"]])
                elif "default" in inp:
                    wv.append(inp["default"])
                elif inp["type"] == "COMBO" and inp.get("options"):
                    wv.append(inp["options"][0])
                else:
                    raise ValueError(f"{type_}.{inp['name']} needs a value")
            elif kind == "control":
                wv.append("fixed")
            elif kind == "filter":
                wv.append("")
            elif kind == "upload":
                wv.append("image")
        wv.extend([""] * FRONTEND_TRAILING_WIDGETS.get(type_, 0))
        sockets = [i for i in schema["inputs"] if not i["widget"]]
        height = body_height(len(sockets), len(schema["outputs"]), len(wv))
        n = self._new_node(type_, pos, (size[0], max(size[1], height)))
        n["inputs"] = [{"name": i["name"], "type": i["type"], "link": None} for i in sockets]
        n["outputs"] = [{"name": nm, "type": t, "links": [], "slot_index": k}
                        for k, (nm, t) in enumerate(zip(schema["output_names"],
                                                        schema["outputs"]))]
        n["properties"] = {"Node name for S&R": type_}
        n["widgets_values"] = wv
        if title:
            n["title"] = title
        self.nodes.append(n)
        return n

    def raw_node(self, type_: str, widgets=None, inputs=(), outputs=(), mode: int = 0,
                 **extra) -> dict:
        """A node saved exactly as given: ``widgets`` (None: no ``widgets_values``), ``inputs``
        and ``outputs`` as ``(name, type)`` pairs, ``extra`` fields added last."""
        n = self._new_node(type_, (0, 0), (300, 100))
        n["mode"] = mode
        n["inputs"] = [{"name": nm, "type": t, "link": None} for nm, t in inputs]
        n["outputs"] = [{"name": nm, "type": t, "links": []} for nm, t in outputs]
        n["properties"] = {"Node name for S&R": type_}
        if widgets is not None:
            n["widgets_values"] = list(widgets)
        n.update(extra)
        self.nodes.append(n)
        return n

    def note(self, text: str, pos, size=(420, 300), title: str = "Read me",
             color: str = "#432", bgcolor: str = "#653") -> dict:
        n = self._new_node("MarkdownNote", pos, size)
        n.update({"inputs": [], "outputs": [], "properties": {}, "widgets_values": [text],
                  "title": title, "color": color, "bgcolor": bgcolor})
        self.nodes.append(n)
        return n

    @staticmethod
    def below(node: dict, gap: int = 50) -> int:
        """The y at which a node placed under ``node`` clears it (and its own title bar)."""
        return node["pos"][1] + node["size"][1] + TITLE_HEIGHT + gap

    def _new_node(self, type_: str, pos, size) -> dict:
        return {"id": len(self.nodes) + 1, "type": type_, "pos": [int(pos[0]), int(pos[1])],
                "size": [int(size[0]), int(size[1])], "flags": {}, "order": 0, "mode": 0}

    def group(self, title: str, nodes: list, color: str, pad: int = 40):
        x0 = min(n["pos"][0] for n in nodes) - 10
        y0 = min(n["pos"][1] for n in nodes) - pad - 10
        x1 = max(n["pos"][0] + n["size"][0] for n in nodes) + 10
        y1 = max(n["pos"][1] + n["size"][1] for n in nodes) + 10
        self.groups.append({"id": len(self.groups) + 1, "title": title,
                            "bounding": [x0, y0, x1 - x0, y1 - y0], "color": color,
                            "font_size": 24, "flags": {}})

    # -- links ---------------------------------------------------------------------------------
    def link(self, src: dict, out, dst: dict, input_name: str) -> int:
        """Connect ``src`` output (index or name) to ``dst`` input ``input_name``; a widget input
        becomes a socket (``"widget": {"name": ...}``) as when the user drags a link onto it."""
        if isinstance(out, str):
            out = [o["name"] for o in src["outputs"]].index(out)
        otype = src["outputs"][out]["type"]
        slots = [i["name"] for i in dst["inputs"]]
        if input_name not in slots:
            schema, _ = self.schemas.get(dst["type"])
            inp = next((i for i in (schema or {}).get("inputs", []) if i["name"] == input_name),
                       None)
            if inp is None or not inp["widget"]:
                raise ValueError(f"{dst['type']} has no input {input_name}")
            dst["inputs"].append({"name": input_name, "type": inp["type"], "link": None,
                                  "widget": {"name": input_name}})
            slots.append(input_name)
        k = slots.index(input_name)
        if dst["inputs"][k]["link"] is not None:
            raise ValueError(f"{dst['type']}.{input_name} is already linked")
        lid = len(self.links) + 1
        src["outputs"][out]["links"].append(lid)
        dst["inputs"][k]["link"] = lid
        self.links.append([lid, src["id"], out, dst["id"], k, otype])
        return lid

    # -- output --------------------------------------------------------------------------------
    def _order(self):
        """Execution order like the frontend's: topological, ties by id; notes last (a cycle or
        a link from a missing node: the rest by id)."""
        by_id = {n["id"]: n for n in self.nodes}
        deps = {n["id"]: {ln[1] for ln in self.links if ln[3] == n["id"]} & set(by_id)
                for n in self.nodes}
        done, order = set(), []
        while len(order) < len(self.nodes):
            left = [n for n in self.nodes if n["id"] not in done]
            ready = [n for n in left if deps[n["id"]] <= done] or left
            ready.sort(key=lambda n: (n["type"] == "MarkdownNote", n["id"]))
            done.add(ready[0]["id"])
            order.append(ready[0]["id"])
        for k, nid in enumerate(order):
            by_id[nid]["order"] = k

    def json(self) -> dict:
        self._order()
        return {
            "id": _uuid(self.title), "revision": 0,
            "last_node_id": len(self.nodes), "last_link_id": len(self.links),
            "nodes": self.nodes, "links": self.links, "groups": self.groups,
            "config": {}, "extra": {"ds": {"scale": 0.6, "offset": [40, 60]},
                                    "frontendVersion": "1.28.6"},
            "version": 0.4,
        }


def _uuid(title: str) -> str:
    import uuid  # noqa: PLC0415

    return str(uuid.uuid5(uuid.NAMESPACE_URL, "orbitforge/workflows/" + title))
