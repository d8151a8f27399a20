"""Diffusion priors of the 3DGS fit: the IPSM diffusion and SV3D masked-SDS
companion nodes (validation before the fit), and short fits with tiny random-weight ComfyUI models
(ComfyUI's own classes) where the prior's loss is finite and its gradient reaches the Gaussians."""

import types

import pytest
import torch

from orbitforge.nodes.priors import (
    IPSMDiffusionPriors,
    IPSMGeometryPriors,
    SV3DSDSPriors,
    merge_priors,
)

from comfy_host import require_comfyui

FRAMES = 5
LAT = 8  # SV3D latent size -> 64 px renders


# ------------------------------------------------------------------ without ComfyUI
def test_geometry_node_chains_and_refuses_duplicates():
    (p1,) = IPSMGeometryPriors().make(0.5, 1, 1, 0.0)
    assert set(p1) == {"ipsm_geometry"}
    with pytest.raises(ValueError, match="already contain 'ipsm_geometry'"):
        IPSMGeometryPriors().make(0.5, 1, 1, 0.0, priors=p1)
    merged = merge_priors(p1, "x", {"a": 1})
    assert set(merged) == {"ipsm_geometry", "x"} and set(p1) == {"ipsm_geometry"}
    with pytest.raises(ValueError, match="RECON_PRIORS"):
        merge_priors("nope", "x", {})


def test_nodes_refuse_wrong_objects_before_any_work():
    cond = [[torch.zeros(1, 77, 768), {}]]
    with pytest.raises(ValueError, match="vae must be a core VAE"):
        IPSMDiffusionPriors().make(object(), object(), "not a vae", cond, 1.0, 4, 0.0, 500, 7.5)
    with pytest.raises(ValueError, match="vae must be a core VAE"):
        SV3DSDSPriors().make(object(), 123, cond, 1.0, 0.7, 4, 2.5)


def test_every_input_has_a_tooltip():
    for cls in (IPSMDiffusionPriors, SV3DSDSPriors, IPSMGeometryPriors):
        spec = cls.INPUT_TYPES()
        for group in spec.values():
            for name, (_t, opts) in group.items():
                assert opts.get("tooltip"), (cls.__name__, name)
        assert cls.DESCRIPTION and len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)


# ------------------------------------------------------------------ tiny ComfyUI models
@pytest.fixture(scope="module")
def tiny():
    require_comfyui()
    from orbitforge.bench.tiny_comfy import tiny_sd15, tiny_vae, tiny_video_model
    from orbitforge.kernels.sample import load_sample_orbit

    images, masks, cams = load_sample_orbit()
    idx = [20, 0, 19]  # three views around the front: the back is seen by nobody
    s = 48
    im = torch.nn.functional.interpolate(images[idx].permute(0, 3, 1, 2), size=(s, s),
                                         mode="area").permute(0, 2, 3, 1)
    mk = torch.nn.functional.interpolate(masks[idx][:, None], size=(s, s), mode="area")[:, 0]
    return {"inpaint": tiny_sd15(9, 3), "sd": tiny_sd15(4, 4), "sv3d": tiny_video_model("sv3d_p"),
            "vae": tiny_vae(64), "views": (im, mk, cams[idx].resized(s, s))}


def _text_cond(v):
    return [[torch.full((1, 77, 768), v), {}]]


def _sv3d_cond():
    g = torch.Generator().manual_seed(0)
    az = [(f + 1) * 360.0 / FRAMES % 360.0 for f in range(FRAMES)]
    d = {"concat_latent_image": torch.randn(1, 4, LAT, LAT, generator=g),
         "elevation": [10.0] * FRAMES,
         "azimuth": az, "augmentation_level": 1e-5}
    pos = [[torch.randn(1, 1, 1024, generator=g) * 0.1, d]]
    neg = [[torch.zeros(1, 1, 1024), dict(d, concat_latent_image=torch.zeros(1, 4, LAT, LAT))]]
    return pos, neg


def _fit_with(priors, tiny, iters):
    """A short fit with the priors' regulariser; records loss and d loss / d means."""
    from orbitforge.kernels.splat.fit import FitConfig, fit_gaussians
    from orbitforge.nodes.gaussians import build_regularizer

    im, mk, cams = tiny["views"]
    reg = build_regularizer(priors, im.shape[0])
    seen = []

    def wrapped(step, params, ctx):
        loss = reg(step, params, ctx)
        if loss.grad_fn is not None and loss.detach().abs() > 0:
            # the rasteriser's backward runs once per graph: check the gradient on this
            # evaluation, hand the fit a fresh one
            (g,) = torch.autograd.grad(loss, params["means"], allow_unused=True)
            seen.append((step, float(loss.detach()), None if g is None else float(g.abs().sum())))
            loss = reg(step, params, ctx)
        return loss

    with torch.inference_mode():  # as inside ComfyUI: the fit leaves inference mode itself
        res = fit_gaussians(im.clone(), cams, mk.clone(),
                            FitConfig(iterations=iters, densify=False, seed=0), regularizer=wrapped)
    assert torch.isfinite(res.gaussians.means).all()
    return seen


def test_ipsm_diffusion_prior_in_a_fit(tiny):
    (pri,) = IPSMGeometryPriors().make(0.5, 1, 1, 0.0)
    (pri,) = IPSMDiffusionPriors().make(tiny["inpaint"], tiny["sd"], tiny["vae"], _text_cond(0.5),
                                        1.0, 2, 0.0, 0, 7.5, negative=_text_cond(0.0),
                                        priors=pri)
    assert set(pri) == {"ipsm_geometry", "ipsm_diffusion"}
    only = {"ipsm_diffusion": pri["ipsm_diffusion"]}
    seen = _fit_with(only, tiny, 4)
    assert [s[0] for s in seen] == [0, 2]  # every 2nd step
    for _step, loss, g in seen:
        assert loss > 0 and torch.isfinite(torch.tensor(loss))
        assert g is not None and g > 0  # the score terms reach the Gaussian means


def test_sv3d_sds_prior_in_a_fit(tiny):
    pos, neg = _sv3d_cond()
    (pri,) = SV3DSDSPriors().make(tiny["sv3d"], tiny["vae"], pos, 50.0, 0.5, 1, 2.5, negative=neg)
    from orbitforge.nodes.host.priors import build_sv3d_sds

    reg = build_sv3d_sds(pri["sv3d_sds"])
    assert (reg.h, reg.w) == (LAT * 8, LAT * 8) and len(reg.az) == FRAMES
    seen = _fit_with(pri, tiny, 4)
    assert [s[0] for s in seen] == [2, 3]  # last half only
    for _step, loss, g in seen:
        assert loss > 0 and torch.isfinite(torch.tensor(loss))
        assert g is not None and g > 0


def test_sv3d_denoiser_uses_the_orbit_cameras(tiny):
    from orbitforge.nodes.host.priors import sv3d_denoiser_factory, sv3d_orbit_of

    pos, neg = _sv3d_cond()
    make = sv3d_denoiser_factory(tiny["sv3d"], pos, neg, cfg=1.0)
    x = torch.randn(FRAMES, 4, LAT, LAT, generator=torch.Generator().manual_seed(1))
    s = torch.full((FRAMES,), 2.0)
    el, az, _, _ = sv3d_orbit_of(pos)
    a = make(el, az)(x, s)
    b = make(el, az)(x, s)
    c = make(el, [(v + 30) % 360 for v in az])(x, s)
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.allclose(a, c)  # the camera vector changes the prediction


def test_wrong_family_and_missing_inputs_refused_before_the_fit(tiny):
    cond = _text_cond(0.5)
    with pytest.raises(ValueError, match="sd15 model.*inpainting"):
        IPSMDiffusionPriors().make(tiny["sd"], tiny["sd"], tiny["vae"], cond, 1.0, 4, 0.0, 500, 7.5)
    with pytest.raises(ValueError, match="sv3d_p model.*SD-1.5"):
        IPSMDiffusionPriors().make(tiny["inpaint"], tiny["sv3d"], tiny["vae"], cond, 1.0, 4, 0.0,
                                   500, 7.5)
    with pytest.raises(ValueError, match="VAE"):
        IPSMDiffusionPriors().make(tiny["inpaint"], tiny["sd"], None, cond, 1.0, 4, 0.0, 500, 7.5)
    with pytest.raises(ValueError, match="not connected"):
        IPSMDiffusionPriors().make(tiny["inpaint"], tiny["sd"], tiny["vae"], None, 1.0, 4, 0.0,
                                   500, 7.5)
    pos, _ = _sv3d_cond()
    with pytest.raises(ValueError, match="sd15_inpaint model.*SV3D"):
        SV3DSDSPriors().make(tiny["inpaint"], tiny["vae"], pos, 1.0, 0.7, 4, 2.5)
    with pytest.raises(ValueError, match="conditioning"):
        SV3DSDSPriors().make(tiny["sv3d"], tiny["vae"], None, 1.0, 0.7, 4, 2.5)
    with pytest.raises(ValueError, match="concat_latent_image"):
        SV3DSDSPriors().make(tiny["sv3d"], tiny["vae"], _text_cond(0.1), 1.0, 0.7, 4, 2.5)
    # an SDXL-configured model as the inpainting model (family from ComfyUI's config class)
    from comfy import supported_models

    sdxl = types.SimpleNamespace(model=types.SimpleNamespace(
        model_config=supported_models.SDXL(dict(supported_models.SDXL.unet_config, in_channels=9))))
    with pytest.raises(ValueError, match="sdxl"):
        IPSMDiffusionPriors().make(sdxl, tiny["sd"], tiny["vae"], cond, 1.0, 4, 0.0, 500, 7.5)
