// OrbitForge: the inline 3D viewer of core "Save 3D Model" (SaveGLB) on OrbitForge Save Mesh and
// Save Gaussians.
//
// ComfyUI's frontend (comfyui-frontend-package 1.27 with ComfyUI v0.3.64, 1.49 with v0.33) wires
// that viewer by node type name only: its "Comfy.SaveGLB" extension adds a PREVIEW_3D widget to
// the SaveGLB node definition and, in nodeCreated / onNodeOutputsUpdated / getNodeMenuItems,
// returns early unless node.constructor.comfyClass === "SaveGLB". Our nodes return the same ui
// output as SaveGLB ({"3d": [{filename, subfolder, type: "output"}]}), so this file only lets
// core's own extension handle them: it adds the same widget to our node definitions and calls
// core's hooks with our node seen as a SaveGLB node for the duration of the (synchronous) type
// check. No viewer code is copied; if the frontend has no Comfy.SaveGLB extension, nothing
// happens and the nodes work as before (without the preview).
import { app } from "../../scripts/app.js";

const OURS = new Set(["OrbitForgeSaveMesh", "OrbitForgeSaveGaussians"]);
const CORE_CLASS = "SaveGLB";
const CORE_EXTENSION = "Comfy.SaveGLB";

function coreExtension() {
  return (app.extensions || []).find((e) => e && e.name === CORE_EXTENSION);
}

function isOurs(node) {
  return !!node && OURS.has(node.constructor && node.constructor.comfyClass);
}

// Run fn() while node.constructor.comfyClass reads "SaveGLB" (an own property on the instance
// shadows the class for the call only; the class, and so the saved workflow and the prompt's
// class_type, are untouched).
function asCoreNode(nodes, fn) {
  const shimmed = [];
  for (const node of nodes) {
    if (Object.prototype.hasOwnProperty.call(node, "constructor")) continue;
    const real = node.constructor;
    const shim = Object.create(real, { comfyClass: { value: CORE_CLASS } });
    Object.defineProperty(node, "constructor", { value: shim, configurable: true, writable: true });
    shimmed.push(node);
  }
  try {
    return fn();
  } finally {
    for (const node of shimmed) delete node.constructor;
  }
}

function ourNodes(graph, out = []) {
  for (const node of (graph && (graph.nodes || graph._nodes)) || []) {
    if (isOurs(node)) out.push(node);
    if (node.subgraph) ourNodes(node.subgraph, out);
  }
  return out;
}

app.registerExtension({
  name: "OrbitForge.Preview3D",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!OURS.has(nodeData.name)) return;
    // Same frontend-only widget as core SaveGLB (the server ignores inputs it does not declare).
    // Only where the frontend has the 3D viewer (its lazy loader or SaveGLB extension present).
    const has3d = (app.extensions || []).some(
      (e) => e && (e.name === CORE_EXTENSION || e.name === "Comfy.Load3DLazy"));
    if (has3d && nodeData.input && nodeData.input.required) {
      nodeData.input.required.image = ["PREVIEW_3D"];
    }
  },

  async nodeCreated(node) {
    if (!isOurs(node)) return;
    const core = coreExtension();
    if (!core || !core.nodeCreated) return;
    // core's nodeCreated checks the class before its first await: the shim covers that part
    await asCoreNode([node], () => core.nodeCreated(node, app));
  },

  onNodeOutputsUpdated(nodeOutputs) {
    const core = coreExtension();
    if (!core || !core.onNodeOutputsUpdated) return;
    const nodes = ourNodes(app.rootGraph || app.graph);
    if (nodes.length) asCoreNode(nodes, () => core.onNodeOutputsUpdated(nodeOutputs));
  },

  getNodeMenuItems(node) {
    const core = coreExtension();
    if (!isOurs(node) || !core || !core.getNodeMenuItems) return [];
    return asCoreNode([node], () => core.getNodeMenuItems(node)) || [];
  },
});
