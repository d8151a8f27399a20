"""No torn files: a process SIGKILLed while it saves a PLY, a GLB or a PLY sequence leaves the
previous complete files or the new complete ones, never a partial file, and its leftover temp
file shows in none of ComfyUI's file lists.

The saving process is a fork of the test process (no second interpreter start). It is killed at
three kinds of moments: half-way through writing the temp file, after the temp file is complete
but before the rename, and at a seeded random delay while it saves in a loop. What is checked
after the kill never depends on when the kill landed.
"""

from __future__ import annotations

import builtins
import mimetypes
import os
import signal
import sys
import time

import numpy as np
import pytest
import torch

from orbitforge.kernels.atomic import TEMP_SUFFIX, atomic_write, is_temp_name
from orbitforge.kernels.mesh.types import ColoredMesh
from orbitforge.kernels.splat.frame import to_splat_frame
from orbitforge.kernels.splat.gaussians import Gaussians
from orbitforge.kernels.splat.ply import ply_bytes, read_ply, write_ply

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

# What ComfyUI v0.33 lists (folder_paths.py, comfy_extras/nodes_load_3d.py): model folders filter
# by extension (supported_pt_extensions + ours), Load 3D by suffix, Load Image & co by mimetype.
MODEL_EXTS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
LOAD3D_EXTS = {".gltf", ".glb", ".obj", ".fbx", ".stl", ".spz", ".splat", ".ply", ".ksplat"}


def comfy_listed(folder: str) -> list:
    """Files under ``folder`` that any ComfyUI file list would offer (recursive, hidden too:
    ComfyUI's ``recursive_search`` / ``rglob`` do not skip dot-files)."""
    files = [os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder)
             for f in fs]
    comfy = os.environ.get("COMFYUI_PATH")
    if comfy:  # the real functions when ComfyUI is there
        sys.path.insert(0, comfy)
        try:
            import folder_paths

            exts = MODEL_EXTS | set(folder_paths.supported_pt_extensions)
            listed = set(folder_paths.filter_files_extensions(files, exts))
            listed |= set(folder_paths.filter_files_content_types(files, ["image", "video", "audio",
                                                                          "model"]))
        finally:
            sys.path.remove(comfy)
    else:
        listed = {f for f in files if os.path.splitext(f)[-1].lower() in MODEL_EXTS}
        for f in files:
            mime, _ = mimetypes.guess_type(f, strict=False)
            if mime and mime.split("/")[0] in ("image", "video", "audio", "model"):
                listed.add(f)
    listed |= {f for f in files if os.path.splitext(f)[-1].lower() in LOAD3D_EXTS}
    return sorted(listed)


def _scene(n: int, seed: int) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    return Gaussians(torch.randn(n, 3, generator=g), torch.randn(n, 4, generator=g),
                     torch.randn(n, 3, generator=g), torch.randn(n, generator=g),
                     torch.randn(n, 1, 3, generator=g))


def _mesh(seed: int) -> ColoredMesh:
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=4)
    rng = np.random.default_rng(seed)
    v = torch.tensor(s.vertices, dtype=torch.float32) * (1 + 0.1 * seed)
    return ColoredMesh(v, torch.tensor(s.faces), torch.tensor(rng.random((len(v), 3)),
                                                             dtype=torch.float32))


# ----------------------------------------------------------------------------------------------
# The saving child
# ----------------------------------------------------------------------------------------------


def _pause(w):
    os.write(w, b"P")
    time.sleep(120)  # the parent kills us here


class _HalfFile:
    """A file whose first large write stops half-way and pauses (the kill lands mid-write)."""

    def __init__(self, f, w):
        self._f, self._w = f, w

    def write(self, data):
        half = len(data) // 2
        self._f.write(data[:half])
        self._f.flush()
        _pause(self._w)

    def __getattr__(self, k):
        return getattr(self._f, k)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        return self._f.__exit__(*a)


def _install_hook(hook: str, nth: int, w):
    """In the child: pause at the ``nth`` temp-file write (``mid-write``) or the ``nth`` rename
    (``before-replace``)."""
    count = [0]
    if hook == "mid-write":
        real_fdopen, real_open = os.fdopen, builtins.open

        def wrap(f, name):
            if is_temp_name(str(name)):
                count[0] += 1
                if count[0] == nth:
                    return _HalfFile(f, w)
            return f

        os.fdopen = lambda fd, *a, **k: wrap(real_fdopen(fd, *a, **k), os.readlink(
            f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else "")
        builtins.open = lambda file, *a, **k: wrap(real_open(file, *a, **k), file)
    elif hook == "before-replace":
        real_replace = os.replace

        def replace(src, dst):
            count[0] += 1
            if count[0] == nth:
                _pause(w)
            return real_replace(src, dst)

        os.replace = replace


def _run_child(save, hook: str, nth: int = 1, delay: float | None = None) -> None:
    """Fork; the child runs ``save()`` (in a loop when ``hook`` is 'loop'); SIGKILL it when it
    pauses at the hook, or ``delay`` seconds after it started saving."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.close(r)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            _install_hook(hook, nth, w)
            os.write(w, b"S")
            while True:
                save()
                if hook != "loop":
                    os.write(w, b"D")  # finished without reaching the hook
                    time.sleep(120)
        finally:
            os._exit(3)
    os.close(w)
    try:
        first = os.read(r, 1)
        assert first == b"S", first
        if delay is not None:
            time.sleep(delay)
        else:
            got = os.read(r, 1)
            assert got == b"P", f"the child finished ({got!r}) without reaching hook {hook}"
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)


def _check_folder(folder: str, allowed: dict):
    """Every listed file is complete and one of the allowed contents; temps are not listed."""
    listed = comfy_listed(folder)
    for rel in listed:
        assert not is_temp_name(rel), f"temp file {rel} is listed by ComfyUI"
        data = open(os.path.join(folder, rel), "rb").read()
        assert rel in allowed, f"unexpected file {rel}"
        assert data in allowed[rel], f"{rel} is partial or foreign ({len(data)} bytes)"
    temps = [f for _, _, fs in os.walk(folder) for f in fs if is_temp_name(f)]
    return listed, temps


HOOKS = [("mid-write", None), ("before-replace", None), ("loop", 0.0), ("loop", 0.02),
         ("loop", 0.05)]


@pytest.mark.parametrize("hook,delay", HOOKS)
def test_killed_ply_overwrite_keeps_old_or_new(tmp_path, hook, delay):
    """Kernel level: ``write_ply`` over an existing file, killed: the old or the new bytes."""
    a, b = _scene(40000, 1), _scene(40000, 2)
    path = str(tmp_path / "scene.ply")
    write_ply(path, a)
    old, new = ply_bytes(a), ply_bytes(b)
    _run_child(lambda: write_ply(path, b), hook, delay=delay)
    _, temps = _check_folder(str(tmp_path), {"scene.ply": (old, new)})
    assert open(path, "rb").read() in (old, new)
    back = read_ply(path)  # and it loads
    assert len(back) == 40000
    if hook != "loop":
        assert temps and all(t.endswith(TEMP_SUFFIX) for t in temps), "kill missed the write"
        assert open(path, "rb").read() == old


@pytest.mark.parametrize("hook,delay", HOOKS)
def test_killed_save_gaussians_node(tmp_path, monkeypatch, hook, delay):
    """Save Gaussians PLY (node): earlier saves intact, the new file absent or complete."""
    from orbitforge.nodes.gaussians import SaveGaussians

    monkeypatch.setenv("ORBITFORGE_OUTPUT", str(tmp_path))
    g1, g2 = _scene(30000, 3), _scene(30000, 4)
    assert SaveGaussians().save(g1, "of/splat")["result"][0] == "of/splat_00001.ply"
    _run_child(lambda: SaveGaussians().save(g2, "of/splat"), hook, delay=delay)
    # the node writes its files in the 3DGS frame
    allowed = {"of/splat_00001.ply": (ply_bytes(to_splat_frame(g1)),)}
    allowed.update({f"of/splat_{i:05d}.ply": (ply_bytes(to_splat_frame(g2)),)
                    for i in range(2, 200)})
    listed, _ = _check_folder(str(tmp_path), allowed)
    assert "of/splat_00001.ply" in listed
    if hook != "loop":
        assert listed == ["of/splat_00001.ply"]
    # the next save numbers on from the complete files, unaffected by the leftover temp
    nxt = SaveGaussians().save(g2, "of/splat")["result"][0]
    assert nxt == f"of/splat_{len(listed) + 1:05d}.ply"


@pytest.mark.parametrize("hook,delay", HOOKS)
def test_killed_save_mesh_glb(tmp_path, monkeypatch, hook, delay):
    """Save Mesh (GLB): the earlier GLB intact, the new one absent or complete, and it loads."""
    import trimesh

    from orbitforge.kernels.mesh.export import export_mesh_bytes
    from orbitforge.nodes.mesh import SaveMesh

    monkeypatch.setenv("ORBITFORGE_OUTPUT", str(tmp_path))
    m1, m2 = _mesh(1), _mesh(2)
    assert SaveMesh().save(m1, "meshes/m", "glb")["result"][0] == "meshes/m_00001_.glb"
    b1 = open(tmp_path / "meshes" / "m_00001_.glb", "rb").read()
    b2 = export_mesh_bytes(m2, "glb", "x")["x.glb"]
    _run_child(lambda: SaveMesh().save(m2, "meshes/m", "glb"), hook, delay=delay)
    allowed = {"meshes/m_00001_.glb": (b1,)}
    allowed.update({f"meshes/m_{i:05d}_.glb": (b2,) for i in range(2, 200)})
    listed, _ = _check_folder(str(tmp_path), allowed)
    for rel in listed:
        assert len(trimesh.load(str(tmp_path / rel), force="mesh").faces) == m1.faces.shape[1]
    if hook != "loop":
        assert listed == ["meshes/m_00001_.glb"]


@pytest.mark.parametrize("hook,nth,delay", [("mid-write", 2, None), ("before-replace", 1, None),
                                            ("before-replace", 2, None), ("loop", 1, 0.0),
                                            ("loop", 1, 0.03)])
def test_killed_ply_sequence(tmp_path, monkeypatch, hook, nth, delay):
    """A 4D PLY sequence (``write_ply_sequence`` at the 4D node's numbered paths): killed while
    writing, no sequence file appears; killed during the final renames, every file that appeared
    is complete."""
    from orbitforge.kernels.dynamic.fit4d import (
        GaussianSequence,
        sequence_paths,
        write_ply_sequence,
    )
    from orbitforge.nodes.gaussians4d import sequence_output_paths

    monkeypatch.setenv("ORBITFORGE_OUTPUT", str(tmp_path))
    seq = GaussianSequence([_scene(20000, s) for s in (5, 6, 7)], torch.arange(3.0))
    folder, sub, base = sequence_output_paths("of/4d/seq", 3)
    paths = sequence_paths(folder, base, 3)

    def save():
        fresh = sequence_paths(*sequence_output_paths("of/4d/seq", 3)[::2], 3)
        write_ply_sequence(fresh, seq)

    _run_child(save if hook == "loop" else (lambda: write_ply_sequence(paths, seq)), hook, nth,
               delay)
    want = {f: ply_bytes(g) for f, g in enumerate(seq.gaussians)}
    allowed = {f"of/4d/seq_{i:05d}_t{f:03d}.ply": (want[f],) for i in range(1, 200)
               for f in range(3)}
    listed, temps = _check_folder(str(tmp_path), allowed)
    if hook == "mid-write":
        assert listed == [] and temps, "a sequence killed while writing must leave no file"
    if hook == "before-replace":
        assert len(listed) == nth - 1  # the renames that ran before the kill


def test_leftover_temps_are_swept_after_a_day(tmp_path):
    """A killed save's temp is removed by the next write into that folder once it is a day old
    (a fresh one may belong to a save in progress and stays)."""
    old, fresh = tmp_path / ".tmp_abc.part", tmp_path / ".tmp_def.part"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    two_days = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days, two_days))
    atomic_write(str(tmp_path / "a.txt"), b"hello")
    assert sorted(os.listdir(tmp_path)) == [".tmp_def.part", "a.txt"]
    assert open(tmp_path / "a.txt", "rb").read() == b"hello"
