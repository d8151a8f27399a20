"""Synthetic generated-orbit degradations (bench/degrade.py): deterministic, each does its job."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from orbitforge.bench.degrade import (
    DegradeConfig,
    draw_degradations,
    only,
    preset,
    quantize_palette,
    render_degraded,
    warp_field,
    warp_images,
)
from orbitforge.kernels.geometry.cameras import make_orbit_cameras
from orbitforge.kernels.mesh.render import normalize_mesh, render_mesh
from orbitforge.kernels.sample import load_sample_mesh
from orbitforge.kernels.splat.fit import masks_from_background

RES = 32


@pytest.fixture(scope="module")
def spot():
    mesh, _, _ = normalize_mesh(load_sample_mesh())
    return mesh


@pytest.fixture(scope="module")
def cams():
    return make_orbit_cameras([5.0, 10.0, 0.0, -5.0], [0.0, 90.0, 180.0, 270.0], 2.2, 33.8,
                              RES, RES)


def small(stage=None, **kw):
    base = DegradeConfig(render_res=4 * RES, **kw)
    return base if stage is None else only(stage, base)


def test_same_seed_same_views_other_seed_other_views(spot, cams):
    a = render_degraded(spot, cams, seed=3, config=small())
    b = render_degraded(spot, cams, seed=3, config=small())
    c = render_degraded(spot, cams, seed=4, config=small())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert a[0].shape == (4, RES, RES, 3) and a[1].shape == (4, RES, RES)
    # the pipeline gets the nominal cameras back, untouched
    assert torch.equal(a[2].viewmats, cams.viewmats)


def test_camera_error_renders_at_perturbed_cameras_within_bounds(spot, cams):
    cfg = small("camera")
    imgs, _, nominal, info = render_degraded(spot, cams, 0, cfg, return_info=True)
    true = info["true_cameras"]
    d_el = (true.elevation - cams.elevation).abs()
    d_az = ((true.azimuth - cams.azimuth + 180) % 360 - 180).abs()
    d_r = (true.radius / cams.radius - 1).abs()
    assert d_el.max() <= 2.0 + 1e-4 and d_az.max() <= 2.0 + 1e-3 and d_r.max() <= 0.02 + 1e-6
    assert d_el.max() > 0.2 and d_az.max() > 0.2 and d_r.max() > 0.002
    # the views ARE the renders at the true cameras, and not those at the nominal ones
    at_true = render_mesh(spot, true)["rgb"]
    at_nominal = render_mesh(spot, nominal)["rgb"]
    assert torch.allclose(imgs, at_true, atol=1e-6)
    assert (imgs - at_nominal).abs().mean() > 1e-3


def test_color_drift_is_gain_and_gamma_on_the_object_only(spot, cams):
    cfg = small("color")
    imgs, _, _, info = render_degraded(spot, cams, 1, cfg, return_info=True)
    d = info["degradations"]
    assert (np.abs(d.gain - 1) <= 0.1).all() and (np.abs(d.gamma - 1) <= 0.1).all()
    assert np.abs(d.gain - 1).max() > 0.02
    clean = render_mesh(spot, cams)
    m = clean["mask"] > 0.999
    gain = torch.from_numpy(d.gain).float()[:, None, None]
    gamma = torch.from_numpy(d.gamma).float()[:, None, None]
    want = (gain * clean["rgb"].clamp(0, 1) ** gamma).clamp(0, 1)
    assert torch.allclose(imgs[m], want[m], atol=1e-5)
    bg = clean["mask"] == 0
    assert torch.equal(imgs[bg], clean["rgb"][bg])  # white stays white
    assert (imgs[m] - clean["rgb"][m]).abs().mean() > 0.01


def test_warp_is_smooth_bounded_and_moves_the_object(spot, cams):
    ctrl = torch.from_numpy(draw_degradations(3, 0).warp_ctrl).float()
    disp = warp_field(ctrl, 64, 64, 0.015)  # [3,64,64,2] pixels
    assert disp.norm(dim=-1).flatten(1).amax(-1).sub(0.015 * 64).abs().max() < 1e-4
    # smooth: neighbouring pixels move almost alike (a few % of the peak per pixel)
    assert (disp[:, 1:] - disp[:, :-1]).norm(dim=-1).max() < 0.1 * 0.015 * 64
    # a constant displacement of 2 px is a 2 px shift
    img = torch.rand(1, 16, 16, 3)
    shifted = warp_images(img, torch.tensor([2.0, 0.0]).expand(1, 16, 16, 2), (1.0, 1.0, 1.0))
    assert torch.allclose(shifted[:, :, :-2], img[:, :, 2:], atol=1e-5)
    assert torch.allclose(shifted[:, :, -2:], torch.ones(1, 16, 2, 3))  # background comes in
    # on the orbit: the silhouette moves, by at most the amplitude
    cfg = small("warp", warp=0.05)
    _, masks, _ = render_degraded(spot, cams, 0, cfg)
    clean = masks_from_background(render_mesh(spot, cams)["rgb"])
    assert (masks != clean).any()
    dist = torch.cdist(torch.nonzero(masks[0]).float(), torch.nonzero(clean[0]).float())
    assert dist.min(1).values.max() <= 0.05 * RES + 1.5


def test_low_resolution_is_the_area_downsampled_big_render(spot, cams):
    imgs, _, _ = render_degraded(spot, cams, 0, small("resolution"))
    big = render_mesh(spot, cams.resized(4 * RES, 4 * RES))["rgb"]
    want = F.interpolate(big.permute(0, 3, 1, 2), size=(RES, RES), mode="area")
    assert torch.allclose(imgs, want.permute(0, 2, 3, 1), atol=1e-5)
    with pytest.raises(ValueError, match="render_res"):
        render_degraded(spot, cams, 0, DegradeConfig(render_res=RES // 2))


def test_palette_has_at_most_256_colours_and_stays_close():
    gen = torch.Generator().manual_seed(0)
    img = torch.rand(2, 40, 40, 3, generator=gen)  # 1600 distinct colours per view
    q = quantize_palette(img, 256, dither=True)
    for v in q:
        assert len(torch.unique(v.reshape(-1, 3), dim=0)) <= 256
    assert (q - img).abs().mean() < 0.1
    few = quantize_palette(img, 8, dither=False)
    assert len(torch.unique(few[0].reshape(-1, 3), dim=0)) <= 8


def test_masks_come_from_thresholding_the_background(spot, cams):
    imgs, masks, _ = render_degraded(spot, cams, 0, small())
    assert torch.equal(masks, masks_from_background(imgs))
    assert set(torch.unique(masks).tolist()) <= {0.0, 1.0}


def test_presets_and_bad_stage():
    assert preset("generated") == DegradeConfig()
    with pytest.raises(ValueError, match="preset"):
        preset("nope")
    with pytest.raises(ValueError, match="stage"):
        only("blur")
