"""Neural SDF refinement (kernels/mesh/neural_sdf.py): grid lookup, NeuS compositing, the fit."""


import pytest
import torch

from orbitforge.kernels.geometry.cameras import make_orbit_cameras, uniform_orbit
from orbitforge.kernels.geometry.visual_hull import DEFAULT_BBOX, voxel_grid
from orbitforge.kernels.mesh.neural_sdf import (
    NeuralSDFConfig,
    _grad_norm,
    _laplacian,
    band_regularisers,
    fill_cavities,
    gather_lerp,
    neus_render,
    redistance,
    refine_sdf,
    sample_grid,
    scatter_sum,
    trilinear_corners,
)


def test_sample_grid_is_trilinear_on_a_linear_field():
    # a linear function of the coordinates is reproduced exactly by trilinear interpolation
    g = voxel_grid(16)  # [R, R, R, 3] voxel centres
    f = (0.3 * g[..., 0] - 0.7 * g[..., 1] + 0.2 * g[..., 2] + 0.1)[None]  # [1, R, R, R]
    pts = torch.rand(200, 3, generator=torch.Generator().manual_seed(0)) * 0.9 - 0.45
    pts = pts.clamp(-0.5 + 1 / 32, 0.5 - 1 / 32)  # inside the centres' hull
    want = 0.3 * pts[:, 0] - 0.7 * pts[:, 1] + 0.2 * pts[:, 2] + 0.1
    got = sample_grid(f, pts, DEFAULT_BBOX)[:, 0]
    assert torch.allclose(got, want, atol=1e-5)
    # the voxel centre itself returns that voxel's value (axis order x, y, z)
    v = torch.zeros(1, 4, 4, 4)
    v[0, 3, 0, 1] = 1.0
    c = voxel_grid(4)[3, 0, 1][None]
    assert float(sample_grid(v, c, DEFAULT_BBOX)) == pytest.approx(1.0, abs=1e-6)


def test_gather_lerp_matches_grid_sample_in_values_and_gradients():
    # the fast trilinear path (take / bincount) against the reference sample_grid (grid_sample),
    # including points outside the voxel centres' hull and outside the box (border clamping)
    gen = torch.Generator().manual_seed(1)
    R = 12
    grid = torch.randn(3, R, R, R, generator=gen, dtype=torch.float64)
    pts = (torch.rand(500, 3, generator=gen, dtype=torch.float64) - 0.5) * 1.3  # some outside
    ref_in = grid.clone().requires_grad_(True)
    ref = sample_grid(ref_in, pts, DEFAULT_BBOX)  # [N, 3]
    fast_in = grid.reshape(3, -1).clone().requires_grad_(True)
    idx, w = trilinear_corners(pts, R, DEFAULT_BBOX)
    fast = gather_lerp(fast_in, idx, w)
    assert torch.allclose(fast, ref, atol=1e-10)
    up = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    (ref * up).sum().backward()
    (fast * up).sum().backward()
    assert torch.allclose(fast_in.grad, ref_in.grad.reshape(3, -1), atol=1e-10)
    assert float(ref_in.grad.abs().sum()) > 0


def test_scatter_sum_methods_agree():
    gen = torch.Generator().manual_seed(3)
    idx = torch.randint(0, 50, (2000,), generator=gen)
    vals = torch.randn(2000, generator=gen)
    a = scatter_sum(idx, vals, 64, "bincount")
    b = scatter_sum(idx, vals, 64, "index_add")
    assert a.dtype == vals.dtype and a.shape == (64,)
    assert torch.allclose(a, b, atol=1e-5) and float(a[50:].abs().sum()) == 0.0
    assert float(a[int(idx[0])]) == pytest.approx(float(vals[idx == idx[0]].sum()), abs=1e-5)


def test_band_regularisers_equal_the_dense_ones_on_the_band():
    gen = torch.Generator().manual_seed(2)
    R, h = 10, 0.1
    f = torch.randn(R, R, R, generator=gen, dtype=torch.float64)
    inner = torch.zeros(R, R, R, dtype=torch.bool)
    inner[1:-1, 1:-1, 1:-1] = True
    band_mask = (f.abs() < 0.8) & inner
    band = band_mask.reshape(-1).nonzero()[:, 0]
    flat = f.reshape(-1).clone().requires_grad_(True)
    eik, smooth = band_regularisers(flat, band, R, h)
    m = band_mask[1:-1, 1:-1, 1:-1]
    want_eik = ((_grad_norm(f, h) - 1) ** 2)[m].mean()
    want_smooth = ((_laplacian(f) / h) ** 2)[m].mean()
    assert eik.item() == pytest.approx(want_eik.item(), rel=1e-9)
    assert smooth.item() == pytest.approx(want_smooth.item(), rel=1e-9)
    (eik + smooth).backward()  # gradients reach the band and its neighbours only
    touched = flat.grad.reshape(R, R, R) != 0
    near = torch.nn.functional.max_pool3d(band_mask[None, None].double(), 3, 1, 1)[0, 0] > 0
    assert bool(touched.any()) and not bool((touched & ~near).any())


def test_neus_render_plane_gives_full_opacity_at_the_plane_distance():
    t = torch.linspace(0.0, 2.0, 401)[None]  # [1, S]
    sdf = 1.2 - t  # surface at t = 1.2, negative behind it
    col = torch.tensor([0.2, 0.4, 0.6]).expand(1, 401, 3)
    rgb, opa, depth, w = neus_render(sdf, col, t, s=400.0)
    assert float(opa) == pytest.approx(1.0, abs=1e-3)
    assert float(depth) == pytest.approx(1.2, abs=5e-3)
    assert torch.allclose(rgb, torch.tensor([[0.2, 0.4, 0.6]]), atol=1e-3)
    # a ray that stays outside (sdf > 0 everywhere) is empty
    _, opa2, _, _ = neus_render(sdf + 5.0, col, t, s=400.0)
    assert float(opa2) < 1e-3


def test_redistance_fills_the_truncated_inside():
    g = voxel_grid(32)
    r = g.norm(dim=-1)
    sdf = r - 0.3
    h = 1 / 32
    trunc = 3 * h
    f = sdf.clamp(-trunc, trunc)
    full = redistance(f, h)
    inner = sdf < -0.1
    # deep inside, the distance transform recovers the true distance to within a voxel
    assert (full[inner] - sdf[inner]).abs().max() < 1.5 * h
    near = sdf.abs() < trunc * 0.9
    assert torch.equal(full[near], f[near])


def _sphere_scene(res=48, grid=32, views=8):
    import trimesh

    from orbitforge.kernels.mesh.render import render_mesh

    mesh = trimesh.creation.icosphere(subdivisions=4, radius=0.3)
    el, az = uniform_orbit(views // 2, [-20.0, 25.0])
    cams = make_orbit_cameras(el, az, 2.0, 33.8, res, res)
    v = render_mesh(mesh, cams)
    return v, cams, grid


def test_refine_sdf_moves_a_wrong_surface_towards_the_views():
    torch.manual_seed(0)
    v, cams, R = _sphere_scene()
    g = voxel_grid(R)
    true = g.norm(dim=-1) - 0.3
    h = 1 / R
    trunc = 3 * h
    # start from a surface 1.5 voxels too small (over-carved); the hull is 1 voxel too large
    start = (true + 1.5 * h).clamp(-trunc, trunc)
    hull = (true - 1.0 * h).clamp(-trunc, trunc)
    field0 = torch.maximum(start, hull)
    dist = v["depth"]  # the true surface's depth: the band sits around it
    cfg = NeuralSDFConfig(iterations=60, rays=1024, samples=32, band_out=0.06, band_in=0.06,
                          lr_sdf=1e-3, s_start=80.0, s_end=200.0)
    stats = {}
    out = refine_sdf(field0, hull, v["rgb"], v["mask"], cams, dist, DEFAULT_BBOX, cfg,
                     stats=stats)
    band = true.abs() < h
    err0 = (field0 - true)[band].abs().mean()
    err1 = (out - true)[band].abs().mean()
    assert err1 < 0.8 * err0, (float(err0), float(err1))
    assert bool((out >= hull - 1e-6).all())  # never outside the visual hull
    assert set(stats) >= {"color", "mask", "eikonal", "smooth"}


def test_refine_sdf_runs_under_inference_mode():
    """ComfyUI executes nodes under torch.inference_mode(): the fit must leave it itself."""
    v, cams, R = _sphere_scene(res=24, grid=12, views=4)
    g = voxel_grid(R)
    f = (g.norm(dim=-1) - 0.3).clamp(-0.2, 0.2)
    cfg = NeuralSDFConfig(iterations=3, rays=128, samples=8)
    with torch.inference_mode():
        args = [t.clone() for t in (f, f, v["rgb"], v["mask"])]
        depth = v["depth"].clone()
        out = refine_sdf(*args, cams, depth, config=cfg)
    assert out.shape == f.shape and bool(torch.isfinite(out).all())


def test_refine_sdf_rejects_mismatched_inputs():
    v, cams, R = _sphere_scene(res=16, grid=8, views=4)
    f = torch.zeros(R, R, R)
    with pytest.raises(ValueError, match="same"):
        refine_sdf(f, torch.zeros(R, R, R + 1), v["rgb"], v["mask"], cams, v["depth"])
    with pytest.raises(ValueError, match="must agree"):
        refine_sdf(f, f, v["rgb"], v["mask"][:2], cams, v["depth"])


def test_fill_cavities_closes_sealed_bubbles_only():
    g = voxel_grid(24)
    r = g.norm(dim=-1)
    solid = r - 0.35  # a ball
    bubble = 0.08 - (g - torch.tensor([0.1, 0.0, 0.0])).norm(dim=-1)  # > 0 inside the bubble
    field = torch.maximum(solid, bubble)  # a ball with a sealed hollow
    assert bool((field[(g - torch.tensor([0.1, 0.0, 0.0])).norm(dim=-1) < 0.05] > 0).all())
    filled = fill_cavities(field)
    assert bool((filled[r < 0.33] < 0).all())  # the hollow is inside now
    assert torch.equal(filled[r > 0.36], field[r > 0.36])  # the outside is untouched
    # a hollow that opens to the outside is not a cavity: left alone
    tunnel = torch.maximum(field, 0.05 - g[..., 1:].norm(dim=-1))  # a bore along x
    assert torch.equal(fill_cavities(tunnel), tunnel)


def test_refine_sdf_downsamples_large_views_and_survives_an_empty_band():
    v, cams, R = _sphere_scene(res=32, grid=16, views=4)
    g = voxel_grid(R)
    f = (g.norm(dim=-1) - 0.3).clamp(-0.2, 0.2)
    up = lambda x: torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
    big_rgb = up(v["rgb"].permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # 64² views
    big_mask = up(v["mask"][:, None])[:, 0]
    big_depth = up(v["depth"][:, None])[:, 0]
    cfg = NeuralSDFConfig(iterations=3, rays=256, samples=16, max_side=32)
    out = refine_sdf(f, f, big_rgb, big_mask, cams.resized(64, 64), big_depth, config=cfg)
    assert out.shape == f.shape and bool(torch.isfinite(out).all())
    # a field with no surface near any voxel: the regularisers have nothing to act on, no NaN
    flat = torch.full((R, R, R), 0.2)
    flat[R // 2, R // 2, R // 2] = -0.2
    out = refine_sdf(flat, flat, v["rgb"], v["mask"], cams, v["depth"], config=cfg)
    assert bool(torch.isfinite(out).all())
