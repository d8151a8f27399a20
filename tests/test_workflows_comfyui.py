"""The shipped workflows inside a real ComfyUI server (skipped when COMFYUI_PATH is unset).

One ComfyUI is started the way users run it -- ``main.py --cpu`` on loopback, with a temporary
``--base-directory`` whose ``custom_nodes/orbitforge_pack`` is a symlink to this repository, so
ComfyUI loads the pack exactly as it loads any custom node folder (``--front-end-root`` points at
an empty folder: the test needs no browser frontend, nor the comfyui-frontend-package). Then:

* every node type used by a shipped workflow exists in the server's ``/object_info`` (no red
  nodes), and ComfyUI's own validation of each workflow (converted UI -> API with the node
  schemas) finds nothing wrong except model/image files this bare installation does not have;
* the reconstruction-only workflow (bundled sample, no model files) is queued with
  ``POST /prompt`` and runs to the end: the PLY and GLB it saves exist in the output folder and
  load (``kernels.splat.ply.read_ply``, ``trimesh``), and every preview node produced its images.

To keep the run inside a test budget on a loaded 2-core CPU, the test lowers the workflow's
heavy settings (fewer views and iterations, coarser grids: :data:`FAST`); set
``ORBITFORGE_WORKFLOW_FULL=1`` to run the workflow exactly as shipped.

torchvision: ComfyUI imports it at module level in a few model files. On machines without a
working torchvision (CPU torch from a local wheel) the server is started through a ``-c``
bootstrap that first installs the same stand-in module as ``tests/comfy_host.py`` (none of the
code paths these workflows use need it), then runs ``main.py`` with ``runpy``.
"""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import pytest

from orbitforge.workflow_tools.api import ui_to_api
from orbitforge.workflow_tools.schema import FRONTEND_ONLY

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.dirname(os.path.abspath(__file__))
WORKFLOWS = sorted(glob.glob(os.path.join(REPO, "example_workflows", "*.json")))
SAMPLE_WORKFLOW = os.path.join(REPO, "example_workflows", "orbitforge_sample_views_to_mesh.json")

# Test-budget settings for the sample workflow, by node type -> input -> value.
FAST = {
    "OrbitForgeLoadSampleOrbit": {"frames": 7},
    "OrbitForgeGaussianReconstruct": {"iterations": 20, "resolution": 64},
    "OrbitForgeSDFMesh": {"resolution": 64},
}
# Inputs whose values name files of the installation (absent in the bare test ComfyUI).
FILE_INPUTS = {"ckpt_name", "image", "unet_name", "vae_name", "clip_name"}

START_TIMEOUT_S = 600
RUN_TIMEOUT_S = 1800


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, comfy: str, base: str):
        self.port = _free_port()
        self.base = base
        self.log_path = os.path.join(base, "comfyui.log")
        # headless: an empty web root, so no frontend package is needed (nor served)
        web = os.path.join(base, "web")
        os.makedirs(web, exist_ok=True)
        argv = ["main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                "--base-directory", base, "--front-end-root", web, "--disable-auto-launch",
                "--disable-api-nodes", "--disable-metadata"]
        boot = textwrap.dedent(f"""
            import runpy, sys
            sys.path.insert(0, {TESTS!r})
            import comfy_host
            comfy_host._stub_torchvision()
            sys.path.insert(0, {comfy!r})
            sys.argv = {argv!r}
            runpy.run_path({os.path.join(comfy, "main.py")!r}, run_name="__main__")
        """)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("ORBITFORGE_OUTPUT", None)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-c", boot], cwd=comfy, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log_tail(self, n: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-n:]
        except OSError:
            return ""

    def get(self, path: str):
        with urllib.request.urlopen(self.url(path), timeout=60) as r:
            return json.loads(r.read())

    def post(self, path: str, payload: dict):
        req = urllib.request.Request(self.url(path), data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def wait_ready(self):
        t0 = time.monotonic()
        while time.monotonic() - t0 < START_TIMEOUT_S:
            if self.proc.poll() is not None:
                pytest.fail(f"ComfyUI exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(1.0)
        pytest.fail(f"ComfyUI did not answer within {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._log.close()


@pytest.fixture(scope="module")
def comfyui(tmp_path_factory):
    comfy = os.environ.get("COMFYUI_PATH")
    if not comfy:
        pytest.skip("COMFYUI_PATH is unset: ComfyUI integration test skipped")
    comfy = os.path.abspath(comfy)
    if not os.path.isfile(os.path.join(comfy, "main.py")):
        pytest.skip(f"COMFYUI_PATH={comfy} is not a ComfyUI checkout")
    base = str(tmp_path_factory.mktemp("comfy_base"))
    os.makedirs(os.path.join(base, "custom_nodes"))
    os.symlink(REPO, os.path.join(base, "custom_nodes", "orbitforge_pack"))
    server = Server(comfy, base)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ----------------------------------------------------------------------------------------------
# Without ComfyUI: the files themselves
# ----------------------------------------------------------------------------------------------

def test_every_workflow_has_a_thumbnail_and_a_model_note():
    assert len(WORKFLOWS) >= 4
    for path in WORKFLOWS:
        name = os.path.basename(path)
        jpg = path[:-5] + ".jpg"
        assert os.path.isfile(jpg), f"{name}: no thumbnail {os.path.basename(jpg)}"
        assert os.path.getsize(jpg) < 150 * 1024
        with open(jpg, "rb") as f:
            assert f.read(3) == b"\xff\xd8\xff", f"{jpg} is not a JPEG"
        notes = [n["widgets_values"][0] for n in _load(path)["nodes"]
                 if n["type"] in ("Note", "MarkdownNote")]
        assert notes and "model files" in notes[0].lower(), f"{name}: no note on model files"
        api = ui_to_api(_load(path))
        files = {v for n in api.values() for k, v in n["inputs"].items()
                 if k in {"ckpt_name", "unet_name", "vae_name", "clip_name"}}
        for f in files:  # every model file the graph loads is named in its note
            assert f in notes[0], f"{name}: note does not mention {f}"
    for path in glob.glob(os.path.join(REPO, "example_workflows", "*.jpg")):
        assert os.path.getsize(path) < 150 * 1024, path


def test_workflow_files_are_what_the_builder_writes():
    """example_workflows/make_workflows.py is the source of the JSON: they must not drift apart."""
    sys.path.insert(0, os.path.join(REPO, "example_workflows"))
    try:
        import make_workflows
    finally:
        sys.path.pop(0)
    for name in make_workflows.WORKFLOWS:
        path = os.path.join(REPO, "example_workflows", name + ".json")
        with open(path, encoding="utf-8") as f:
            assert f.read() == make_workflows.render_json(name), (
                f"{name}.json differs from make_workflows.py: run python "
                "example_workflows/make_workflows.py")


@pytest.mark.comfyui
@pytest.mark.slow
def test_shipped_workflows_load_without_red_nodes(comfyui):
    info = comfyui.get("/object_info")
    assert "OrbitForgeGaussianReconstruct" in info, (
        "the pack was not loaded from custom_nodes:\n" + comfyui.log_tail())
    for path in WORKFLOWS:
        wf = _load(path)
        missing = sorted({n["type"] for n in wf["nodes"]} - FRONTEND_ONLY - set(info))
        assert not missing, f"{os.path.basename(path)}: node types unknown to ComfyUI {missing}"


@pytest.mark.comfyui
@pytest.mark.slow
def test_comfyui_validation_of_every_workflow(comfyui):
    """POST each converted model workflow: ComfyUI validates it before queueing and lists
    per-node errors. Only absent model/image files (this bare installation has none) are
    expected there; anything else is a failure. (The sample workflow has no file inputs; it is
    validated and run by the next test.)"""
    for path in WORKFLOWS:
        if path == SAMPLE_WORKFLOW:
            continue
        api = ui_to_api(_load(path))
        status, body = comfyui.post("/prompt", {"prompt": api, "client_id": "validate"})
        errors = []
        for nid, ne in (body.get("node_errors") or {}).items():
            for e in ne.get("errors", []):
                name = (e.get("extra_info") or {}).get("input_name")
                # a model file missing from the list, or LoadImage's "Invalid image file"
                if e.get("type") in ("value_not_in_list", "custom_validation_failed") and (
                        name in FILE_INPUTS):
                    continue
                errors.append((nid, ne.get("class_type"), e.get("type"), name, e.get("details")))
        assert not errors, f"{os.path.basename(path)}: ComfyUI rejects {errors}"
        # 400: no output node could run (files missing); 200: ComfyUI queued the outputs that
        # need no files (e.g. a camera-path preview) and listed the others in node_errors
        assert status in (200, 400), f"{os.path.basename(path)}: HTTP {status} {body}"
        assert body.get("node_errors"), f"{os.path.basename(path)}: {body}"


@pytest.mark.comfyui
@pytest.mark.slow
def test_sample_workflow_runs_headless_and_writes_glb_and_ply(comfyui):
    import trimesh

    from orbitforge.kernels.splat.ply import read_ply

    wf = _load(SAMPLE_WORKFLOW)
    api = ui_to_api(wf)
    if os.environ.get("ORBITFORGE_WORKFLOW_FULL") != "1":
        for node in api.values():
            for k, v in FAST.get(node["class_type"], {}).items():
                assert k in node["inputs"], (node["class_type"], k)
                node["inputs"][k] = v
    status, body = comfyui.post("/prompt", {"prompt": api, "client_id": "orbitforge-test"})
    assert status == 200, body
    pid = body["prompt_id"]
    t0 = time.monotonic()
    entry = None
    while time.monotonic() - t0 < RUN_TIMEOUT_S:
        hist = comfyui.get(f"/history/{pid}")
        entry = hist.get(pid)
        if entry:  # history holds a prompt once it has finished (or failed)
            break
        if comfyui.proc.poll() is not None:
            pytest.fail("ComfyUI died during the run:\n" + comfyui.log_tail())
        time.sleep(2.0)
    else:
        pytest.fail(f"workflow did not finish within {RUN_TIMEOUT_S} s:\n" + comfyui.log_tail())
    status = entry["status"]
    assert status["status_str"] == "success", json.dumps(status["messages"])[-3000:]

    by_type = {nid: n["class_type"] for nid, n in api.items()}
    outputs = entry["outputs"]
    out_dir = os.path.join(comfyui.base, "output")

    def saved(node_type):
        (nid,) = [k for k, t in by_type.items() if t == node_type]
        (item,) = outputs[nid]["3d"]
        path = os.path.join(out_dir, item["subfolder"], item["filename"])
        assert os.path.isfile(path), path
        return path, item

    ply_path, _ = saved("OrbitForgeSaveGaussians")
    g = read_ply(ply_path)
    assert len(g) > 100
    glb_path, glb_item = saved("OrbitForgeSaveMesh")
    assert glb_path.endswith(".glb")
    mesh = trimesh.load(glb_path, force="mesh")
    assert len(mesh.faces) > 100 and mesh.is_watertight
    # vertex colours as linear COLOR_0 beside a matte material: our loader returns them as
    # vertex colours (trimesh alone files them under a texture visual)
    from orbitforge.kernels.mesh.render import load_mesh

    assert load_mesh(glb_path).visual.kind == "vertex"
    # Preview3D got the saved file's path (relative to the output folder)
    (p3d,) = [k for k, t in by_type.items() if t == "Preview3D"]
    rel = f"{glb_item['subfolder']}/{glb_item['filename']}".lstrip("/")
    assert outputs[p3d]["result"][0] == rel
    # no temp files left next to the results
    leftovers = [f for f in os.listdir(os.path.dirname(glb_path)) if ".tmp" in f]
    assert leftovers == []
    # every PreviewImage node showed images
    views = FAST["OrbitForgeLoadSampleOrbit"]["frames"] if os.environ.get(
        "ORBITFORGE_WORKFLOW_FULL") != "1" else 21
    for nid, t in by_type.items():
        if t == "PreviewImage":
            imgs = outputs[nid]["images"]
            assert imgs, f"PreviewImage {nid} shows nothing"
            for im in imgs:
                assert os.path.isfile(os.path.join(comfyui.base, "temp", im["subfolder"],
                                                   im["filename"]))
    # the splat turntable previews one render per in-between camera
    (render_prev,) = [k for k, n in api.items() if n["class_type"] == "PreviewImage"
                      and by_type.get(n["inputs"]["images"][0]) == "OrbitForgeGaussianRender"]
    assert len(outputs[render_prev]["images"]) == views


@pytest.mark.comfyui
@pytest.mark.slow
def test_host_serves_the_web_extension(comfyui):
    """WEB_DIRECTORY is picked up: /extensions lists web/preview3d.js and serves it as shipped."""
    listed = comfyui.get("/extensions")
    ours = [p for p in listed if p.endswith("/preview3d.js") and "orbitforge" in p.lower()]
    assert ours, f"web/preview3d.js not among the host's extensions: {listed}"
    with urllib.request.urlopen(comfyui.url(ours[0]), timeout=60) as r:
        served = r.read()
    with open(os.path.join(REPO, "web", "preview3d.js"), "rb") as f:
        assert served == f.read()
