"""SV3D input preparation and orbit validation (host-free)."""

import pytest
import torch

from orbitforge.kernels.diffusion.sv3d import prepare_input_image
from orbitforge.nodes.sv3d import resolve_orbit


def _rgba(h=100, w=120):
    img = torch.zeros(h, w, 4)
    img[10:30, 70:110, :3] = torch.tensor([0.2, 0.4, 0.6])
    img[10:30, 70:110, 3] = 1.0
    return img


def test_prepare_composites_on_white_centres_and_scales():
    rgb, a = prepare_input_image(_rgba(), size=64, object_scale=0.5)
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
    rgb, a = prepare_input_image(img, mask, size=64, object_scale=0.5)
    ys, xs = torch.nonzero(a > 0.5, as_tuple=True)
    assert ys.max() - ys.min() + 1 == pytest.approx(32, abs=1)  # the 40-px-tall mask region
    with pytest.raises(ValueError, match="empty"):
        prepare_input_image(torch.zeros(100, 120, 4), size=64)
    with pytest.raises(ValueError, match="at least 64"):
        prepare_input_image(torch.ones(40, 120, 3), size=64)


def test_orbit_validation():
    cams, el, az = resolve_orbit("static", 21, 10.0, 0, 64, 48)
    assert az[-1] == 0.0 and len(el) == 21 and len(cams) == 21
    assert (cams.width, cams.height) == (64, 48)
    assert torch.allclose(cams.azimuth.double(), torch.tensor(az, dtype=torch.float64), atol=1e-4)
    with pytest.raises(ValueError, match="elevation"):
        resolve_orbit("static", 21, 91.0, 0, 64, 64)
    with pytest.raises(ValueError, match="CAMERAS"):
        resolve_orbit("cameras", 21, 10.0, 0, 64, 64)
    with pytest.raises(ValueError, match="orbit must be one of"):
        resolve_orbit("uniform", 21, 10.0, 0, 64, 64)


def test_cameras_flow_through_the_sv3d_orbit_unchanged():
    """orbit='cameras': the CAMERAS out are the CAMERAS in (poses untouched, only resized), and
    their own angles condition SV3D -- no rebuild from angles."""
    from orbitforge.kernels.geometry.cameras import make_orbit_cameras

    given = make_orbit_cameras([5.0, 12.5, -3.0], [40.0, 160.0, 0.0], 2.7, 45.0, 32, 32)
    given.viewmats[0, :3, 3] += 0.01  # a pose no orbit rebuild would give back
    cams, el, az = resolve_orbit("cameras", 3, 10.0, 0, 64, 64, given)
    assert torch.equal(cams.viewmats, given.viewmats)
    assert torch.allclose(cams.Ks, given.Ks * torch.tensor([2.0, 2.0, 1.0])[:, None])
    assert el == [float(e) for e in given.elevation] and az == [float(a) for a in given.azimuth]


def test_one_orbit_registry_for_the_camera_and_sv3d_nodes():
    from orbitforge.kernels.geometry import cameras
    from orbitforge.nodes.cameras import OrbitCameras
    from orbitforge.nodes.sv3d import SV3DOrbit

    assert OrbitCameras.INPUT_TYPES()["required"]["orbit"][0] == list(cameras.ORBITS)
    sv3d = SV3DOrbit.INPUT_TYPES()["required"]["orbit"][0]
    assert sv3d == ["static", "dynamic", "cameras"]  # saved workflows use these names
    for name in sv3d[:2]:  # the same angles as the camera node's sv3d_* orbits
        _, el, az = resolve_orbit(name, 21, 10.0, 3, 32, 32)
        ref = OrbitCameras().make(cameras.SV3D_ORBITS[name], 21, 10.0, 2.0, 33.8, 32, 32, 3,
                                  "0", "0, 0, 0")[0]
        assert torch.allclose(ref.azimuth.double(), torch.tensor(az, dtype=torch.float64),
                              atol=1e-4)
        assert torch.allclose(ref.elevation.double(), torch.tensor(el, dtype=torch.float64),
                              atol=1e-4)
