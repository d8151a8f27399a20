"""Brute-force reference 3D Gaussian rasteriser (every pixel against every Gaussian, no tiles).

Written for clarity, not speed: plain matrix maths, per camera, ``[H*W, N]`` tensors, autograd
only. Use it on small scenes (tests) to check :mod:`.rasterize_torch` and gsplat. The conventions
are the ones documented in :func:`orbitforge.kernels.splat.rasterize.rasterize` (gsplat's): EWA
projection with the Jacobian clamped at 1.3x the field of view, +0.3 px dilation,
alpha = min(0.99, o exp(-sigma)) skipped below 1/255, front-to-back compositing stopping before
transmittance would drop to 1e-4 or less.
"""

from __future__ import annotations

import torch

from .gaussians import quat_to_rotmat
from .rasterize_types import ALPHA_MAX, ALPHA_MIN, EPS2D, T_MIN, RenderOutput
from .sh import sh_to_color


def rasterize_reference(means, quats, scales, opacities, colors, viewmats, Ks, width, height, *,
                        sh_degree=None, backgrounds=None, near_plane=0.01, far_plane=1e10):
    """Same arguments and output as :func:`orbitforge.kernels.splat.rasterize.rasterize`."""
    C = viewmats.shape[0]
    dev, dt = means.device, means.dtype
    rot = quat_to_rotmat(quats)  # [N, 3, 3]
    cov3 = rot @ torch.diag_embed(scales * scales) @ rot.transpose(-1, -2)  # [N, 3, 3]
    # pixel centres (j + 0.5, i + 0.5), row-major
    ii, jj = torch.meshgrid(torch.arange(height, device=dev, dtype=dt),
                            torch.arange(width, device=dev, dtype=dt), indexing="ij")
    pix = torch.stack([jj + 0.5, ii + 0.5], -1).reshape(-1, 2)  # [HW, 2]

    outs = {k: [] for k in ("rgb", "alpha", "depth", "median", "means2d", "radii", "depths")}
    for c in range(C):
        R, t, K = viewmats[c, :3, :3], viewmats[c, :3, 3], Ks[c]
        p_cam = means @ R.T + t  # [N, 3]
        cov_cam = R @ cov3 @ R.T  # [N, 3, 3]
        z = p_cam[:, 2]
        in_range = (z > near_plane) & (z < far_plane)
        zs = torch.where(in_range, z, torch.ones_like(z))
        # EWA Jacobian, evaluated at a point clamped to 1.3x the field of view
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        lim_xp = (width - cx) / fx + 0.3 * (0.5 * width / fx)
        lim_xn = cx / fx + 0.3 * (0.5 * width / fx)
        lim_yp = (height - cy) / fy + 0.3 * (0.5 * height / fy)
        lim_yn = cy / fy + 0.3 * (0.5 * height / fy)
        xc = zs * torch.minimum(torch.maximum(p_cam[:, 0] / zs, -lim_xn), lim_xp)
        yc = zs * torch.minimum(torch.maximum(p_cam[:, 1] / zs, -lim_yn), lim_yp)
        zero = torch.zeros_like(zs)
        J = torch.stack([torch.stack([fx / zs, zero, -fx * xc / (zs * zs)], -1),
                         torch.stack([zero, fy / zs, -fy * yc / (zs * zs)], -1)], -2)  # [N, 2, 3]
        cov2 = J @ cov_cam @ J.transpose(-1, -2) + EPS2D * torch.eye(2, device=dev, dtype=dt)
        det = cov2[:, 0, 0] * cov2[:, 1, 1] - cov2[:, 0, 1] * cov2[:, 1, 0]
        det_s = torch.where(det > 0, det, torch.ones_like(det))
        inv2 = torch.stack([torch.stack([cov2[:, 1, 1], -cov2[:, 0, 1]], -1),
                            torch.stack([-cov2[:, 1, 0], cov2[:, 0, 0]], -1)], -2)
        inv2 = inv2 / det_s[:, None, None]
        uvw = p_cam @ K.T  # [N, 3]
        m2d = uvw[:, :2] / zs[:, None]  # [N, 2]
        with torch.no_grad():
            b = 0.5 * (cov2[:, 0, 0] + cov2[:, 1, 1])
            v1 = b + torch.sqrt(torch.clamp(b * b - det, min=0.01))
            rad = torch.ceil(3.0 * torch.sqrt(v1))
            vis = (det > 0) & in_range
            vis &= (m2d[:, 0] + rad > 0) & (m2d[:, 0] - rad < width)
            vis &= (m2d[:, 1] + rad > 0) & (m2d[:, 1] - rad < height)
            radii = torch.where(vis, rad, torch.zeros_like(rad)).int()
        if sh_degree is None:
            col = colors
        else:
            cam_centre = -R.T @ t
            col = sh_to_color(sh_degree, means - cam_centre, colors)
        # every pixel against every Gaussian
        d = pix[:, None, :] - m2d[None, :, :]  # [HW, N, 2]
        sigma = 0.5 * torch.einsum("pni,nij,pnj->pn", d, inv2, d)  # [HW, N]
        a_raw = opacities[None, :] * torch.exp(-sigma)
        use = (a_raw >= ALPHA_MIN) & vis[None, :]
        a = torch.where(use, a_raw.clamp(max=ALPHA_MAX), torch.zeros_like(a_raw))
        order = torch.argsort(z.detach(), stable=True)  # front to back
        a, col_s, z_s = a[:, order], col[order], z[order]
        # stop before the transmittance after a Gaussian would be <= T_MIN (that one is skipped)
        with torch.no_grad():
            keep = torch.cumprod(1 - a, 1) > T_MIN
        a = a * keep
        T = torch.cumprod(torch.cat([torch.ones_like(a[:, :1]), 1 - a[:, :-1]], 1), 1)  # [HW, N]
        w = a * T
        acc = w.sum(1, keepdim=True)  # [HW, 1]
        rgb = w @ col_s
        bg = backgrounds[c] if backgrounds is not None else torch.zeros(3, device=dev, dtype=dt)
        rgb = rgb + (1 - acc) * bg
        dsum = w @ z_s[:, None]
        ok = acc > 1e-6
        depth = torch.where(ok, dsum / torch.where(ok, acc, torch.ones_like(acc)),
                            torch.zeros_like(acc))
        with torch.no_grad():
            T_after = T * (1 - a)
            hit = (a > 0) & (T_after <= 0.5)
            first = hit.to(torch.uint8).argmax(1)
            med = torch.where(hit.any(1), z_s.detach()[first], torch.zeros_like(z_s[:1]))
        outs["rgb"].append(rgb.reshape(height, width, 3))
        outs["alpha"].append(acc.reshape(height, width, 1))
        outs["depth"].append(depth.reshape(height, width, 1))
        outs["median"].append(med.reshape(height, width, 1))
        outs["means2d"].append(m2d)
        outs["radii"].append(radii)
        outs["depths"].append(z)
    meta = {"means2d": torch.stack(outs["means2d"]), "radii": torch.stack(outs["radii"]),
            "depths": torch.stack(outs["depths"]), "width": int(width), "height": int(height),
            "n_cameras": C, "backend": "reference"}
    return RenderOutput(torch.stack(outs["rgb"]), torch.stack(outs["alpha"]),
                        torch.stack(outs["depth"]),
                        torch.stack(outs["median"]), meta)
