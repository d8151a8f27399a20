"""Gaussian nodes as ComfyUI calls them (under inference mode, outputs in core layouts)."""

import os

import pytest
import torch

from orbitforge.kernels.geometry.cameras import make_orbit_cameras
from orbitforge.kernels.sample import load_sample_orbit
from orbitforge.nodes.gaussians import (
    GaussianReconstruct,
    GaussianRender,
    LoadGaussians,
    SaveGaussians,
)
from orbitforge.nodes.priors import IPSMGeometryPriors


@pytest.fixture(scope="module")
def tiny():
    images, masks, cams = load_sample_orbit()
    idx = list(range(0, 21, 4))
    im = torch.nn.functional.interpolate(images[idx].permute(0, 3, 1, 2), size=(40, 40),
                                         mode="area").permute(0, 2, 3, 1).contiguous()
    mk = torch.nn.functional.interpolate(masks[idx][:, None], size=(40, 40), mode="area")[:, 0]
    return im, mk, cams[idx].resized(40, 40)


@pytest.fixture
def out_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ORBITFORGE_OUTPUT", str(tmp_path))
    return tmp_path


def test_reconstruct_render_save_load_roundtrip(tiny, out_dir):
    im, mk, cams = tiny
    with torch.inference_mode():  # ComfyUI runs nodes like this
        g, renders = GaussianReconstruct().reconstruct(im, cams, 6, 0, 0, 0, mask=mk)
        rgb, alpha, depth = GaussianRender().render(g, cams, "median", "1, 1, 1")
    assert renders.shape == im.shape and rgb.shape == im.shape
    assert alpha.shape == mk.shape and depth.shape == im.shape
    assert 0 <= float(rgb.min()) and float(rgb.max()) <= 1
    # depth IMAGE: near is bright, background black, per-view min-max
    cover = alpha > 0.5
    assert float(depth[..., 0][~cover].max()) == 0.0
    assert float(depth[..., 0][cover].max()) == pytest.approx(1.0, abs=1e-5)
    res = SaveGaussians().save(g, "orbitforge/test")
    rel = res["result"][0]
    assert res["ui"]["3d"][0]["filename"] == os.path.basename(rel)
    assert os.path.isfile(out_dir / rel)
    (h,) = LoadGaussians().load(rel)  # SPLATs (3DGS frame), as core's
    assert torch.equal(h.positions, g.positions) and torch.equal(h.sh, g.sh)
    # a second save never overwrites the first
    rel2 = SaveGaussians().save(g, "orbitforge/test")["result"][0]
    assert rel2 != rel


def test_reconstruct_with_ipsm_priors_runs(tiny):
    im, mk, cams = tiny
    (priors,) = IPSMGeometryPriors().make(0.5, 1, 1, 0.0)
    with torch.inference_mode():
        g, _ = GaussianReconstruct().reconstruct(im, cams, 3, 0, 0, 0, mask=mk, priors=priors)
    assert g.positions.shape[1] > 0 and torch.isfinite(g.positions).all()


def test_reconstruct_refuses_bad_input_before_work(tiny):
    im, mk, cams = tiny
    node = GaussianReconstruct()
    with pytest.raises(ValueError, match="views but"):
        node.reconstruct(im[:3], cams, 5, 0, 0, 0)
    with pytest.raises(ValueError, match="empty"):
        node.reconstruct(im, cams, 5, 0, 0, 0, mask=torch.zeros_like(mk))
    inside = make_orbit_cameras([0] * 6, [0, 60, 120, 180, 240, 300], 0.3, 33.8, 40, 40)
    with pytest.raises(ValueError, match="inside the object"):
        node.reconstruct(im, inside, 5, 0, 0, 0, mask=mk)
    with pytest.raises(ValueError, match="view_weights"):
        node.reconstruct(im, cams, 5, 0, 0, 0, mask=mk, view_weights="1, 2")
    with pytest.raises(ValueError, match="background"):
        node.reconstruct(im, cams, 5, 0, 0, 0, mask=mk, background="white")
    with pytest.raises(ValueError, match="CAMERAS"):
        node.reconstruct(im, "not cameras", 5, 0, 0, 0)


def test_save_refuses_escaping_prefix(tiny, out_dir):
    with pytest.raises(ValueError, match="relative name"):
        SaveGaussians().save(_one(), "../outside")
    assert os.listdir(out_dir) == []


def test_load_refuses_foreign_file(out_dir):
    p = out_dir / "x.ply"
    p.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n0\n")
    with pytest.raises(ValueError, match="binary_little_endian"):
        LoadGaussians().load(str(p))


def _one():
    from orbitforge.kernels.splat.gaussians import Gaussians

    return Gaussians(torch.zeros(1, 3), torch.tensor([[1.0, 0, 0, 0]]), torch.zeros(1, 3),
                     torch.zeros(1), torch.zeros(1, 1, 3))
