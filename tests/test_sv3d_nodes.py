"""SV3D input preparation and orbit validation (host-free)."""

import pytest
import torch

from orbitforge.kernels import sv3d as S
from orbitforge.nodes.sv3d import resolve_orbit


def _rgba(h=100, w=120):
    img = torch.zeros(h, w, 4)
    img[10:30, 70:110, :3] = torch.tensor([0.2, 0.4, 0.6])
    img[10:30, 70:110, 3] = 1.0
    return img


def test_prepare_composites_on_white_centres_and_scales():
    rgb, a = S.prepare_input_image(_rgba(), size=64, object_scale=0.5)
    assert rgb.shape == (64, 64, 3)
    assert torch.equal(rgb[0, 0], torch.ones(3))  # white background
    ys, xs = torch.nonzero(a > 0.5, as_tuple=True)
    # longest side (40 px) -> 0.5 * 64 = 32 px, centred
    assert xs.max() - xs.min() + 1 == pytest.approx(32, abs=1)
    assert (xs.min() + xs.max()) / 2 == pytest.approx(31.5, abs=1)
    assert (ys.min() + ys.max()) / 2 == pytest.approx(31.5, abs=1)
    torch.testing.assert_close(rgb[32, 32], torch.tensor([0.2, 0.4, 0.6]), atol=2e-2, rtol=0)


def test_mask_overrides_alpha_and_errors():
    img = _rgba()
    mask = torch.ones(100, 120)
    mask[50:90, 10:30] = 0  # ComfyUI MASK: 1 = background
    rgb, a = S.prepare_input_image(img, mask, size=64, object_scale=0.5)
    ys, xs = torch.nonzero(a > 0.5, as_tuple=True)
    assert ys.max() - ys.min() + 1 == pytest.approx(32, abs=1)  # the 40-px-tall mask region
    with pytest.raises(ValueError, match="empty"):
        S.prepare_input_image(torch.zeros(100, 120, 4), size=64)
    with pytest.raises(ValueError, match="at least 64"):
        S.prepare_input_image(torch.ones(40, 120, 3), size=64)


def test_orbit_validation():
    el, az = resolve_orbit("static", 21, 10.0, 0)
    assert az[-1] == 0.0 and len(el) == 21
    with pytest.raises(ValueError, match="elevation"):
        resolve_orbit("static", 21, 91.0, 0)
    with pytest.raises(ValueError, match="CAMERAS"):
        resolve_orbit("cameras", 21, 10.0, 0)
