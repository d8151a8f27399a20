"""Tests of the differentiable Gaussian rasterisers (tiled torch path vs brute-force reference)."""

import math

import pytest
import torch

from orbitforge.kernels.geometry.cameras import make_orbit_cameras
from orbitforge.kernels.splat.rasterize import RenderOutput, gsplat_usable, rasterize
from orbitforge.kernels.splat.sh import SH_C0, SH_C1, eval_sh, sh_basis

W, H = 64, 48


def _scene(n, seed, sh_degree=None, dtype=torch.float64, dense=False):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) - 0.5) * (0.5 if dense else 0.8)
    quats = torch.randn(n, 4, generator=g)
    scales = torch.rand(n, 3, generator=g) * 0.06 + 0.005
    if dense:  # opaque and large: exercises the 0.99 clamp and early termination
        scales = scales + 0.05
        opac = torch.rand(n, generator=g) * 0.1 + 0.9
    else:
        opac = torch.rand(n, generator=g) * 0.98 + 0.01
    if sh_degree is None:
        colors = torch.rand(n, 3, generator=g)
    else:
        colors = torch.randn(n, 16, 3, generator=g) * 0.5  # K larger than needed for degree < 3
    return [t.to(dtype).requires_grad_() for t in (means, quats, scales, opac, colors)]


def _cams(dtype=torch.float64):
    cams = make_orbit_cameras([10.0, -25.0], [30.0, 200.0], radius=2.0, width=W, height=H)
    return cams.viewmats.to(dtype), cams.Ks.to(dtype)


def _render_and_grads(params, vm, K, backend, sh_degree, bg, tile_size=16, **kw):
    out = rasterize(*params, vm, K, W, H, sh_degree=sh_degree, backgrounds=bg, backend=backend,
                    tile_size=tile_size, **kw)
    g = torch.Generator().manual_seed(123)
    wr = torch.randn(out.rgb.shape, generator=g).to(out.rgb)
    wa = torch.randn(out.alpha.shape, generator=g).to(out.rgb)
    wd = torch.randn(out.depth.shape, generator=g).to(out.rgb)
    loss = (out.rgb * wr).sum() + (out.alpha * wa).sum() + 0.1 * (out.depth * wd).sum()
    grads = torch.autograd.grad(loss, params)
    return out, grads


NAMES = ("means", "quats", "scales", "opacities", "colors")


@pytest.mark.parametrize("sh_degree,dense,tile", [(None, False, 16), (3, False, 16), (0, True, 16),
                                                  (2, True, 8)])
def test_tiled_matches_reference_float64(sh_degree, dense, tile):
    """In float64 the tiled path equals the brute-force reference to rounding, gradients too."""
    params = _scene(120 if dense else 180, seed=1 + (sh_degree or 0), sh_degree=sh_degree,
                    dense=dense)
    vm, K = _cams()
    bg = torch.tensor([[0.2, 0.5, 0.9], [1.0, 0.0, 0.3]], dtype=torch.float64)
    ref, g_ref = _render_and_grads(params, vm, K, "reference", sh_degree, bg)
    # the tile-8 case also runs the memory-saving path (backward recomputes, small buckets)
    # dense cases also run small chunks of the front-to-back early exit (tiles leave mid-bucket)
    kw = dict(save_elems=0, block_elems=32768) if tile == 8 else {}
    if dense:
        kw["chunk_slots"] = 3
    out, g_out = _render_and_grads(params, vm, K, "torch", sh_degree, bg, tile_size=tile, **kw)
    assert out.rgb.shape == (2, H, W, 3) and out.alpha.shape == (2, H, W, 1)
    assert out.depth.shape == (2, H, W, 1) and out.depth_median.shape == (2, H, W, 1)
    assert ref.alpha.max() > 0.5  # the scene is actually visible
    if dense:
        assert ref.alpha.max() > 0.999  # termination/clamp regime reached (alpha <= 1 - 1e-4)
    for k in ("rgb", "alpha", "depth"):
        torch.testing.assert_close(getattr(out, k), getattr(ref, k), atol=1e-10, rtol=0)
    torch.testing.assert_close(out.depth_median, ref.depth_median, atol=1e-12, rtol=0)
    assert (ref.depth_median > 0).any()
    for name, a, b in zip(NAMES, g_out, g_ref):
        assert b.abs().max() > 0, name
        torch.testing.assert_close(a, b, atol=1e-9 * b.abs().max().item(), rtol=1e-7, msg=name)
    assert torch.equal(out.meta["radii"], ref.meta["radii"])


def test_float32_tiled_close_to_float64_reference():
    """The float32 tiled path (the one used in practice) is within 2e-5 of the exact result and
    its gradients within 1e-4 (relative to the largest entry)."""
    p64 = _scene(200, seed=7, sh_degree=3)
    p32 = [p.detach().float().requires_grad_() for p in p64]
    vm, K = _cams()
    bg = torch.tensor([[0.2, 0.5, 0.9], [1.0, 0.0, 0.3]], dtype=torch.float64)
    ref, g_ref = _render_and_grads(p64, vm, K, "reference", 3, bg)
    out, g_out = _render_and_grads(p32, vm.float(), K.float(), "torch", 3, bg.float())
    assert out.rgb.dtype == torch.float32
    for k in ("rgb", "alpha", "depth"):
        torch.testing.assert_close(getattr(out, k).double(), getattr(ref, k), atol=2e-5, rtol=0)
    for name, a, b in zip(NAMES, g_out, g_ref):
        torch.testing.assert_close(a.double(), b, atol=1e-4 * b.abs().max().item(), rtol=1e-4,
                                   msg=name)


def test_tile_size_does_not_change_result():
    params = _scene(150, seed=3, dtype=torch.float32)
    vm, K = _cams(torch.float32)
    outs = [rasterize(*params, vm, K, W, H, tile_size=t, backend="torch") for t in (4, 16, 32)]
    for o in outs[1:]:
        # float32: the per-tile polynomial expansion rounds slightly differently per tile size
        torch.testing.assert_close(o.rgb, outs[0].rgb, atol=5e-5, rtol=0)
        torch.testing.assert_close(o.alpha, outs[0].alpha, atol=5e-5, rtol=0)


def _single_camera(f=100.0):
    vm = torch.eye(4).unsqueeze(0)  # camera at the origin looking down +z
    K = torch.tensor([[[f, 0.0, W / 2], [0.0, f, H / 2], [0.0, 0.0, 1.0]]])
    return vm, K


def test_single_isotropic_gaussian_analytic():
    """Head-on isotropic Gaussian projecting onto a pixel centre: alpha there is the opacity and
    rgb = colour * alpha + bg * (1 - alpha); the footprint is the predicted 2D Gaussian."""
    vm, K = _single_camera()
    z, s, o = 2.0, 0.02, 0.7
    # centre on pixel (i=20, j=30): u = 30.5, v = 20.5
    x = (30.5 - W / 2) * z / 100.0
    y = (20.5 - H / 2) * z / 100.0
    means = torch.tensor([[x, y, z]])
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    scales = torch.full((1, 3), s)
    col = torch.tensor([[0.9, 0.4, 0.1]])
    bg = torch.tensor([[0.1, 0.2, 0.3]])
    for backend in ("torch", "reference"):
        out = rasterize(means, quats, scales, torch.tensor([o]), col, vm, K, W, H, backgrounds=bg,
                        backend=backend)
        assert abs(out.alpha[0, 20, 30, 0].item() - o) < 1e-5
        torch.testing.assert_close(out.rgb[0, 20, 30], col[0] * o + bg[0] * (1 - o), atol=1e-5,
                                   rtol=0)
        # off-centre pixel, offset (2, 0): EWA covariance J (s^2 I) J^T + 0.3 I, J = f/z [I | -p/z]
        k = (100.0 * s / z) ** 2
        vxx = k * (1 + (x / z) ** 2) + 0.3
        vyy = k * (1 + (y / z) ** 2) + 0.3
        vxy = k * x * y / z ** 2
        expect = o * math.exp(-0.5 * 4.0 * vyy / (vxx * vyy - vxy * vxy))
        assert abs(out.alpha[0, 20, 32, 0].item() - expect) < 1e-5
        assert abs(out.depth[0, 20, 30, 0].item() - z) < 1e-5
        assert abs(out.depth_median[0, 20, 30, 0].item() - z) < 1e-6  # o >= 0.5
        assert out.depth_median[0, 20, 33, 0].item() == 0.0  # alpha there < 0.5
        far = out.rgb[0, 0, 0]  # far from the Gaussian: background only
        torch.testing.assert_close(far, bg[0], atol=1e-7, rtol=0)


def test_clamp_and_early_termination():
    """Three Gaussians centred on one pixel, front to back: alpha 0.98, then 0.999 clamped to 0.99
    (transmittance 0.02 -> 2e-4, kept), then 0.9, skipped because the transmittance after it
    would be 2e-5 <= 1e-4 (gsplat's stopping rule)."""
    vm, K = _single_camera()
    zs = torch.tensor([2.0, 3.0, 4.0])
    # project exactly onto the centre (32.5, 24.5) of pixel (24, 32)
    means = torch.stack([0.5 * zs / 100.0, 0.5 * zs / 100.0, zs], -1)
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(3, 1)
    scales = torch.full((3, 3), 0.05)
    opac = torch.tensor([0.98, 0.999, 0.9])
    cols = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    bg = torch.tensor([[0.0, 0.0, 0.0]])
    for backend in ("torch", "reference"):
        out = rasterize(means, quats, scales, opac, cols, vm, K, W, H, backgrounds=bg,
                        backend=backend)
        c = out.rgb[0, 24, 32]
        assert abs(c[0].item() - 0.98) < 1e-5
        assert abs(c[1].item() - 0.02 * 0.99) < 1e-6  # 0.99 clamp, not 0.999
        assert c[2].item() == 0.0  # terminated before the third Gaussian
        assert abs(out.alpha[0, 24, 32, 0].item() - (1 - 0.02 * 0.01)) < 1e-6
        assert abs(out.depth_median[0, 24, 32, 0].item() - 2.0) < 1e-6
        assert out.alpha[0, 0, 0, 0].item() == 0.0


def test_projected_centre_and_pixel_convention():
    """meta means2d is K (R x + t) / z, and the brightest pixel (i, j) is the one whose centre
    (j + 0.5, i + 0.5) is the projected centre."""
    cams = make_orbit_cameras(20.0, 45.0, radius=2.0, width=W, height=H)
    vm, K = cams.viewmats, cams.Ks
    pt = torch.tensor([0.1, -0.05, 0.12])
    pc = vm[0, :3, :3] @ pt + vm[0, :3, 3]
    uv = (K[0] @ pc)[:2] / pc[2]
    out = rasterize(pt[None], torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.01),
                    torch.tensor([0.8]), torch.ones(1, 3), vm, K, W, H, backend="torch")
    torch.testing.assert_close(out.meta["means2d"][0, 0], uv, atol=1e-4, rtol=0)
    # move the point so it projects exactly onto the centre of pixel (i=17, j=40)
    target = torch.tensor([40.5, 17.5])
    ray = torch.linalg.solve(K[0], torch.tensor([target[0], target[1], 1.0]))
    pc2 = ray * pc[2]
    R, t = vm[0, :3, :3], vm[0, :3, 3]
    pw = R.T @ (pc2 - t)
    out = rasterize(pw[None], torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.01),
                    torch.tensor([0.8]), torch.ones(1, 3), vm, K, W, H, backend="torch")
    a = out.alpha[0, :, :, 0]
    i, j = divmod(int(a.argmax()), W)
    assert (i, j) == (17, 40)
    assert abs(a[17, 40].item() - 0.8) < 1e-4
    # symmetric neighbours are equal for an isotropic Gaussian seen this close to head-on
    assert abs(a[17, 39].item() - a[17, 41].item()) < 2e-3


def test_behind_camera_and_near_plane_culled():
    vm, K = _single_camera()
    means = torch.tensor([[0.0, 0.0, -2.0], [0.0, 0.0, 0.005], [0.0, 0.0, 2.0]])
    quats = torch.tensor([[1.0, 0, 0, 0]]).repeat(3, 1)
    scales = torch.full((3, 3), 0.05)
    for backend in ("torch", "reference"):
        out = rasterize(means[:2], quats[:2], scales[:2], torch.full((2,), 0.9), torch.ones(2, 3),
                        vm, K, W, H, backend=backend)
        assert out.meta["radii"].tolist() == [[0, 0]]
        assert out.alpha.abs().max().item() == 0.0
        out = rasterize(means, quats, scales, torch.full((3,), 0.9), torch.ones(3, 3), vm, K, W, H,
                        backend=backend)
        assert out.meta["radii"][0, :2].tolist() == [0, 0] and out.meta["radii"][0, 2] > 0
        assert out.alpha.max().item() > 0.5


def test_means2d_grad_retained_and_meta():
    params = _scene(60, seed=5, dtype=torch.float32)
    vm, K = _cams(torch.float32)
    out = rasterize(*params, vm, K, W, H, backend="torch", retain_means2d_grad=True)
    assert isinstance(out, RenderOutput)
    m = out.meta
    assert m["means2d"].shape == (2, 60, 2) and m["radii"].shape == (2, 60)
    assert m["depths"].shape == (2, 60) and m["width"] == W and m["height"] == H
    assert m["n_cameras"] == 2 and m["radii"].dtype == torch.int32
    out.rgb.sum().backward()
    g = m["means2d"].grad
    assert g is not None and g.shape == (2, 60, 2)
    vis = m["radii"] > 0
    assert g[vis].abs().sum() > 0
    assert g[~vis].abs().sum() == 0


def test_bad_inputs_raise():
    params = _scene(10, seed=0, dtype=torch.float32)
    vm, K = _cams(torch.float32)
    with pytest.raises(ValueError, match="quats"):
        rasterize(params[0], params[1][:5], *params[2:], vm, K, W, H)
    with pytest.raises(ValueError, match="sh_degree"):
        rasterize(*params[:4], torch.rand(10, 4, 3), vm, K, W, H, sh_degree=3)
    with pytest.raises(ValueError, match="backend"):
        rasterize(*params, vm, K, W, H, backend="cuda")
    with pytest.raises(ValueError, match="backgrounds"):
        rasterize(*params, vm, K, W, H, backgrounds=torch.zeros(3))


def test_empty_and_invisible_scene_backward():
    vm, K = _single_camera()
    params = _scene(5, seed=0, dtype=torch.float32)
    with torch.no_grad():
        params[0][:, 2] = -1.0  # all behind the camera
    bg = torch.tensor([[0.5, 0.25, 0.75]])
    out = rasterize(*params, vm, K, W, H, backgrounds=bg, backend="torch")
    torch.testing.assert_close(out.rgb, bg[:, None, None, :].expand(1, H, W, 3))
    assert out.meta["n_pairs"] == 0
    out.rgb.sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in params)


def test_sh_basis_orthonormal_and_signs():
    # Fibonacci sphere quadrature: integral of Y_i Y_j over the sphere = delta_ij
    n = 20000
    k = torch.arange(n, dtype=torch.float64) + 0.5
    zc = 1 - 2 * k / n
    phi = math.pi * (1 + 5 ** 0.5) * k
    r = torch.sqrt(1 - zc * zc)
    dirs = torch.stack([r * torch.cos(phi), r * torch.sin(phi), zc], -1)
    Y = sh_basis(3, dirs)  # [n, 16]
    gram = Y.T @ Y * (4 * math.pi / n)
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=2e-3, rtol=0)
    # 3DGS sign convention for degree 1: Y1 = -C1 y, Y2 = C1 z, Y3 = -C1 x
    yb = sh_basis(1, torch.tensor([[0.0, 2.0, 0.0], [3.0, 0.0, 0.0]]))
    torch.testing.assert_close(yb, torch.tensor([[SH_C0, -SH_C1, 0.0, 0.0], [SH_C0, 0.0, 0.0,
                                                                             -SH_C1]]))
    coeffs = torch.zeros(1, 16, 3)
    coeffs[0, 0] = 1.0
    torch.testing.assert_close(eval_sh(3, torch.tensor([[0.3, 0.1, 0.2]]), coeffs),
                               torch.full((1, 3), SH_C0))


def test_sh_colours_view_dependent_in_render():
    """Degree-1 SH seen from two sides of the scene gives the colours predicted by the basis."""
    cams = make_orbit_cameras(0.0, [0.0, 90.0], radius=2.0, width=W, height=H)  # +z and +x
    coeffs = torch.zeros(1, 4, 3)
    coeffs[0, 3] = torch.tensor([0.5, 0.0, -0.5])  # the -C1 x basis function
    means = torch.zeros(1, 3)
    out = rasterize(means, torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.05),
                    torch.tensor([0.98]), coeffs, cams.viewmats, cams.Ks, W, H, sh_degree=1,
                    backend="torch")
    a = out.alpha[:, H // 2, W // 2]  # [2, 1]
    # camera 0 on +z: direction (0, 0, -1) -> x = 0: colour 0.5; camera 1 on +x: dir (-1, 0, 0)
    c0 = out.rgb[0, H // 2, W // 2] / a[0]
    c1 = out.rgb[1, H // 2, W // 2] / a[1]
    torch.testing.assert_close(c0, torch.tensor([0.5, 0.5, 0.5]), atol=1e-4, rtol=0)
    torch.testing.assert_close(c1, torch.tensor([0.5 + 0.5 * SH_C1, 0.5, 0.5 - 0.5 * SH_C1]),
                               atol=1e-4, rtol=0)


@pytest.mark.skipif(not gsplat_usable("cuda"), reason="needs CUDA and gsplat")
@pytest.mark.parametrize("sh_degree", [None, 3])
def test_gsplat_matches_torch(sh_degree):
    """gsplat (CUDA) vs the torch path on the GPU. Opacities stay below 0.9 so the different alpha
    clamps (0.99 here, 0.999 in gsplat) never bind. Values within 1e-4 on 99.9% of pixels
    (float32 with a different summation order), gradients within 2e-3 relative L2 error."""
    dev = torch.device("cuda")
    params = _scene(300, seed=11, sh_degree=sh_degree, dtype=torch.float32)
    with torch.no_grad():
        params[3].clamp_(max=0.85)
    params = [p.detach().to(dev).requires_grad_() for p in params]
    vm, K = _cams(torch.float32)
    vm, K = vm.to(dev), K.to(dev)
    bg = torch.tensor([[0.2, 0.5, 0.9], [1.0, 0.0, 0.3]], device=dev)
    res = {}
    for backend in ("torch", "gsplat"):
        res[backend] = _render_and_grads(params, vm, K, backend, sh_degree, bg)
    (o_t, g_t), (o_g, g_g) = res["torch"], res["gsplat"]
    for k in ("rgb", "alpha", "depth"):
        d = (getattr(o_t, k) - getattr(o_g, k)).abs()
        assert (d > 1e-4).float().mean() < 1e-3, k
        assert d.max() < 5e-2, k
    for name, a, b in zip(NAMES, g_t, g_g):
        assert ((a - b).norm() / b.norm().clamp_min(1e-12)).item() < 2e-3, name


def test_gsplat_backend_refuses_cpu_and_auto_falls_back():
    params = _scene(20, seed=2, dtype=torch.float32)
    vm, K = _cams(torch.float32)
    with pytest.raises(ValueError, match="CUDA"):
        rasterize(*params, vm, K, W, H, backend="gsplat")
    auto = rasterize(*params, vm, K, W, H, backend="auto")
    assert auto.meta["backend"] == "torch"  # CPU tensors: always the torch path
