"""Guidance kernels: official schedules pinned, closed-form guided results on Gaussian denoisers,
one batched call per step, SV3D branch contents, tiny random-weight SVD-family UNet end to end."""

import math

import pytest
import torch

from orbitforge.kernels.diffusion import edm, sv3d
from orbitforge.kernels.diffusion.guidance import (
    FULL,
    NO_INPUT,
    NO_VIEWS,
    cfg_x0,
    constant_scales,
    guided_denoiser,
    harmonyview_x0,
    linear_scales,
    make_guidance,
    make_scales,
    triangle_scales,
)
from orbitforge.kernels.geometry.cameras import sv3d_static_orbit

# official TrianglePredictionGuider(max_scale=2.5, num_frames=21).scale, printed from the
# official class (float32)
OFFICIAL_TRIANGLE_21 = [1.0, 1.149999976158142, 1.2999999523162842, 1.4500000476837158,
                        1.600000023841858, 1.75,
                        1.9000000953674316, 2.049999952316284, 2.200000047683716,
                        2.3499999046325684, 2.5,
                        2.3499999046325684, 2.1999998092651367, 2.0500001907348633,
                        1.9000000953674316, 1.75,
                        1.5999999046325684, 1.4499999284744263, 1.3000000715255737,
                        1.1500000953674316, 1.0]


def test_triangle_matches_official_and_formula():
    s = triangle_scales(21, 1.0, 2.5)
    assert s.tolist() == OFFICIAL_TRIANGLE_21
    for f in range(21):
        v = f / 20
        tri = 2 * abs(v - math.floor(v + 0.5))
        assert s[f].item() == pytest.approx(1 + 1.5 * tri, abs=1e-6)
    assert s[0].item() == 1.0 and s[10].item() == 2.5 and s[20].item() == 1.0


def test_linear_and_constant_schedules():
    torch.testing.assert_close(linear_scales(5, 1.0, 3.0), torch.tensor([1.0, 1.5, 2.0, 2.5, 3.0]))
    assert constant_scales(4, 2.5).tolist() == [2.5] * 4
    with pytest.raises(ValueError, match="schedule"):
        make_scales("cosine", 21)
    with pytest.raises(ValueError, match="guidance"):
        make_guidance("perpneg", 21)


def test_cfg_and_harmonyview_formulas():
    g = torch.Generator().manual_seed(0)
    F_ = 4
    s, u1, u2 = (torch.randn(F_, 2, 3, 3, generator=g) for _ in range(3))
    sc = torch.tensor([1.0, 2.0, 3.0, 4.0])
    out = cfg_x0(u1, s, sc)
    for f in range(F_):
        torch.testing.assert_close(out[f], u1[f] + sc[f] * (s[f] - u1[f]))
    hv = harmonyview_x0(s, u1, u2, 2.0, 1.0)
    torch.testing.assert_close(hv, s + 2.0 * (s - u1) + 1.0 * (s - u2))
    # per-frame s1/s2, batch of 2 videos: (b t) ordering, frames fastest
    s2b, u1b, u2b = (torch.cat([t, t * 0.5]) for t in (s, u1, u2))
    hvb = harmonyview_x0(s2b, u1b, u2b, sc, sc * 0.1)
    for b in range(2):
        for f in range(F_):
            i = b * F_ + f
            torch.testing.assert_close(hvb[i],
                                       s2b[i] + sc[f] * (s2b[i] - u1b[i])
                                       + 0.1 * sc[f] * (s2b[i] - u2b[i]))
    # HarmonyView with s2 = 0, s1 = s - 1 is CFG with scale s
    torch.testing.assert_close(harmonyview_x0(s, u1, u2, sc - 1, 0.0), cfg_x0(u1, s, sc), rtol=1e-5,
                               atol=1e-5)
    with pytest.raises(ValueError, match="per-frame"):
        cfg_x0(u1, s, torch.ones(3), frames=3)
    with pytest.raises(ValueError, match="per-frame"):
        cfg_x0(u1, s, torch.ones(3), frames=4)


def _gaussian_branch_denoiser(mus: dict, sd: float, calls: list):
    """Each branch b is the exact denoiser of data N(mu_b, sd^2) (mu_b per frame [F])."""

    def den(x, sigma, branches):
        calls.append((tuple(branches), x.shape[0]))
        n = len(branches)
        xs = x.chunk(n)
        s2 = sigma.to(x.dtype) ** 2
        out = []
        for b, xb in zip(branches, xs):
            mu = mus[b].to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
            out.append((sd**2 * xb + s2 * mu) / (sd**2 + s2))
        return torch.cat(out)

    return den


@pytest.mark.parametrize("kind", ["harmonyview", "triangle"])
def test_guided_gaussian_sampling_closed_form(kind):
    F_ = 21
    sd = 0.4
    mus = {FULL: torch.linspace(-1, 1, F_, dtype=torch.float64),
           NO_INPUT: torch.zeros(F_, dtype=torch.float64),
           NO_VIEWS: 0.3 * torch.ones(F_, dtype=torch.float64)}
    if kind == "harmonyview":
        gd = make_guidance("harmonyview", F_, s1=2.0, s2=1.0)
        mu_eff = mus[FULL] + 2.0 * (mus[FULL] - mus[NO_INPUT]) + 1.0 * (mus[FULL] - mus[NO_VIEWS])
    else:
        gd = make_guidance("triangle", F_, 1.0, 2.5)
        sc = triangle_scales(F_).double()
        mu_eff = mus[NO_INPUT] + sc * (mus[FULL] - mus[NO_INPUT])
    calls = []
    fn = guided_denoiser(_gaussian_branch_denoiser(mus, sd, calls), gd)
    steps = 12
    sig = edm.edm_sigmas(steps, dtype=torch.float64)
    x_init = edm.initial_noise((F_, 2, 3, 3), 700.0, torch.Generator().manual_seed(3),
                               dtype=torch.float64)
    out = edm.sample_euler(fn, x_init.clone(), sig)
    # guided x0 is again a Gaussian denoiser with mean mu_eff -> closed-form Euler recursion
    y = x_init - mu_eff.view(-1, 1, 1, 1)
    for i in range(steps):
        s, sn = sig[i].item(), sig[i + 1].item()
        y = y * (1 + (sn - s) * s / (sd**2 + s**2))
    torch.testing.assert_close(out, y + mu_eff.view(-1, 1, 1, 1))
    # one batched call per step with all branches
    assert len(calls) == steps
    n = 3 if kind == "harmonyview" else 2
    assert all(c[1] == n * F_ and len(c[0]) == n for c in calls)
    assert calls[0][0] == ((FULL, NO_INPUT, NO_VIEWS) if n == 3 else (NO_INPUT, FULL))


def test_harmony_triangle_schedule_zero_at_ends():
    gd = make_guidance("harmonyview", 21, s1=2.0, s2=1.0, harmony_schedule="triangle")
    s, u1, u2 = torch.ones(21, 1), torch.zeros(21, 1), torch.zeros(21, 1)
    out = gd.combine((s, u1, u2))
    assert out[0].item() == pytest.approx(1.0) and out[20].item() == pytest.approx(1.0)
    assert out[10].item() == pytest.approx(1 + 2 + 1)


# ------------------------------------------------------------------------------ SV3D conditions
def test_official_orbit_angles_and_vector():
    el, az = sv3d_static_orbit(10.0, 21)
    assert az[-1] == 0.0
    assert az[0] == pytest.approx(360 / 21) and az[9] == pytest.approx(10 * 360 / 21)
    polar, azr = sv3d.polar_azimuth_rad(el, az)
    assert polar[0].item() == pytest.approx(math.radians(80.0))
    assert azr[-1].item() == 0.0 and azr[0].item() == pytest.approx(2 * math.pi / 21)
    vec = sv3d.sv3d_vector("p", el, az, 1e-5)
    assert vec.shape == (21, 1280)
    # last frame azimuth 0 (official script): cos part all 1, sin part all 0
    assert torch.equal(vec[-1, 768:1024], torch.ones(256)) and torch.equal(vec[-1, 1024:],
                                                                           torch.zeros(256))
    vec2 = sv3d.sv3d_vector("p", el, az, 1e-5, last_azimuth_2pi=True)
    assert torch.equal(vec[:-1], vec2[:-1]) and not torch.allclose(vec[-1], vec2[-1], atol=1e-3)
    # embedding formula (official timestep_embedding): [cos(t f_k) | sin(t f_k)],
    # f_k = 10000^(-k/half)
    e = sv3d.timestep_embedding(torch.tensor([0.5]), 8)[0]
    ref = ([math.cos(0.5 * 10000 ** (-k / 4)) for k in range(4)]
           + [math.sin(0.5 * 10000 ** (-k / 4)) for k in range(4)])
    torch.testing.assert_close(e, torch.tensor(ref))
    assert sv3d.sv3d_vector("u", el, az).shape == (21, 256)
    torch.testing.assert_close(vec[0, 256:768],
                               sv3d.timestep_embedding(torch.tensor([math.radians(80.0)]), 512)[0])
    with pytest.raises(ValueError, match="elevation"):
        sv3d.sv3d_vector("p", [95.0] * 21, az)


def test_branch_contents():
    F_ = 3
    ca = torch.randn(F_, 1, 8)
    cc = torch.randn(F_, 4, 2, 2)
    vec = torch.randn(F_, 16)
    out = sv3d.branch_conditions(ca, cc, vec, (FULL, NO_INPUT, NO_VIEWS))
    assert torch.equal(out["crossattn"][:F_], ca)
    assert torch.equal(out["crossattn"][F_:2 * F_], torch.zeros_like(ca))
    assert torch.equal(out["crossattn"][2 * F_:], ca)
    assert torch.equal(out["concat"][F_:2 * F_], torch.zeros_like(cc))
    assert torch.equal(out["concat"][2 * F_:], 4 * cc)
    for k in range(3):
        assert torch.equal(out["vector"][k * F_:(k + 1) * F_], vec)  # cameras kept in every branch
    assert out["image_only_indicator"].tolist() == [[0.0] * F_, [0.0] * F_, [1.0] * F_]


# ------------------------------------------------------------------------------ tiny SVD UNet
@pytest.fixture(scope="module")
def tiny_unet():
    """Built once per module (on the tests' one intra-op thread, tests/conftest.py: with tiny
    tensors OpenMP's 2-thread barriers made each forward ~100x slower on a shared 2-core box)."""
    from orbitforge.bench.guidance import tiny_diffusers_unet

    _import_diffusers_unet()
    unet = tiny_diffusers_unet(cross_dim=16, channels=(32, 64))
    forwards = []
    # videos per forward
    handle = unet.register_forward_hook(lambda m, a, o: forwards.append(a[0].shape[0]))
    try:
        yield unet, forwards
    finally:
        handle.remove()


def _import_diffusers_unet():
    """Import diffusers' SVD UNet with comfy_host's torchvision stand-in (installed when a ComfyUI
    test ran earlier in this process) hidden: transformers would take the stub for a real
    torchvision and fail importing torchvision.transforms.functional."""
    import sys

    stub = {k: m for k, m in sys.modules.items()
            if (k == "torchvision" or k.startswith("torchvision."))
            and getattr(m, "__file__", None) is None}
    for k in stub:
        del sys.modules[k]
    try:
        if stub:  # transformers caches the (wrong) answer it got while the stub was visible
            from transformers.utils import import_utils

            import_utils.is_torchvision_available.cache_clear()
        from diffusers import UNetSpatioTemporalConditionModel  # noqa: F401
    finally:
        sys.modules.update(stub)


def _unet_branch_denoiser(unet, ca, cc, ids, calls):
    """bench.guidance's host-free branch denoiser (all branches = videos of ONE UNet forward, the
    no_views videos with image_only_indicator = 1), counting the branch-denoiser calls."""
    from orbitforge.bench.guidance import diffusers_branch_denoiser

    inner = diffusers_branch_denoiser(unet, ca, cc, ids)

    def den(x, sigma, branches):
        calls.append(len(branches))
        return inner(x, sigma, branches)

    return den


def test_tiny_unet_sampling_deterministic_and_consistent(tiny_unet):
    unet, forwards = tiny_unet
    F_ = 3
    g = torch.Generator().manual_seed(1)
    ca = torch.randn(1, 1, 16, generator=g).expand(F_, 1, 16)
    cc = torch.randn(1, 4, 4, 4, generator=g).expand(F_, 4, 4, 4)
    ids = torch.tensor([[1e-5, 1.4, 0.0]])
    calls = []
    den = _unet_branch_denoiser(unet, ca, cc, ids, calls)
    sig = edm.edm_sigmas(2)
    forwards.clear()
    with torch.no_grad():
        hv = guided_denoiser(den, make_guidance("harmonyview", F_, s1=1.5, s2=0.0))
        x0 = edm.initial_noise((F_, 4, 4, 4), 700.0, torch.Generator().manual_seed(7))
        a = edm.sample_euler(hv, x0, sig)
        cfg = guided_denoiser(den, make_guidance("constant", F_, max_scale=2.5))
        x0 = edm.initial_noise((F_, 4, 4, 4), 700.0, torch.Generator().manual_seed(7))
        c = edm.sample_euler(cfg, x0, sig)
        # deterministic for a seed: the same first denoised step twice
        x0 = edm.initial_noise((F_, 4, 4, 4), 700.0, torch.Generator().manual_seed(7))
        assert torch.equal(cfg(x0, sig[0]), cfg(x0.clone(), sig[0]))
    assert torch.isfinite(a).all() and a.abs().max() > 0
    # HarmonyView(s1 = 1.5, s2 = 0) == CFG 2.5 with the same network
    torch.testing.assert_close(a, c, rtol=1e-3, atol=1e-3)
    assert calls == [3] * 2 + [2] * 4  # one batched call per step
    # ... and ONE UNet forward per call, all branches as videos
    assert forwards == [3] * 2 + [2] * 4


def test_tiny_unet_no_views_branch_has_no_cross_frame_interaction(tiny_unet):
    unet, forwards = tiny_unet
    F_ = 3
    g = torch.Generator().manual_seed(2)
    ca = torch.randn(F_, 1, 16, generator=g)
    cc = torch.randn(F_, 4, 4, 4, generator=g)
    ids = torch.tensor([[1e-5, 1.4, 0.0]])
    den = _unet_branch_denoiser(unet, ca, cc, ids, [])
    x = torch.randn(F_, 4, 4, 4, generator=g)
    x2 = x.clone()
    x2[2] += 1.0  # perturb another frame
    sigma = torch.tensor(2.0)
    branches = (FULL, NO_INPUT, NO_VIEWS)
    forwards.clear()
    with torch.no_grad():
        o1 = den(torch.cat([x] * 3), sigma, branches).chunk(3)  # all three branches in one forward
        o2 = den(torch.cat([x2] * 3), sigma, branches).chunk(3)
        nv_alone = den(x, sigma, (NO_VIEWS,))
    assert forwards == [3, 3, 1]
    # no_views: frame 0 unaffected without temporal mixing
    torch.testing.assert_close(o1[2][0], o2[2][0])
    assert (o1[0][0] - o2[0][0]).abs().max() > 1e-4  # the full branch mixes frames
    assert (o1[1][0] - o2[1][0]).abs().max() > 1e-4  # so does no_input
    # batching the branches does not leak the indicator across videos:
    # no_views alone == in the batch
    torch.testing.assert_close(nv_alone, o1[2], rtol=1e-4, atol=1e-5)
