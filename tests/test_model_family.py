"""The one model-family detector (nodes/host/family.py) and the one SVD-family CONDITIONING builder
(nodes/host/conditioning.py). Stand-in models run without ComfyUI; the tiny models that ComfyUI's
own classes build (bench/tiny_comfy.py) need COMFYUI_PATH."""

import types

import pytest
import torch

from orbitforge.nodes.host.conditioning import sv3d_conditioning, unconditional
from orbitforge.nodes.host.family import family, require


def stand_in(unet_config, config_name="Config"):
    """A MODEL exposing model.model.model_config.unet_config, the way a ModelPatcher does."""
    cfg = type(config_name, (), {})()
    cfg.unet_config = unet_config
    return types.SimpleNamespace(model=types.SimpleNamespace(model_config=cfg))


SD15 = {"context_dim": 768, "adm_in_channels": None, "in_channels": 4}
VIDEO = {"context_dim": 1024, "use_temporal_attention": True, "in_channels": 8}


def test_family_from_the_unet_config():
    assert family(stand_in(SD15)) == "sd15"
    assert family(stand_in(dict(SD15, in_channels=9))) == "sd15_inpaint"
    sdxl = {"context_dim": 2048, "adm_in_channels": 2816, "in_channels": 4}
    assert family(stand_in(sdxl)) == "sdxl"
    assert family(stand_in({"context_dim": 1024, "adm_in_channels": None})) == "sd2"
    assert family(stand_in(dict(VIDEO, adm_in_channels=768))) == "svd"
    assert family(stand_in(dict(VIDEO, adm_in_channels=256))) == "sv3d_u"
    assert family(stand_in(dict(VIDEO, adm_in_channels=1280))) == "sv3d_p"
    assert family(stand_in({"context_dim": 77}, "Flux")) == "other:Flux"


def test_family_never_raises():
    class Exploding:
        @property
        def model(self):
            raise RuntimeError("boom")

    assert family(object()) == "other:object"
    assert family(None) == "other:NoneType"
    assert family(Exploding()) == "other:Exploding"
    assert family(types.SimpleNamespace(model=torch.nn.Linear(1, 1))) == "other:SimpleNamespace"


def test_declared_family_and_foreign_17_channel_unet():
    class Declared:
        ORBITFORGE_FAMILY = "hi3d_stage2"

    assert family(types.SimpleNamespace(model=Declared())) == "hi3d_stage2"
    foreign = stand_in(dict(VIDEO, in_channels=17, adm_in_channels=512), "SVD_img2vid")
    assert family(foreign) == "other:SVD_img2vid"
    with pytest.raises(ValueError, match="not loaded by OrbitForgeLoadRefiner"):
        require(foreign, "video")


def test_require_returns_the_family_or_names_the_files():
    sd = stand_in(SD15)
    inpaint = stand_in(dict(SD15, in_channels=9))
    sv3d = stand_in(dict(VIDEO, adm_in_channels=1280))
    assert require(sv3d, "sv3d") == "sv3d_p"
    assert require(sv3d, "video") == "sv3d_p"
    assert require(inpaint, ("sd15", "sd15_inpaint")) == "sd15_inpaint"
    with pytest.raises(ValueError, match=r"sv3d_p\.safetensors.*Image Only Checkpoint Loader"):
        require(sd, "sv3d")
    with pytest.raises(ValueError, match=r"neither.*second_stage\.pt.*svd_xt\.safetensors"):
        require(sd, "video")
    with pytest.raises(ValueError, match="inpaint_model is a sd15 model"):
        require(sd, "ipsm_inpaint")
    with pytest.raises(ValueError, match="sd_model is an inpainting checkpoint"):
        require(inpaint, "ipsm_sd")
    with pytest.raises(ValueError, match="sds_model is a sd15 model; SV3D SDS"):
        require(sd, "sv3d_sds")
    with pytest.raises(ValueError, match="expected sdxl or sd2"):
        require(sd, ("sdxl", "sd2"))
    with pytest.raises(ValueError, match="unknown model need 'sv4d'"):
        require(sd, "sv4d")


def test_sv3d_conditioning_positive_and_unconditional_branch():
    emb, lat, depth = torch.rand(1, 1, 8), torch.rand(1, 4, 3, 3), torch.rand(2, 9, 3, 3)
    pos, neg = sv3d_conditioning(emb, lat, 1e-5, elevations=torch.tensor([10.0, 20.0]),
                                 azimuths=[0, 180], concat_depth=depth)
    (p_emb, p), (n_emb, n) = pos[0], neg[0]
    assert p_emb is emb and p["concat_latent_image"] is lat and p["concat_depth"] is depth
    assert p["elevation"] == [10.0, 20.0] and p["azimuth"] == [0.0, 180.0]
    assert p["augmentation_level"] == 1e-5
    assert torch.equal(n_emb, torch.zeros_like(emb))
    assert torch.equal(n["concat_latent_image"], torch.zeros_like(lat))
    assert torch.equal(n["concat_depth"], torch.zeros_like(depth))
    assert {k: n[k] for k in ("elevation", "azimuth", "augmentation_level")} == \
        {k: p[k] for k in ("elevation", "azimuth", "augmentation_level")}
    svd_pos, _ = sv3d_conditioning(emb, lat, 0.02)  # no cameras: SVD / SV3D_u
    assert set(svd_pos[0][1]) == {"concat_latent_image", "augmentation_level"}
    again = unconditional(pos)
    assert torch.equal(again[0][0], n_emb) and again[0][1].keys() == n.keys()


@pytest.mark.comfyui
def test_family_of_models_built_by_comfyui():
    from comfy_host import require_comfyui

    require_comfyui()
    from comfy import model_base

    from orbitforge.bench.tiny_comfy import tiny_sd15, tiny_video_model
    from orbitforge.bench.tiny_hi3d import random_unet_state_dict, tiny_config
    from orbitforge.nodes.host.models import build_refiner_model

    for kind in ("svd", "sv3d_u", "sv3d_p"):
        assert family(tiny_video_model(kind, model_channels=64)) == kind
    assert family(tiny_sd15(4)) == "sd15"
    assert family(tiny_sd15(9)) == "sd15_inpaint"
    refiner = build_refiner_model(random_unet_state_dict(tiny_config(), seed=0))
    assert family(refiner) == "hi3d_stage2" == require(refiner, "video")
    with pytest.raises(ValueError, match=r"Stable Video Diffusion, not SV3D"):
        require(refiner, "sv3d")  # the refiner is an SVD UNet
    with pytest.raises(ValueError, match=r"MODEL is SVD_img2vid \(this is Stable Video"):
        require(tiny_video_model("svd"), "sv3d")
    base = types.SimpleNamespace(model=object.__new__(model_base.BaseModel))
    assert family(base).startswith("other:")
    with pytest.raises(ValueError, match="neither"):
        require(base, "video")
