"""SV3D nodes inside a real ComfyUI (skipped without COMFYUI_PATH): a tiny random-weight SV3D_p
built with ComfyUI's own classes in a ModelPatcher, a tiny ClipVisionModel and VAE (ComfyUI's
classes, small configs, random weights)."""

import math

import pytest
import torch

from comfy_host import tiny_host

FRAMES = 5
SIZE = 64
CTX = 1024


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    return tiny_host(tmp_path_factory.mktemp("cv"), SIZE, CTX, model=("sv3d_p", 0))


def _image():
    img = torch.ones(1, SIZE, SIZE, 4)
    img[0, 16:48, 20:40, :3] = torch.tensor([0.8, 0.2, 0.1])
    img[0, ..., 3] = 0.0
    img[0, 16:48, 20:40, 3] = 1.0
    return img


def test_orbit_node_conditioning(host):
    from orbitforge.nodes.sv3d import SV3DOrbit

    pos, neg, lat, cams, view = SV3DOrbit().run(host["clip_vision"], host["vae"], _image(), SIZE,
                                                SIZE, FRAMES, "static",
                                                10.0, 1e-5, 0.85, 0)
    assert lat["samples"].shape == (FRAMES, 4, SIZE // 8, SIZE // 8)
    assert pos[0][0].shape == (1, 1, CTX) and torch.equal(neg[0][0], torch.zeros_like(pos[0][0]))
    d = pos[0][1]
    assert d["azimuth"][-1] == 0.0 and d["azimuth"][0] == pytest.approx(360 / FRAMES)
    assert d["elevation"] == [10.0] * FRAMES and d["augmentation_level"] == 1e-5
    assert torch.equal(neg[0][1]["concat_latent_image"], torch.zeros_like(d["concat_latent_image"]))
    assert len(cams) == FRAMES
    torch.testing.assert_close(cams.azimuth,
                               torch.tensor(d["azimuth"], dtype=torch.float32), atol=1e-4, rtol=0)
    assert view.shape == (1, SIZE, SIZE, 3) and view[0, 0, 0].tolist() == [1.0, 1.0,
                                                                           1.0]  # white background
    # ComfyUI's own SV3D_p vector == our official-formula vector
    from orbitforge.kernels.diffusion.sv3d import sv3d_vector

    adm = host["model"].model.encode_adm(augmentation_level=1e-5, elevation=d["elevation"],
                                         azimuth=d["azimuth"],
                                         noise=torch.zeros(FRAMES, 4, 8, 8))
    torch.testing.assert_close(adm, sv3d_vector("p", d["elevation"], d["azimuth"], 1e-5),
                               atol=1e-5, rtol=0)


def test_bad_inputs_fail_before_sampling(host):
    from orbitforge.kernels.geometry.cameras import make_orbit_cameras
    from orbitforge.nodes.sv3d import SV3DOrbit, SV3DSampler

    with pytest.raises(ValueError, match="CAMERAS has 3"):
        SV3DOrbit().run(host["clip_vision"], host["vae"], _image(), SIZE, SIZE, FRAMES,
                        "cameras", 10.0, 1e-5, 0.85, 0,
                        cameras=make_orbit_cameras(0.0, [0.0, 90.0, 180.0]))
    img = _image()
    img[..., 3] = 0
    with pytest.raises(ValueError, match="empty"):
        SV3DOrbit().run(host["clip_vision"], host["vae"], img, SIZE, SIZE, FRAMES,
                        "static", 10.0, 1e-5, 0.85, 0)
    with pytest.raises(ValueError, match="at least 64"):
        SV3DOrbit().run(host["clip_vision"], host["vae"], torch.ones(1, 32, 32, 3), SIZE, SIZE,
                        FRAMES, "static", 10.0, 1e-5, 0.85, 0)
    with pytest.raises(ValueError, match="elevation"):
        SV3DOrbit().run(host["clip_vision"], host["vae"], _image(), SIZE, SIZE, FRAMES,
                        "static", 95.0, 1e-5, 0.85, 0)
    # an SVD model is refused with the expected file names
    import comfy.model_patcher
    import comfy.supported_models

    svd = comfy.model_patcher.ModelPatcher(torch.nn.Module(), torch.device("cpu"),
                                           torch.device("cpu"))
    with pytest.raises(ValueError, match="sv3d_p.safetensors"):
        SV3DSampler().run(svd, host["clip_vision"], host["vae"], _image(), SIZE, SIZE, FRAMES,
                          "static", 10.0, 1e-5,
                          0.85, 0, 2, "triangle", 1.0, 2.5, 2.0, 1.0, 0, True)


def test_sampler_node_and_guider_with_core(host):
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise, SamplerCustomAdvanced

    from orbitforge.nodes.host.guiders import model_sigmas, run_sampling
    from orbitforge.nodes.sv3d import HarmonyViewGuider, SV3DOrbit, SV3DSampler

    views, cams, lat = SV3DSampler().run(host["model"], host["clip_vision"],
                                         host["vae"], _image(), SIZE, SIZE, FRAMES,
                                         "static", 10.0, 1e-5, 0.85, 0, 2,
                                         "harmonyview", 1.0, 2.5, 2.0, 1.0, 5, True)
    assert views.shape == (FRAMES, SIZE, SIZE, 3) and torch.isfinite(views).all()
    assert len(cams) == FRAMES and lat["samples"].shape == (FRAMES, 4, 8, 8)

    pos, neg, latent, _, _ = SV3DOrbit().run(host["clip_vision"], host["vae"], _image(), SIZE, SIZE,
                                             FRAMES, "static",
                                             10.0, 1e-5, 0.85, 0)
    (guider,) = HarmonyViewGuider().get_guider(host["model"], pos, "harmonyview", 2.0, 1.0, 4.0,
                                               "constant", 1.0, 2.5)
    sigmas = model_sigmas(host["model"], 2)
    calls = []
    dm = host["model"].model.diffusion_model
    orig = dm.forward

    def counting(x, *a, **k):
        ioi = k.get("image_only_indicator")
        calls.append((x.shape[0], None if ioi is None else ioi.clone()))
        return orig(x, *a, **k)

    dm.forward = counting
    try:
        out, _ = SamplerCustomAdvanced().sample(Noise_RandomNoise(5), guider,
                                                comfy.samplers.sampler_object("euler"),
                                                sigmas, latent)
    finally:
        del dm.forward
    assert out["samples"].shape == (FRAMES, 4, 8, 8) and torch.isfinite(out["samples"]).all()
    # one batched forward per step, 3 branches x frames, indicator rows [0, 0, 1]
    assert len(calls) == 2 and all(c[0] == 3 * FRAMES for c in calls)
    # (core orders the batch itself; the indicator rows follow the latents' order)
    rows = sorted(calls[0][1].reshape(3, FRAMES).tolist())
    assert rows == [[0.0] * FRAMES, [0.0] * FRAMES, [1.0] * FRAMES]
    # core euler == our Euler kernel through the same guider (same noise, same sigmas)
    ours = run_sampling(host["model"], guider, latent, 2, 5)
    torch.testing.assert_close(ours, out["samples"], rtol=1e-4, atol=1e-4)


def test_guider_matches_host_free_formula(host):
    """Branch outputs from ComfyUI, combined by the kernel formula, equal the guider's x0."""
    import comfy.samplers

    from orbitforge.nodes.host.guiders import make_guider
    from orbitforge.nodes.sv3d import SV3DOrbit

    pos, neg, latent, _, _ = SV3DOrbit().run(host["clip_vision"], host["vae"], _image(), SIZE, SIZE,
                                             FRAMES, "static",
                                             10.0, 1e-5, 0.85, 0)
    model = host["model"]
    tri = make_guider(model, pos, "triangle", min_scale=1.0, max_scale=2.5)
    core = comfy.samplers.CFGGuider(model)
    core.set_conds(pos, neg)
    core.set_cfg(1.0)
    x0s = {}

    def capture(name, g):
        def fn(m, x, sigmas, extra_args=None, callback=None, disable=None):
            x0s[name] = m(x, sigmas[0] * x.new_ones([x.shape[0]]), **extra_args)
            return x
        return g.sample(torch.randn(FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(0)),
                        latent["samples"],
                        comfy.samplers.KSAMPLER(fn), torch.tensor([3.0, 0.0]), seed=0)

    capture("tri", tri)
    capture("cond", core)  # cfg 1 -> conditional x0
    core.set_conds(neg, neg)
    capture("uncond", core)
    from orbitforge.kernels.diffusion.guidance import cfg_x0, triangle_scales

    want = cfg_x0(x0s["uncond"], x0s["cond"], triangle_scales(FRAMES))
    torch.testing.assert_close(x0s["tri"], want, rtol=1e-4, atol=1e-4)
    assert not math.isclose(float((x0s["cond"] - x0s["uncond"]).abs().max()), 0.0)
