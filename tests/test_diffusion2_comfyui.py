"""Diffusion² sampler node inside a real ComfyUI (skipped without COMFYUI_PATH): tiny random-weight
SVD and SV3D_p built with ComfyUI's own classes, a tiny CLIP vision model and VAE."""


import pytest
import torch

from comfy_host import tiny_host

SIZE = 64
CTX = 1024


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    return tiny_host(tmp_path_factory.mktemp("cv"), SIZE, CTX, video=("svd", 0), mv=("sv3d_p", 5))


def _image(n=1):
    img = torch.ones(n, SIZE, SIZE, 3)
    img[:, 16:48, 20:40] = torch.tensor([0.8, 0.2, 0.1])
    return img


def _run(host, prompt, prompt_type="image", V=3, F=4, steps=2, vrs=1, **kw):
    from orbitforge.nodes.diffusion2 import Diffusion2Sampler

    args = dict(video_model=host["video"], multiview_model=host["mv"],
                clip_vision=host["clip_vision"],  # noqa: C408
                vae=host["vae"], prompt=prompt, prompt_type=prompt_type, views=V, frames=F,
                size=SIZE,
                elevation=10.0, multiview_cfg=2.5, video_cfg_min=1.5, video_cfg_max=3.0,
                motion_bucket_id=127,
                fps=25, video_cond_aug=0.02, multiview_cond_aug=1e-5, lambda_schedule="constant",
                lambda_value=0.6, logistic_k=15.0, view_weight_min=0.25, steps=steps, vrs_steps=vrs,
                seed=0)
    args.update(kw)
    return Diffusion2Sampler().run(**args)


def test_image_to_4d_end_to_end(host):
    V, F = 3, 4
    calls = []
    frames, cams, times, grid, ref_orbit, ref_video = _run(
        host, _image(), V=V, F=F, max_chunk=2, progress_callback=lambda v, t: calls.append((v, t)))
    assert frames.shape == (V * F, SIZE, SIZE, 3) and frames.dtype == torch.float32
    assert torch.isfinite(frames).all() and frames.min() >= 0 and frames.max() <= 1
    assert len(cams) == V and cams.width == SIZE
    assert torch.allclose(times, torch.arange(F) / 25.0)
    assert grid.shape == (1, V * 96, F * 96, 3)
    assert ref_orbit.shape == (V, SIZE, SIZE, 3) and ref_video.shape == (F, SIZE, SIZE, 3)
    # input view replaces the last view
    assert torch.allclose(ref_orbit[-1], _image()[0], atol=1e-6)
    # progress: 2 reference runs of 2 steps, then 2 + 1 (VRS) matrix passes
    assert calls[-1] == (2 * 2 + 3, 2 * 2 + 3)
    # determinism (1 step is enough to see the seed)
    a = _run(host, _image(), V=V, F=F, steps=1, vrs=0, max_chunk=2)[0]
    b = _run(host, _image(), V=V, F=F, steps=1, vrs=0, max_chunk=1)[0]
    # chunk size does not change the result beyond float32 round-off: a different batch size takes
    # another BLAS blocking, i.e. another summation order, on inputs of magnitude sigma_max = 700
    # at the first step; one reduction's reordering moves the result by about eps * 700 = 8e-5
    # (measured up to 1.8e-4 in the last frame), so allow 16 of them (1.3e-3). A wrong row or
    # column mapping between chunks changes frames by O(0.1).
    tol = 16 * torch.finfo(torch.float32).eps * 700.0
    assert (a - b).abs().max() <= tol, float((a - b).abs().max())


def test_cost_and_chunking_through_comfy_models(host, monkeypatch):
    """Exactly F column and V row sequences per branch per pass through ComfyUI's apply_model."""
    from orbitforge.nodes.host.diffusion2 import HostSequenceModel

    seen = []
    orig = HostSequenceModel.__call__

    def spy(self, x, sigma, idx):
        seen.append((self.model is host["mv"], x.shape[0], x.shape[1]))
        return orig(self, x, sigma, idx)

    monkeypatch.setattr(HostSequenceModel, "__call__", spy)
    V, F = 3, 4
    video = torch.rand(F + 2, SIZE, SIZE, 3)
    _run(host, video, "video", V=V, F=F, steps=2, vrs=1, max_chunk=2)
    # video prompt: one reference orbit (2 steps, 1 sequence per call), then 3 matrix passes
    ref = seen[:2]
    assert all(m and n == 1 and L == V for m, n, L in ref)
    mat = seen[2:]
    cols = [(n, L) for m, n, L in mat if m]
    rows = [(n, L) for m, n, L in mat if not m]
    assert sum(n for n, _ in cols) == 3 * F and all(L == V and n <= 2 for n, L in cols)
    assert sum(n for n, _ in rows) == 3 * V and all(L == F and n <= 2 for n, L in rows)


def test_orbit_prompt_and_bad_input(host):
    V, F = 3, 4
    out = _run(host, _image(V), "orbit", V=V, F=F, steps=1, vrs=0)
    assert out[0].shape == (V * F, SIZE, SIZE, 3)
    assert torch.allclose(out[4], _image(V), atol=1e-6)  # the orbit is the reference
    with pytest.raises(ValueError, match="swapped"):
        _run(host, _image(), video_model=host["mv"], multiview_model=host["video"])
    with pytest.raises(ValueError, match="frames=26"):
        _run(host, _image(), F=26)
    with pytest.raises(ValueError, match="shorter"):
        _run(host, _image(3), "video", F=4)
    with pytest.raises(ValueError, match="views=3"):
        _run(host, _image(4), "orbit", V=3)
    from orbitforge.kernels.geometry.cameras import make_orbit_cameras, sv3d_static_orbit

    el, az = sv3d_static_orbit(10.0, 5)
    with pytest.raises(ValueError, match="CAMERAS has 5"):
        _run(host, _image(), V=3, cameras=make_orbit_cameras(el, az, 2.0, 33.8, SIZE, SIZE))


def test_interrupt_leaves_no_outputs(host):
    class Stop(Exception):
        pass

    def cb(v, t):
        if v == 5:
            raise Stop

    with pytest.raises(Stop):
        _run(host, _image(), progress_callback=cb)


def test_guider_with_core_sampling(host):
    """The GUIDER path: core's CFGGuider.sample drives our composed x0 (both models loaded by
    core)."""
    import comfy.samplers

    from orbitforge.nodes.diffusion2 import Diffusion2Guider
    from orbitforge.nodes.host.diffusion2 import model_sigmas

    V, F = 3, 4
    g, latent, cams = Diffusion2Guider().get_guider(
        host["video"], host["mv"], host["clip_vision"],
        host["vae"], _image(V), _image(F), SIZE, 10.0, 2.5, 1.5,
        3.0, 127, 25, 0.02, 1e-5, "logistic_paper", 0.6, 15.0, 0.25, 0, max_chunk=2)
    assert latent["samples"].shape == (V * F, 4, SIZE // 8, SIZE // 8) and len(cams) == V
    sig = model_sigmas(host["video"], 2)
    noise = torch.randn(latent["samples"].shape, generator=torch.Generator().manual_seed(0))
    out = g.sample(noise, latent["samples"], comfy.samplers.sampler_object("euler"), sig, seed=0)
    assert out.shape == latent["samples"].shape and torch.isfinite(out).all()
    assert g.stats.passes == 2
    assert g.stats.column_sequences == [F, F] and g.stats.row_sequences == [V, V]
    with pytest.raises(ValueError, match="views x frames"):
        g.sample(noise[:5], latent["samples"][:5],
                 comfy.samplers.sampler_object("euler"), sig, seed=0)
