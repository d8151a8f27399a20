"""Cancel stops every long loop at its next pass and leaves no file (not timed: ``python -m
orbitforge.bench interrupt`` measures the latency). Uses the host layer's fallback interrupt flag
(``nodes.host.request_interrupt``), what ComfyUI's flag is replaced by outside ComfyUI, or inside
ComfyUI (``COMFYUI_PATH``) ComfyUI's own flag.

Each test raises the flag while a chosen kernel loop runs its first pass (right after that loop's
first check) and asserts that the run stops with the interrupt raised *by that same loop's next
check* -- i.e. the loop checks per pass, not only when it is done.
"""

from __future__ import annotations

import os
import sys
import threading

import pytest
import torch

from orbitforge.nodes import host

from scenes import sample_scene


def _loop_caller() -> str:
    """Name of the kernel function that made the current check (progress wrappers skipped)."""
    f = sys._getframe(2)
    while f is not None:
        fn = f.f_code.co_filename.replace(os.sep, "/")
        name = f.f_code.co_name
        if "/kernels/" in fn and not fn.endswith("kernels/interrupt.py") \
                and name != "<lambda>" and "progress" not in name:
            return name
        f = f.f_back
    return "?"


class _CancelDuring:
    """Raises the interrupt flag right after check number ``skip + 1`` made by ``target``."""

    def __init__(self, target: str, skip: int, raise_flag):
        self.target, self.skip, self.raise_flag, self.callers = target, skip, raise_flag, []

    def after_check(self, name: str) -> None:
        self.callers.append(name)
        if name == self.target:
            if self.skip == 0:
                self.raise_flag()  # Cancel pressed during this pass: the next check must stop
            self.skip -= 1


class _Flag(threading.Event):
    """The host layer's fallback flag, reporting every check to a :class:`_CancelDuring`."""

    def __init__(self):
        super().__init__()
        self.watch = None

    def is_set(self):
        name = _loop_caller()
        was = super().is_set()
        if self.watch is not None:
            if was:
                self.watch.callers.append(name)  # this check raises
            else:
                self.watch.after_check(name)
        return was


@pytest.fixture
def cancel(monkeypatch, tmp_path):
    """``cancel(target, skip)`` watches the checks (ComfyUI's flag inside ComfyUI, the fallback
    flag outside); the output folder is ``tmp_path``."""
    monkeypatch.setenv("ORBITFORGE_OUTPUT", str(tmp_path))
    host.request_interrupt(False)

    def install(target: str, skip: int = 0) -> _CancelDuring:
        if host.in_comfyui():
            from comfy import model_management

            watch = _CancelDuring(target, skip,
                                  lambda: model_management.interrupt_current_processing(True))
            real = model_management.throw_exception_if_processing_interrupted

            def traced():
                name = _loop_caller()
                try:
                    real()
                except BaseException:
                    watch.callers.append(name)  # this check raised
                    raise
                watch.after_check(name)

            monkeypatch.setattr(model_management,
                                "throw_exception_if_processing_interrupted", traced)
            watch.is_set = model_management.processing_interrupted
        else:
            flag = _Flag()
            watch = _CancelDuring(target, skip, flag.set)
            flag.watch = watch
            watch.is_set = flag.is_set
            monkeypatch.setattr(host, "_FALLBACK_FLAG", flag)
        return watch
    yield install
    host.request_interrupt(False)


def _files(folder) -> list:
    return [os.path.join(r, f) for r, _d, fs in os.walk(folder) for f in fs]


def _scene(n_views=6, size=32):
    return sample_scene(n_views, size)


def _stopped_by(flag: _CancelDuring, excinfo, target: str, by: str | None = None) -> None:
    """Stopped by ``target``'s next check (``by``: the stage that follows a one-check stage)."""
    assert flag.callers[-1] == (by or target), flag.callers[-8:]
    if by is None:
        assert flag.callers.count(target) >= 2  # at its next pass, not after the loop
    assert not flag.is_set()  # raising clears the flag (ComfyUI's semantics)
    assert isinstance(excinfo.value, host.interrupt_exceptions())


def test_fallback_flag_semantics():
    from orbitforge.kernels.interrupt import check_interrupt

    if host.in_comfyui():
        pytest.skip("outside ComfyUI only")
    assert host.interrupt_mechanism() == "fallback"
    host.check_interrupt()  # no flag: nothing happens
    host.request_interrupt()
    with pytest.raises(host.ProcessingInterrupted):
        check_interrupt()  # the kernels' hook is the host's check
    host.check_interrupt()  # cleared by raising
    host.request_interrupt(True)
    host.request_interrupt(False)
    host.check_interrupt()  # cleared by request_interrupt(False)
    assert issubclass(host.ProcessingInterrupted, BaseException)
    assert not issubclass(host.ProcessingInterrupted, Exception)  # not swallowed by clean-ups
    assert host.ProcessingInterrupted in host.interrupt_exceptions()


@pytest.mark.parametrize("target, skip", [("_fit", 3), ("render_gaussians", 0),
                                          ("carve_visual_hull", 0)])
def test_cancel_stops_the_3dgs_fit(cancel, tmp_path, target, skip):
    """The optimisation loop, its hull initialisation and the final renders of the views."""
    from orbitforge.nodes.gaussians import GaussianReconstruct

    img, msk, cams = _scene()
    flag = cancel(target, skip)
    with pytest.raises(host.interrupt_exceptions()) as ei:
        GaussianReconstruct().reconstruct(img, cams, 40, 0, 0, 0, mask=msk)
    _stopped_by(flag, ei, target)
    if target == "_fit":
        assert flag.callers.count("_fit") == skip + 2  # the fit's very next check stopped it
    assert _files(tmp_path) == []


@pytest.mark.parametrize("target, skip", [
    ("mask_signed_distance", 0), ("hull_depth_maps", 0), ("plane_sweep_depth", 0),
    ("render_mesh", 0), ("finish_mesh", 0), ("redistance", 0),
    ("_refine_sdf", 2)])  # its 2 set-up checks, then the steps
def test_cancel_stops_sdf_mesh_fast(cancel, tmp_path, target, skip):
    """Every stage of SDF Mesh (fast, with its polish): hull, stereo, first surface's depth,
    finishing, the refinement's set-up and its steps."""
    from orbitforge.nodes.mesh import SDFMesh

    img, msk, cams = _scene()
    flag = cancel(target, skip)
    with pytest.raises(host.interrupt_exceptions()) as ei:
        SDFMesh().build(cams, 32, "fast", 1, True, 0, 0, "vertex", 64, images=img, masks=msk,
                        polish_steps=5)
    # redistance (two distance transforms) checks between them; the next check is the
    # refinement's own, right after it
    _stopped_by(flag, ei, target, "_refine_sdf" if target == "redistance" else None)
    assert _files(tmp_path) == []


def test_cancel_stops_sdf_mesh_neural(cancel, tmp_path):
    from orbitforge.nodes.mesh import SDFMesh

    img, msk, cams = _scene()
    flag = cancel("_refine_sdf", skip=4)  # 2 set-up checks and 1 step
    with pytest.raises(host.interrupt_exceptions()) as ei:
        SDFMesh().build(cams, 32, "neural", 1, True, 0, 0, "vertex", 64, images=img, masks=msk,
                        neural_iterations=20)
    _stopped_by(flag, ei, "_refine_sdf")
    assert _files(tmp_path) == []


def test_cancel_stops_4d_reconstruction_before_any_file(cancel, tmp_path):
    """Cancel during the second time step's warm fit: no PLY of the sequence is written."""
    from orbitforge.nodes.gaussians4d import Gaussian4DReconstruct

    img, msk, cams = _scene(4)
    F = 3
    views, masks = img.repeat_interleave(F, 0), msk.repeat_interleave(F, 0)
    flag = cancel("_fit", skip=12 + 2)  # 12 steps of time 0, then 2 of time 1
    with pytest.raises(host.interrupt_exceptions()) as ei:
        Gaussian4DReconstruct().reconstruct(views, cams, F, 12, 6, 0.02, "none", 0, 0, 0,
                                            "orbitforge/4d/seq", mask=masks)
    _stopped_by(flag, ei, "_fit")
    assert _files(tmp_path) == []


class _Denoiser(torch.nn.Module):
    def forward(self, x, sigma, *_idx):
        return x / (1 + float(sigma) ** 2) ** 0.5


def test_cancel_stops_the_sv3d_sampling_loop(cancel):
    """The Euler-EDM loop every SV3D/SVD sampler runs (progress = interrupt check per step)."""
    from orbitforge.kernels.diffusion import edm

    flag = cancel("sample_euler", skip=1)
    calls = []
    sig = edm.edm_sigmas(10, 0.002, 700.0)
    x = edm.initial_noise((3, 4, 8, 8), float(sig[0]), torch.Generator().manual_seed(0))
    prog = host.Progress(10)

    def den(xx, s):
        calls.append(1)
        return _Denoiser()(xx, s)

    with pytest.raises(host.interrupt_exceptions()) as ei:
        edm.sample_euler(den, x, sig, callback=lambda i, *_: prog.update(i + 1))
    _stopped_by(flag, ei, "sample_euler")
    assert len(calls) == 3  # steps 1, 2 and 3 ran; 4..10 never did


@pytest.mark.parametrize("target, skip, by, n_calls", [
    ("sample_matrix", 0, "_eval_chunked", 4),  # after pass 1: pass 2's first chunk stops
    ("_eval_chunked", 1, None, 2)])  # during pass 1: its next chunk stops
def test_cancel_stops_the_diffusion2_matrix_loop(cancel, target, skip, by, n_calls):
    """Per pass (the sampler's progress) and per chunk of sequences (inside a pass)."""
    from orbitforge.kernels.diffusion import edm
    from orbitforge.kernels.dynamic.diffusion2 import lambda_schedule, sample_matrix, view_weights

    flag = cancel(target, skip=skip)
    steps = 6
    sig = edm.edm_sigmas(steps, 0.002, 700.0)
    x = edm.initial_noise((3, 4, 4, 8, 8), float(sig[0]), torch.Generator().manual_seed(0))
    prog = host.Progress(steps + 1)
    calls = []

    def fn(xx, s, idx):
        calls.append(1)
        return _Denoiser()(xx, s)

    with pytest.raises(host.interrupt_exceptions()) as ei:
        sample_matrix(x, sig, fn, fn, view_weights(3), lambda_schedule(steps),
                      vrs_steps=1, column_chunk=2, row_chunk=2,
                      generator=torch.Generator().manual_seed(1),
                      callback=lambda k, *_: prog.update(k))
    _stopped_by(flag, ei, target, by)
    assert len(calls) == n_calls  # a pass = 2 column chunks (4 frames) + 2 row chunks (3 views)
