"""Hull-bounded multi-view stereo: depth maps from the views themselves (no fitted model).

Why: the visual hull (:mod:`.geometry.visual_hull`) cannot see concavities; depth can. Fitting 3D
Gaussians for their median depth costs minutes on a CPU, while a plane sweep over the views
takes seconds, so this is the fast path's depth source (measured on 2 CPU cores: a 500-iteration
fit of 21 views at 128² took 489 s; ``bench mesh`` reports which source it used).

Method, per reference view ``r`` (all vectorised in torch):

1. **Hull depth** ``h_r`` (:func:`hull_depth_maps`): the visual hull's surface ray-cast from every
   camera. The true surface is never in front of the hull, so the search starts there.
2. **Plane sweep behind the hull**: hypotheses ``d = h_r + k * step`` for ``k = 0..K-1`` up to
   ``depth_range`` behind the hull (default a little deeper than the fusion's
   :data:`.tsdf.MAX_CARVE`, as a minimum on the last plane is not trusted). Each hypothesis point is
   projected into the ``n_neighbors`` cameras nearest to ``r`` (by viewing direction); the
   neighbour's colour is sampled bilinearly, and the matching cost over a ``window x window`` patch
   is a blend of zero-mean NCC (robust to exposure changes between generated views) and a truncated
   mean absolute colour difference (needed on untextured, smoothly shaded surfaces where NCC is
   ill-conditioned). Points that fall on a neighbour's background are invalid there.
3. **Visibility, roughly**: per hypothesis the score is the mean of the best ``best_k``
   neighbours, so a neighbour that sees an occluder instead of the point does not veto it.
4. **Winner-take-all with confidence**: the best hypothesis is kept only when its score is at
   least ``min_score``, beats the score at the hull (``k = 0``) by ``margin`` (depth only
   matters where it carves, so "deeper than the hull" needs positive evidence), and is not on
   the last plane (an unbounded minimum), and carving needs texture: the reference window's
   intensity standard deviation must be at least ``min_std`` (a flat colour matches at every
   depth) and the whole window must lie on the object's mask. Sub-plane refinement by a parabola
   through the neighbouring scores. Everything else gets depth 0 ("no depth"), and pixels whose hull
   depth is kept report it (they are valid observations that the surface is at the hull).

The result feeds :func:`.tsdf.tsdf_fuse` + :func:`.tsdf.combine_hull_tsdf`, which let depth carve
only where several views agree and never deeper than ``max_carve``, so a wrong match cannot
punch a hole.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..geometry.cameras import Cameras, camera_rays, neighbor_views, project
from ..interrupt import check_interrupt
from .tsdf import MAX_CARVE


def hull_depth_maps(field: torch.Tensor, cams: Cameras, bbox) -> torch.Tensor:
    """Depth maps ``[C, H, W]`` (camera z, 0 = ray misses) of the zero level set of a voxel field
    (negative inside, e.g. :func:`.geometry.visual_hull.hull_sdf`), by marching cubes + Embree ray
    casting.
    """
    from .extract import marching_cubes
    from .render import HAVE_EMBREE

    v, f = marching_cubes(field, bbox)
    C, H, W = len(cams), cams.height, cams.width
    out = np.zeros((C, H * W), np.float32)
    vm, Ks = cams.viewmats.double().cpu(), cams.Ks.double().cpu()

    def rays(c):  # numpy [H*W, 3] origins and z-scaled directions of camera c
        o, d = camera_rays(vm[c:c + 1], Ks[c:c + 1], H, W)
        d = d.reshape(-1, 3).numpy()
        return np.broadcast_to(o[0].numpy(), d.shape).copy(), d

    if HAVE_EMBREE:
        from embreex import rtcore_scene as rtcs
        from embreex.mesh_construction import TriangleMesh

        scene = rtcs.EmbreeScene()
        TriangleMesh(scene=scene, vertices=v.astype(np.float32), indices=f.astype(np.int32))
        for c in range(C):
            check_interrupt()
            o, d = rays(c)
            res = scene.run(o.astype(np.float32), d.astype(np.float32), output=1)
            hit = np.asarray(res["primID"]) >= 0
            out[c, hit] = np.asarray(res["tfar"])[hit]
    else:  # pragma: no cover - slow fallback
        import trimesh

        mesh = trimesh.Trimesh(v, f, process=False)
        for c in range(C):
            check_interrupt()
            o, d = rays(c)
            loc, ray, _ = mesh.ray.intersects_location(o, d, multiple_hits=False)
            t = ((loc - o[ray]) * d[ray]).sum(-1) / (d[ray] * d[ray]).sum(-1)
            out[c, ray] = t
    return torch.from_numpy(out.reshape(C, H, W))


def _box(x: torch.Tensor, w: int) -> torch.Tensor:
    """Window mean over ``w x w`` (same size, border replicated): x ``[B, C, H, W]``;
    separable running sums (cumsum), O(1) per pixel whatever the window."""
    if w <= 1:
        return x
    p = w // 2
    H, W = x.shape[-2:]
    y = F.pad(x, (p + 1, p, 0, 0), mode="replicate")
    y[..., 0] = 0
    c = y.cumsum(-1)
    y = c[..., w:] - c[..., :W]
    y = F.pad(y, (0, 0, p + 1, p), mode="replicate")
    y[..., 0, :] = 0
    c = y.cumsum(-2)
    return (c[..., w:, :] - c[..., :H, :]) / float(w * w)


def plane_sweep_depth(images: torch.Tensor, masks: torch.Tensor, cams: Cameras,
                      hull_depth: torch.Tensor, depth_range: float = 1.2 * MAX_CARVE,
                      n_planes: int = 24, n_neighbors: int = 4, best_k: int = 2, window: int = 5,
                      ncc_weight: float = 0.25, sad_trunc: float = 0.1, min_score: float = 0.6,
                      margin: float = 0.03, min_std: float = 0.01, views=None, progress=None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth maps by a plane sweep behind the hull (see module doc).

    images ``[C, H, W, 3]`` 0..1; masks ``[C, H, W]`` (1 = object); hull_depth ``[C, H, W]``
    (:func:`hull_depth_maps` at the same size). Returns ``(depth [C, H, W], score [C, H, W])``:
    depth 0 where no confident estimate; score the winner's score (higher = better, at most 1).
    ``views`` restricts the reference views (default all).
    """
    C, H, W, _ = images.shape
    if masks.shape != (C, H, W) or hull_depth.shape != (C, H, W) or len(cams) != C:
        raise ValueError(f"images {tuple(images.shape)}, masks {tuple(masks.shape)}, hull_depth "
                         f"{tuple(hull_depth.shape)} and {len(cams)} cameras must agree")
    if (cams.width, cams.height) != (W, H):
        raise ValueError(f"cameras are {cams.width}x{cams.height} but images {W}x{H}")
    if C < 2:
        raise ValueError("multi-view stereo needs at least 2 views")
    if n_planes < 3 or depth_range <= 0 or window < 1 or window % 2 == 0:
        raise ValueError(f"need n_planes >= 3 (got {n_planes}), depth_range > 0 (got "
                         f"{depth_range}) and an odd window (got {window})")
    dev = images.device
    cams = cams.to(device=dev, dtype=torch.float32)
    imgs = images.float().permute(0, 3, 1, 2).contiguous()  # [C, 3, H, W]
    msk = masks.float()[:, None]  # [C, 1, H, W]
    nb = neighbor_views(cams, n_neighbors).to(dev)  # [C, N]
    best_k = max(1, min(int(best_k), nb.shape[1]))
    K = int(n_planes)
    step = float(depth_range) / (K - 1)
    offs = torch.arange(K, device=dev, dtype=torch.float32) * step  # [K]
    depth_out = torch.zeros(C, H, W, device=dev)
    score_out = torch.zeros(C, H, W, device=dev)
    refs = range(C) if views is None else list(views)
    for n_done, r in enumerate(refs):
        check_interrupt()
        valid_full = (hull_depth[r].to(dev) > 0) & (masks[r].to(dev) > 0.5)  # [H, W]
        if not bool(valid_full.any()):
            continue
        # work on the bounding box of the valid pixels (+ half a window)
        rows = valid_full.any(1).nonzero()[:, 0]
        cols = valid_full.any(0).nonzero()[:, 0]
        p = window // 2 + 1
        y0, y1 = max(int(rows[0]) - p, 0), min(int(rows[-1]) + p + 1, H)
        x0, x1 = max(int(cols[0]) - p, 0), min(int(cols[-1]) + p + 1, W)
        Hc, Wc = y1 - y0, x1 - x0
        hd = hull_depth[r, y0:y1, x0:x1].to(dev).float()  # [Hc, Wc]
        valid = valid_full[y0:y1, x0:x1]
        center, dirs = camera_rays(cams.viewmats[r:r + 1], cams.Ks[r:r + 1], H, W)
        center, dirs = center[0], dirs[0, y0:y1, x0:x1]  # [3], [Hc, Wc, 3] world, t = camera z
        D = hd[None] + offs[:, None, None]  # [K, H, W]
        X = center + D[..., None] * dirs[None]  # [K, H, W, 3]
        nbr = nb[r]  # [N]
        N = nbr.shape[0]
        uv, _ = project(X.reshape(-1, 3), cams.viewmats[nbr], cams.Ks[nbr])  # [N, K*Hc*Wc, 2]
        u, v = uv[..., 0], uv[..., 1]
        grid = torch.stack([u / W * 2 - 1, v / H * 2 - 1], -1).reshape(N, K * Hc, Wc, 2)
        src = torch.cat([imgs[nbr], msk[nbr]], 1)  # [N, 4, H, W]
        warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros",
                               align_corners=False).reshape(N, 4, K, Hc, Wc)
        wc = warped[:, :3].permute(0, 2, 1, 3, 4).reshape(N * K, 3, Hc, Wc)  # [NK, 3, Hc, Wc]
        wm = warped[:, 3]  # [N, K, Hc, Wc] in the neighbour's mask
        ref = imgs[r][None, :, y0:y1, x0:x1]  # [1, 3, Hc, Wc]
        # zero-mean NCC over the window and the 3 channels; the box filter is linear, so
        # channel means are taken first (one channel to filter instead of three)
        mr = _box(ref.mean(1, keepdim=True), window)  # [1, 1, H, W]
        vr = _box((ref * ref).mean(1, keepdim=True), window) - mr * mr
        mw = _box(wc.mean(1, keepdim=True), window)  # [NK, 1, H, W]
        vw = _box((wc * wc).mean(1, keepdim=True), window) - mw * mw
        cov = _box((ref * wc).mean(1, keepdim=True), window) - mr * mw
        ncc = cov / torch.sqrt(vr.clamp_min(0) * vw.clamp_min(0) + 1e-6)  # [NK, 1, H, W]
        # truncated SAD -> similarity in [0, 1]
        sad = _box((ref - wc).abs().mean(1, keepdim=True), window)  # [NK, 1, H, W]
        sim_sad = 1 - sad.clamp(max=sad_trunc) / sad_trunc
        s = ncc_weight * ncc + (1 - ncc_weight) * sim_sad  # [NK, 1, H, W]
        s = s.reshape(N, K, Hc, Wc)
        s = torch.where(wm > 0.5, s, torch.full_like(s, -1.0))
        score = torch.topk(s, best_k, dim=0).values.mean(0)  # [K, H, W]
        best, kbest = score.max(0)  # [H, W]
        s0 = score[0]
        # sub-plane refinement (parabola through k-1, k, k+1)
        km = (kbest - 1).clamp(0, K - 1)
        kp = (kbest + 1).clamp(0, K - 1)
        sm = score.gather(0, km[None])[0]
        sp = score.gather(0, kp[None])[0]
        den = sm - 2 * best + sp
        delta = torch.where((kbest > 0) & (kbest < K - 1) & (den < -1e-6),
                            0.5 * (sm - sp) / den, torch.zeros_like(den)).clamp(-0.5, 0.5)
        d = hd + (kbest.float() + delta) * step
        behind = kbest > 0
        textured = vr[0, 0].clamp_min(0).sqrt() >= min_std  # [Hc, Wc]
        # the whole window on the object: windows straddling the silhouette see background,
        # whose match says nothing about the depth
        textured &= _box(msk[r][None, :, y0:y1, x0:x1], window)[0, 0] > 0.999
        conf = valid & (best >= min_score) & (kbest < K - 1) & (~behind | (best >= s0 + margin))
        conf &= textured | ~behind
        depth_out[r, y0:y1, x0:x1] = torch.where(conf, d, torch.zeros_like(d))
        score_out[r, y0:y1, x0:x1] = torch.where(valid, best, torch.zeros_like(best))
        if progress is not None:
            progress(n_done + 1, len(refs))
    return depth_out, score_out


def mvs_depth(images: torch.Tensor, masks: torch.Tensor, cams: Cameras, hull_field: torch.Tensor,
              bbox, size: int | None = None, **sweep) -> torch.Tensor:
    """Depth maps ``[C, H, W]`` at the views' size from a hull field: hull depth by ray casting,
    a plane sweep at ``size`` pixels (the longer side; None = full size), upsampled back
    (nearest, so no depth is blended across the silhouette)."""
    C, H, W, _ = images.shape
    if size is not None and max(H, W) > int(size):
        s = int(size) / max(H, W)
        h2, w2 = max(1, round(H * s)), max(1, round(W * s))
        c2 = cams.resized(w2, h2)
        im2 = F.interpolate(images.float().permute(0, 3, 1, 2), (h2, w2), mode="area"
                            ).permute(0, 2, 3, 1)
        m2 = F.interpolate(masks.float()[:, None], (h2, w2), mode="area")[:, 0]
    else:
        c2, im2, m2, h2, w2 = cams, images.float(), masks.float(), H, W
    hd = hull_depth_maps(hull_field, c2, bbox)
    d, _ = plane_sweep_depth(im2, m2, c2, hd, **sweep)
    if (h2, w2) != (H, W):
        d = F.interpolate(d[:, None], (H, W), mode="nearest")[:, 0]
    return d
