"""Refiner inside a real ComfyUI (skips without COMFYUI_PATH): layout vs ComfyUI's VideoUNet,
loading a tiny random stage-2 checkpoint as a core MODEL, and the refiner node end to end."""

import types

import pytest
import torch
import torch.nn.functional as F

from orbitforge.bench.tiny_hi3d import random_unet_state_dict, tiny_config
from orbitforge.kernels.diffusion.depth_condition import depth_from_image, pack_depth, roll_to_front
from orbitforge.kernels.diffusion.hi3d_checkpoint import HI3D_STAGE2, unet_layout
from orbitforge.kernels.geometry.cameras import make_orbit_cameras

from comfy_host import require_comfyui


class FakeVAE:
    """Deterministic stand-in for the SVD VAE (the real one is 300 MB): 8x average pooling."""

    def encode(self, img):  # [B,H,W,3] -> [B,4,H/8,W/8]
        x = img.movedim(-1, 1) * 2 - 1
        x = F.avg_pool2d(x, 8)
        return torch.cat([x, x.mean(1, keepdim=True)], 1)

    def decode(self, z):  # [B,4,h,w] -> [B,H,W,3]
        x = F.interpolate(z[:, :3], scale_factor=8, mode="nearest")
        return ((x + 1) / 2).movedim(1, -1)


class FakeCLIP:
    def __init__(self, dim):
        self.dim = dim

    def encode_image(self, img):
        return types.SimpleNamespace(image_embeds=torch.full((1, self.dim), float(img.mean())))


def _tiny_pt(tmp_path, in_channels=17, adm=512):
    cfg = tiny_config(in_channels=in_channels, adm_in_channels=adm)
    sd = random_unet_state_dict(cfg, seed=3)
    p = tmp_path / f"tiny{in_channels}.pt"
    torch.save({"module": {f"module.model.diffusion_model.{k}": v for k, v in sd.items()}}, p)
    return p, sd


def test_layout_matches_comfyui_videounet():
    require_comfyui()
    import comfy.model_detection

    from orbitforge.nodes.host.models import stage2_classes

    _, Config = stage2_classes()
    for cfg in (tiny_config(), HI3D_STAGE2):
        layout = unet_layout(cfg)
        fake = {k: torch.empty(v, device="meta") for k, v in layout.items()}
        unet_config = comfy.model_detection.detect_unet_config(fake, "")
        with torch.device("meta"):
            model = Config(unet_config).get_model({})
        ref = {k: tuple(v.shape) for k, v in model.diffusion_model.state_dict().items()}
        assert ref == layout


def test_load_refiner_builds_core_model(tmp_path):
    require_comfyui()
    from orbitforge.nodes.host.models import load_refiner, model_kind

    p, sd = _tiny_pt(tmp_path)
    m = load_refiner(str(p))
    assert model_kind(m) == "hi3d_stage2"
    got = m.model.diffusion_model.state_dict()
    assert all(torch.equal(got[k].float(), sd[k].float()) for k in sd)
    assert m.model.model_config.unet_config["in_channels"] == 17
    p8, _ = _tiny_pt(tmp_path, 8, 256)
    with pytest.raises(ValueError, match="17"):
        load_refiner(str(p8))


def _run(model, mode_views=4, depth=True, seed=0, capture=None, cams=True):
    from orbitforge.nodes.refiner import DepthRefiner

    views = torch.rand(mode_views, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    inp = torch.rand(1, 40, 40, 3, generator=torch.Generator().manual_seed(1))
    d = None
    if depth:
        d = torch.rand(mode_views, 32, 32, 3, generator=torch.Generator().manual_seed(2))
    cameras = None
    if cams:
        az = [(i + 1) * 360.0 / mode_views % 360.0 for i in range(mode_views)]  # SV3D: input last
        cameras = make_orbit_cameras(10.0, az, 2.0, 33.8, 32, 32)
    return DepthRefiner().refine(model, FakeCLIP(64), FakeVAE(), views, inp, 64, 2, 1.0, 2.0, 1.0,
                                 0.02, seed, 10.0, "near_bright", 2, cameras=cameras, depth=d), d


def test_refiner_node_end_to_end_wiring(tmp_path):
    require_comfyui()
    from orbitforge.nodes.host.models import load_refiner

    p, _ = _tiny_pt(tmp_path)
    m = load_refiner(str(p))
    seen = []
    unet = m.model.diffusion_model
    h = unet.register_forward_pre_hook(lambda mod, a, kw: seen.append((a[0].clone(), kw.get("y"))),
                                       with_kwargs=True)
    try:
        (imgs, cams, mode), d = _run(m)
    finally:
        h.remove()
    assert mode == "hi3d_depth_refiner"
    assert imgs.shape == (4, 64, 64, 3) and cams.width == 64 and len(cams) == 4
    assert torch.isfinite(imgs).all()
    x, y = seen[0]
    assert x.shape[1] == 17 and x.shape[0] == 8  # cond + uncond batched, 4 frames each
    # the input view (azimuth 0) is last in the SV3D orbit -> rolled to the front for the refiner
    d_rolled = roll_to_front(depth_from_image(d), 3)
    d9 = pack_depth(d_rolled, 8, 8)
    halves = {round(float(t[:, 4:13].abs().sum()), 3): t for t in x.chunk(2)}
    cond = [t for t in x.chunk(2) if t[:, 4:13].abs().sum() > 0][0]
    uncond = [t for t in x.chunk(2) if t[:, 4:13].abs().sum() == 0][0]
    assert len(halves) == 2
    assert torch.allclose(cond[:, 4:13].float(), d9, atol=1e-3)  # depth right after the latent
    assert cond[:, 13:17].abs().sum() > 0 and uncond[:, 13:17].abs().sum() == 0
    assert y.shape == (8, 512)
    (other, _, _), _ = _run(m, seed=1)  # the seed drives the start and condition noise
    assert not torch.equal(imgs, other)


def test_anchored_mode_with_sv3d_model():
    require_comfyui()
    import comfy.model_detection
    import comfy.model_patcher
    from comfy import model_management, supported_models

    sd = random_unet_state_dict(tiny_config(in_channels=8, adm_in_channels=256), seed=4)
    cfg = supported_models.SV3D_u(comfy.model_detection.detect_unet_config(sd, ""))
    model = cfg.get_model({})
    model.load_model_weights(sd, "")
    m = comfy.model_patcher.ModelPatcher(model, load_device=model_management.get_torch_device(),
                                         offload_device=model_management.unet_offload_device())
    (imgs, cams, mode), _ = _run(m, depth=False)
    assert mode.startswith("anchored_sv3d_u")
    assert imgs.shape == (4, 64, 64, 3) and torch.isfinite(imgs).all()


def test_not_a_video_model_is_rejected():
    require_comfyui()
    from orbitforge.nodes.host.models import model_kind

    with pytest.raises(ValueError, match="neither"):
        model_kind(types.SimpleNamespace(model=torch.nn.Linear(1, 1)))
