"""Host checks for the reconstruction priors (nodes/host/priors.py); need a real ComfyUI."""

import types

import pytest
import torch

from comfy_host import require_comfyui


def fake_model(cfg_cls, unet_config):
    """A stand-in MODEL exposing only model.model.model_config (what the checks read)."""
    cfg = cfg_cls(unet_config)
    return types.SimpleNamespace(model=types.SimpleNamespace(model_config=cfg))


def sd15_config(cin):
    return {"context_dim": 768, "model_channels": 320, "adm_in_channels": None,
            "use_temporal_attention": False, "in_channels": cin}


@pytest.fixture()
def comfy():
    require_comfyui()
    from comfy import supported_models

    from orbitforge.nodes.host import priors

    return supported_models, priors


def test_model_family_detection(comfy):
    supported_models, priors = comfy
    assert priors.model_family(fake_model(supported_models.SD15, sd15_config(9))) == "sd15_inpaint"
    assert priors.model_family(fake_model(supported_models.SD15, sd15_config(4))) == "sd15"
    sdxl = dict(supported_models.SDXL.unet_config, in_channels=4)
    assert priors.model_family(fake_model(supported_models.SDXL, sdxl)) == "sdxl"
    sdxl_inp = dict(sdxl, in_channels=9)
    assert priors.model_family(fake_model(supported_models.SDXL, sdxl_inp)) == "sdxl"
    for cls, name in ((supported_models.SV3D_p, "sv3d_p"), (supported_models.SV3D_u, "sv3d_u")):
        assert priors.model_family(fake_model(cls, dict(cls.unet_config))) == name
    assert priors.model_family(object()).startswith("other:")


def test_ipsm_prior_checks(comfy):
    supported_models, priors = comfy
    inp = fake_model(supported_models.SD15, sd15_config(9))
    sd = fake_model(supported_models.SD15, sd15_config(4))
    sdxl = fake_model(supported_models.SDXL, dict(supported_models.SDXL.unet_config, in_channels=9))
    cond = [[torch.zeros(1, 77, 768), {}]]
    vae = object()
    priors.check_ipsm_prior(inp, sd, vae, cond, cond)  # fine
    with pytest.raises(ValueError, match="sdxl.*inpainting"):
        priors.check_ipsm_prior(sdxl, sd, vae, cond)
    with pytest.raises(ValueError, match="inpainting checkpoint"):
        priors.check_ipsm_prior(inp, inp, vae, cond)
    with pytest.raises(ValueError, match="VAE"):
        priors.check_ipsm_prior(inp, sd, None, cond)
    with pytest.raises(ValueError, match="CONDITIONING"):
        priors.check_ipsm_prior(inp, sd, vae, None)
    with pytest.raises(ValueError, match="both"):
        priors.check_ipsm_prior(None, sd, vae, cond)


def test_sv3d_sds_checks(comfy):
    supported_models, priors = comfy
    sv3d = fake_model(supported_models.SV3D_p, dict(supported_models.SV3D_p.unet_config))
    sd = fake_model(supported_models.SD15, sd15_config(4))
    cond = [[torch.zeros(21, 1, 1024), {}]]
    assert priors.check_sv3d_sds(sv3d, object(), positive=cond) == "sv3d_p"
    with pytest.raises(ValueError, match="sd15.*SV3D"):
        priors.check_sv3d_sds(sd, object(), positive=cond)
    with pytest.raises(ValueError, match="VAE"):
        priors.check_sv3d_sds(sv3d, None, positive=cond)
    with pytest.raises(ValueError, match="conditioning"):
        priors.check_sv3d_sds(sv3d, object())


def test_eps_callable_converts_ddpm_latents_and_applies_cfg(comfy):
    supported_models, priors = comfy
    from comfy.model_sampling import ModelSamplingDiscrete

    cfgobj = supported_models.SD15(sd15_config(9))
    sampling = ModelSamplingDiscrete(cfgobj)
    seen = {}

    class Base:
        model_config = cfgobj
        model_sampling = sampling

        def apply_model(self, x, sigma, c_concat=None, c_crossattn=None):
            # an 'ideal' EPS model whose noise prediction is the mean of its text context
            seen["concat"], seen["x"], seen["sigma"] = c_concat, x, sigma
            e = c_crossattn.mean(dim=(1, 2)).view(-1, 1, 1, 1)
            return x - sigma.view(-1, 1, 1, 1) * e

    model = types.SimpleNamespace(model=Base())
    pos = [[torch.full((1, 77, 768), 2.0), {}]]
    neg = [[torch.full((1, 77, 768), 1.0), {}]]
    eps = priors.eps_callable(model, pos, neg, cfg=7.5)
    x9 = torch.randn(2, 9, 4, 4)
    t = torch.tensor([300, 600])
    e = eps(x9, t)
    assert torch.allclose(e, torch.full_like(e, 1.0 + 7.5 * (2.0 - 1.0)), atol=1e-4)
    assert torch.equal(seen["concat"][:2], x9[:, 4:])  # mask + masked latents go to c_concat
    a = priors.alphas_cumprod(model)[t]
    assert torch.allclose(seen["x"][:2], x9[:, :4] / a.sqrt().view(2, 1, 1, 1), atol=1e-5)
    from orbitforge.kernels.priors.sds import sd_alphas_cumprod

    assert torch.allclose(priors.alphas_cumprod(model), sd_alphas_cumprod(), rtol=1e-4)


def test_sv3d_orbit_of_conditioning(comfy):
    _supported_models, priors = comfy
    d = {"concat_latent_image": torch.zeros(1, 4, 9, 7), "elevation": [5.0, 6.0],
         "azimuth": [90.0, 0.0]}
    assert priors.sv3d_orbit_of([[torch.zeros(1, 1, 1024), d]]) == ([5.0, 6.0], [90.0, 0.0], 9, 7)
    # SV3D_u conditioning carries no cameras: its fixed 21-frame static orbit
    el, az, h, w = priors.sv3d_orbit_of([[torch.zeros(1, 1, 1024),
                                          {"concat_latent_image": torch.zeros(1, 4, 8, 8)}]])
    assert len(az) == 21 and az[-1] == 0.0 and az[0] == pytest.approx(360 / 21) and (h, w) == (8, 8)
    with pytest.raises(ValueError, match="concat_latent_image"):
        priors.sv3d_orbit_of([[torch.zeros(1, 1, 1024), {}]])
    with pytest.raises(ValueError, match="2 elevations but 3"):
        priors.sv3d_orbit_of([[torch.zeros(1, 1, 1024), dict(d, azimuth=[1.0, 2.0, 3.0])]])
