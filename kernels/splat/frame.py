"""Gaussian scenes between OrbitForge's world frame and the 3DGS splat frame (host-free maths).

OrbitForge's world (:mod:`.geometry.cameras`) is y-up, right-handed, the object at the origin: the
frame of glTF and three.js. Splat files (the 3DGS PLY of Kerbl et al. 2023, .splat, .spz, .ksplat)
and ComfyUI's ``SPLAT`` type use the 3DGS capture frame, which is y-down / z-forward (the OpenCV
camera convention of COLMAP). The two differ by a rotation of 180 degrees about x::

    p_splat = M p_world,   M = diag(1, -1, -1) = R_x(180 deg)   (det +1: no mirror)

so a scene moves between the frames as a rigid rotation:

* means ``p -> M p``;
* rotations ``R -> M R``, i.e. quaternions ``q -> q_x * q`` with ``q_x = (0, 1, 0, 0)`` (wxyz);
* log-scales and opacities are unchanged;
* SH colour coefficients of degree >= 1 transform with the rotation (a colour seen from direction
  ``d`` in one frame is seen from ``M d`` in the other): ``sh' = D(M) sh`` where ``D`` is the
  block-diagonal real-SH rotation matrix. For ``M`` it is diagonal with entries +-1 (each basis
  polynomial is odd or even in ``(y, z)`` jointly), computed here for any rotation by a
  least-squares fit of the basis, exact to float round-off because each SH band is closed under
  rotation.

``M`` is its own inverse, so :func:`to_splat_frame` and :func:`from_splat_frame` are the same map.
ComfyUI's ``SPLAT`` also stores activated values (linear scales, opacities in [0, 1], normalised
quaternions); :func:`gaussians_to_splat_fields` / :func:`splat_fields_to_gaussians` do that part
and check the values (finite, positive scales, counts within the padded size).
"""

from __future__ import annotations

import torch

from .gaussians import Gaussians
from .sh import num_sh_bases, sh_basis

FRAME_MAP = (1.0, -1.0, -1.0)  # diag(M): world (y-up) <-> 3DGS splat frame (y-down)
FRAME_QUAT = (0.0, 1.0, 0.0, 0.0)  # M as a wxyz quaternion (180 deg about x)


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``a * b`` of wxyz quaternions ``[..., 4]`` (broadcasting)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], -1)


def _fibonacci_dirs(n: int, dtype=torch.float64) -> torch.Tensor:
    i = torch.arange(n, dtype=dtype) + 0.5
    z = 1 - 2 * i / n
    r = (1 - z * z).clamp_min(0).sqrt()
    phi = i * (torch.pi * (3 - 5 ** 0.5))
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)  # [n, 3]


def sh_rotation_matrix(rot: torch.Tensor, degree: int) -> torch.Tensor:
    """``[K, K]`` matrix ``D`` (K = (degree+1)^2) with ``sh_new = D @ sh`` for a scene rotated by
    ``rot`` ``[3, 3]``: ``sum_k sh_new_k Y_k(R d) = sum_k sh_k Y_k(d)`` for every direction ``d``.

    Solved by least squares over 256 well-spread directions in float64 (exact up to round-off:
    each band of the real SH basis spans a rotation-invariant space)."""
    k = num_sh_bases(degree)
    r = rot.detach().to(torch.float64).cpu()
    dirs = _fibonacci_dirs(256)  # [S, 3]
    y_old = sh_basis(degree, dirs)  # [S, K]
    y_new = sh_basis(degree, dirs @ r.T)  # [S, K]: basis at the rotated directions
    # y_new @ D = y_old  (rows: directions); D acts on coefficient vectors as sh_new = D^T-free form
    sol = torch.linalg.lstsq(y_new, y_old).solution  # [K, K]: y_new @ sol = y_old
    # colour: y_new @ sh_new = y_old @ sh = y_new @ sol @ sh  =>  sh_new = sol @ sh
    assert sol.shape == (k, k)
    return sol


def to_splat_frame(g: Gaussians) -> Gaussians:
    """OrbitForge world frame -> 3DGS splat frame (the same map is its own inverse)."""
    m = torch.tensor(FRAME_MAP, dtype=g.means.dtype, device=g.means.device)
    q = torch.tensor(FRAME_QUAT, dtype=g.quats.dtype, device=g.quats.device)
    sh = g.sh
    if g.sh_degree >= 1:
        d = sh_rotation_matrix(torch.diag(m), g.sh_degree)
        d = d.round()  # exactly +-1 on the diagonal for M (checked in the tests)
        sh = torch.einsum("jk,nkc->njc", d.to(sh.dtype).to(sh.device), sh)
    return Gaussians(g.means * m, quat_multiply(q, g.quats), g.log_scales, g.opacity_logits, sh)


from_splat_frame = to_splat_frame  # M = M^-1


def gaussians_to_splat_fields(g: Gaussians) -> dict:
    """One scene -> the fields of ComfyUI's ``SPLAT`` (batch 1, splat frame, activated):
    positions ``[1,N,3]``, scales ``[1,N,3]`` linear, rotations ``[1,N,4]`` wxyz normalised,
    opacities ``[1,N,1]`` in [0, 1], sh ``[1,N,K,3]``, counts None."""
    s = to_splat_frame(g)
    return {"positions": s.means[None], "scales": torch.exp(s.log_scales)[None],
            "rotations": torch.nn.functional.normalize(s.quats, dim=-1)[None],
            "opacities": torch.sigmoid(s.opacity_logits)[None, :, None], "sh": s.sh[None],
            "counts": None}


_OPACITY_EPS = 1e-7


def splat_fields_to_gaussians(positions, scales, rotations, opacities, sh, counts=None,
                              name: str = "splat") -> list[Gaussians]:
    """``SPLAT`` fields (any batch, splat frame, activated) -> one :class:`Gaussians` per batch
    item in OrbitForge's frame. ``ValueError`` naming ``name`` for wrong shapes, counts beyond the
    padded size, non-finite values, non-positive scales, opacities outside [0, 1] or an SH count
    that is not a degree 0-3."""
    def shape(t):
        return tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__

    if not all(isinstance(t, torch.Tensor) for t in (positions, scales, rotations, opacities, sh)):
        raise ValueError(f"{name}: SPLAT fields must be tensors, got positions {shape(positions)}, "
                         f"sh {shape(sh)}; connect a SPLAT output")
    if positions.ndim == 2:  # one unbatched scene
        fields = (positions, scales, rotations, opacities, sh)
        positions, scales, rotations, opacities, sh = (t[None] for t in fields)
    b, n = positions.shape[:2]
    want = {"positions": (b, n, 3), "scales": (b, n, 3), "rotations": (b, n, 4)}
    for nm, t in (("positions", positions), ("scales", scales), ("rotations", rotations)):
        if tuple(t.shape) != want[nm]:
            raise ValueError(f"{name}: SPLAT {nm} must be {list(want[nm])}, got {list(t.shape)}")
    if opacities.shape[:2] != (b, n) or opacities.numel() != b * n:
        raise ValueError(f"{name}: SPLAT opacities must be [{b}, {n}, 1], got "
                         f"{list(opacities.shape)}")
    if sh.ndim != 4 or sh.shape[:2] != (b, n) or sh.shape[3] != 3:
        raise ValueError(f"{name}: SPLAT sh must be [{b}, {n}, K, 3], got {list(sh.shape)}")
    if sh.shape[2] not in (1, 4, 9, 16):
        raise ValueError(f"{name}: SPLAT sh holds {sh.shape[2]} coefficients per colour; "
                         "OrbitForge reads SH degree 0-3 (1, 4, 9 or 16)")
    lens = [n] * b
    if counts is not None:
        lens = [int(c) for c in torch.as_tensor(counts).reshape(-1).tolist()]
        if len(lens) != b:
            raise ValueError(f"{name}: SPLAT counts has {len(lens)} entries for a batch of {b}")
        bad = [c for c in lens if not 0 <= c <= n]
        if bad:
            raise ValueError(f"{name}: SPLAT counts {lens} exceed the padded size {n} (or are "
                             "negative); the splat is malformed, rebuild it")
    out = []
    for i in range(b):
        e = lens[i]
        if e == 0:
            raise ValueError(f"{name}: SPLAT item {i} holds 0 Gaussians; nothing to use")
        p, s, r = positions[i, :e].float(), scales[i, :e].float(), rotations[i, :e].float()
        o, c = opacities[i, :e].reshape(-1).float(), sh[i, :e].float()
        for nm, t in (("positions", p), ("scales", s), ("rotations", r), ("opacities", o),
                      ("sh", c)):
            if not torch.isfinite(t).all():
                raise ValueError(f"{name}: SPLAT {nm} of item {i} hold NaN/inf values; fix or "
                                 "drop those Gaussians before connecting")
        if (s <= 0).any():
            raise ValueError(f"{name}: SPLAT scales of item {i} must be positive (linear standard "
                             f"deviations), got min {float(s.min()):.3g}")
        if (o < 0).any() or (o > 1).any():
            raise ValueError(f"{name}: SPLAT opacities of item {i} must lie in [0, 1], got "
                             f"{float(o.min()):.3g}..{float(o.max()):.3g}")
        if (r.norm(dim=-1) == 0).any():
            raise ValueError(f"{name}: SPLAT rotations of item {i} hold zero quaternions")
        oc = o.clamp(_OPACITY_EPS, 1 - _OPACITY_EPS)
        g = Gaussians(p, r, torch.log(s), torch.log(oc) - torch.log1p(-oc), c)
        out.append(from_splat_frame(g))
    return out
