"""Tiled pure-torch 3D Gaussian rasteriser (any device), the default back end of
:func:`orbitforge.kernels.splat.rasterize.rasterize` (conventions documented there).

The pixel stage is a custom autograd Function with a hand-written backward. Layout: (tile,
Gaussian) pairs sorted by tile then depth (one stable sort); tiles are bucketed by pair count and
each bucket is processed as padded ``[tiles, tile_px, slots]`` blocks, front to back in chunks of
``chunk_slots`` slots, dropping tiles whose pixels have all stopped (early exit). Per chunk: the
Mahalanobis distance is one matmul of per-pair polynomial coefficients with a fixed pixel basis,
the transmittance one ``cumprod`` (carried across chunks), colours+depth one ``bmm``; median depth
by binary search on the monotone transmittance. The backward uses the saved weights and
transmittances (or recomputes them per chunk when there are more than ``save_elems`` of them);
per-pixel work is a ``bmm``, a ``cumsum`` and a few elementwise ops. Float32 accuracy vs a float64
reference: ~1e-5 on values (the polynomial expansion loses a little), ~1e-5 relative on gradients.
"""

from __future__ import annotations

import bisect

import torch

from .gaussians import quat_to_rotmat
from .rasterize_types import ALPHA_MAX, ALPHA_MIN, EPS2D, LOG_ALPHA_MIN, T_MIN, RenderOutput
from .sh import sh_to_color


def project_gaussians(means, quats, scales, viewmats, Ks, width, height, near_plane=0.01,
                      far_plane=1e10):
    """EWA projection of ``N`` Gaussians into ``C`` cameras (differentiable).

    Returns ``means2d`` [C, N, 2] (pixels), ``conics`` [C, N, 3] (upper triangle ``a, b, c`` of the
    inverse 2D covariance), ``cov2d`` [C, N, 3] (``xx, xy, yy``, dilated), ``depths`` [C, N],
    ``radii`` [C, N] int32 (0 = culled)."""
    R = viewmats[:, :3, :3]  # [C, 3, 3]
    t = viewmats[:, :3, 3]  # [C, 3]
    p = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]  # [C, N, 3]
    rot = quat_to_rotmat(quats)  # [N, 3, 3]
    M = rot * scales[:, None, :]  # [N, 3, 3]  R S
    RM = torch.einsum("cij,njk->cnik", R, M)  # [C, N, 3, 3]  camera-frame R S
    x, y, z = p.unbind(-1)
    ok = (z > near_plane) & (z < far_plane)
    zs = torch.where(ok, z, torch.ones_like(z))
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    lim_xp, lim_xn = (width - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x
    lim_yp, lim_yn = (height - cy) / fy + 0.3 * tan_y, cy / fy + 0.3 * tan_y
    iz = 1.0 / zs
    xc = zs * torch.minimum(torch.maximum(x * iz, -lim_xn), lim_xp)
    yc = zs * torch.minimum(torch.maximum(y * iz, -lim_yn), lim_yp)
    # rows of J (2x3): [fx/z, 0, -fx xc/z^2], [0, fy/z, -fy yc/z^2]
    j00, j02 = fx * iz, -fx * xc * iz * iz
    j11, j12 = fy * iz, -fy * yc * iz * iz
    # T = J (R_c M): [C, N, 2, 3]; cov2d = T T^T
    T0 = j00[..., None] * RM[..., 0, :] + j02[..., None] * RM[..., 2, :]
    T1 = j11[..., None] * RM[..., 1, :] + j12[..., None] * RM[..., 2, :]
    sxx = (T0 * T0).sum(-1) + EPS2D
    sxy = (T0 * T1).sum(-1)
    syy = (T1 * T1).sum(-1) + EPS2D
    det = sxx * syy - sxy * sxy
    det_s = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([syy / det_s, -sxy / det_s, sxx / det_s], -1)  # [C, N, 3]
    K2 = Ks[:, :2, :]  # [C, 2, 3]
    means2d = torch.einsum("cij,cnj->cni", K2, p) * iz[..., None]  # [C, N, 2]
    with torch.no_grad():
        b = 0.5 * (sxx + syy)
        v1 = b + torch.sqrt(torch.clamp(b * b - det, min=0.01))
        rad = torch.ceil(3.0 * torch.sqrt(v1))
        vis = ok & (det > 0)
        mx, my = means2d[..., 0], means2d[..., 1]
        vis &= (mx + rad > 0) & (mx - rad < width) & (my + rad > 0) & (my - rad < height)
        radii = torch.where(vis, rad, torch.zeros_like(rad)).to(torch.int32)
    cov2d = torch.stack([sxx, sxy, syy], -1)
    return means2d, conics, cov2d, z, radii


def _camera_colors(means, colors, viewmats, sh_degree):
    """Per-camera colours [C, N, 3]."""
    C = viewmats.shape[0]
    if sh_degree is None:
        return colors.unsqueeze(0).expand(C, -1, -1)
    R = viewmats[:, :3, :3]
    t = viewmats[:, :3, 3]
    centres = -torch.einsum("cji,cj->ci", R, t)  # [C, 3]
    dirs = means[None, :, :] - centres[:, None, :]  # [C, N, 3]
    coeffs = colors.unsqueeze(0).expand(C, -1, -1, -1)
    return sh_to_color(sh_degree, dirs, coeffs)


# ----------------------------------------------------------------------------------------------
# tile binning
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def _bin_pairs(means2d, cov2d, conics, depths, radii, opacities, width, height, tile):
    """(tile, Gaussian) pairs sorted by (camera, tile, depth).

    Returns ``pair_cg`` [P] (flat index c*N+g), ``pair_tile`` [P] (flat index c*nT+tile),
    ``tile_counts`` [C*nT]."""
    C, N = depths.shape
    dev = depths.device
    tw, th = -(-width // tile), -(-height // tile)
    ext2 = 2.0 * torch.log(255.0 * opacities.clamp_min(1e-30))  # [N] footprint: sigma <= ext2/2
    live = (radii > 0) & (ext2 > 0)[None, :]
    order = torch.argsort(torch.where(live, depths, torch.full_like(depths, float("inf"))), dim=1,
                          stable=True)  # [C, N]
    cam = torch.arange(C, device=dev)[:, None].expand(C, N)
    live_sorted = torch.gather(live, 1, order)
    cam_s, g_s = cam[live_sorted], order[live_sorted]  # [M]
    if g_s.numel() == 0:
        z = torch.zeros(0, dtype=torch.long, device=dev)
        return z, z, torch.zeros(C * tw * th, dtype=torch.long, device=dev)
    flat_s = cam_s * N + g_s  # [M] flat (camera, Gaussian) index, depth order per camera
    m = means2d.reshape(-1, 2).index_select(0, flat_s)  # [M, 2]
    cv = cov2d.reshape(-1, 3).index_select(0, flat_s)  # [M, 3]
    e2 = ext2.index_select(0, g_s)
    hx = torch.sqrt(e2 * cv[:, 0]) * (1 + 1e-4) + 1e-3
    hy = torch.sqrt(e2 * cv[:, 2]) * (1 + 1e-4) + 1e-3
    # pixel centres j + 0.5 inside [mx - hx, mx + hx]
    jx0 = torch.ceil(m[:, 0] - hx - 0.5).clamp(0, width - 1)
    jx1 = torch.floor(m[:, 0] + hx - 0.5).clamp(-1, width - 1)
    jy0 = torch.ceil(m[:, 1] - hy - 0.5).clamp(0, height - 1)
    jy1 = torch.floor(m[:, 1] + hy - 0.5).clamp(-1, height - 1)
    tx0 = torch.floor(jx0 / tile)
    tx1 = torch.floor(jx1 / tile)
    ty0 = torch.floor(jy0 / tile)
    ty1 = torch.floor(jy1 / tile)
    nx = torch.where(jx1 >= jx0, tx1 - tx0 + 1, torch.zeros_like(tx0))
    ny = torch.where(jy1 >= jy0, ty1 - ty0 + 1, torch.zeros_like(ty0))
    cnt = (nx * ny).long()
    total = int(cnt.sum())
    src = torch.repeat_interleave(torch.arange(cnt.numel(), device=dev), cnt, output_size=total)
    start = torch.cumsum(cnt, 0) - cnt
    local = (torch.arange(total, device=dev) - start.index_select(0, src)).to(m.dtype)
    nxs = nx.index_select(0, src)
    row = torch.floor((local + 0.5) / nxs)  # exact for the small integers involved
    ptx = tx0.index_select(0, src) + (local - row * nxs)
    pty = ty0.index_select(0, src) + row
    # exact cull: does the footprint ellipse reach the tile's pixel-centre rectangle?
    con = conics.reshape(-1, 3).index_select(0, flat_s)
    keep = _ellipse_hits_rect(con.index_select(0, src), m.index_select(0, src),
                              e2.index_select(0, src), ptx, pty, tile, width, height)
    kidx = torch.nonzero(keep).flatten()
    src = src.index_select(0, kidx)
    ptx = ptx.index_select(0, kidx).long()
    pty = pty.index_select(0, kidx).long()
    pair_cg = flat_s.index_select(0, src)
    pair_tile = cam_s.index_select(0, src) * (tw * th) + pty * tw + ptx
    # stable sort by tile keeps the depth order inside each tile
    pair_tile, perm = torch.sort(pair_tile, stable=True)
    pair_cg = pair_cg.index_select(0, perm)
    tile_counts = torch.bincount(pair_tile, minlength=C * tw * th)
    return pair_cg, pair_tile, tile_counts


def _ellipse_hits_rect(con, m, e2, ptx, pty, tile, width, height):
    """Whether ``0.5 d^T conic d <= e2/2`` for some point of the tile's pixel-centre rectangle
    (conservative: a small margin is added)."""
    x0 = ptx * tile + 0.5
    x1 = torch.clamp(ptx * tile + tile - 0.5, max=width - 0.5)
    y0 = pty * tile + 0.5
    y1 = torch.clamp(pty * tile + tile - 0.5, max=height - 0.5)
    x0, x1, y0, y1 = (v.to(m.dtype) for v in (x0, x1, y0, y1))
    a, b, c = con.unbind(-1)
    mx, my = m.unbind(-1)
    inside = (mx >= x0) & (mx <= x1) & (my >= y0) & (my <= y1)
    best = torch.full_like(mx, float("inf"))
    # vertical edges x = const: q(y) = a dx^2 + 2 b dx dy + c dy^2 minimised over dy
    for xe in (x0, x1):
        dx = xe - mx
        dy = (-(b * dx) / c).clamp(y0 - my, y1 - my)
        best = torch.minimum(best, a * dx * dx + 2 * b * dx * dy + c * dy * dy)
    for ye in (y0, y1):
        dy = ye - my
        dx = (-(b * dy) / a).clamp(x0 - mx, x1 - mx)
        best = torch.minimum(best, a * dx * dx + 2 * b * dx * dy + c * dy * dy)
    return inside | (best <= e2 * (1 + 1e-3) + 1e-3)


def _make_buckets(tile_counts, tile_px, block_elems):
    """Group the non-empty tiles into buckets of similar pair count.

    Returns a list of (tile ids [nt] (long), L)."""
    counts = tile_counts
    nz = torch.nonzero(counts > 0).flatten()
    if nz.numel() == 0:
        return []
    c = counts[nz]
    c_sorted, perm = torch.sort(c)
    tiles_sorted = nz[perm]
    cs = c_sorted.tolist()
    out = []
    i, n = 0, len(cs)
    while i < n:
        lo = cs[i]
        cap = max(lo + 8, int(lo * 1.25))
        j = bisect.bisect_right(cs, cap, i, n)
        max_nt = max(1, block_elems // (cap * tile_px))
        j = min(j, i + max_nt)
        out.append((tiles_sorted[i:j], cs[j - 1]))
        i = j
    return out


# ----------------------------------------------------------------------------------------------
# the pixel stage: custom autograd Function
# ----------------------------------------------------------------------------------------------


def _pixel_basis(tile, dtype, device):
    """[6, tile*tile] basis (1, u, v, u^2, uv, v^2) of pixel offsets from the tile centre."""
    r = torch.arange(tile, device=device, dtype=dtype) + 0.5 - 0.5 * tile
    v, u = torch.meshgrid(r, r, indexing="ij")
    u, v = u.reshape(-1), v.reshape(-1)
    return torch.stack([torch.ones_like(u), u, v, u * u, u * v, v * v], 0)


def _alpha_floor(dtype) -> float:
    """Largest value below 1/255 in ``dtype``: ``threshold(x, floor)`` keeps ``x >= 1/255``."""
    return float(torch.nextafter(torch.tensor(ALPHA_MIN, dtype=dtype),
                                 torch.tensor(0.0, dtype=dtype)))


def _chunk_forward(ncoef, basis_t, clampable, floor, carry, done):
    """Compositing weights of ``Lc`` consecutive pair slots of ``n`` tiles.

    ncoef [n, Lc, 6] (coefficients of -sigma'), basis_t [px, 6], carry [n, px] the transmittance
    before these slots, done [n, px] bool (pixels that already stopped) or None. Returns ``a``
    [n, px, Lc] (alpha, only when ``clampable`` (some opacity >= 0.99), else None), ``w``
    [n, px, Lc] the compositing weights, ``nT`` [n, px, Lc] = minus the transmittance after each
    slot (ascending, so it can be binary-searched; held constant once a pixel stops) and
    ``stopped`` [n, px] bool (pixels that stop in these slots) or None."""
    x = torch.matmul(basis_t, ncoef.transpose(1, 2))  # [n, px, Lc]  -sigma'
    x.clamp_(min=-LOG_ALPHA_MIN - 1.0)  # these are skipped anyway; avoids slow denormals in exp
    x.exp_()
    torch.nn.functional.threshold_(x, floor, 0.0)  # alpha < 1/255: skipped
    if clampable:
        x.clamp_max_(ALPHA_MAX)
    if done is not None:
        x.masked_fill_(done.unsqueeze(-1), 0.0)
    a = x.clone() if clampable else None
    one = torch.ones((), dtype=x.dtype, device=x.device)
    torch.sub(one, x, out=x)  # 1 - alpha
    x[..., 0].mul_(-carry)
    nT = torch.cumprod(x, -1)  # -T_after
    del x
    n, px, Lc = nT.shape
    stopped = None
    if bool((nT[..., -1] >= -T_MIN).any()):
        # a pixel stops before the slot after which T would be <= 1e-4: that pair and all later
        # ones are dropped. The kept prefix is unchanged; holding T at its last kept value makes
        # every later weight T_before - T_after exactly 0.
        k = torch.searchsorted(nT, torch.full((n, px, 1), -T_MIN, dtype=nT.dtype, device=nT.device))
        prev = torch.gather(nT, -1, (k - 1).clamp_min(0))[..., 0]
        lim = torch.where(k[..., 0] > 0, prev, -carry)
        nT.clamp_(max=lim.unsqueeze(-1))
        stopped = k[..., 0] < Lc
    # T_before - T_after = alpha T_before
    w = torch.diff(nT, dim=-1, prepend=(-carry).unsqueeze(-1))
    return a, w, nT, stopped


class _Composite(torch.autograd.Function):
    """Pixel stage. Inputs: per-pair ``coef`` [P, 6] (sigma' = sigma - log(opacity) as a
    polynomial in the pixel offset from the tile centre) and ``feat`` [P, F]. Outputs per tile
    pixel: ``out`` = sum_i w_i feat_i [nTT, px, F], ``acc`` = sum_i w_i [nTT, px] and the
    (non-differentiable) median value of feature ``depth_col`` [nTT, px].

    Each bucket is processed in chunks of ``chunk`` slots, front to back; tiles whose pixels have
    all stopped (transmittance <= 1e-4) are dropped from later chunks (early exit)."""

    @staticmethod
    def forward(ctx, coef, feat, pair_hi, layout):
        buckets, starts, n_tiles, basis, depth_col, save_elems, chunk = layout
        P, n_ch = feat.shape
        px = basis.shape[1]
        basis_t = basis.T.contiguous()
        dev, dt = coef.device, coef.dtype
        floor = _alpha_floor(dt)
        out = torch.zeros(n_tiles, px, n_ch, device=dev, dtype=dt)
        acc = torch.zeros(n_tiles, px, device=dev, dtype=dt)
        med = torch.zeros(n_tiles, px, device=dev, dtype=dt)
        ncoef = torch.cat([-coef, coef.new_zeros(1, 6)], 0)
        ncoef[P, 0] = -1e30  # padding pair: alpha = 0
        pad_feat = torch.cat([feat, feat.new_zeros(1, n_ch)], 0)
        pad_hi = torch.cat([pair_hi, pair_hi.new_zeros(1)], 0)
        total = sum(int(t.numel()) * L * px for t, L in buckets)  # (slot, pixel) elements
        save = total <= save_elems
        per_bucket = []
        for tiles, L in buckets:
            nt = tiles.numel()
            ar = torch.arange(L, device=dev)
            st = starts[tiles]
            cnt = starts[tiles + 1] - st
            idx = torch.where(ar[None, :] < cnt[:, None], st[:, None] + ar[None, :],
                              torch.full_like(st[:, None], P))  # [nt, L]
            clampable = bool(pad_hi[idx].any())
            carry = torch.ones(nt, px, device=dev, dtype=dt)  # T before the current chunk
            done = torch.zeros(nt, px, device=dev, dtype=torch.bool)
            any_done = False
            out_b = torch.zeros(nt, px, n_ch, device=dev, dtype=dt)
            med_b = torch.zeros(nt, px, device=dev, dtype=dt)
            act = None  # active tiles (None = all)
            chunks = []
            for c0 in range(0, L, chunk):
                c1 = min(L, c0 + chunk)
                sl = idx[:, c0:c1] if act is None else idx[act, c0:c1]
                car = carry if act is None else carry[act]
                dn = (done if act is None else done[act]) if any_done else None
                a, w, nT, stopped = _chunk_forward(ncoef[sl], basis_t, clampable, floor, car, dn)
                f_c = pad_feat[sl]  # [n, Lc, F]
                # (this operand order is ~5x faster than bmm(w, f_c) on CPU)
                contrib = torch.bmm(f_c.transpose(1, 2), w.transpose(1, 2)).transpose(1, 2)
                # median: first slot after which T <= 0.5 (binary search, T is non-increasing)
                j = torch.searchsorted(nT, torch.full((nT.shape[0], px, 1), -0.5, dtype=dt,
                                                      device=dev))[..., 0]  # [n, px]
                zf = torch.gather(f_c[:, :, depth_col], 1, j.clamp_max(c1 - c0 - 1))
                hit = (j < c1 - c0) & (car > 0.5)
                new_carry = -nT[..., -1]
                if act is None:
                    out_b += contrib
                    med_b = torch.where(hit, zf, med_b)
                    carry = new_carry
                    if stopped is not None:
                        done = done | stopped
                else:
                    out_b.index_add_(0, act, contrib)
                    med_b[act] = torch.where(hit, zf, med_b[act])
                    carry[act] = new_carry
                    if stopped is not None:
                        done[act] = done[act] | stopped
                any_done = any_done or stopped is not None
                chunks.append((act, sl, car, dn, (a, w, nT) if save else None))
                del a, w, nT
                if any_done and c1 < L:
                    alive = ~done.all(-1)  # [nt]
                    if not bool(alive.all()):
                        act = torch.nonzero(alive).flatten()
                        if act.numel() == 0:
                            break
            out[tiles] = out_b
            acc[tiles] = 1.0 - carry
            med[tiles] = med_b
            per_bucket.append((clampable, chunks))
        ctx.save_for_backward(coef, feat, out, acc)
        ctx.layout = layout
        ctx.per_bucket = per_bucket
        ctx.mark_non_differentiable(med)
        return out, acc, med

    @staticmethod
    def backward(ctx, g_out, g_acc, g_med):
        coef, feat, out, acc = ctx.saved_tensors
        buckets, starts, n_tiles, basis, depth_col, save_elems, chunk = ctx.layout
        P, n_ch = feat.shape
        px = basis.shape[1]
        basis_t = basis.T.contiguous()
        floor = _alpha_floor(coef.dtype)
        ncoef = torch.cat([-coef, coef.new_zeros(1, 6)], 0)
        ncoef[P, 0] = -1e30
        pad_feat = torch.cat([feat, feat.new_zeros(1, n_ch)], 0)
        g_coef = coef.new_zeros(P + 1, 6)
        g_feat = feat.new_zeros(P + 1, n_ch)
        if g_out is None:
            g_out = torch.zeros_like(out)
        if g_acc is None:
            g_acc = torch.zeros_like(acc)
        # dL/dalpha_i = T_i f_i.g - B_i / (1 - alpha_i),  B_i = sum_{j>i} w_j f_j.g - gA T_N
        #             = T_i f_i.g - (F.g - gA T_N - sum_{j<=i} w_j f_j.g) / (1 - alpha_i)
        # dL/dsigma'_i = -alpha_i dL/dalpha_i = alpha_i B_i / (1 - alpha_i) - w_i f_i.g
        #              = B_i w_i / T_after_i - w_i f_i.g   (0 for dropped slots, where w_i = 0)
        rest = (out * g_out).sum(-1) - g_acc * (1.0 - acc)  # [nTT, px]
        for (tiles, L), (clampable, chunks) in zip(buckets, ctx.per_bucket):
            cs_carry = coef.new_zeros(tiles.numel(), px)  # sum_{j < chunk} w_j f_j.g
            for act, sl, car, dn, saved in chunks:
                if saved is None:
                    a, w, nT, _ = _chunk_forward(ncoef[sl], basis_t, clampable, floor, car, dn)
                else:
                    a, w, nT = saved
                tl = tiles if act is None else tiles[act]
                go = g_out[tl]  # [n, px, F]
                f_c = pad_feat[sl]  # [n, Lc, F]
                fg = torch.bmm(go, f_c.transpose(1, 2))  # [n, px, Lc]  f_i . g
                fg.mul_(w)
                cc = cs_carry if act is None else cs_carry[act]
                B = torch.cumsum(fg, -1).add_(cc.unsqueeze(-1))
                if act is None:
                    cs_carry = B[..., -1].clone()
                else:
                    cs_carry[act] = B[..., -1]
                B.sub_(rest[tl].unsqueeze(-1))  # -B_i
                B.mul_(w).div_(nT).sub_(fg)  # dL/dsigma' (nT = -T_after)
                if clampable:
                    B.masked_fill_(a >= ALPHA_MAX, 0.0)
                flat = sl.reshape(-1)
                g_coef.index_add_(0, flat, torch.matmul(basis, B).transpose(1, 2).reshape(-1, 6))
                g_w = torch.bmm(go.transpose(1, 2), w).transpose(1, 2).reshape(-1, n_ch)
                g_feat.index_add_(0, flat, g_w)
        ctx.per_bucket = None
        return g_coef[:P], g_feat[:P], None, None


# ----------------------------------------------------------------------------------------------
# public entry point of this back end
# ----------------------------------------------------------------------------------------------


def rasterize_torch(means, quats, scales, opacities, colors, viewmats, Ks, width, height, *,
                    sh_degree=None, backgrounds=None, near_plane=0.01, far_plane=1e10, tile_size=8,
                    retain_means2d_grad=False, block_elems=1 << 21, save_elems=48 << 20,
                    chunk_slots=48) -> RenderOutput:
    """Same arguments and output as :func:`orbitforge.kernels.splat.rasterize.rasterize`, which
    validates them first (``width``, ``height`` and ``tile_size`` are ints here)."""
    dt, dev = means.dtype, means.device
    viewmats = viewmats.to(dtype=dt, device=dev)
    Ks = Ks.to(dtype=dt, device=dev)
    C, N = viewmats.shape[0], means.shape[0]
    tile = int(tile_size)
    tw, th = -(-width // tile), -(-height // tile)
    means2d, conics, cov2d, depths, radii = project_gaussians(
        means, quats, scales, viewmats, Ks, width, height, near_plane, far_plane)
    if retain_means2d_grad and means2d.requires_grad:
        means2d.retain_grad()
    cols = _camera_colors(means, colors, viewmats, sh_degree)  # [C, N, 3]

    pair_cg, pair_tile, tile_counts = _bin_pairs(means2d.detach(), cov2d.detach(), conics.detach(),
                                                 depths.detach(), radii, opacities.detach(),
                                                 width, height, tile)
    # per-pair polynomial coefficients of sigma' = sigma - log(opacity) in pixel offsets (u, v)
    # from the tile centre
    n_tt = C * tw * th
    tcell = pair_tile % (tw * th)
    tcx = ((tcell % tw) * tile + 0.5 * tile).to(dt)
    tcy = (torch.div(tcell, tw, rounding_mode="floor") * tile + 0.5 * tile).to(dt)
    pair_g = pair_cg % N if N > 0 else pair_cg
    m = means2d.reshape(-1, 2).index_select(0, pair_cg)  # [P, 2]
    con = conics.reshape(-1, 3).index_select(0, pair_cg)  # [P, 3]
    logo = torch.log(opacities.clamp_min(1e-30)).index_select(0, pair_g)
    dx, dy = tcx - m[:, 0], tcy - m[:, 1]
    a, b, c = con.unbind(-1)
    coef = torch.stack([0.5 * a * dx * dx + b * dx * dy + 0.5 * c * dy * dy - logo,
                        a * dx + b * dy, b * dx + c * dy, 0.5 * a, b, 0.5 * c], -1)  # [P, 6]
    feats = torch.cat([cols, depths.unsqueeze(-1)], -1).reshape(C * N, 4)
    feats = feats.index_select(0, pair_cg)  # [P, 4]: colour, depth

    px = tile * tile
    basis = _pixel_basis(tile, dt, dev)
    starts = torch.zeros(n_tt + 1, dtype=torch.long, device=dev)
    starts[1:] = torch.cumsum(tile_counts, 0)
    buckets = _make_buckets(tile_counts, px, int(block_elems))
    layout = (buckets, starts, n_tt, basis, 3, int(save_elems), int(chunk_slots))
    pair_hi = (opacities.detach() >= ALPHA_MAX).index_select(0, pair_g)
    out, acc, med = _Composite.apply(coef, feats, pair_hi, layout)

    def to_image(x):  # [C*nT, px, F] -> [C, H, W, F]
        f = x.shape[-1]
        x = x.reshape(C, th, tw, tile, tile, f).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(C, th * tile, tw * tile, f)[:, :height, :width]

    out = to_image(out)  # [C, H, W, 4]
    alpha = to_image(acc.unsqueeze(-1))  # [C, H, W, 1]
    median = to_image(med.unsqueeze(-1))
    rgb = out[..., :3]
    if backgrounds is not None:
        rgb = rgb + (1.0 - alpha) * backgrounds.to(dt)[:, None, None, :]
    ok = alpha > 1e-6
    depth = torch.where(ok, out[..., 3:4] / torch.where(ok, alpha, torch.ones_like(alpha)),
                        torch.zeros_like(alpha))
    meta = {"means2d": means2d, "radii": radii, "depths": depths, "conics": conics,
            "width": width, "height": height, "n_cameras": C, "tile_size": tile,
            "n_pairs": int(pair_cg.numel()), "backend": "torch"}
    return RenderOutput(rgb, alpha, depth, median, meta)

