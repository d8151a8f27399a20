"""4D reconstruction: frame order, warm start, temporal term, confidences, node, all-or-nothing
PLYs.

A two-coloured sphere moving along +x, seen by 8 tiny cameras; fits are a few iterations only.
"""

import os

import pytest
import torch

from orbitforge.kernels.dynamic import fit4d
from orbitforge.kernels.dynamic.fit4d import (
    Fit4DConfig,
    GaussianSequence,
    check_sequence,
    fit_sequence,
    frame_index,
    merge_times,
    render_turntable,
    sequence_paths,
    split_by_time,
    ssim_confidence,
    temporal_regularizer,
    write_ply_sequence,
)
from orbitforge.kernels.metrics import psnr
from orbitforge.kernels.splat.fit import FitConfig, fit_gaussians, render_gaussians, scene_bbox
from orbitforge.kernels.splat.frame import to_splat_frame
from orbitforge.kernels.splat.ply import read_ply

from test_visual_hull import ring_cams, sphere_views

COLORS = ((1.0, 0.2, 0.2), (0.2, 0.2, 1.0))
V, F, SIZE = 8, 2, 24
STEP = 0.04  # sphere centre moves this far along +x per time step


def base_cfg(iterations):
    return FitConfig(iterations=iterations, init_resolution=16, seed=0)


@pytest.fixture(scope="module")
def scene():
    cams = ring_cams(4, SIZE, elevations=(0.0, 35.0))
    per_time = [sphere_views(cams, center=(STEP * f, 0.0, 0.0), radius=0.3, colors=COLORS)[2]
                for f in range(F)]
    return cams, merge_times(torch.stack(per_time)), per_time  # images view-major [V*F,H,W,3]


@pytest.fixture(scope="module")
def fitted(scene):
    cams, images, _ = scene
    cfg = Fit4DConfig(base=base_cfg(60), warm_iterations=30)  # default temporal term / lr
    return fit_sequence(images, cams, F, config=cfg)


def test_frame_order_is_view_major():
    views, times = 3, 4
    x = torch.arange(views * times)
    assert frame_index(2, 1, views, times) == 2 * times + 1
    t = split_by_time(x, views, times)  # [F, V]
    assert t.shape == (times, views)
    for v in range(views):
        for f in range(times):
            assert int(t[f, v]) == frame_index(v, f, views, times)
    assert torch.equal(merge_times(t), x)
    with pytest.raises(ValueError):
        frame_index(3, 0, views, times)
    with pytest.raises(ValueError, match="expected 3 x 4"):
        split_by_time(torch.zeros(11), views, times)


def test_bad_input_is_refused_before_work(scene):
    cams, images, _ = scene
    calls = []
    cfg = Fit4DConfig(base=base_cfg(5), warm_iterations=2)
    prog = lambda *a: calls.append(a)
    with pytest.raises(ValueError, match=r"cameras x 3 times"):
        fit_sequence(images, cams, 3, config=cfg, progress=prog)  # V*F != V*3
    with pytest.raises(ValueError, match="16 images but 7 cameras"):
        fit_sequence(images, cams[list(range(7))], F, config=cfg, progress=prog)
    with pytest.raises(ValueError, match="aspect"):
        fit_sequence(images[:, :, :20], cams, F, config=cfg, progress=prog)
    with pytest.raises(ValueError, match="mask must be"):
        fit_sequence(images, cams, F, masks=torch.ones(V * F, SIZE, SIZE + 1), config=cfg,
                     progress=prog)
    with pytest.raises(ValueError, match="weights must be"):
        fit_sequence(images, cams, F, weights=torch.ones(V), config=cfg, progress=prog)
    blank = images.clone()
    blank[frame_index(5, 1, V, F)] = 1.0  # view 5 at time 1 shows nothing: caught up front
    with pytest.raises(ValueError, match=r"image\(s\) \[11\] \(time step 1\)"):
        fit_sequence(blank, cams, F, config=cfg, progress=prog)
    with pytest.raises(ValueError, match="confidence"):
        fit_sequence(images, cams, F, config=Fit4DConfig(base=base_cfg(5), confidence="lpips"))
    assert calls == []  # no fitting step ran


def test_sequence_fits_each_time_and_warm_start_beats_cold(scene, fitted):
    cams, _, per_time = scene
    seq = fitted.sequence
    assert isinstance(seq, GaussianSequence) and len(seq) == F
    assert torch.equal(seq.times, torch.arange(F, dtype=torch.float32))
    # every time step's scene reproduces its own frames better than the other time's frames
    p = [[float(psnr(render_gaussians(seq[a], cams)[0], per_time[b])) for b in range(F)]
         for a in range(F)]
    assert p[0][0] > p[1][0] + 1 and p[1][1] > p[0][1] + 0.5, p
    # the red/blue boundary (x = centre) moved with the sphere: Gaussians at time 1 sit further +x
    assert float(seq[1].means[:, 0].mean()) > float(seq[0].means[:, 0].mean())
    # warm start: the same 30 iterations from the visual hull do worse on time 1
    cold = fit_gaussians(per_time[1], cams, config=base_cfg(30)).gaussians
    p_cold = float(psnr(render_gaussians(cold, cams)[0], per_time[1]))
    assert p[1][1] > p_cold + 0.5, (p[1][1], p_cold)


def test_warm_start_initialises_from_previous_frame(scene, fitted):
    cams, _, per_time = scene
    prev = fitted.sequence[0]
    seen = {}

    def reg(it, params, render_fn):
        if it == 0:  # before any step: params are exactly the warm start
            seen["means"] = params["means"].detach().clone()
            seen["rgb0"] = render_fn(cams[[0]]).rgb.detach().clamp(0, 1)
        return params["means"].sum() * 0

    fit_gaussians(per_time[1], cams, config=base_cfg(1), init=prev,
                  regularizer=reg)
    assert torch.equal(seen["means"], prev.means)
    rgb_prev = render_gaussians(prev, cams[[0]])[0]
    assert torch.allclose(seen["rgb0"], rgb_prev, atol=1e-4)
    # no densification or prune on warm frames: time 1 holds exactly time 0's Gaussians
    assert len(fitted.sequence[1]) == len(prev)


def test_warm_start_with_sh_renders_the_given_scene(scene):
    cams, _, per_time = scene
    g = fit_gaussians(per_time[0], cams, config=FitConfig(iterations=1, init_resolution=16,
                                                          sh_degree=1, densify=False)).gaussians
    g.sh[:, 1:] = 0.3 * torch.randn_like(g.sh[:, 1:])
    seen = {}

    def reg(it, params, render_fn):
        if it == 0:
            seen["sh"] = params["sh"].detach().clone()
        return params["means"].sum() * 0

    cfg = FitConfig(iterations=1, sh_degree=1, densify=False)
    res = fit_gaussians(per_time[0], cams, config=cfg, init=g, regularizer=reg)
    # what fit renders at step 0 (sh * 1/20 on the rest) equals the given scene's coefficients
    assert torch.allclose(seen["sh"][:, 1:] / 20.0, g.sh[:, 1:], atol=1e-6)
    assert res.gaussians.sh.shape[1] == 4


def test_temporal_term_pulls_toward_previous_frame(scene, fitted):
    cams, _, per_time = scene
    prev = fitted.sequence[0]
    s = scene_bbox(cams)[1][0]
    moved = {}
    for w in (0.0, 1000.0):
        g = fit_gaussians(per_time[1], cams, config=FitConfig(iterations=6, densify=False),
                          init=prev,
                          regularizer=temporal_regularizer(prev, w, s)).gaussians
        assert len(g) == len(prev)  # nothing pruned in 6 steps from a fitted scene
        moved[w] = (float((g.means - prev.means).norm(dim=-1).mean()),
                    float((g.sh[:, 0] - prev.sh[:, 0]).abs().mean()))
    assert moved[1000.0][0] < 0.5 * moved[0.0][0], moved
    assert moved[1000.0][1] < 0.5 * moved[0.0][1], moved
    # the term itself: zero at the previous frame, positive away from it
    reg = temporal_regularizer(prev, 2.0, s)
    p = {"means": prev.means.clone(), "sh": prev.sh.clone(),
         "opacity_logits": prev.opacity_logits.clone()}
    assert float(reg(0, p, None)) == 0.0
    p["means"] = p["means"] + 0.1
    assert float(reg(0, p, None)) == pytest.approx(2.0 * 3 * 0.01 / s ** 2, rel=1e-4)


def test_ssim_confidence_downweights_the_inconsistent_view(scene, fitted):
    cams, _, per_time = scene
    imgs = per_time[0].clone()
    imgs[3] = torch.rand(imgs[3].shape, generator=torch.Generator().manual_seed(0))
    c = ssim_confidence(fitted.sequence[0], imgs, cams)
    assert c.shape == (V,)
    assert int(c.argmin()) == 3
    assert float(c[3]) < 0.5 * float(c[torch.arange(V) != 3].min())


def test_interrupted_fit_and_failed_write_leave_no_files(scene, tmp_path, monkeypatch):
    from orbitforge.nodes import gaussians4d, host

    cams, images, _ = scene
    monkeypatch.setenv("ORBITFORGE_OUTPUT", str(tmp_path))

    class Interrupted(Exception):
        pass

    def update(self, value, preview=None):
        if value >= 4:
            raise Interrupted

    monkeypatch.setattr(host.Progress, "update", update)
    node = gaussians4d.Gaussian4DReconstruct()
    args = dict(views=images, cameras=cams, frames_per_view=F, iterations=3, warm_iterations=2,
                temporal_weight=1.0, confidence="none", resolution=0, sh_degree=0, seed=0,
                filename_prefix="orbitforge/4d/seq")
    with pytest.raises(Interrupted):  # interrupted in time step 1
        node.reconstruct(**args)
    files = [f for _, _, fs in os.walk(tmp_path) for f in fs]
    assert files == []
    # bad node input: refused before anything
    with pytest.raises(ValueError, match="V\\*F images|cameras x 3 times"):
        node.reconstruct(**{**args, "frames_per_view": 3})
    with pytest.raises(ValueError, match="image_weights"):
        node.reconstruct(**{**args, "image_weights": "1, 2, 3"})

    # a write failing midway removes what this call wrote
    g = GaussianSequence([s for s in fitted_like(cams, images)], torch.arange(3.0))
    paths = sequence_paths(str(tmp_path), "seq", 3)
    real = fit4d.ply_bytes
    count = [0]

    def flaky(gs):
        count[0] += 1
        if count[0] == 3:
            raise OSError("disk full")
        return real(gs)

    monkeypatch.setattr(fit4d, "ply_bytes", flaky)
    with pytest.raises(OSError, match="disk full"):
        write_ply_sequence(paths, g)
    assert not any(os.path.exists(p) for p in paths)
    assert [f for _, _, fs in os.walk(tmp_path) for f in fs] == []


def fitted_like(cams, images):
    g = fit_gaussians(images[:V], cams, config=FitConfig(iterations=1, init_resolution=16,
                                                         densify=False)).gaussians
    return [g, g.detach(), g.detach()]


def test_node_writes_numbered_ply_sequence_and_turntable(scene, fitted, tmp_path, monkeypatch):
    from orbitforge.nodes import gaussians4d

    cams, images, _ = scene
    monkeypatch.setenv("ORBITFORGE_OUTPUT", str(tmp_path))
    node = gaussians4d.Gaussian4DReconstruct()
    seq, tt, paths = node.reconstruct(
        views=images, cameras=cams, frames_per_view=F, iterations=2, warm_iterations=1,
        temporal_weight=1.0, confidence="ssim", resolution=0, sh_degree=0, seed=0,
        filename_prefix="orbitforge/4d/seq", image_weights="1, 1, 1, 1, 1, 1, 1, 0.5")
    rel = paths.split("\n")
    assert rel == [os.path.join("orbitforge/4d", f"seq_00001_t{f:03d}.ply") for f in range(F)]
    for f, r in enumerate(rel):
        back = read_ply(os.path.join(tmp_path, r))  # files hold the 3DGS frame (y down)
        ref = to_splat_frame(seq[f])
        assert torch.allclose(back.means, ref.means) and torch.allclose(back.sh, ref.sh)
    assert tt.shape == (F, SIZE, SIZE, 3) and tt.dtype == torch.float32
    assert 0 <= float(tt.min()) and float(tt.max()) <= 1
    # the next run gets the next counter; nothing is overwritten
    base = gaussians4d.sequence_output_paths("orbitforge/4d/seq", F)[2]
    assert base == "seq_00002"
    # the turntable kernel: one frame per time step, camera circling with time
    frames = render_turntable(fitted.sequence, cams)
    assert frames.shape == (F, SIZE, SIZE, 3)
    tc = fit4d.turntable_cameras(cams, 4)
    assert [round(float(a)) % 360 for a in tc.azimuth] == [0, 90, 180, 270]
    picked = gaussians4d.GaussianSequenceFrame().pick(seq, 1)[0]
    from orbitforge.nodes.host.geometry import read_splat

    assert torch.equal(read_splat(picked, "gaussians").means, seq[1].means)  # a SPLAT of step 1
    with pytest.raises(ValueError, match="outside"):
        gaussians4d.GaussianSequenceFrame().pick(seq, F)


def test_check_sequence_accepts_good_input(scene):
    cams, images, _ = scene
    check_sequence(images, cams, F)
    check_sequence(images, cams.resized(48, 48), F)  # same aspect: cameras get resized
