"""web/preview3d.js (core's inline 3D viewer on Save Mesh / Save Gaussians) under Node.js.

ComfyUI's frontend wires the viewer of core "Save 3D Model" by node type name: its
``Comfy.SaveGLB`` extension returns early unless ``node.constructor.comfyClass === "SaveGLB"``.
Our extension hands our nodes to that extension. Here a stand-in ``app`` (the frontend's
``scripts/app.js``) holds a stand-in ``Comfy.SaveGLB`` that checks the class the way core's does,
and records what it was given. No browser: the viewer itself is not exercised. Skipped when
``node`` is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

import orbitforge
from orbitforge.nodes import NODE_CLASS_MAPPINGS

ROOT = os.path.dirname(os.path.abspath(orbitforge.__file__))

APP_STUB = r"""
export const calls = [];
const coreSaveGLB = {
  name: "Comfy.SaveGLB",
  async nodeCreated(node) {
    if (node.constructor.comfyClass !== "SaveGLB") return;
    calls.push(["nodeCreated", node.id]);
    await Promise.resolve();
    // core goes on after its first await: by then the node is itself again
    calls.push(["afterAwait", node.id, node.constructor.comfyClass]);
  },
  onNodeOutputsUpdated(outputs) {
    for (const [id, out] of Object.entries(outputs)) {
      const node = app.rootGraph.nodes.find((n) => String(n.id) === id);
      if (!node || node.constructor.comfyClass !== "SaveGLB") continue;
      calls.push(["outputs", node.id, out["3d"][0].filename]);
    }
  },
  getNodeMenuItems(node) {
    if (node.constructor.comfyClass !== "SaveGLB") return [];
    return [{ content: "Export" }];
  },
};
export const app = {
  extensions: [{ name: "Comfy.Load3DLazy" }],
  rootGraph: { nodes: [] },
  registerExtension(ext) { this.extensions.push(ext); },
  withCore() { this.extensions.push(coreSaveGLB); },
};
"""

DRIVER = r"""
import { app, calls } from "../scripts/app.js";
await import("./orbitforge/preview3d.js");
const ours = app.extensions.find((e) => e.name === "OrbitForge.Preview3D");
class Ours { static comfyClass = "OrbitForgeSaveMesh"; }
class Splat { static comfyClass = "OrbitForgeSaveGaussians"; }
class Other { static comfyClass = "KSampler"; }
const mk = (C, id) => Object.assign(new C(), { id });
const result = {};
const defs = {};
for (const name of ["OrbitForgeSaveMesh", "OrbitForgeSaveGaussians", "KSampler"]) {
  const d = { name, input: { required: { x: ["INT"] } } };
  await ours.beforeRegisterNodeDef(null, d);
  defs[name] = d.input.required.image || null;
}
result.defs = defs;
// no core extension yet: nothing happens
await ours.nodeCreated(mk(Ours, 1));
result.withoutCore = calls.length;
app.withCore();
const a = mk(Ours, 2), b = mk(Splat, 3), c = mk(Other, 4);
app.rootGraph.nodes.push(a, b, c);
for (const n of [a, b, c]) await ours.nodeCreated(n);
ours.onNodeOutputsUpdated({ "2": { "3d": [{ filename: "m.glb" }] },
                            "3": { "3d": [{ filename: "s.ply" }] },
                            "4": { "3d": [{ filename: "x.glb" }] } });
result.menu = [ours.getNodeMenuItems(a), ours.getNodeMenuItems(c)];
result.calls = calls;
result.classesAfter = [a, b, c].map((n) => n.constructor.comfyClass);
result.ownConstructor = [a, b, c].some((n) => Object.hasOwn(n, "constructor"));
console.log(JSON.stringify(result));
"""


@pytest.fixture(scope="module")
def run_js(tmp_path_factory):
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    base = tmp_path_factory.mktemp("frontend")
    (base / "scripts").mkdir()
    (base / "scripts" / "app.js").write_text(APP_STUB)
    ext = base / "extensions"
    (ext / "orbitforge").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "web", "preview3d.js"), ext / "orbitforge" / "preview3d.js")
    (ext / "driver.mjs").write_text(DRIVER)
    (base / "package.json").write_text('{"type": "module"}')
    out = subprocess.run([node, str(ext / "driver.mjs")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_web_directory_ships_the_extension():
    assert orbitforge.WEB_DIRECTORY == "web"
    assert os.path.isfile(os.path.join(ROOT, "web", "preview3d.js"))
    src = open(os.path.join(ROOT, "web", "preview3d.js")).read()
    for node_id in ("OrbitForgeSaveMesh", "OrbitForgeSaveGaussians"):
        assert f'"{node_id}"' in src and node_id in NODE_CLASS_MAPPINGS
        assert NODE_CLASS_MAPPINGS[node_id].OUTPUT_NODE


def test_our_save_nodes_get_core_saveglb_widget_only(run_js):
    assert run_js["defs"] == {"OrbitForgeSaveMesh": ["PREVIEW_3D"],
                              "OrbitForgeSaveGaussians": ["PREVIEW_3D"], "KSampler": None}


def test_core_saveglb_extension_handles_our_nodes_and_only_ours(run_js):
    assert run_js["withoutCore"] == 0
    calls = [tuple(c) for c in run_js["calls"]]
    assert ("nodeCreated", 2) in calls and ("nodeCreated", 3) in calls
    assert not any(c[1] == 4 for c in calls)  # other nodes untouched
    # after core's first await our node reads as itself again
    assert ("afterAwait", 2, "OrbitForgeSaveMesh") in calls
    assert ("outputs", 2, "m.glb") in calls and ("outputs", 3, "s.ply") in calls
    assert run_js["menu"] == [[{"content": "Export"}], []]
    assert run_js["classesAfter"] == ["OrbitForgeSaveMesh", "OrbitForgeSaveGaussians", "KSampler"]
    assert run_js["ownConstructor"] is False
