"""SV3D masked SDS and IPSM score terms (kernels/priors/sds.py), all without model weights."""

import pytest
import torch

from orbitforge.kernels.diffusion import edm
from orbitforge.kernels.geometry.cameras import camera_centers, camera_rays, make_orbit_cameras
from orbitforge.kernels.priors import sds

# ----------------------------------------------------------------------------------------------
# A unit-diameter sphere ray cast analytically
# ----------------------------------------------------------------------------------------------

R_SPHERE = 0.5


def raycast_sphere(cams):
    """depth [C,H,W,1] (camera z, 0 empty), points [C,H,W,3], analytic normals [C,H,W,3]."""
    o, d = camera_rays(cams.viewmats.double(), cams.Ks.double(), cams.height, cams.width)
    o = o[:, None, None, :].expand_as(d)  # d: world direction with camera z = 1
    a = (d * d).sum(-1)
    b = 2 * (o * d).sum(-1)
    c = (o * o).sum(-1) - R_SPHERE**2
    disc = b * b - 4 * a * c
    t = (-b - disc.clamp_min(0).sqrt()) / (2 * a)
    hit = (disc > 0) & (t > 0)
    depth = torch.where(hit, t, torch.zeros_like(t))[..., None]
    pts = o + d * depth
    nrm = torch.where(hit[..., None], pts / R_SPHERE, torch.zeros_like(pts))
    return depth.float(), pts.float(), nrm.float()


def test_smoothstep():
    x = torch.tensor([-1.0, 0.0, 0.125, 0.25, 0.375, 0.5, 2.0])
    s = sds.smoothstep(x, 0.0, 0.5)
    exp = torch.tensor([0, 0, 0.15625, 0.5, 0.84375, 1, 1])
    assert torch.allclose(s, exp)
    with pytest.raises(ValueError):
        sds.smoothstep(x, 0.5, 0.5)


def test_visibility_mask_on_sphere_with_known_cameras():
    refs = make_orbit_cameras([0.0, 0.0], [0.0, 90.0], 2.0, 33.8, 8, 8)  # front (+z) and +x
    ref_c = camera_centers(refs.viewmats)
    views = make_orbit_cameras([0.0, 20.0, -10.0], [0.0, 225.0, 135.0], 2.0, 33.8, 48, 48)
    depth, pts, nrm = raycast_sphere(views)
    valid = depth > 0
    m = sds.visibility_mask(pts, nrm, ref_c, valid=valid)
    assert m.shape == (3, 48, 48, 1)
    assert (m[~valid] == 0).all()  # background untouched by default
    # seen head-on by a reference camera: nothing to repaint at the centre of the front view
    assert m[0, 24, 24, 0] < 1e-3
    # ground truth visibility on a convex sphere: a point is seen by camera c iff v_c . n > 0;
    # points no reference sees must get the full weight 1, points seen well must get ~0
    v = torch.nn.functional.normalize(ref_c[:, None, None, None, :] - pts[None], dim=-1)
    best = (v * nrm[None]).sum(-1).amax(0)[..., None]
    unseen = valid & (best <= 0)
    seen_well = valid & (best >= 0.5)
    assert unseen.sum() > 300 and seen_well.sum() > 300
    assert torch.allclose(m[unseen], torch.ones(int(unseen.sum())))
    assert (m[seen_well] < 1e-6).all()
    mid = valid & (best > 0.05) & (best < 0.45)
    assert ((m[mid] > 0) & (m[mid] < 1)).all()
    # more reference cameras never increase the weight
    more = torch.cat([ref_c, camera_centers(make_orbit_cameras(0.0, 200.0).viewmats)])
    m2 = sds.visibility_mask(pts, nrm, more, valid=valid)
    assert (m2 <= m + 1e-6).all() and (m2 < m - 0.5).any()
    with pytest.raises(ValueError, match="ref_centers"):
        sds.visibility_mask(pts, nrm, torch.zeros(0, 3))


def test_visibility_mask_from_rendered_depth_matches_analytic_normals():
    refs = make_orbit_cameras([0.0, 0.0], [0.0, 90.0], 2.0, 33.8, 8, 8)
    ref_c = camera_centers(refs.viewmats)
    views = make_orbit_cameras([15.0, -5.0], [200.0, 60.0], 2.0, 33.8, 64, 64)
    depth, pts, nrm = raycast_sphere(views)
    m_depth, n_depth = sds.visibility_mask_from_depth(depth, views.viewmats, views.Ks, ref_c)
    m_true = sds.visibility_mask(pts, nrm, ref_c, valid=depth > 0)
    inner = (depth > 0).clone()
    for dy in (-2, 0, 2):  # stay away from the silhouette (one-sided differences there)
        for dx in (-2, 0, 2):
            inner &= torch.roll(depth > 0, (dy, dx), (1, 2))
    cos = (n_depth * nrm).sum(-1)[inner[..., 0]]
    assert cos.min() > 0.99
    assert (m_depth - m_true)[inner].abs().mean() < 0.01
    assert (m_depth[depth <= 0] == 0).all()
    # given normals are used as is
    m_given, _ = sds.visibility_mask_from_depth(depth, views.viewmats, views.Ks, ref_c, normals=nrm)
    assert torch.allclose(m_given, m_true, atol=1e-4)


def test_mask_to_latent_area_average():
    m = torch.zeros(1, 16, 16, 1)
    m[0, :8] = 1.0
    lat = sds.mask_to_latent(m, 2, 2)
    assert lat.shape == (1, 1, 2, 2)
    assert torch.allclose(lat[0, 0], torch.tensor([[1.0, 1.0], [0.0, 0.0]]))


# ----------------------------------------------------------------------------------------------
# SDS (EDM / SV3D parameterisation)
# ----------------------------------------------------------------------------------------------


def test_edm_sds_gradient_formula_and_direction():
    torch.manual_seed(0)
    target = torch.randn(2, 4, 6, 6)
    ideal = lambda x, s: target.clone()  # noqa: E731 - the denoiser of a point mass at `target`
    z = torch.randn(2, 4, 6, 6, requires_grad=True)
    mask = torch.zeros(2, 1, 6, 6)
    mask[:, :, :3] = 1.0
    sigma = torch.tensor([0.5, 2.0])
    loss, info = sds.edm_sds_loss(z, ideal, sigma, mask=mask)
    loss.backward()
    w = (sigma**2 / (1 + sigma**2)).view(2, 1, 1, 1)
    g = w * (z.detach() - target) / sigma.view(2, 1, 1, 1)
    assert torch.allclose(info["grad"], g, atol=1e-6)
    assert torch.allclose(z.grad, mask * g / z.numel(), atol=1e-9)
    # a descent step moves the masked latents towards the denoiser's prediction, others not at all
    z2 = z.detach() - 50.0 * z.grad
    near = lambda a: (a - target)[:, :, :3].pow(2).sum()  # noqa: E731
    assert near(z2) < near(z.detach())
    assert torch.equal(z2[:, :, 3:], z.detach()[:, :, 3:])
    # the noise is really used: x = z + sigma * eps goes into the denoiser
    seen = {}

    def spy(x, s):
        seen["x"], seen["s"] = x, s
        return x

    eps = torch.randn_like(z)
    sds.edm_sds_grad(z, spy, 0.7, noise=eps)
    assert torch.allclose(seen["x"], z.detach() + 0.7 * eps)
    assert seen["s"].shape == (2,)
    with pytest.raises(ValueError, match="sigma"):
        sds.edm_sds_grad(z, ideal, 0.0)
    with pytest.raises(ValueError, match="weighting"):
        sds.edm_sds_grad(z, ideal, 1.0, weighting="snr")


class TinyVNet(torch.nn.Module):
    """A random conv 'UNet' taking (x_in, c_noise) like SV3D's raw network."""

    def __init__(self, cin=4, cout=4):
        super().__init__()
        self.conv = torch.nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = torch.nn.Linear(1, cout)

    def forward(self, x, c_noise):
        return self.conv(x) + self.emb(c_noise.reshape(-1, 1).to(x))[:, :, None, None]


def test_edm_sds_with_vpred_network_finite_difference():
    torch.manual_seed(1)
    net = TinyVNet().double()
    D = sds.vpred_x0_denoiser(net)
    # "renderer + encoder": a fixed random linear map from parameters to latents
    A = torch.randn(2 * 4 * 5 * 5, 12, dtype=torch.float64)
    theta = torch.randn(12, dtype=torch.float64, requires_grad=True)
    z = (A @ theta).view(2, 4, 5, 5)
    eps = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    mask = torch.rand(2, 1, 5, 5, dtype=torch.float64)
    sigma = torch.tensor([0.3, 3.0], dtype=torch.float64)
    loss, info = sds.edm_sds_loss(z, D, sigma, mask=mask, noise=eps)
    (gt,) = torch.autograd.grad(loss, theta)
    # the expected SDS gradient, from the official scalings written out by hand
    x = z.detach() + sigma.view(2, 1, 1, 1) * eps
    c_skip, c_out, c_in, c_noise = edm.vscaling(sigma)
    b = lambda v: v.view(2, 1, 1, 1)  # noqa: E731
    x0 = net(x * b(c_in), c_noise) * b(c_out) + x * b(c_skip)
    g = b(sigma**2 / (1 + sigma**2)) * (z.detach() - x0) / b(sigma)
    assert torch.allclose(info["x0"], x0.detach())
    assert torch.allclose(gt, A.T @ (mask * g).reshape(-1) / z.numel())
    # finite differences of the frozen-target surrogate agree with autograd
    target = (z - mask * g).detach()

    def f(th):
        return 0.5 * ((A @ th).view(2, 4, 5, 5) - target).pow(2).mean()

    h = 1e-6
    fd = torch.stack([(f(theta.detach() + h * e) - f(theta.detach() - h * e)) / (2 * h)
                      for e in torch.eye(12, dtype=torch.float64)])
    assert torch.allclose(fd, gt, atol=1e-8)


def test_sample_sigma_range():
    g = torch.Generator().manual_seed(0)
    s = sds.sample_sigma(5000, 0.05, 5.0, generator=g)
    assert s.min() >= 0.05 and s.max() <= 5.0
    # log-uniform: the median is the geometric mean
    assert s.median().item() == pytest.approx((0.05 * 5.0) ** 0.5, rel=0.1)
    with pytest.raises(ValueError):
        sds.sample_sigma(1, 1.0, 0.5)


# ----------------------------------------------------------------------------------------------
# IPSM score terms
# ----------------------------------------------------------------------------------------------


def test_sd_schedule_and_helpers():
    a = sds.sd_alphas_cumprod()
    assert a.shape == (1000,)
    assert a[0].item() == pytest.approx(1 - 0.00085, rel=1e-6)
    assert a[999].item() == pytest.approx(0.00466, rel=0.01)
    assert (a[1:] < a[:-1]).all()
    t = sds.sample_timesteps(4000, generator=torch.Generator().manual_seed(0))
    assert t.min() >= 250 and t.max() <= 749 and t.dtype == torch.long
    assert t.float().mean().item() == pytest.approx(499.5, abs=10)
    assert sds.ramp_weight(100, 200) == 0.0
    assert sds.ramp_weight(450, 200) == 0.5
    assert sds.ramp_weight(5000, 200) == 1.0
    u, c = torch.zeros(3), torch.ones(3)
    assert torch.allclose(sds.cfg(u, c), torch.full((3,), 7.5))
    warped = torch.rand(1, 4, 4, 3)
    inp = torch.zeros(1, 4, 4, 1, dtype=torch.bool)
    inp[0, 0, 0] = True
    mi = sds.masked_image(warped, inp)
    assert torch.allclose(mi[0, 0, 0], torch.full((3,), 0.5))
    assert torch.equal(mi[0, 1:], warped[0, 1:])
    ml = sds.inpaint_mask_latent(torch.ones(1, 32, 32, 1, dtype=torch.bool), 4, 4)
    assert ml.shape == (1, 1, 4, 4) and (ml == 1).all()


def test_ipsm_score_terms_formula_and_finite_difference():
    torch.manual_seed(2)
    A = torch.randn(2 * 4 * 4 * 4, 10, dtype=torch.float64)
    theta = torch.randn(10, dtype=torch.float64, requires_grad=True)
    z = (A @ theta).view(2, 4, 4, 4)
    eps, e_inp, e_sd = (torch.randn(2, 4, 4, 4, dtype=torch.float64) for _ in range(3))
    a = torch.tensor([0.9, 0.3], dtype=torch.float64)
    loss, parts = sds.ipsm_score_loss(z, eps, e_inp, e_sd, a, scale=0.5)
    (gt,) = torch.autograd.grad(loss, theta)
    ab = a.view(2, 1, 1, 1)
    g1 = ab * (e_inp - eps)
    g2 = ab * (e_inp - e_sd)
    assert torch.allclose(parts["g1"], g1) and torch.allclose(parts["g2"], g2)
    gz = 0.5 * (0.2 * g1 + 2.0 * g2) / z.numel()
    assert torch.allclose(gt, A.T @ gz.reshape(-1))
    assert parts["l1"].item() == pytest.approx(0.5 * g1.pow(2).mean().item())
    target1, target2 = (z - g1).detach(), (z - g2).detach()

    def f(th):
        zz = (A @ th).view(2, 4, 4, 4)
        return 0.5 * (0.2 * 0.5 * (zz - target1).pow(2).mean()
                      + 2.0 * 0.5 * (zz - target2).pow(2).mean())

    h = 1e-6
    fd = torch.stack([(f(theta.detach() + h * e) - f(theta.detach() - h * e)) / (2 * h)
                      for e in torch.eye(10, dtype=torch.float64)])
    assert torch.allclose(fd, gt, atol=1e-8)
    # vanishing terms: a model predicting the true noise gives g1 = 0; identical models g2 = 0
    _, p = sds.ipsm_score_loss(z, eps, eps, eps, a)
    assert p["g1"].abs().max() == 0 and p["g2"].abs().max() == 0


class TinyEps(torch.nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.conv = torch.nn.Conv2d(cin, 4, 3, padding=1)
        self.inputs = []

    def forward(self, x, t):
        self.inputs.append((x.clone(), t.clone()))
        return self.conv(x) + 0.001 * t.view(-1, 1, 1, 1).to(x)


def test_ipsm_prior_loss_with_tiny_models():
    torch.manual_seed(3)
    inp_net, sd_net = TinyEps(9), TinyEps(4)
    cond_shift = torch.randn(4, 1, 1)

    def eps_inpaint(x9, t):  # CFG with a fake conditional branch
        u = inp_net(x9, t)
        return sds.cfg(u, u + cond_shift, 7.5)

    def eps_sd(x4, t):
        u = sd_net(x4, t)
        return sds.cfg(u, u + 0.5 * cond_shift, 7.5)

    alphas = sds.sd_alphas_cumprod()
    z = torch.randn(2, 4, 8, 8, requires_grad=True)
    mask_lat = (torch.rand(2, 1, 8, 8) > 0.5).float()
    masked_lat = torch.randn(2, 4, 8, 8)
    g = torch.Generator().manual_seed(0)
    loss, info = sds.ipsm_prior_loss(z, eps_inpaint, eps_sd, alphas, mask_lat, masked_lat,
                                     step=2250, start=2000, generator=g)
    loss.backward()
    t = info["t"]
    assert ((t >= 250) & (t < 750)).all()
    assert info["scale"] == 0.5
    x9, t_seen = inp_net.inputs[-1]
    a = alphas[t].view(2, 1, 1, 1)
    z_t = a.sqrt() * z.detach() + (1 - a).sqrt() * info["noise"]
    assert torch.allclose(x9[:, :4], z_t, atol=1e-6)  # channel order [z_t | mask | masked]
    assert torch.equal(x9[:, 4:5], mask_lat) and torch.equal(x9[:, 5:], masked_lat)
    assert torch.allclose(sd_net.inputs[-1][0], z_t, atol=1e-6)
    assert torch.equal(t_seen, t)
    exp = 0.5 * a * (0.2 * (info["eps_inp"] - info["noise"])
                     + 2.0 * (info["eps_inp"] - info["eps_sd"]))
    assert torch.allclose(z.grad, exp / z.numel(), atol=1e-9)
    assert all(p.grad is None for p in inp_net.parameters())  # models run without grad
    # before the ramp starts the loss contributes nothing
    z.grad = None
    loss0, _ = sds.ipsm_prior_loss(z, eps_inpaint, eps_sd, alphas, mask_lat, masked_lat,
                                   step=1000, start=2000)
    loss0.backward()
    assert (z.grad == 0).all()


def test_ipsm_rectifying_term_pulls_towards_inpainting_prediction():
    """With an ideal inpainting model (the denoiser of a point mass at x*), descending the g1 term
    moves the latents towards x* -- the direction the formula says."""
    torch.manual_seed(4)
    x_star = torch.randn(1, 4, 6, 6)
    alphas = sds.sd_alphas_cumprod()

    def ideal_inp(x9, t):
        a = alphas[t].view(-1, 1, 1, 1)
        return (x9[:, :4] - a.sqrt() * x_star) / (1 - a).sqrt()

    z = torch.randn(1, 4, 6, 6, requires_grad=True)
    loss, info = sds.ipsm_prior_loss(z, ideal_inp, ideal_inp, alphas, torch.zeros(1, 1, 6, 6),
                                     torch.zeros(1, 4, 6, 6), t=torch.tensor([500]))
    loss.backward()
    assert info["g2"].abs().max() < 1e-6  # same model twice: only the rectifying term acts
    z2 = z.detach() - 20.0 * z.grad
    assert (z2 - x_star).norm() < (z.detach() - x_star).norm()
