"""Camera self-calibration of orbits (kernels/geometry/calibrate.py, the Calibrate Orbit node and
the ``calibrate`` option of Gaussian Reconstruct / SDF Mesh), on renders of the bundled spot."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import trimesh

from orbitforge.kernels.geometry.calibrate import (
    AUTO,
    CalibrationConfig,
    apply_calibration,
    calibrate_orbit,
    held_out_consistency,
    orbit_consistency,
)
from orbitforge.kernels.geometry.cameras import (
    DEFAULT_RADIUS,
    SV3D_FOV_DEG,
    Cameras,
    make_orbit_cameras,
    sv3d_static_orbit,
)
from orbitforge.kernels.mesh.render import render_mesh
from orbitforge.kernels.sample import load_sample_mesh

SIZE = 128
RADIUS = 2.2  # spot (largest extent 1) fills the frame at SV3D's fov from here


@pytest.fixture(scope="module")
def spot():
    return load_sample_mesh()


def _render(mesh, el, az, size=SIZE):
    cams = make_orbit_cameras(el, az, RADIUS, SV3D_FOV_DEG, size, size)
    return render_mesh(mesh, cams), cams


def _nominal(n=21, size=SIZE, elevation=0.0, radius=DEFAULT_RADIUS):
    return make_orbit_cameras(*sv3d_static_orbit(elevation, n), radius, SV3D_FOV_DEG,
                                size, size)


@pytest.fixture(scope="module")
def static20(spot):
    """Spot on SV3D's static orbit at elevation 20 (the truth), 21 views."""
    el, az = sv3d_static_orbit(20.0)
    out, cams = _render(spot, el, az)
    return out, cams


def test_static_orbit_elevation_error_is_recovered(static20):
    out, truth = static20
    given = _nominal()  # elevation 0 (wrong by 20 degrees), SV3D's default distance 2.0
    res = calibrate_orbit(out["mask"], given)
    assert res.calibrated and res.status == "calibrated"
    err = (res.cameras.elevation - truth.elevation).abs().max().item()
    assert err <= 2.0, f"elevation {res.elevation_deg:.2f}, true 20 (error {err:.2f})"
    assert res.score_after > res.score_before + 0.1
    # the distance makes the object's largest extent 1: spot was rendered from 2.2
    assert abs(res.radius - RADIUS) / RADIUS < 0.05, res.radius
    # azimuths and image size as given; the result explains the views like the truth does
    assert torch.allclose(res.cameras.azimuth, given.azimuth, atol=1e-3)
    assert (res.cameras.width, res.cameras.height) == (SIZE, SIZE)
    truth_score, _ = orbit_consistency(out["mask"], truth)
    assert res.score_after >= truth_score - 0.01
    d = json.loads(json.dumps(res.to_dict()))  # JSON-able
    assert d["status"] == "calibrated" and len(d["per_view"]) == 21
    assert "elevation" in res.report() and f"{res.score_after:.3f}" in res.report()


def test_apply_calibration_moves_held_out_cameras_of_the_orbit(static20):
    out, truth = static20
    train = [i for i in range(21) if i % 3 != 1]
    held = [i for i in range(21) if i % 3 == 1]
    given = _nominal()
    res = calibrate_orbit(out["mask"][train], given[train])
    moved = apply_calibration(res, given[held])
    assert (moved.elevation - truth.elevation[held]).abs().max() <= 2.0
    assert torch.allclose(moved.azimuth, given.azimuth[held], atol=1e-3)
    assert torch.allclose(moved.radius, res.cameras.radius[:len(held)], atol=1e-4)
    # the held-out views agree with the training views' hull far better than before
    before = held_out_consistency(out["mask"][train], given[train], out["mask"][held],
                                    given[held])
    after = held_out_consistency(out["mask"][train], res.cameras, out["mask"][held], moved)
    assert after.mean() > 0.9 and after.mean() > before.mean() + 0.1, (before, after)


def test_dynamic_orbit_is_recovered_per_view(spot):
    el0, az = sv3d_static_orbit(0.0)
    true_el = 10.0 + 15.0 * np.sin(np.deg2rad(az) + 0.7)  # SV3D_p-like wave, +-15 degrees
    out, truth = _render(spot, true_el, az)
    given = _nominal()
    static = calibrate_orbit(out["mask"], given, CalibrationConfig(per_view=False))
    res = calibrate_orbit(out["mask"], given, CalibrationConfig(per_view=True))
    err = (res.cameras.elevation - truth.elevation).abs()
    assert err.max() <= 3.0, f"per-view elevation errors {err.numpy().round(1)}"
    assert res.per_view_used and res.score_after > static.score_after + 0.03
    # a static orbit cannot follow the wave: the per-view search is what recovers it
    assert (static.cameras.elevation - truth.elevation).abs().max() > 8.0
    # azimuths stay increasing along the orbit
    unw = np.rad2deg(np.unwrap(np.deg2rad(res.cameras.azimuth.double().numpy())))
    assert (np.diff(unw) > 0).all()


def test_auto_per_view_stays_static_for_a_static_orbit(static20):
    out, _ = static20
    res = calibrate_orbit(out["mask"], _nominal(), CalibrationConfig(per_view="auto"))
    assert res.calibrated and not res.per_view_used
    assert (res.cameras.elevation - 20.0).abs().max() <= 2.0


def _unrelated_masks(n=21, size=SIZE, seed=0):
    """One different object per view (boxes, spheres, tori, spot) at random poses."""
    rng = np.random.RandomState(seed)
    masks = []
    for f in range(n):
        g = [trimesh.creation.box((0.9, 0.3 + 0.6 * rng.rand(), 0.4)),
             trimesh.creation.icosphere(3, 0.3 + 0.2 * rng.rand()),
             trimesh.creation.torus(0.3, 0.1 + 0.1 * rng.rand()),
             load_sample_mesh()][f % 4]
        g.apply_transform(trimesh.transformations.random_rotation_matrix(rng.rand(3)))
        cam = make_orbit_cameras(rng.uniform(-30, 60), rng.uniform(0, 360), RADIUS,
                                   SV3D_FOV_DEG, size, size)
        masks.append(render_mesh(g, cam)["mask"][0])
    return torch.stack(masks)


def test_unrelated_views_are_refused_and_cameras_left_unchanged():
    masks = _unrelated_masks()
    given = _nominal()
    res = calibrate_orbit(masks, given, CalibrationConfig(per_view=True))
    assert not res.calibrated and res.status == "refused"
    assert res.cameras is given
    assert res.best_score < CalibrationConfig().min_score
    assert f"{res.best_score:.3f}" in res.message and "unchanged" in res.message


def test_bad_input_is_refused_before_work(static20):
    out, truth = static20
    with pytest.raises(ValueError, match="at least 4 views"):
        calibrate_orbit(out["mask"][:3], truth[:3])
    m = out["mask"].clone()
    m[5] = 0
    with pytest.raises(ValueError, match=r"view\(s\) \[5\] have no object pixel"):
        calibrate_orbit(m, truth)
    with pytest.raises(ValueError, match="object almost everywhere"):
        calibrate_orbit(torch.ones_like(out["mask"]), truth)
    with pytest.raises(ValueError, match="21 views but 20 cameras"):
        calibrate_orbit(out["mask"], truth[list(range(20))])
    off = Cameras(truth.viewmats.clone(), truth.Ks, SIZE, SIZE)
    off.viewmats[:, 0, 3] += 0.5  # shifted sideways: no longer looking at the origin
    with pytest.raises(ValueError, match="do not look at the origin"):
        calibrate_orbit(out["mask"], Cameras(off.viewmats, off.Ks, SIZE, SIZE))


def test_exact_cameras_are_kept(static20):
    out, truth = static20
    res = calibrate_orbit(out["mask"], truth, CalibrationConfig(**AUTO))
    assert res.status == "kept" and res.cameras is truth
    assert res.score_before >= 0.9
    # cameras that explain the views that well are not even searched
    res = calibrate_orbit(out["mask"], truth, CalibrationConfig(**{**AUTO,
                                                                       "skip_above": 0.9}))
    assert res.status == "kept" and "no search run" in res.message


# ----------------------------------------------------------------------------------------------
# Nodes
# ----------------------------------------------------------------------------------------------


def test_calibrate_orbit_node_sv3d_static_mode(static20):
    from orbitforge.nodes.calibrate import CalibrateOrbit

    out, _ = static20
    cams, report, js = CalibrateOrbit().calibrate(out["rgb"], "SV3D static orbit, elevation "
                                                  "unknown", "off")  # masks from white
    d = json.loads(js)
    assert d["status"] == "calibrated" and abs(d["elevation_deg"] - 20.0) <= 2.0
    assert isinstance(cams, Cameras) and len(cams) == 21
    assert (cams.elevation - 20.0).abs().max() <= 2.0
    assert report.startswith("calibrated") and "before" in report


def test_calibrate_orbit_node_refuses_and_checks_inputs(static20):
    from orbitforge.nodes.calibrate import CalibrateOrbit

    out, truth = static20
    node = CalibrateOrbit()
    masks = _unrelated_masks(seed=1)
    given = _nominal()
    cams, report, js = node.calibrate(out["rgb"], "given cameras", "off", cameras=given,
                                      mask=masks)
    assert json.loads(js)["status"] == "refused" and "refused" in report
    assert torch.equal(cams.viewmats, given.viewmats) and torch.equal(cams.Ks, given.Ks)
    with pytest.raises(ValueError, match="needs the cameras input"):
        node.calibrate(out["rgb"], "given cameras", "auto")
    with pytest.raises(ValueError, match="photometric must be one of"):
        node.calibrate(out["rgb"], "SV3D static orbit, elevation unknown", "auto",
                       photometric="sometimes")
    with pytest.raises(ValueError, match="at least 4 views"):
        node.calibrate(out["rgb"][:2], "SV3D static orbit, elevation unknown", "auto")
    with pytest.raises(ValueError, match="no object pixel"):
        node.calibrate(torch.ones_like(out["rgb"]), "SV3D static orbit, elevation unknown",
                       "auto")


def test_reconstruction_option_calibrates_only_when_needed(static20):
    from orbitforge.nodes.calibrate import calibrate_for_reconstruction

    out, truth = static20
    # exact cameras: auto keeps them
    assert calibrate_for_reconstruction(out["rgb"], None, truth, "auto") is truth
    # wrong elevation: auto calibrates
    fixed = calibrate_for_reconstruction(out["rgb"], out["mask"], _nominal(), "auto")
    assert (fixed.elevation - 20.0).abs().max() <= 2.0
    off = calibrate_for_reconstruction(out["rgb"], None, _nominal(), "off")
    assert off.elevation.abs().max() == 0
    # too few views: auto leaves them to the node's own checks, 'on' says why it cannot
    few = _nominal(3)
    assert calibrate_for_reconstruction(out["rgb"][:3], None, few, "auto") is few
    with pytest.raises(ValueError, match="at least 4 views"):
        calibrate_for_reconstruction(out["rgb"][:3], None, few, "on")


def test_sdf_mesh_node_uses_the_calibrated_orbit(static20):
    """SDF Mesh with the wrong elevation: calibrate off carves a hull that the views do not
    explain; auto recovers the orbit and the mesh's silhouettes match the views."""
    from orbitforge.nodes.host.geometry import read_mesh
    from orbitforge.nodes.mesh import SDFMesh

    out, truth = static20
    args = dict(cameras=_nominal(), resolution=48, mode="fast", min_background_views=1,
                watertight=False, target_faces=0, smooth_iterations=0, color="none",
                texture_size=64, depth_source="none", masks=out["mask"], polish_steps=0)
    ious = {}
    for mode in ("off", "auto"):
        mesh = SDFMesh().build(**args, calibrate=mode)[0]
        tm = read_mesh(mesh, "mesh", single=True)[0].to_trimesh(0)
        sil = render_mesh(tm, truth.resized(64, 64))["mask"]
        ref = torch.nn.functional.interpolate(out["mask"][:, None], size=(64, 64),
                                              mode="area")[:, 0]
        inter = ((sil > 0.5) & (ref > 0.5)).sum().item()
        ious[mode] = inter / ((sil > 0.5) | (ref > 0.5)).sum().item()
    assert ious["auto"] > 0.85 and ious["auto"] > ious["off"] + 0.05, ious


def test_reconstruction_option_registers_the_views_of_a_dynamic_orbit(spot, static20):
    """A dynamic orbit whose azimuths also wander (SV3D_p adds a random walk): the
    silhouette calibration follows the elevation wave smoothly; registering every view to a
    short 3DGS fit then brings the cameras closer to the truth. A static orbit is left to the
    silhouettes alone."""
    from orbitforge.nodes.calibrate import reconstruction_calibration

    _, az = sv3d_static_orbit(0.0)
    true_el = 10.0 + 15.0 * np.sin(np.deg2rad(az) + 0.7)
    rng = np.random.RandomState(0)
    true_az = az + np.r_[rng.uniform(-6, 6, 20), 0.0]  # the input view (last) stays at 0
    out, truth = _render(spot, true_el, true_az, size=64)
    cams, res, reg = reconstruction_calibration(out["rgb"], out["mask"], _nominal(size=64),
                                                "auto")
    assert res.per_view_used and reg is not None
    assert torch.equal(cams.viewmats, reg.cameras.viewmats)

    def err(c):
        return float((c.elevation - truth.elevation).abs().mean()
                     + ((c.azimuth - truth.azimuth + 180) % 360 - 180).abs().mean())

    assert err(cams) < 0.75 * err(res.cameras), (err(cams), err(res.cameras))
    out20, _ = static20
    _, res20, reg20 = reconstruction_calibration(out20["rgb"], out20["mask"], _nominal(),
                                                 "auto")
    assert res20.calibrated and not res20.per_view_used and reg20 is None


def test_calibrate_orbit_node_photometric_on_registers_every_view(spot):
    """Calibrate Orbit with photometric on: the silhouette result, then every view registered
    to a short 3DGS fit; the report and the JSON say so, and the static orbit's true
    elevation survives the registration."""
    from orbitforge.nodes.calibrate import CalibrateOrbit

    el, az = sv3d_static_orbit(20.0)
    out, _ = _render(spot, el, az, size=64)
    cams, report, js = CalibrateOrbit().calibrate(
        out["rgb"], "SV3D static orbit, elevation unknown", "off", photometric="on")
    d = json.loads(js)
    assert d["status"] == "calibrated" and len(d["registration"]["d_azimuth"]) == 21
    assert "registered to a short 3DGS fit" in report
    assert (cams.elevation - 20.0).abs().max() <= 3.0
    assert (cams.width, cams.height) == (64, 64)
