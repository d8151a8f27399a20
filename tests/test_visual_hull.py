"""Visual hull: voxel grid, projection convention, carving with soft voting, hull SDF."""

import math

import pytest
import torch

from orbitforge.kernels.geometry.cameras import (
    camera_rays,
    make_orbit_cameras,
    project,
    uniform_orbit,
)
from orbitforge.kernels.geometry.visual_hull import (
    carve_visual_hull,
    DISAGREEMENT_GATE,
    hull_sdf,
    mask_signed_distance,
    resolve_tolerance,
    silhouette_disagreement,
    voxel_grid,
)


def sphere_views(cams, center=(0.0, 0.0, 0.0), radius=0.3, colors=None):
    """Analytic ray-traced sphere: (masks [C,H,W], depth [C,H,W], rgb [C,H,W,3]).

    ``colors``: optional (color for x >= cx, color for x < cx) of the sphere's surface."""
    H, W = cams.height, cams.width
    c = torch.tensor(center, dtype=torch.float32)
    origins, dirs = camera_rays(cams.viewmats, cams.Ks, H, W)  # [C, 3], [C, H, W, 3]
    masks, depths, rgbs = [], [], []
    for n in range(len(cams)):
        R = cams.viewmats[n, :3, :3]
        o = origins[n]
        d = dirs[n] / dirs[n].norm(dim=-1, keepdim=True)
        oc = o - c
        b = (d * oc).sum(-1)
        disc = b * b - (oc @ oc - radius ** 2)
        hit = disc > 0
        t = -b - disc.clamp_min(0).sqrt()
        p = o + t[..., None] * d
        z = ((p - o) @ R.T)[..., 2]
        masks.append(hit.float())
        depths.append(torch.where(hit, z, torch.zeros_like(z)))
        rgb = torch.ones(H, W, 3)
        if colors is not None:
            right = p[..., 0] >= c[0]
            col = torch.where(right[..., None], torch.tensor(colors[0]), torch.tensor(colors[1]))
            rgb = torch.where(hit[..., None], col, rgb)
        rgbs.append(rgb)
    return torch.stack(masks), torch.stack(depths), torch.stack(rgbs)


def ring_cams(n=8, size=64, elevations=(0.0, 35.0, -35.0)):
    el, az = uniform_orbit(n, elevations)
    return make_orbit_cameras(el, az, 2.0, 33.8, size, size)


def test_voxel_grid_centres_and_ij_order():
    g = voxel_grid(4)
    assert g.shape == (4, 4, 4, 3)
    assert torch.allclose(g[0, 0, 0], torch.tensor([-0.375, -0.375, -0.375]))
    assert torch.allclose(g[3, 0, 0], torch.tensor([0.375, -0.375, -0.375]))  # i runs over x
    assert torch.allclose(g[0, 0, 3], torch.tensor([-0.375, -0.375, 0.375]))  # k runs over z
    with pytest.raises(ValueError):
        voxel_grid(1)
    with pytest.raises(ValueError):
        voxel_grid(8, (0, 0, 0), (0, 1, 1))


def test_carving_recovers_sphere_volume():
    cams = ring_cams()
    masks, _, _ = sphere_views(cams, (0.1, 0.0, 0.0), 0.3)
    occ = carve_visual_hull(masks, cams, resolution=48)
    assert occ.shape == (48, 48, 48) and occ.dtype == torch.bool
    vol = occ.sum().item() / 48 ** 3
    true = 4 / 3 * math.pi * 0.3 ** 3
    assert 0.9 * true < vol < 1.25 * true  # a hull ~ contains the object (pixel-discretised masks)
    g = voxel_grid(48)
    assert not occ[(g - torch.tensor([0.1, 0, 0])).norm(dim=-1) > 0.45].any()
    assert occ[(g - torch.tensor([0.1, 0, 0])).norm(dim=-1) < 0.25].all()


def test_soft_voting_ignores_a_single_bad_mask():
    cams = ring_cams()
    masks, _, _ = sphere_views(cams, radius=0.3)
    bad = masks.clone()
    bad[0, 24:40, 24:40] = 0  # a hole punched into one view's mask
    g = voxel_grid(48)
    centre = (g.norm(dim=-1) < 0.1)
    occ1 = carve_visual_hull(bad, cams, 48, min_background_views=1)
    occ2 = carve_visual_hull(bad, cams, 48, min_background_views=2)
    assert not occ1[centre].all()  # k=1: the bad view tunnels through the sphere
    assert occ2[centre].all()  # k=2: one view alone cannot carve
    good = carve_visual_hull(masks, cams, 48, min_background_views=2)
    assert (occ2 == good).float().mean() > 0.999


def test_voxels_outside_an_image_do_not_vote():
    # a narrow-fov camera that sees only the middle of the box, plus nothing else: its
    # image is all background, but voxels projecting outside it must stay inside
    cams = make_orbit_cameras([0.0], [0.0], 2.0, 5.0, 32, 32)
    masks = torch.zeros(1, 32, 32)
    occ = carve_visual_hull(masks, cams, 32)
    g = voxel_grid(32)
    uv, z = project(g.reshape(-1, 3), cams.viewmats, cams.Ks)
    seen = ((uv[0, :, 0] >= 0) & (uv[0, :, 0] < 32) & (uv[0, :, 1] >= 0) & (uv[0, :, 1] < 32))
    assert not occ.reshape(-1)[seen].any()
    assert occ.reshape(-1)[~seen].all()


def test_hull_sdf_is_subvoxel_accurate():
    cams = ring_cams(8, 96, (0.0, 40.0))
    masks, _, _ = sphere_views(cams, radius=0.3)
    pts = torch.tensor([[0.3, 0.0, 0.0], [0.0, 0.3, 0.0], [0.0, 0.0, -0.3], [0.2, 0.0, 0.0],
                        [0.4, 0.0, 0.0]])
    s = hull_sdf(masks, cams, 32, points=pts)
    assert abs(float(s[0])) < 0.01 and abs(float(s[2])) < 0.01  # on the silhouette rim
    assert float(s[3]) < -0.05 and float(s[4]) > 0.05
    vol = hull_sdf(masks, cams, 32)
    assert vol.shape == (32, 32, 32)
    assert float((vol < 0).float().mean()) == pytest.approx(
        float((voxel_grid(32).norm(dim=-1) < 0.3).float().mean()), rel=0.15)


def test_mask_signed_distance_signs():
    m = torch.zeros(1, 16, 16)
    m[0, 4:12, 4:12] = 1
    sd = mask_signed_distance(m, smooth_px=0)
    assert sd[0, 8, 8] < -3 and sd[0, 0, 0] > 3
    assert sd[0, 4, 8] == pytest.approx(-0.5) and sd[0, 3, 8] == pytest.approx(0.5)
    # the default blur straightens pixel staircases but keeps a straight boundary in place
    sm = mask_signed_distance(m)
    assert sm[0, 4, 8] == pytest.approx(-0.5, abs=0.1)
    assert sm[0, 3, 8] == pytest.approx(0.5, abs=0.1)
    assert sm[0, 8, 8] < -2.5 and sm[0, 0, 0] > 2.5


def test_bad_inputs_are_refused():
    cams = ring_cams(4, 32, (0.0,))
    masks = torch.ones(4, 32, 32)
    with pytest.raises(ValueError, match="no views"):
        carve_visual_hull(torch.zeros(0, 32, 32), cams, 16)
    with pytest.raises(ValueError, match="cameras"):
        carve_visual_hull(masks[:3], cams, 16)
    with pytest.raises(ValueError, match="32x32"):
        carve_visual_hull(torch.ones(4, 16, 16), cams, 16)
    with pytest.raises(ValueError, match="min_background_views"):
        carve_visual_hull(masks, cams, 16, min_background_views=5)


def test_silhouette_disagreement_is_zero_for_one_solid_and_not_for_views_that_differ():
    cams = ring_cams(8, 96, (0.0, 30.0))
    # two off-centre spheres: silhouettes that change along the orbit
    m1, _, _ = sphere_views(cams, (0.12, 0.0, 0.0), 0.22)
    m2, _, _ = sphere_views(cams, (-0.15, 0.1, 0.05), 0.15)
    masks = torch.maximum(m1, m2)
    f, per = silhouette_disagreement(masks, cams)
    assert per.shape == (16,)
    assert f < DISAGREEMENT_GATE / 4  # one solid: every view agrees with the others' hull
    assert resolve_tolerance(masks, cams, None) == (0.0, f)
    # as generated orbits do, every view shows a slightly different object (radii +-10 %)
    g = torch.Generator().manual_seed(0)
    scale = 1 + (torch.rand(16, generator=g) * 2 - 1) * 0.10
    differ = torch.stack([torch.maximum(sphere_views(cams[i:i + 1], (0.12, 0.0, 0.0),
                                                     0.22 * float(scale[i]))[0],
                                        sphere_views(cams[i:i + 1], (-0.15, 0.1, 0.05),
                                                     0.15 * float(scale[i]))[0])[0]
                          for i in range(16)])
    fd, _ = silhouette_disagreement(differ, cams)
    assert fd > 3 * DISAGREEMENT_GATE
    tol, fr = resolve_tolerance(differ, cams, None)
    assert tol == 1.0 and fr == pytest.approx(fd)
    assert resolve_tolerance(differ, cams, 2.5) == (2.5, None)  # a given tolerance is kept
    with pytest.raises(ValueError, match="tolerance"):
        resolve_tolerance(masks, cams, -1.0)
    with pytest.raises(ValueError, match="2 views"):
        silhouette_disagreement(masks[:1], cams[:1])


def test_hull_tolerance_forgives_one_narrow_silhouette_only():
    cams = ring_cams(8, 96, (0.0, 40.0))
    masks, _, _ = sphere_views(cams, radius=0.3)
    exact = hull_sdf(masks, cams, 48)
    assert torch.equal(hull_sdf(masks, cams, 48, tolerance_px=0.0), exact)
    # one view's silhouette 1.5 px too narrow everywhere (an eroded mask)
    narrow = masks.clone()
    narrow[0] = (mask_signed_distance(masks[:1], smooth_px=0)[0] < -1.5).float()
    shrunk = hull_sdf(narrow, cams, 48)
    forgiven = hull_sdf(narrow, cams, 48, tolerance_px=2.0)
    vol = lambda f: float((f < 0).float().sum())
    assert vol(shrunk) < 0.97 * vol(exact)  # the exact hull follows the narrow view
    assert vol(forgiven) >= 0.995 * vol(exact)  # the tolerant one keeps the others' shape
    # ... but what two views carve is still carved: a 2-view tolerant hull of a smaller sphere
    # inside the big one's silhouettes in all but two views is not the big sphere
    small, _, _ = sphere_views(cams, radius=0.2)
    mixed = masks.clone()
    mixed[:2] = small[:2]
    tol = hull_sdf(mixed, cams, 48, tolerance_px=2.0)
    assert vol(tol) < 0.8 * vol(exact)
    with pytest.raises(ValueError, match="tolerance_px"):
        hull_sdf(masks, cams, 48, tolerance_px=-1.0)
