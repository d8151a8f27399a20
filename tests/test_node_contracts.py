"""What every OrbitForge node promises a ComfyUI user, and everyday behaviour of the long nodes.

Contracts (all node classes, registered or merely present in ``nodes/*.py``): an id starting with
"OrbitForge", a DESCRIPTION, a tooltip on every input, OUTPUT_TOOLTIPS matching RETURN_TYPES,
FUNCTION present, CATEGORY under "OrbitForge", a display name; every node module registered.
Everyday behaviour: IMAGE previews are [B,H,W,3] float 0..1, seeds reproduce results, an
interrupt stops a long node at the next step and leaves no file behind, saving never leaves a
half-written or stray file, a model of the wrong kind names the file that belongs there.
"""

from __future__ import annotations

import glob
import importlib
import os

import pytest
import torch

from orbitforge.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, NODE_MODULES, host

from scenes import sample_scene

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODE_DIR = os.path.join(REPO, "nodes")
NOT_NODE_MODULES = {"__init__"}


def _node_modules() -> dict:
    """{module name: module} for every nodes/*.py that exports NODE_CLASS_MAPPINGS."""
    mods = {}
    for path in sorted(glob.glob(os.path.join(NODE_DIR, "*.py"))):
        name = os.path.splitext(os.path.basename(path))[0]
        if name in NOT_NODE_MODULES:
            continue
        mod = importlib.import_module(f"orbitforge.nodes.{name}")
        if hasattr(mod, "NODE_CLASS_MAPPINGS"):
            mods[name] = mod
    return mods


MODULES = _node_modules()
ALL_NODES = dict(NODE_CLASS_MAPPINGS)
DISPLAY = dict(NODE_DISPLAY_NAME_MAPPINGS)
for _m in MODULES.values():
    ALL_NODES.update(_m.NODE_CLASS_MAPPINGS)
    DISPLAY.update(getattr(_m, "NODE_DISPLAY_NAME_MAPPINGS", {}))
IDS = sorted(ALL_NODES)


def test_every_node_module_is_registered():
    missing = sorted(set(MODULES) - set(NODE_MODULES))
    assert not missing, (f"node modules {missing} are not in nodes/__init__.py NODE_MODULES: their "
                         "nodes would be red in every workflow that uses them")


@pytest.mark.parametrize("node_id", IDS)
def test_node_contract(node_id):
    cls = ALL_NODES[node_id]
    assert node_id.startswith("OrbitForge"), node_id
    assert DISPLAY.get(node_id, "").strip(), f"{node_id}: no display name"
    assert isinstance(getattr(cls, "DESCRIPTION", None), str) and len(cls.DESCRIPTION) > 20, (
        f"{node_id}: DESCRIPTION missing or too short")
    assert str(getattr(cls, "CATEGORY", "")).startswith("OrbitForge"), (
        f"{node_id}: CATEGORY {getattr(cls, 'CATEGORY', None)!r} is not under OrbitForge")
    assert callable(getattr(cls, cls.FUNCTION, None)), f"{node_id}: FUNCTION {cls.FUNCTION!r}"
    rt = tuple(cls.RETURN_TYPES)
    tips = tuple(getattr(cls, "OUTPUT_TOOLTIPS", ()) or ())
    assert len(tips) == len(rt), f"{node_id}: {len(tips)} OUTPUT_TOOLTIPS for {len(rt)} outputs"
    assert all(isinstance(t, str) and t.strip() for t in tips), f"{node_id}: empty output tooltip"
    names = getattr(cls, "RETURN_NAMES", None)
    if names is not None:
        assert len(names) == len(rt), f"{node_id}: RETURN_NAMES and RETURN_TYPES differ in length"
    if not rt:
        assert getattr(cls, "OUTPUT_NODE", False), f"{node_id}: no outputs and not an OUTPUT_NODE"
    inputs = cls.INPUT_TYPES()
    untipped = []
    for section in ("required", "optional"):
        for name, spec in (inputs.get(section) or {}).items():
            opts = spec[1] if isinstance(spec, (tuple, list)) and len(spec) > 1 else {}
            if not (isinstance(opts, dict) and str(opts.get("tooltip", "")).strip()):
                untipped.append(f"{section}.{name}")
    assert not untipped, f"{node_id}: inputs without a tooltip: {untipped}"
    # the function takes every declared input by name
    import inspect

    params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        declared = [n for s in ("required", "optional") for n in (inputs.get(s) or {})]
        assert [n for n in declared if n not in params] == [], f"{node_id}: inputs not in signature"


# ----------------------------------------------------------------------------------------------
# IMAGE previews
# ----------------------------------------------------------------------------------------------

def assert_image(img, n=None, hw=None):
    assert isinstance(img, torch.Tensor) and img.dtype == torch.float32
    assert img.ndim == 4 and img.shape[-1] == 3, tuple(img.shape)
    if n is not None:
        assert img.shape[0] == n
    if hw is not None:
        assert tuple(img.shape[1:3]) == tuple(hw)
    assert torch.isfinite(img).all() and img.min() >= 0 and img.max() <= 1
    assert img.device == host.intermediate_device()
    assert img.std() > 0.01, "a preview should show something, not a flat colour"


def test_deterministic_nodes_keep_their_seed_between_runs():
    # the frontend's seed control defaults to "randomize" (a new seed after every queue, so Run
    # again would refit); the deterministic nodes start it at "fixed", samplers keep randomize
    def seeds(node_id):
        spec = NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()
        return {name: opts[1] for part in spec.values() for name, opts in part.items()
                if opts[0] == "INT" and name in ("seed", "noise_seed")}

    for node_id in ("OrbitForgeOrbitCameras", "OrbitForgeGaussianReconstruct",
                    "OrbitForgeGaussian4DReconstruct"):
        assert seeds(node_id)["seed"].get("control_after_generate") == "fixed", node_id
    for node_id in ("OrbitForgeSV3DSampler", "OrbitForgeDiffusion2Sampler"):
        assert "control_after_generate" not in seeds(node_id)["seed"], node_id


def test_orbit_and_interpolation_path_plots_are_images():
    from orbitforge.nodes.cameras import InterpolateCameras, OrbitCameras

    cams, plot = OrbitCameras().make("sv3d_static", 21, 10.0, 2.0, 33.8, 576, 576, 0, "0, 20",
                                     "0, 0, 0; 20, 30, 340")
    assert_image(plot, n=1)
    between, plot2 = InterpolateCameras().interpolate(cams, 2, True)
    assert len(between) == 42
    assert_image(plot2, n=1)


def _sample_node():
    mod = MODULES.get("sample")
    if mod is None:
        pytest.skip("nodes/sample.py not present")
    return mod


def test_sample_orbit_loader_outputs():
    mod = _sample_node()
    views, masks, cams = mod.LoadSampleOrbit().load(21)
    assert_image(views, n=21, hw=(256, 256))
    assert masks.shape == (21, 256, 256) and masks.dtype == torch.float32
    assert 0.02 < masks.mean() < 0.6 and masks.min() == 0 and masks.max() == 1
    # white background where the mask is empty; the last frame is the input view at azimuth 0
    assert torch.allclose(views[masks == 0], torch.ones(3), atol=1e-6)
    assert len(cams) == 21 and float(cams.azimuth[-1]) == 0.0
    v7, m7, c7 = mod.LoadSampleOrbit().load(7)
    assert v7.shape[0] == m7.shape[0] == len(c7) == 7
    assert torch.equal(v7[-1], views[-1]) and float(c7.azimuth[-1]) == 0.0
    with pytest.raises(ValueError, match="between 1 and 21"):
        mod.LoadSampleOrbit().load(22)


def test_load_cameras_json(tmp_path):
    mod = _sample_node()
    (cams,) = mod.LoadCameras().load("sample_orbit/cameras.json")
    _v, _m, ref = mod.LoadSampleOrbit().load(21)
    assert torch.equal(cams.viewmats, ref.viewmats) and cams.width == 256
    p = tmp_path / "cams.json"
    ref[[0, 5]].save_json(str(p))
    assert len(mod.LoadCameras().load(str(p))[0]) == 2
    with pytest.raises(ValueError, match="not found"):
        mod.LoadCameras().load(str(tmp_path / "nope.json"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"width": 4}')
    with pytest.raises(ValueError, match="not a cameras.json"):
        mod.LoadCameras().load(str(bad))


def _tiny_scene(n_views=3, size=32):
    return sample_scene(n_views, size)


@pytest.fixture(scope="module")
def tiny_fit():
    from orbitforge.nodes.gaussians import GaussianReconstruct

    img, msk, cams = _tiny_scene()
    g, renders = GaussianReconstruct().reconstruct(img, cams, 3, 0, 0, 3, mask=msk)
    return img, msk, cams, g, renders


def test_gaussian_render_outputs_are_images(tiny_fit):
    from orbitforge.nodes.gaussians import GaussianRender

    img, _msk, cams, g, renders = tiny_fit
    assert_image(renders, n=3, hw=(32, 32))
    rgb, alpha, depth = GaussianRender().render(g, cams, "median", "1, 1, 1")
    assert_image(rgb, n=3, hw=(32, 32))
    assert_image(depth, n=3, hw=(32, 32))
    assert alpha.shape == (3, 32, 32) and 0 <= alpha.min() and alpha.max() <= 1


# ----------------------------------------------------------------------------------------------
# Everyday behaviour
# ----------------------------------------------------------------------------------------------

def test_same_seed_reproduces_the_ply_bytes(tiny_fit, tmp_path, monkeypatch):
    """Two runs with the same seed give byte-identical PLY files; another seed does not."""
    from orbitforge.nodes.gaussians import GaussianReconstruct, SaveGaussians

    monkeypatch.setattr(host, "output_directory", lambda: str(tmp_path))
    img, msk, cams, g1, _ = tiny_fit
    (g2, _r) = GaussianReconstruct().reconstruct(img, cams, 3, 0, 0, 3, mask=msk)
    # seed 5 (not 4): with 3 views, seeds 3 and 4 happen to draw the same view order
    (g3, _r) = GaussianReconstruct().reconstruct(img, cams, 3, 0, 0, 5, mask=msk)
    paths = [SaveGaussians().save(g, "run")["result"][0] for g in (g1, g2, g3)]
    data = [(tmp_path / p).read_bytes() for p in paths]
    assert len(set(paths)) == 3  # a new counter per save, nothing overwritten
    assert data[0] == data[1]
    assert data[0] != data[2]


class _Interrupted(Exception):
    pass


def _interrupt_after(monkeypatch, n_ok: int) -> list:
    """Make host.check_interrupt raise on call n_ok + 1 (like pressing Cancel); returns the call
    log (one entry per check)."""
    calls: list = []

    def check():
        calls.append(1)
        if len(calls) > n_ok:
            raise _Interrupted("cancelled")

    monkeypatch.setattr(host, "check_interrupt", check)
    return calls


def test_interrupt_stops_gaussian_reconstruct_at_the_next_step(monkeypatch, tmp_path):
    """Cancel is checked every optimisation step: the fit raises at once (no further steps run)
    and no GAUSSIANS (hence no file) comes out."""
    from orbitforge.nodes.gaussians import GaussianReconstruct

    img, msk, cams = _tiny_scene()
    steps: list = []
    real = host.Progress.update

    def counting_update(self, value, preview=None):
        steps.append(value)
        return real(self, value, preview)

    monkeypatch.setattr(host.Progress, "update", counting_update)
    calls = _interrupt_after(monkeypatch, 3)
    monkeypatch.setattr(host, "output_directory", lambda: str(tmp_path))
    with pytest.raises(_Interrupted):
        GaussianReconstruct().reconstruct(img, cams, 200, 0, 0, 0, mask=msk)
    assert len(calls) == 4
    assert steps == [1, 2, 3, 4]  # the 4th step's check raised; steps 5..200 never ran
    assert list(tmp_path.iterdir()) == []


def test_interrupt_stops_sdf_mesh(monkeypatch, tiny_fit):
    from orbitforge.nodes.mesh import SDFMesh

    img, msk, cams, g, _ = tiny_fit
    calls = _interrupt_after(monkeypatch, 1)
    with pytest.raises(_Interrupted):
        SDFMesh().build(cams, 32, "fast", 1, True, 0, 0, "vertex", 64, images=img, masks=msk)
    assert len(calls) == 2


def test_save_into_unwritable_folder_fails_before_writing(tiny_fit, tmp_path, monkeypatch):
    """A bad output folder is a ValueError naming it, and no file (or temp file) is left."""
    from orbitforge.kernels.mesh.types import ColoredMesh
    from orbitforge.nodes.gaussians import SaveGaussians
    from orbitforge.nodes.mesh import SaveMesh

    *_, g, _r = tiny_fit
    blocker = tmp_path / "out"
    blocker.write_text("a file where the output folder should be")
    monkeypatch.setattr(host, "output_directory", lambda: str(blocker))
    with pytest.raises(ValueError, match="output folder"):
        SaveGaussians().save(g, "orbitforge/splat")
    import trimesh

    mesh = ColoredMesh.from_trimesh(trimesh.creation.box())
    with pytest.raises(ValueError, match="output folder"):
        SaveMesh().save(mesh, "orbitforge/mesh", "glb")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # a read-only folder (skipped when running as root, which can write anyway)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            return
        monkeypatch.setattr(host, "output_directory", lambda: str(ro))
        with pytest.raises(ValueError, match="not writable"):
            SaveGaussians().save(g, "splat")
        with pytest.raises(ValueError, match="not writable"):
            SaveMesh().save(mesh, "mesh", "glb")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_failed_write_leaves_no_partial_file(tiny_fit, tmp_path, monkeypatch):
    """If writing fails half-way (disk full, killed), neither the target nor a temp file stays."""
    from orbitforge.kernels.splat import ply
    from orbitforge.nodes.gaussians import SaveGaussians

    *_, g, _r = tiny_fit
    monkeypatch.setattr(host, "output_directory", lambda: str(tmp_path))
    real_replace = os.replace

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        SaveGaussians().save(g, "splat")
    monkeypatch.setattr(os, "replace", real_replace)
    leftovers = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == []
    # and a normal save afterwards is complete and loads back
    rel = SaveGaussians().save(g, "splat")["result"][0]
    back = ply.read_ply(str(tmp_path / rel))
    assert len(back) == g.positions.shape[1]


# ----------------------------------------------------------------------------------------------
# A model of the wrong kind names the right file (needs comfy.model_base: ComfyUI)
# ----------------------------------------------------------------------------------------------

class _Patcher:
    """Stands in for a ModelPatcher: ``.model`` is a (never initialised) model_base instance."""

    def __init__(self, model_cls):
        self.model = object.__new__(model_cls)


@pytest.mark.comfyui
def test_wrong_model_for_sv3d_names_sv3d_file():
    from comfy_host import require_comfyui

    require_comfyui()
    from comfy import model_base

    from orbitforge.nodes.host.guiders import sv3d_variant

    for wrong in (model_base.SVD_img2vid, model_base.BaseModel):
        with pytest.raises(ValueError, match=r"sv3d_p\.safetensors"):
            sv3d_variant(_Patcher(wrong))


@pytest.mark.comfyui
def test_wrong_model_for_diffusion2_names_the_files():
    from comfy_host import require_comfyui

    require_comfyui()
    from comfy import model_base

    try:
        from orbitforge.nodes.host.diffusion2 import check_models
    except ImportError:
        pytest.skip("nodes/host/diffusion2.py not present")
    svd, sv3d = _Patcher(model_base.SVD_img2vid), _Patcher(model_base.SV3D_p)
    with pytest.raises(ValueError, match=r"svd_xt\.safetensors"):
        check_models(sv3d, sv3d)
    with pytest.raises(ValueError, match=r"sv3d_p\.safetensors"):
        check_models(svd, svd)


@pytest.mark.comfyui
def test_wrong_model_for_refiner_and_diffusion2_names_the_files():
    from comfy_host import require_comfyui

    require_comfyui()
    from comfy import model_base

    from orbitforge.nodes.host.models import model_kind

    with pytest.raises(ValueError) as e:
        model_kind(_Patcher(model_base.BaseModel))  # e.g. an SD1.5 checkpoint on the refiner
    assert "second_stage" in str(e.value) and "sv3d_p.safetensors" in str(e.value)
