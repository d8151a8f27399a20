"""A procedural shape zoo for the mesh benchmark: constructive solid geometry, no files.

The five organic test meshes have no flat faces, sharp edges, through-holes or thin parts; these
shapes have all of them. Each is built with manifold3d booleans (exact, watertight), seeded:
``seed`` 0 gives the canonical dimensions, another seed jitters every dimension by up to
``±jitter`` (5 %) so a method cannot be tuned to one set of numbers.

Orientation: y is up (the orbit's axis). Every through-hole axis is horizontal, pointing at
azimuth 0 (+z) or 90 (+x), because the benchmark's orbits see through horizontal holes only:
SV3D's dynamic orbit (seed 0) has its conditioning frame at azimuth 0, elevation 10, and frame 5
at azimuth 100, elevation -10; the static orbit at elevation 10 sees along +z and +x directly.
Whether the orbit really sees through a shape's holes is measured, not assumed: see
``bench.mesh``'s ``genus_seen`` (genus of the visual hull of the ground-truth silhouettes).
"""

from __future__ import annotations

import math

import numpy as np
import trimesh

SHAPES = ("box_hole", "l_bracket", "gear", "torus", "mug", "plate_holes", "sphere_cube")


def _to_trimesh(man) -> trimesh.Trimesh:
    out = man.to_mesh()
    m = trimesh.Trimesh(np.asarray(out.vert_properties)[:, :3].astype(np.float64),
                        np.asarray(out.tri_verts).astype(np.int64), process=True)
    if not m.is_watertight or m.volume <= 0:
        raise RuntimeError("zoo: constructive geometry gave a non-watertight mesh")
    return m


def _cyl(r: float, h: float, axis: str, n: int = 96):
    """A cylinder of radius ``r``, length ``h`` centred at the origin along ``axis``."""
    from manifold3d import Manifold

    c = Manifold.cylinder(h, r, r, n).translate((0, 0, -h / 2))  # along z
    if axis == "x":
        c = c.rotate((0, 90, 0))
    elif axis == "y":
        c = c.rotate((90, 0, 0))
    return c


def _box(sx, sy, sz, center=(0.0, 0.0, 0.0)):
    from manifold3d import Manifold

    return Manifold.cube((sx, sy, sz), True).translate(center)


def _extrude_z(poly: np.ndarray, depth: float):
    """A 2-D polygon ``[N, 2]`` in the xy plane (counter-clockwise) extruded along z, centred."""
    from manifold3d import CrossSection, Manifold

    cs = CrossSection([poly.astype(np.float64).tolist()])
    return Manifold.extrude(cs, depth).translate((0, 0, -depth / 2))


def make_shape(name: str, seed: int = 0, jitter: float = 0.05) -> trimesh.Trimesh:
    """The zoo shape ``name`` (one of :data:`SHAPES`) as a watertight ``trimesh.Trimesh``.

    Raises ``ValueError`` naming the shape and the valid names for an unknown one."""
    if name not in SHAPES:
        raise ValueError(f"unknown zoo shape {name!r}; choose from {', '.join(SHAPES)}")
    rng = np.random.default_rng(seed)

    def j(x: float) -> float:  # seeded dimension jitter (seed 0 = canonical)
        return float(x) if seed == 0 else float(x) * (1 + rng.uniform(-jitter, jitter))

    from manifold3d import CrossSection, Manifold

    if name == "box_hole":  # a block with a round through-hole along z (seen at azimuth 0)
        m = _box(j(1.0), j(0.6), j(0.45)) - _cyl(j(0.16), 1.0, "z")
    elif name == "l_bracket":  # L profile, fillet at the inner corner, chamfer at the outer
        t, a, b = j(0.18), j(1.0), j(0.8)
        rf, ch = j(0.12), j(0.14)
        pts = [(0, 0), (a, 0), (a, t)]
        # inner corner at (t, t): a quarter-circle fillet of radius rf
        cx, cy = t + rf, t + rf
        for k in range(17):
            ang = -math.pi / 2 - k * (math.pi / 2) / 16
            pts.append((cx + rf * math.cos(ang), cy + rf * math.sin(ang)))
        pts += [(t, b), (0, b)]
        poly = np.array(pts)
        # chamfer the outer corner (0, 0)
        poly = np.concatenate([[(ch, 0.0)], poly[1:-1], [(0.0, b), (0.0, ch)]])
        m = _extrude_z(poly - poly.mean(0), j(0.6))
    elif name == "gear":  # 16 thin teeth, an axle hole along z
        n, r_root, r_tip, w = 16, j(0.40), j(0.5), 0.32
        pts = []
        for k in range(n):
            a0 = 2 * math.pi * k / n
            da = 2 * math.pi / n
            for f, r in ((0.0, r_root), (w * 0.25, r_tip), (w, r_tip), (w * 1.25, r_root)):
                a = a0 + f * da
                pts.append((r * math.cos(a), r * math.sin(a)))
        m = _extrude_z(np.array(pts), j(0.22)) - _cyl(j(0.12), 1.0, "z")
    elif name == "torus":  # axis along z: the ring's hole is seen at azimuth 0
        R, r = j(0.32), j(0.13)
        m = Manifold.revolve(CrossSection.circle(r, 64).translate((R, 0)), 96)
    elif name == "mug":  # open cup (concave inside) + a handle whose hole is seen at azimuth 0
        ro, h, wall, bot = j(0.3), j(0.62), j(0.045), j(0.06)
        cup = _cyl(ro, h, "y") - _cyl(ro - wall, h, "y").translate((0, bot, 0))
        Rh, rh = j(0.17), j(0.045)
        handle = Manifold.revolve(CrossSection.circle(rh, 32).translate((Rh, 0)), 64)
        handle = handle.translate((ro, 0, 0)) - _cyl(ro - wall / 2, h, "y")
        m = cup + handle
    elif name == "plate_holes":  # a thin plate (normal along z) with three holes
        th = j(0.05)
        m = _box(j(1.0), j(0.7), th)
        for x, y, r in ((-0.28, 0.1, 0.11), (0.05, -0.12, 0.09), (0.3, 0.15, 0.07)):
            m = m - _cyl(j(r), 1.0, "z").translate((j(x), j(y), 0))
    else:  # sphere_cube: a cube intersected with a sphere (flat faces meet a round blend)
        s = j(0.8)
        m = _box(s, s, s) ^ Manifold.sphere(j(0.55), 96)
    return _to_trimesh(m)


def fine_copy(mesh, max_edge: float) -> trimesh.Trimesh:
    """``mesh`` split (no smoothing: same geometry) until no edge is longer than ``max_edge``."""
    v, f = trimesh.remesh.subdivide_to_size(mesh.vertices, mesh.faces, max_edge, max_iter=20)
    return trimesh.Trimesh(v, f, process=False)


def paint_noise(mesh: trimesh.Trimesh, seed: int = 0, edge: float = 1 / 200
                ) -> trimesh.Trimesh:
    """``mesh`` (normalised: largest extent 1) split to edges of at most ``edge`` (same
    geometry) and given vertex colours from a seeded sum of six 3-D sinusoids (periods 0.025 to
    0.07, mixed across the channels): a texture fine enough for stereo windows at 128 px, so the
    views of a plain CAD shape have something to match, as generated views do."""
    out = fine_copy(mesh, edge)
    v = np.asarray(out.vertices)
    rng = np.random.default_rng(seed)
    col = np.zeros((len(v), 3))
    for _ in range(6):
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        freq, phase = rng.uniform(15, 40), rng.uniform(0, 2 * np.pi)
        col += rng.uniform(0.3, 1.0, size=3) * np.sin(2 * np.pi * freq * (v @ d) + phase)[:, None]
    col = np.clip(0.55 + 0.35 * np.tanh(col / 2), 0, 1)
    out.visual = trimesh.visual.ColorVisuals(out, vertex_colors=(col * 255).astype(np.uint8))
    return out


def load_or_make(spec: str, seed: int = 0) -> tuple[str, trimesh.Trimesh]:
    """``"zoo:NAME"`` -> the zoo shape, anything else -> the mesh file (``load_mesh``); returns
    ``(label, mesh)``. A mesh file without volume raises ``ValueError`` naming the file."""
    if spec.startswith("zoo:"):
        name = spec[4:]
        return name, make_shape(name, seed)
    import os

    from ..kernels.mesh.render import load_mesh

    if not os.path.exists(spec):
        raise ValueError(f"mesh file {spec!r} does not exist")
    mesh = load_mesh(spec)
    check_volume(mesh, spec)
    return os.path.splitext(os.path.basename(spec))[0], mesh


def check_volume(mesh: trimesh.Trimesh, name: str) -> None:
    """Raise ``ValueError`` when ``mesh`` (from ``name``) encloses no volume: a planar or
    degenerate mesh has no inside, so volume IoU and genus mean nothing for it."""
    ext = mesh.extents if len(mesh.vertices) else np.zeros(3)
    vol = abs(float(mesh.volume)) if len(mesh.faces) else 0.0
    big = float(np.max(ext)) if len(ext) else 0.0
    if big <= 0 or float(np.min(ext)) <= 1e-6 * big or vol <= 1e-9 * big ** 3:
        raise ValueError(f"mesh {name!r} has zero volume (extents {np.round(ext, 6).tolist()}, "
                         f"volume {vol:.3g}): a planar or open mesh has no inside, so IoU and "
                         "genus cannot be measured; give a closed solid mesh")
