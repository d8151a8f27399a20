"""The offline workflow checker and UI -> API conversion (the orbitforge.workflow_tools package)."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

from orbitforge.nodes import NODE_CLASS_MAPPINGS
from orbitforge.workflow_tools.api import ui_to_api
from orbitforge.workflow_tools.check import check_files, check_workflow
from orbitforge.workflow_tools.cli import check_workflow_main
from orbitforge.workflow_tools.graph import WorkflowBuilder
from orbitforge.workflow_tools.schema import (
    check_value,
    core_schema_files,
    load_core_schemas,
    normalize_input,
    schema_from_class,
    types_match,
    widget_layout,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOW_FILES = sorted(glob.glob(os.path.join(REPO, "example_workflows", "*.json")))

# OrbitCameras widgets, in frontend order: seed is an INT named "seed", so the frontend adds a
# control_after_generate value right after it.
ORBIT_VALUES = ["sv3d_static", 21, 10.0, 2.0, 33.8, 576, 576, 0, "fixed", "0, 20",
                "0, 0, 0; 20, 30, 340"]
ORBIT_API = {"orbit": "sv3d_static", "frames": 21, "elevation": 10.0, "radius": 2.0, "fov": 33.8,
             "width": 576, "height": 576, "seed": 0, "elevations": "0, 20",
             "keyframes": "0, 0, 0; 20, 30, 340"}


def UI():
    """An empty graph built the way the frontend saves it (the builder the shipped workflows use);
    the tests add hand-made nodes with ``raw_node``."""
    return WorkflowBuilder("checker-test")


def orbit_node(ui, values=None):
    return ui.raw_node("OrbitForgeOrbitCameras", ORBIT_VALUES if values is None else values,
                  outputs=[("cameras", "CAMERAS"), ("path_plot", "IMAGE")])


def preview_node(ui):
    return ui.raw_node("PreviewImage", [], inputs=[("images", "IMAGE")])


def orbit_to_preview(values=None):
    ui = UI()
    cams = orbit_node(ui, values)
    prev = preview_node(ui)
    ui.link(cams, 1, prev, "images")
    return ui, cams, prev


def problems_of(ui):
    return check_workflow(ui.json(), NODE_CLASS_MAPPINGS, load_core_schemas())


def test_valid_workflow_passes_and_converts_to_api():
    ui, _cams, _prev = orbit_to_preview()
    assert problems_of(ui) == []
    api = ui_to_api(ui.json(), NODE_CLASS_MAPPINGS, load_core_schemas())
    assert api == {
        "1": {"class_type": "OrbitForgeOrbitCameras", "inputs": ORBIT_API},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 1]}},
    }


def test_builder_lays_widgets_out_from_the_schema():
    """The builder the shipped workflows come from: widget values in frontend order (defaults
    filled in, a control value after the seed), a linked widget turned into a socket."""
    b = WorkflowBuilder("builder-test")
    cams = b.node("OrbitForgeOrbitCameras", (0, 0), frames=12, seed=3)
    wv = cams["widgets_values"]
    assert len(wv) == len(ORBIT_VALUES) and wv[1] == 12 and wv[7:9] == [3, "fixed"]
    prev = b.node("PreviewImage", (400, 0))
    b.link(cams, "path_plot", prev, "images")
    prim = b.raw_node("PrimitiveNode", [24, "fixed"], outputs=[("INT", "INT")])
    b.link(prim, 0, cams, "frames")
    assert cams["inputs"][-1] == {"name": "frames", "type": "INT", "link": 2,
                                  "widget": {"name": "frames"}}
    wf = b.json()
    assert check_workflow(wf) == []
    assert ui_to_api(wf)["1"]["inputs"]["frames"] == 24
    assert [n["order"] for n in wf["nodes"]] == [1, 2, 0]  # the primitive runs first
    with pytest.raises(ValueError, match="no inputs"):
        b.node("PreviewImage", (0, 0), colour=1)
    with pytest.raises(ValueError, match="already linked"):
        b.link(prim, 0, cams, "frames")


def test_defaults_are_the_pack_registry_and_bundled_core_table():
    ui, _, _ = orbit_to_preview()
    assert check_workflow(ui.json()) == []
    assert ui_to_api(ui.json())["2"]["inputs"] == {"images": ["1", 1]}


def test_seed_gets_a_control_after_generate_value():
    layout = widget_layout(schema_from_class(NODE_CLASS_MAPPINGS["OrbitForgeOrbitCameras"]))
    kinds = [(k, i["name"]) for k, i in layout]
    assert kinds[7:9] == [("input", "seed"), ("control", "seed")]
    assert len(layout) == len(ORBIT_VALUES)
    bad = list(ORBIT_VALUES)
    bad[8] = "sometimes"
    ui, _, _ = orbit_to_preview(bad)
    (msg,) = problems_of(ui)
    assert "node 1 (OrbitForgeOrbitCameras)" in msg and "'seed'" in msg and "sometimes" in msg


def test_unknown_node_type_is_reported():
    ui, _, _ = orbit_to_preview()
    ui.raw_node("OrbitForgeNoSuchNode", [1, 2])
    probs = problems_of(ui)
    assert len(probs) == 1
    assert "node 3" in probs[0] and "unknown node type 'OrbitForgeNoSuchNode'" in probs[0]


def test_mismatched_link_type_is_reported():
    ui = UI()
    cams, prev = orbit_node(ui), preview_node(ui)
    ui.link(cams, 0, prev, "images")  # CAMERAS into IMAGE
    (msg,) = problems_of(ui)
    assert "node 2 (PreviewImage) input 'images' (IMAGE)" in msg
    assert "type CAMERAS" in msg and "node 1 (OrbitForgeOrbitCameras)" in msg


def test_out_of_range_widget_is_reported():
    vals = list(ORBIT_VALUES)
    vals[1] = 0  # frames min 1
    vals[2] = 120.0  # elevation max 90
    ui, _, _ = orbit_to_preview(vals)
    probs = problems_of(ui)
    assert len(probs) == 2
    assert any("node 1 (OrbitForgeOrbitCameras) input 'frames'" in p and "below min 1" in p
               for p in probs)
    assert any("input 'elevation'" in p and "above max 90" in p for p in probs)


def test_widget_value_of_wrong_type_is_reported():
    vals = list(ORBIT_VALUES)
    vals[5] = 576.5  # width INT
    ui, _, _ = orbit_to_preview(vals)
    (msg,) = problems_of(ui)
    assert "input 'width'" in msg and "not an integer" in msg


def test_bad_combo_value_is_reported():
    vals = list(ORBIT_VALUES)
    vals[0] = "spiral"
    ui, _, _ = orbit_to_preview(vals)
    (msg,) = problems_of(ui)
    assert "node 1 (OrbitForgeOrbitCameras) input 'orbit'" in msg and "'spiral'" in msg
    assert "sv3d_static" in msg  # lists the allowed values


def test_missing_required_input_is_reported():
    ui = UI()
    orbit_node(ui)
    preview_node(ui)  # images not connected
    (msg,) = problems_of(ui)
    assert "node 2 (PreviewImage) input 'images' (IMAGE)" in msg and "not connected" in msg


def test_missing_widget_values_are_reported():
    ui, _, _ = orbit_to_preview(ORBIT_VALUES[:9])  # elevations, keyframes missing
    probs = problems_of(ui)
    assert len(probs) == 2
    assert all("node 1 (OrbitForgeOrbitCameras)" in p and "no value" in p for p in probs)
    assert any("'keyframes'" in p for p in probs)


def test_widget_values_saved_without_the_seed_control_are_read_correctly():
    # older frontends added no control value after a seed without control_after_generate
    no_control = ORBIT_VALUES[:8] + ORBIT_VALUES[9:]
    ui, _, _ = orbit_to_preview(no_control)
    assert problems_of(ui) == []
    assert ui_to_api(ui.json())["1"]["inputs"] == ORBIT_API
    # ...but a control word in the control position means a value is missing at the end
    ui, _, _ = orbit_to_preview(ORBIT_VALUES[:10])
    (msg,) = problems_of(ui)
    assert "input 'keyframes': required widget has no value" in msg


def test_too_many_widget_values_are_reported():
    ui, _, _ = orbit_to_preview(ORBIT_VALUES + ["extra"])
    (msg,) = problems_of(ui)
    assert "node 1 (OrbitForgeOrbitCameras)" in msg and "12 widget values" in msg


def test_inconsistent_link_table_is_reported():
    ui, cams, prev = orbit_to_preview()
    prev["inputs"][0]["link"] = 99  # not in the table; link 1 is now orphaned on its target side
    probs = problems_of(ui)
    assert any("link 99 is not in the links table" in p and "node 2 (PreviewImage)" in p
               for p in probs)
    assert any(p.startswith("link 1:") and "holds link 99" in p for p in probs)
    ui, cams, prev = orbit_to_preview()
    cams["outputs"][1]["links"] = []
    assert any("link 1: not listed" in p for p in problems_of(ui))
    ui, cams, prev = orbit_to_preview()
    ui.links[0][3] = 7  # target node does not exist
    assert any("link 1: joins missing node 7" in p for p in problems_of(ui))


def test_last_ids_must_cover_the_graph():
    ui, _, _ = orbit_to_preview()
    wf = ui.json()
    wf["last_node_id"], wf["last_link_id"] = 1, 0
    probs = check_workflow(wf)
    assert any("last_node_id 1" in p for p in probs) and any("last_link_id 0" in p for p in probs)


def test_api_prompt_is_recognised():
    probs = check_workflow({"1": {"class_type": "PreviewImage", "inputs": {}}})
    assert len(probs) == 1 and "API-format" in probs[0]


def test_reroute_note_and_primitive_are_handled_like_the_frontend():
    ui = UI()
    cams = orbit_node(ui)
    prev = preview_node(ui)
    rr = ui.raw_node("Reroute", None, inputs=[("", "*")], outputs=[("", "IMAGE")])
    ui.link(cams, 1, rr, "")
    ui.link(rr, 0, prev, "images")
    ui.raw_node("Note", ["Orbit preview only."])
    ui.raw_node("MarkdownNote", ["# Orbit"])
    # a primitive driving the 'frames' widget, turned into a socket
    prim = ui.raw_node("PrimitiveNode", [12, "fixed"], outputs=[("INT", "INT")])
    cams["inputs"].append({"name": "frames", "type": "INT", "widget": {"name": "frames"},
                           "link": None})
    ui.link(prim, 0, cams, "frames")
    assert problems_of(ui) == []
    api = ui_to_api(ui.json(), NODE_CLASS_MAPPINGS, load_core_schemas())
    assert set(api) == {"1", "2"}
    assert api["2"]["inputs"] == {"images": ["1", 1]}
    assert api["1"]["inputs"] == dict(ORBIT_API, frames=12)
    # a primitive value out of range for the widget it drives is reported on the target
    prim["widgets_values"][0] = 5000
    (msg,) = problems_of(ui)
    assert "node 1 (OrbitForgeOrbitCameras) input 'frames'" in msg and "above max 1024" in msg


def test_type_mismatch_is_found_through_reroutes():
    ui = UI()
    cams, prev = orbit_node(ui), preview_node(ui)
    rr = ui.raw_node("Reroute", None, inputs=[("", "*")], outputs=[("", "*")])
    ui.link(cams, 0, rr, "")
    ui.link(rr, 0, prev, "images")
    (msg,) = problems_of(ui)
    assert "node 2 (PreviewImage) input 'images'" in msg and "CAMERAS" in msg


def test_bypassed_and_muted_nodes():
    ui = UI()
    cams = orbit_node(ui)
    inv = ui.raw_node("ImageInvert", [], inputs=[("image", "IMAGE")], outputs=[("IMAGE", "IMAGE")],
                 mode=4)
    prev = preview_node(ui)
    ui.link(cams, 1, inv, "image")
    ui.link(inv, 0, prev, "images")
    muted = ui.raw_node("SaveImage", ["x"], inputs=[("images", "IMAGE")], mode=2)  # not connected
    assert problems_of(ui) == []  # a muted node's missing input is not an error
    api = ui_to_api(ui.json(), NODE_CLASS_MAPPINGS, load_core_schemas())
    assert set(api) == {"1", "3"} and api["3"]["inputs"] == {"images": ["1", 1]}
    assert muted["id"] == 4


def test_core_sv3d_style_graph_with_upload_and_sampler_widgets():
    ui = UI()
    img = ui.raw_node("LoadImage", ["chair.png", "image"],
                 outputs=[("IMAGE", "IMAGE"), ("MASK", "MASK")])
    ckpt = ui.raw_node("ImageOnlyCheckpointLoader", ["sv3d_u.safetensors"],
                  outputs=[("MODEL", "MODEL"), ("CLIP_VISION", "CLIP_VISION"), ("VAE", "VAE")])
    cond = ui.raw_node("SV3D_Conditioning", [576, 576, 21, 10.0],
                  inputs=[("clip_vision", "CLIP_VISION"), ("init_image", "IMAGE"), ("vae", "VAE")],
                  outputs=[("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                           ("latent", "LATENT")])
    noise = ui.raw_node("RandomNoise", [42, "randomize"], outputs=[("NOISE", "NOISE")])
    guid = ui.raw_node("VideoTriangleCFGGuidance", [1.0], inputs=[("model", "MODEL")],
                  outputs=[("MODEL", "MODEL")])
    cfg = ui.raw_node("CFGGuider", [2.5], inputs=[("model", "MODEL"), ("positive", "CONDITIONING"),
                                             ("negative", "CONDITIONING")],
                 outputs=[("GUIDER", "GUIDER")])
    sel = ui.raw_node("KSamplerSelect", ["euler"], outputs=[("SAMPLER", "SAMPLER")])
    sch = ui.raw_node("BasicScheduler", ["karras", 50, 1.0], inputs=[("model", "MODEL")],
                 outputs=[("SIGMAS", "SIGMAS")])
    samp = ui.raw_node("SamplerCustomAdvanced", [],
                  inputs=[("noise", "NOISE"), ("guider", "GUIDER"), ("sampler", "SAMPLER"),
                          ("sigmas", "SIGMAS"), ("latent_image", "LATENT")],
                  outputs=[("output", "LATENT"), ("denoised_output", "LATENT")])
    dec = ui.raw_node("VAEDecode", [], inputs=[("samples", "LATENT"), ("vae", "VAE")],
                 outputs=[("IMAGE", "IMAGE")])
    save = ui.raw_node("SaveAnimatedWEBP", ["sv3d", 10.0, False, 90, "default"],
                  inputs=[("images", "IMAGE")])
    for a, s, b, n in [(ckpt, 1, cond, "clip_vision"), (img, 0, cond, "init_image"),
                       (ckpt, 2, cond, "vae"), (ckpt, 0, guid, "model"), (guid, 0, cfg, "model"),
                       (cond, 0, cfg, "positive"), (cond, 1, cfg, "negative"),
                       (ckpt, 0, sch, "model"), (noise, 0, samp, "noise"),
                       (cfg, 0, samp, "guider"), (sel, 0, samp, "sampler"),
                       (sch, 0, samp, "sigmas"), (cond, 2, samp, "latent_image"),
                       (samp, 1, dec, "samples"), (ckpt, 2, dec, "vae"),
                       (dec, 0, save, "images")]:
        ui.link(a, s, b, n)
    assert problems_of(ui) == []
    api = ui_to_api(ui.json(), NODE_CLASS_MAPPINGS, load_core_schemas())
    assert api["1"]["inputs"] == {"image": "chair.png"}  # no "upload" value
    assert api["4"]["inputs"] == {"noise_seed": 42}  # no control_after_generate value
    assert api["3"]["inputs"] == {"clip_vision": ["2", 1], "init_image": ["1", 0],
                                  "vae": ["2", 2], "width": 576, "height": 576,
                                  "video_frames": 21, "elevation": 10.0}
    assert api["8"]["inputs"] == {"model": ["2", 0], "scheduler": "karras", "steps": 50,
                                  "denoise": 1.0}
    assert api["11"]["inputs"] == {"images": ["10", 0], "filename_prefix": "sv3d", "fps": 10.0,
                                   "lossless": False, "quality": 90, "method": "default"}
    # core combos are checked, file lists (installation dependent) are not
    sch["widgets_values"][0] = "karras_v2"
    noise["widgets_values"][1] = "random"
    probs = problems_of(ui)
    assert len(probs) == 2
    assert any("node 8 (BasicScheduler) input 'scheduler'" in p for p in probs)
    assert any("node 4 (RandomNoise) input 'noise_seed' control_after_generate" in p
               for p in probs)


def test_modern_frontend_widget_sockets_are_accepted():
    """Frontends >= 1.16 save a socket entry for every widget (link null), upload included."""
    ui = UI()
    img = ui.raw_node("LoadImage", ["chair.png", "image"],
                 inputs=[("image", "COMBO"), ("upload", "IMAGEUPLOAD")],
                 outputs=[("IMAGE", "IMAGE"), ("MASK", "MASK")])
    for slot in img["inputs"]:
        slot["widget"] = {"name": slot["name"]}
    prev = preview_node(ui)
    ui.link(img, 0, prev, "images")
    assert problems_of(ui) == []
    assert ui_to_api(ui.json())["1"] == {"class_type": "LoadImage",
                                         "inputs": {"image": "chair.png"}}
    img["inputs"].append({"name": "mask_file", "type": "STRING", "link": None})  # not a widget
    (msg,) = problems_of(ui)
    assert "node 1 (LoadImage): input slot 2 'mask_file' is not an input of LoadImage" == msg


def test_core_table_covers_the_nodes_workflows_use():
    core = load_core_schemas()
    need = ["LoadImage", "LoadImageMask", "ImageOnlyCheckpointLoader", "CheckpointLoaderSimple",
            "CLIPVisionLoader", "CLIPVisionEncode", "VAELoader", "VAEDecode", "VAEEncode",
            "SaveImage", "PreviewImage", "SaveAnimatedWEBP", "SamplerCustomAdvanced",
            "KSamplerSelect", "BasicScheduler", "RandomNoise", "DisableNoise",
            "SV3D_Conditioning", "SVD_img2vid_Conditioning", "VideoTriangleCFGGuidance",
            "VideoLinearCFGGuidance", "Preview3D", "SaveGLB", "ImageScale", "ImageBatch",
            "JoinImageWithAlpha", "SplitImageWithAlpha", "InvertMask", "CFGGuider",
            "BasicGuider"]
    assert [n for n in need if n not in core] == []
    sv3d = {i["name"]: i for i in core["SV3D_Conditioning"]["inputs"]}
    assert sv3d["video_frames"]["widget"] and not sv3d["init_image"]["widget"]
    assert core["SV3D_Conditioning"]["outputs"] == ["CONDITIONING", "CONDITIONING", "LATENT"]


def test_cli_reports_problems_and_ok(tmp_path, capsys):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    ui, _, _ = orbit_to_preview()
    good.write_text(json.dumps(ui.json()))
    vals = list(ORBIT_VALUES)
    vals[0] = "spiral"
    ui, _, _ = orbit_to_preview(vals)
    bad.write_text(json.dumps(ui.json()))
    assert check_workflow_main([str(good)]) == 0
    assert capsys.readouterr().out.strip() == f"OK {good}"
    assert check_workflow_main([str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"OK {good}" in out and f"{bad}: node 1 (OrbitForgeOrbitCameras) input 'orbit'" in out
    assert check_workflow_main([]) == 2


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=[os.path.basename(p) for p in WORKFLOW_FILES])
def test_shipped_workflows_are_valid(path):
    with open(path, encoding="utf-8") as f:
        wf = json.load(f)
    for snapshot in core_schema_files():  # every supported host
        assert check_workflow(wf, core=load_core_schemas(snapshot)) == [], snapshot
    assert check_files([path]) == {path: []}
    api = ui_to_api(wf)
    assert api, "a shipped workflow must have at least one executable node"


def test_templates_browser_lists_only_the_shipped_workflows():
    # ComfyUI (v0.3.64 and v0.33, app/custom_node_manager.py) lists every <pack>/<folder>/*.json
    # for these folder names as a template: a schema snapshot there shows up as a broken template
    listed = []
    for folder in ("example_workflows", "example", "examples", "workflow", "workflows"):
        listed += glob.glob(os.path.join(REPO, folder, "*.json"))
    assert sorted(listed) == WORKFLOW_FILES
    for path in WORKFLOW_FILES:
        assert os.path.isfile(path[:-len(".json")] + ".jpg"), f"{path}: no same-name thumbnail"
        assert json.load(open(path, encoding="utf-8"))["nodes"], path


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=[os.path.basename(p) for p in WORKFLOW_FILES])
def test_shipped_workflows_open_with_no_node_over_another(path):
    # the frontend grows a node to fit its sockets and widgets when it loads the graph; nodes laid
    # out by too-small saved sizes come out stacked on each other (seen in v0.33's frontend)
    from orbitforge.workflow_tools.graph import TITLE_HEIGHT, body_height

    nodes = json.load(open(path, encoding="utf-8"))["nodes"]
    boxes = []
    for n in nodes:
        need = body_height(len(n["inputs"]), len(n["outputs"]), len(n.get("widgets_values", [])))
        assert n["size"][1] >= need, f"node {n['id']} ({n['type']}): height {n['size'][1]} < {need}"
        x, y = n["pos"]
        boxes.append((n, x, y - TITLE_HEIGHT, x + n["size"][0], y + n["size"][1]))
    for i, (a, ax0, ay0, ax1, ay1) in enumerate(boxes):
        for b, bx0, by0, bx1, by1 in boxes[i + 1:]:
            overlap = min(ax1, bx1) > max(ax0, bx0) and min(ay1, by1) > max(ay0, by0)
            assert not overlap, \
                f"node {a['id']} ({a['type']}) overlaps node {b['id']} ({b['type']})"


def test_both_host_snapshots_ship():
    versions = {json.load(open(f))["comfyui_version"] for f in core_schema_files()}
    assert {"0.3.64", "0.33.0"} <= versions


def test_widget_type_of_a_union_input_makes_it_a_widget():
    """v0.33's Preview3D: model_file is 'STRING,FILE_3D_GLB,...' drawn as a STRING widget; its
    value is in widgets_values and a FILE_3D link fits it too."""
    spec = ("STRING,FILE_3D_GLB,FILE_3D", {"default": "", "widgetType": "STRING"})
    inp = normalize_input("model_file", "required", spec)
    assert inp["widget"] and inp["widget_type"] == "STRING"
    schema = {"inputs": [inp], "outputs": [], "output_names": [], "output_node": True}
    assert [(k, i["name"]) for k, i in widget_layout(schema)] == [("input", "model_file")]
    assert check_value(inp, 3) == "value 3 is not a string"
    assert types_match("FILE_3D", inp["type"]) and types_match("STRING", inp["type"])


def test_old_graph_with_gaussians_links_still_checks_and_converts():
    """Graphs saved before scenes became SPLAT name their links GAUSSIANS: the node types are
    unchanged (same ids, inputs, outputs positions), so they load and convert as before."""
    path = os.path.join(REPO, "example_workflows", "orbitforge_sample_views_to_mesh.json")
    wf = json.load(open(path, encoding="utf-8"))
    old = json.loads(json.dumps(wf).replace('"SPLAT"', '"GAUSSIANS"'))
    assert old != wf
    assert check_workflow(old) == []
    assert ui_to_api(old) == ui_to_api(wf)


def test_a_problem_with_one_host_names_it(tmp_path):
    """A core node only v0.33 has (SplatToFile3D) is unknown to the v0.3.64 snapshot."""
    ui = UI()
    ui.raw_node("SplatToFile3D", ["ply"], inputs=[("splat", "SPLAT")],
           outputs=[("FILE_3D_SPLAT_ANY", "model_3d")])
    f = tmp_path / "new.json"
    f.write_text(json.dumps(ui.json()))
    msgs = check_files([str(f)])[str(f)]
    assert any("unknown node type 'SplatToFile3D'" in m and m.endswith("(with ComfyUI 0.3.64)")
               for m in msgs)
    # v0.33 knows the node: there only its unconnected input is wrong
    assert any("input 'splat' (SPLAT): required input is not connected (with ComfyUI 0.33.0)"
               in m for m in msgs)


def _backend_validate(monkeypatch, api):
    """ComfyUI's own prompt validation (execution.validate_prompt) of an API prompt."""
    import asyncio

    from comfy_host import require_comfyui

    require_comfyui()
    import execution
    import nodes as comfy_nodes

    for k, v in NODE_CLASS_MAPPINGS.items():
        monkeypatch.setitem(comfy_nodes.NODE_CLASS_MAPPINGS, k, v)
    return asyncio.run(execution.validate_prompt("workflow-check-test", api, None))


@pytest.mark.comfyui
def test_converted_prompts_pass_comfyui_validation(monkeypatch):
    ui, _, _ = orbit_to_preview()
    ok, err, outputs, _ = _backend_validate(monkeypatch, ui_to_api(ui.json()))
    assert ok and outputs == ["2"], err
    # reroute + primitive + bypassed node
    ui = UI()
    cams = orbit_node(ui)
    inv = ui.raw_node("ImageInvert", [], inputs=[("image", "IMAGE")], outputs=[("IMAGE", "IMAGE")],
                 mode=4)
    rr = ui.raw_node("Reroute", None, inputs=[("", "*")], outputs=[("", "IMAGE")])
    prev = preview_node(ui)
    prim = ui.raw_node("PrimitiveNode", [12, "fixed"], outputs=[("INT", "INT")])
    cams["inputs"].append({"name": "frames", "type": "INT", "widget": {"name": "frames"},
                           "link": None})
    ui.link(cams, 1, inv, "image")
    ui.link(inv, 0, rr, "")
    ui.link(rr, 0, prev, "images")
    ui.link(prim, 0, cams, "frames")
    assert problems_of(ui) == []
    ok, err, outputs, _ = _backend_validate(monkeypatch, ui_to_api(ui.json()))
    assert ok and outputs == ["4"], err


@pytest.mark.comfyui
def test_checker_and_comfyui_reject_the_same_inputs(monkeypatch):
    vals = list(ORBIT_VALUES)
    vals[0], vals[1] = "spiral", 0
    ui, _, _ = orbit_to_preview(vals)
    mine = {p.split("input '")[1].split("'")[0] for p in problems_of(ui)}
    ok, _err, _out, node_errors = _backend_validate(monkeypatch, ui_to_api(ui.json()))
    assert not ok
    theirs = {e["extra_info"]["input_name"] for e in node_errors["1"]["errors"]}
    assert mine == theirs == {"orbit", "frames"}


@pytest.mark.comfyui
@pytest.mark.slow
def test_core_schemas_json_matches_the_comfyui_checkout(tmp_path):
    """The shipped table equals a fresh extraction from $COMFYUI_PATH (loads ComfyUI with all its
    extra nodes in a subprocess: ~10-30 s)."""
    if not os.environ.get("COMFYUI_PATH"):
        pytest.skip("COMFYUI_PATH is unset: ComfyUI integration test skipped")
    from orbitforge.bench.core_schemas import snapshot_path

    out = tmp_path / "core.json"
    res = subprocess.run([sys.executable, "-m", "orbitforge.bench.core_schemas", "--out", str(out)],
                         check=False, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr[-2000:]
    doc = json.loads(out.read_text())
    shipped = snapshot_path(doc["comfyui_version"])
    assert os.path.isfile(shipped), f"no snapshot for ComfyUI {doc['comfyui_version']}"
    assert doc["nodes"] == load_core_schemas(shipped), (
        f"{os.path.basename(shipped)} is stale: run python -m orbitforge.bench core_schemas")
