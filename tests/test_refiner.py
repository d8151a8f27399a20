"""Hi3D stage-2 refiner: depth packing, anchoring, anchored loop, checkpoint
read/validate/convert."""

import hashlib
import math
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from orbitforge.bench.tiny_hi3d import random_unet_state_dict, tiny_config
from orbitforge.kernels.diffusion import edm
from orbitforge.kernels.diffusion.depth_condition import (
    anchor_alphas,
    check_refine_inputs,
    depth_from_image,
    pack_depth,
    reference_index,
    refine_latents,
    reprojection_error,
    roll_back,
    roll_to_front,
    sample_anchored,
    to_disparity,
    unpack_depth,
)
from orbitforge.kernels.diffusion.hi3d_checkpoint import (
    FORMAT_TAG,
    HI3D_STAGE2,
    CheckpointError,
    UNetConfig,
    convert_main,
    load_stage2_unet,
    read_state_dict,
    unet_layout,
    validate_stage2,
)

# ------------------------------------------------------------------------------ depth packing


def test_pack_depth_hand_computed():
    d = torch.arange(36, dtype=torch.float32).view(1, 6, 6)  # already 3h x 3w for a 2x2 latent
    flat = torch.full((1, 6, 6), 0.25)  # a constant frame normalises to 0 (max(0, 1e-6))
    p = pack_depth(torch.cat([d, flat]), 2, 2)
    assert p.shape == (2, 9, 2, 2)
    # channel 3*dy + dx at latent (i, j) holds pixel (3i + dy, 3j + dx), min-max 0..35 -> /35
    assert p[0, 0, 0, 0] == 0
    assert p[0, 1, 0, 0] == pytest.approx(1 / 35)  # pixel (0, 1)
    assert p[0, 3, 0, 0] == pytest.approx(6 / 35)  # pixel (1, 0)
    assert p[0, 4, 0, 1] == pytest.approx(10 / 35)  # pixel (1, 4)
    assert p[0, 8, 1, 1] == pytest.approx(1.0)  # pixel (5, 5)
    assert p[0, 2, 1, 0] == pytest.approx(20 / 35)  # pixel (3, 2)
    assert torch.all(p[1] == 0)
    assert torch.equal(unpack_depth(p)[0], d[0] / 35)


def test_pack_depth_resizes_bilinear_then_normalises():
    ramp = torch.arange(12, dtype=torch.float32).expand(12, 12)[None]  # value = column x
    p = pack_depth(ramp, 2, 2)  # resize 12 -> 6: sample at x = 2j + 0.5, then min-max
    full = unpack_depth(p)[0]  # [6, 6]
    expect = torch.tensor([2 * j for j in range(6)], dtype=torch.float32) / 10
    assert torch.allclose(full, expect.expand(6, 6), atol=1e-6)


def test_depth_kinds():
    d = torch.tensor([[[0.0, 1.0], [2.0, 4.0]]])
    assert torch.equal(to_disparity(d, "near_bright"), d)
    m = to_disparity(d, "metric")
    assert m[0, 0, 0] == 0 and m[0, 0, 1] == 1 and m[0, 1, 1] == 0.25  # background 0, 1/d
    fb = to_disparity(d, "far_bright")
    assert fb[0, 0, 0] == 0 and fb[0, 0, 1] > fb[0, 1, 0] > fb[0, 1, 1] > 0  # near brightest
    with pytest.raises(ValueError, match="depth kind"):
        to_disparity(d, "inverse")
    with pytest.raises(ValueError, match=r"\[F,H,W\]"):
        pack_depth(torch.zeros(2, 3, 4, 4), 1, 1)


def test_depth_from_image_mean():
    img = torch.rand(3, 5, 5, 3)
    assert torch.allclose(depth_from_image(img), img.mean(-1))


# ------------------------------------------------------------------------------ anchoring


def test_anchor_schedule_official_values():
    a = anchor_alphas(25)
    assert a.shape == (25,)
    assert a[0] == 1.0
    assert a[1].item() == pytest.approx(0.9841262702080511, rel=1e-12)
    assert a[10].item() == pytest.approx(0.1997313941826594, rel=1e-12)  # cos(0.4), not cos(0.4 pi)
    assert a[24].item() == pytest.approx(6.818529323626363e-05, rel=1e-9)
    assert torch.all(a[1:] < a[:-1])
    assert torch.allclose(anchor_alphas(25, 0.5), 0.5 * a)
    assert torch.all(anchor_alphas(25, 0.0) == 0)
    with pytest.raises(ValueError, match="strength"):
        anchor_alphas(25, 1.5)


def _toy_denoiser(target):
    def fn(x, sigma):  # pulls x towards `target` like a (poor) denoiser
        return 0.5 * x / (1 + sigma) + 0.5 * target
    return fn


def test_anchored_loop_matches_manual_two_steps():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 4, 2, 2, generator=g)
    eps = torch.randn(3, 4, 2, 2, generator=g)
    sig = edm.edm_sigmas(2)
    alphas = [1.0, 0.3]
    den = _toy_denoiser(torch.ones_like(z))
    x0 = eps * math.sqrt(1 + sig[0] ** 2)
    got = sample_anchored(den, x0, sig, z, eps, alphas)
    x = z + sig[0] * eps  # alpha_0 = 1 replaces the start
    x = edm.euler_step(x, den(x, sig[0]), sig[0], sig[1])
    x = 0.7 * x + 0.3 * (z + sig[1] * eps)
    x = edm.euler_step(x, den(x, sig[1]), sig[1], sig[2])
    assert torch.allclose(got, x, atol=1e-5)


def test_zero_strength_is_plain_euler():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 4, 3, 3, generator=g)
    eps = torch.randn(2, 4, 3, 3, generator=g)
    sig = edm.edm_sigmas(5)
    den = _toy_denoiser(z)
    x0 = eps * math.sqrt(1 + sig[0] ** 2)
    a = sample_anchored(den, x0, sig, z, eps, anchor_alphas(5, 0.0).tolist())
    b = edm.sample_euler(den, x0.clone(), sig)
    assert torch.allclose(a, b)


def test_anchoring_pulls_towards_anchor():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(2, 4, 4, 4, generator=g)
    den = _toy_denoiser(torch.zeros_like(z))  # a model that knows nothing about z
    on = refine_latents(den, z, steps=10, strength=1.0, generator=torch.Generator().manual_seed(3))
    off = refine_latents(den, z, steps=10, strength=0.0, generator=torch.Generator().manual_seed(3))
    again = refine_latents(den, z, steps=10, strength=1.0,
                           generator=torch.Generator().manual_seed(3))
    assert torch.equal(on, again)  # seeded
    assert (on - z).norm() < (off - z).norm()


def test_reference_index_and_roll():
    assert reference_index(torch.tensor([17.1, 34.3, 0.0]), 3) == 2  # SV3D: input view last
    assert reference_index(torch.tensor([0.0, 22.5, 45.0]), 3) == 0  # Hi3D: first
    assert reference_index(torch.tensor([90.0, 359.0, 180.0]), 3) == 1
    x = torch.arange(5)
    assert roll_to_front(x, 4).tolist() == [4, 0, 1, 2, 3]
    assert torch.equal(roll_back(roll_to_front(x, 3), 3), x)


def test_reprojection_error_zero_for_true_depth_of_plane():
    from orbitforge.kernels.geometry.cameras import camera_rays, make_orbit_cameras

    cams = make_orbit_cameras([0.0, 0.0], [0.0, 10.0], 2.0, 40.0, 32, 32)
    # depth of the plane z_world = 0 seen from each camera (exact, analytic)
    depths = []
    for i in range(2):
        c, dw = camera_rays(cams.viewmats[i:i + 1].double(), cams.Ks[i:i + 1].double(), 32, 32)
        c, dw = c[0], dw[0]  # world direction per unit camera z
        t = -c[2] / dw[..., 2]
        depths.append(t)
    d = torch.stack(depths).float()
    err = reprojection_error(d, cams.viewmats, cams.Ks, closed=False)
    assert err[0] < 2e-2  # nearest-pixel sampling only
    err_bad = reprojection_error(torch.stack([d[0], d[1] * 1.3]), cams.viewmats, cams.Ks,
                                 closed=False)
    assert err_bad[0] > 0.15


# ------------------------------------------------------------------------------ checkpoint

OFFICIAL_LAYOUT_SHA = "61ce69439ad4ceb85efa2bef23fe8ee34529021068ef05d9f119ecbc360f5e57"


def test_official_layout_pinned():
    """The layout of configs/inference-v02.yaml's UNet (verified key-by-key against ComfyUI's
    VideoUNet in test_refiner_comfyui.py); pinned so edits cannot silently change it."""
    L = unet_layout(HI3D_STAGE2)
    assert len(L) == 1428
    assert sum(math.prod(v) for v in L.values()) == 1524321322
    s = "\n".join(f"{k} {list(v)}" for k, v in sorted(L.items()))
    assert hashlib.sha256(s.encode()).hexdigest() == OFFICIAL_LAYOUT_SHA
    assert L["input_blocks.0.0.weight"] == (320, 17, 3, 3)
    assert L["label_emb.0.0.weight"] == (1280, 512)


def _tiny(seed=0, **kw):
    return random_unet_state_dict(tiny_config(**kw), seed=seed)


def _save_deepspeed(unet, path, extra=True):
    inner = {f"module.model.diffusion_model.{k}": v for k, v in unet.items()}
    if extra:  # the real file also holds the conditioner and the VAE
        inner["module.conditioner.embedders.2.model.pretrained.weight"] = torch.randn(3, 3)
        inner["module.first_stage_model.decoder.conv_in.weight"] = torch.randn(2, 2)
    torch.save({"module": inner}, path)


def test_tiny_round_trip_bit_exact(tmp_path):
    unet = _tiny(seed=5)
    pt = tmp_path / "second_stage.pt"
    _save_deepspeed(unet, pt)
    loaded, cfg = load_stage2_unet(str(pt))
    assert cfg == tiny_config()
    assert set(loaded) == set(unet)
    out = tmp_path / "refiner.safetensors"
    assert convert_main([str(pt), str(out)]) == 0
    again, cfg2 = load_stage2_unet(str(out))
    assert cfg2 == cfg
    for k, v in unet.items():
        assert again[k].dtype == v.dtype and torch.equal(again[k], v), k
    _, meta = read_state_dict(str(out))
    assert meta["format"] == FORMAT_TAG and UNetConfig.from_json(meta["config"]) == cfg
    # fp16 conversion keeps keys, casts floats
    out16 = tmp_path / "refiner16.safetensors"
    assert convert_main([str(pt), str(out16), "--dtype", "fp16"]) == 0
    half, _ = load_stage2_unet(str(out16))
    assert half["out.2.weight"].dtype == torch.float16
    assert torch.equal(half["out.2.weight"], unet["out.2.weight"].half())


def test_safetensors_with_engine_prefix_and_module_prefix(tmp_path):
    unet = _tiny(seed=1)
    p = tmp_path / "full.safetensors"
    save_file({f"module.model.diffusion_model.{k}": v for k, v in unet.items()}, str(p))
    got, _ = load_stage2_unet(str(p))
    assert all(torch.equal(got[k], unet[k]) for k in unet)


def test_rejects_eight_channel_model(tmp_path):
    sd = random_unet_state_dict(tiny_config(in_channels=8, adm_in_channels=256))
    p = tmp_path / "sv3d.pt"
    _save_deepspeed(sd, p, extra=False)
    with pytest.raises(CheckpointError, match="17") as e:
        load_stage2_unet(str(p))
    assert "anchored mode" in str(e.value) and "512" in str(e.value)
    assert convert_main([str(p), str(tmp_path / "x.safetensors")]) == 2
    assert not (tmp_path / "x.safetensors").exists()


def test_lists_missing_and_mismatched_keys():
    sd = _tiny()
    del sd["output_blocks.0.0.skip_connection.weight"]
    sd["middle_block.1.proj_in.weight"] = torch.zeros(3, 3)
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as e:
        validate_stage2(sd)
    msg = str(e.value)
    assert "missing keys: output_blocks.0.0.skip_connection.weight" in msg
    assert "unexpected keys: extra.weight" in msg
    assert "middle_block.1.proj_in.weight: got (3, 3) expected (128, 128)" in msg
    with pytest.raises(CheckpointError, match="official"):
        validate_stage2(_tiny(), require_official=True)


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.makedirs, (self.path,))


def test_refuses_pickled_code_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pt"
    with open(p, "wb") as f:
        pickle.dump({"module": {"module.x": _Evil(str(marker))}}, f)
    with pytest.raises(CheckpointError, match="never runs pickled code"):
        read_state_dict(str(p))
    assert not marker.exists()


def test_refuses_non_state_dicts(tmp_path):
    p = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], p)
    with pytest.raises(CheckpointError, match="expected a state dict"):
        read_state_dict(str(p))
    p2 = tmp_path / "mixed.pt"
    torch.save({"a.weight": torch.zeros(1), "step": 3}, p2)
    with pytest.raises(CheckpointError, match="'step' \\(int\\)"):
        read_state_dict(str(p2))
    p3 = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(1)}, p3)
    with pytest.raises(CheckpointError, match="no UNet weights"):
        load_stage2_unet(str(p3))
    with pytest.raises(CheckpointError, match="no such file"):
        read_state_dict(str(tmp_path / "missing.pt"))


def test_convert_argument_errors(tmp_path, capsys):
    p = tmp_path / "a.pt"
    _save_deepspeed(_tiny(), p, extra=False)
    assert convert_main([str(p), str(tmp_path / "out.bin")]) == 2
    assert "must end in .safetensors" in capsys.readouterr().err


# ------------------------------------------------------------------------------ node validation


def test_node_bad_inputs():
    v = torch.rand(4, 32, 32, 3)
    d = torch.rand(4, 32, 32, 3)
    ok = dict(kind="hi3d_stage2", views=v, depth=d, cameras=None, target_size=64, cfg_min=1.0,
              cfg_max=2.0)
    check_refine_inputs(**ok)
    with pytest.raises(ValueError, match="square"):
        check_refine_inputs(**dict(ok, views=torch.rand(4, 32, 48, 3), depth=d))
    with pytest.raises(ValueError, match="multiple of 64"):
        check_refine_inputs(**dict(ok, target_size=1000))
    with pytest.raises(ValueError, match="depth has 3 images but views has 4"):
        check_refine_inputs(**dict(ok, depth=d[:3]))
    with pytest.raises(ValueError, match="needs a depth IMAGE"):
        check_refine_inputs(**dict(ok, depth=None))
    check_refine_inputs(**dict(ok, kind="sv3d_u", depth=None))  # anchored mode: no depth needed
