"""Registering views to a fitted scene: orbit cameras found by rendering the Gaussians."""

import math

import pytest
import torch

from orbitforge.kernels.geometry.cameras import make_orbit_cameras
from orbitforge.kernels.splat.fit import render_gaussians
from orbitforge.kernels.splat.gaussians import Gaussians, rgb_to_sh0
from orbitforge.kernels.splat.register import RegisterConfig, register_views


def _coloured_blob(n=4000):
    """Opaque Gaussians on an ellipsoid, coloured by position (no symmetry left to confuse
    azimuth or elevation)."""
    g = torch.Generator().manual_seed(0)
    p = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    p = p * torch.tensor([0.45, 0.3, 0.25])
    rgb = (p / 0.9 + 0.5).clamp(0, 1)
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(n, 4).clone()
    return Gaussians(p, quats, torch.full((n, 3), math.log(0.03)), torch.full((n,), 4.0),
                     rgb_to_sh0(rgb)[:, None])


def test_register_recovers_known_camera_offsets():
    g = _coloured_blob()
    el, az = [15.0, -5.0, 30.0], [30.0, 150.0, 275.0]
    truth = make_orbit_cameras(el, az, 2.0, 33.8, 48, 48)
    views = render_gaussians(g, truth)[0]
    d_el, d_az = [6.0, -9.0, 4.0], [-7.0, 10.0, 13.0]  # what the given cameras are off by
    given = make_orbit_cameras([e + d for e, d in zip(el, d_el)],
                               [a + d for a, d in zip(az, d_az)], 2.0, 33.8, 48, 48)
    reg = register_views(g, views, given, config=RegisterConfig(size=32))
    assert torch.allclose(reg.cameras.elevation.double(), torch.tensor(el, dtype=torch.float64),
                          atol=1.0)
    err_az = reg.cameras.azimuth.double() - torch.tensor(az, dtype=torch.float64)
    err_az = (err_az + 180) % 360 - 180
    assert err_az.abs().max() <= 1.0
    assert torch.allclose(reg.d_elevation, -torch.tensor(d_el, dtype=torch.float64), atol=1.0)
    assert (reg.mse_after < reg.mse_before * 0.1).all()


def test_register_keeps_cameras_that_already_fit():
    g = _coloured_blob()
    cams = make_orbit_cameras([10.0, 20.0], [0.0, 200.0], 2.0, 33.8, 40, 40)
    views = render_gaussians(g, cams)[0]
    reg = register_views(g, views, cams, config=RegisterConfig(size=32))
    assert reg.d_elevation.abs().max() <= 0.5 and reg.d_azimuth.abs().max() <= 0.5
    # near the pole the window is cut at +-89 degrees instead of failing
    top = make_orbit_cameras([80.0], [30.0], 2.0, 33.8, 40, 40)
    reg = register_views(g, render_gaussians(g, top)[0], top, config=RegisterConfig(size=32))
    assert reg.cameras.elevation.abs().max() <= 89.0


def test_register_rejects_bad_input():
    g = _coloured_blob(50)
    cams = make_orbit_cameras([0.0, 0.0], [0.0, 90.0], 2.0, 33.8, 32, 32)
    views = torch.ones(2, 32, 32, 3)
    with pytest.raises(ValueError, match="3 views but 2 cameras"):
        register_views(g, torch.ones(3, 32, 32, 3), cams)
    with pytest.raises(ValueError, match="cameras are 32x32 but the views 40x32"):
        register_views(g, torch.ones(2, 32, 40, 3), cams)
    with pytest.raises(ValueError, match="elevation_range must be in"):
        register_views(g, views, cams, config=RegisterConfig(elevation_range=120))
    with pytest.raises(ValueError, match="final_step"):
        register_views(g, views, cams, config=RegisterConfig(final_step=0))


def test_register_orbit_pulls_noisy_cameras_towards_the_consensus():
    """Views of an orbit whose cameras are each off by up to 8 degrees: registering them to a
    short fit of all of them halves the error (the fit is a compromise of the views, so each
    view is pulled towards where the others put the object)."""
    from orbitforge.kernels.splat.fit import masks_from_background
    from orbitforge.kernels.splat.register import register_orbit

    g = _coloured_blob()
    n = 12
    el = 10 + 12 * torch.sin(torch.arange(n) * 2.0)
    az = torch.arange(n) * 360.0 / n
    views = render_gaussians(g, make_orbit_cameras(el, az, 2.0, 33.8, 40, 40))[0]
    gen = torch.Generator().manual_seed(1)
    noise_el = (torch.rand(n, generator=gen) - 0.5) * 16
    noise_az = (torch.rand(n, generator=gen) - 0.5) * 16
    noise_el -= noise_el.mean()  # no common offset (a rotation of the whole orbit)
    noise_az -= noise_az.mean()
    given = make_orbit_cameras(el + noise_el, az + noise_az, 2.0, 33.8, 40, 40)
    reg = register_orbit(views, given, masks_from_background(views), iterations=200)

    def err(c):
        return float((c.elevation - el).abs().mean()
                     + ((c.azimuth - az + 180) % 360 - 180).abs().mean())

    assert (reg.cameras.width, reg.cameras.height, len(reg.cameras)) == (40, 40, n)
    assert err(reg.cameras) < 0.6 * err(given)
