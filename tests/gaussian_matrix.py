"""A Gaussian V × F matrix distribution with Diffusion²'s conditional-independence structure, and
its exact row / column denoisers -- the analytic test bed of
:mod:`orbitforge.kernels.dynamic.diffusion2`.

Each entry ``x[v, t]`` is a small vector in R^C. The structure ("geometry" along columns for all
views but the reference one, "dynamics" along the reference row):

* for every frame t, the column block ``x[0:V-1, t]`` is Gaussian ``N(mu_t, Sigma_t)``
  (``(V-1)C``-dimensional, dense covariance: the views of one instant are coupled);
* the reference row ``x[V-1, :]`` (the last view, as SV3D's conditioning view) is Gaussian
  ``N(m, S)`` (``F C``-dimensional, dense: the frames of the reference view are coupled);
* all these blocks are independent of each other.

At every noise level sigma the noisy matrix keeps the structure (the blocks stay independent), so
Assumption 3.1 of the paper holds for the mollified distributions and Theorem 3.1's identity
``score = score_column + score_row - score_single`` is exact for every entry. Here, for an entry
of a coupled column the row marginal *is* the single-entry marginal (its row mates are in other,
independent blocks), and for an entry of the reference row the column marginal is the single-entry
marginal. So the theorem's three-term composition reduces, in x0 space, to
``D = D_column`` on views ``0..V-2`` and ``D = D_row`` on view ``V-1`` -- which is the two-term
Diffusion² composition ``[1 - w_v + w_v lam] D_mv + [w_v (1 - lam)] D_video`` with ``w_v = 0``
for ``v < V-1``, ``w_{V-1} = 1`` and ``lam = 0``.

The optimal denoiser of a Gaussian ``N(mu, K)`` at noise sigma is linear:
``E[x0 | x] = mu + K (K + sigma^2 I)^-1 (x - mu)``.
"""

from __future__ import annotations

import torch


def _spd(d: int, gen: torch.Generator, floor: float = 0.15) -> torch.Tensor:
    a = torch.randn(d, d, generator=gen, dtype=torch.float64) / d**0.5
    k = a @ a.T + floor * torch.eye(d, dtype=torch.float64)
    s = k.diagonal().rsqrt()
    return k * s[:, None] * s[None, :]  # a correlation matrix (unit diagonal)


def gaussian_denoise(x: torch.Tensor, mu: torch.Tensor, cov: torch.Tensor, sigma) -> torch.Tensor:
    """Optimal denoiser of ``N(mu, cov)`` for ``x`` ``[..., d]`` at noise ``sigma``."""
    d = mu.shape[0]
    s2 = float(sigma) ** 2
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
    # (K + s2 I)^-1 K (symmetric: K and (K + s2 I)^-1 commute)
    gain = torch.linalg.solve(cov + s2 * eye, cov)
    return mu + (x - mu) @ gain.to(x.dtype)


class GaussianMatrix:
    """The distribution of the module docstring; ``V >= 2`` views, ``F`` frames, ``C`` channels."""

    def __init__(self, views: int, frames: int, channels: int = 2, seed: int = 0):
        if views < 2 or frames < 1 or channels < 1:
            raise ValueError("need views >= 2, frames >= 1, channels >= 1")
        self.V, self.F, self.C = views, frames, channels
        g = torch.Generator().manual_seed(seed)
        dc, dr = (views - 1) * channels, frames * channels
        self.col_mean = torch.randn(frames, dc, generator=g, dtype=torch.float64)  # [F, (V-1)C]
        scales = 0.6 + 0.8 * torch.rand(frames, dc, generator=g, dtype=torch.float64)
        self.col_cov = torch.stack([_spd(dc, g) * scales[t][:, None] * scales[t][None, :]
                                    for t in range(frames)])  # [F, dc, dc]
        self.row_mean = torch.randn(dr, generator=g, dtype=torch.float64)  # [F C]
        rs = 0.6 + 0.8 * torch.rand(dr, generator=g, dtype=torch.float64)
        self.row_cov = _spd(dr, g) * rs[:, None] * rs[None, :]  # [F C, F C]

    # ---- joint statistics (flattened in (v, t, c) order) ----
    def mean(self) -> torch.Tensor:  # [V, F, C]
        V, F, C = self.V, self.F, self.C
        m = torch.zeros(V, F, C, dtype=torch.float64)
        m[: V - 1] = self.col_mean.reshape(F, V - 1, C).transpose(0, 1)
        m[V - 1] = self.row_mean.reshape(F, C)
        return m

    def covariance(self) -> torch.Tensor:  # [V F C, V F C]
        V, F, C = self.V, self.F, self.C
        n = V * F * C
        K = torch.zeros(n, n, dtype=torch.float64)

        def idx(v, t):
            return (v * F + t) * C

        for t in range(F):
            for a in range(V - 1):
                for b in range(V - 1):
                    K[idx(a, t): idx(a, t) + C, idx(b, t): idx(b, t) + C] = \
                        self.col_cov[t][a * C:(a + 1) * C, b * C:(b + 1) * C]
        for s in range(F):
            for t in range(F):
                K[idx(V - 1, s): idx(V - 1, s) + C, idx(V - 1, t): idx(V - 1, t) + C] = \
                    self.row_cov[s * C:(s + 1) * C, t * C:(t + 1) * C]
        return K

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:  # [V, F, n, C]
        L = torch.linalg.cholesky(self.covariance())
        z = torch.randn(n, L.shape[0], generator=generator, dtype=torch.float64)
        x = self.mean().flatten() + z @ L.T
        return x.reshape(n, self.V, self.F, self.C).permute(1, 2, 0, 3)

    # ---- exact marginal denoisers, in the sampler's sequence layout ----
    def _gains(self, sigma):
        """Denoiser gains ``(K + s^2 I)^-1 K`` of every block at one sigma (cached)."""
        key = float(sigma)
        if getattr(self, "_gkey", None) != key:
            V, F, C = self.V, self.F, self.C

            def gain(k):  # [..., d, d]
                eye = torch.eye(k.shape[-1], dtype=k.dtype)
                return torch.linalg.solve(k + key**2 * eye, k)

            blk = [slice(v * C, (v + 1) * C) for v in range(V - 1)]
            col_single = torch.stack([torch.stack([self.col_cov[t][b, b] for t in range(F)])
                                      for b in blk])
            row_single = torch.stack([self.row_cov[t * C:(t + 1) * C, t * C:(t + 1) * C]
                                      for t in range(F)])
            self._g = {
                "col": gain(self.col_cov),  # [F, dc, dc]
                "row": gain(self.row_cov),  # [FC, FC]
                "col_single": gain(col_single),  # [V-1, F, C, C] column blocks' single entries
                "row_single": gain(row_single),  # [F, C, C] single entries of the reference row
            }
            self._gkey = key
        return self._g

    def column_denoiser(self, x: torch.Tensor, sigma, frames: torch.Tensor) -> torch.Tensor:
        """Multi-view marginal: ``x`` ``[n, V, *batch, C]`` columns ``frames`` -> x0."""
        V, C = self.V, self.C
        g = self._gains(sigma)
        fr = frames.long().cpu()
        n = x.shape[0]
        xb = x.reshape(n, V, -1, C).to(torch.float64)  # [n, V, B, C]
        blk = xb[:, : V - 1].permute(0, 2, 1, 3).reshape(n, xb.shape[2], (V - 1) * C)  # [n, B, dc]
        mu = self.col_mean[fr][:, None, :]  # [n, 1, dc]
        den = mu + (blk - mu) @ g["col"][fr]  # [n, B, dc]
        out = torch.empty_like(xb)
        out[:, : V - 1] = den.reshape(n, -1, V - 1, C).permute(0, 2, 1, 3)
        m1 = self.row_mean.reshape(self.F, C)[fr][:, None, :]  # [n, 1, C]
        out[:, V - 1] = m1 + (xb[:, V - 1] - m1) @ g["row_single"][fr]
        return out.reshape(x.shape).to(x.dtype)

    def row_denoiser(self, x: torch.Tensor, sigma, views: torch.Tensor) -> torch.Tensor:
        """Video marginal: ``x`` ``[n, F, *batch, C]`` rows ``views`` -> x0."""
        V, F, C = self.V, self.F, self.C
        g = self._gains(sigma)
        n = x.shape[0]
        xb = x.reshape(n, F, -1, C).to(torch.float64)  # [n, F, B, C]
        out = torch.empty_like(xb)
        mu_single = self.col_mean.reshape(F, V - 1, C).transpose(0, 1)  # [V-1, F, C]
        for k, v in enumerate(views.tolist()):
            if v == V - 1:  # the coupled reference row: full row marginal
                flat = xb[k].permute(1, 0, 2).reshape(xb.shape[2], F * C)  # [B, FC]
                den = self.row_mean + (flat - self.row_mean) @ g["row"]
                out[k] = den.reshape(-1, F, C).permute(1, 0, 2)
            else:  # entries of coupled columns: the row marginal is the product of single entries
                m = mu_single[v][:, None, :]  # [F, 1, C]
                out[k] = m + (xb[k] - m) @ g["col_single"][v]
        return out.reshape(x.shape).to(x.dtype)

    def exact_weights(self) -> tuple[torch.Tensor, float]:
        """View weights and lambda for which the Diffusion² composition is the exact joint x0."""
        w = torch.zeros(self.V, dtype=torch.float64)
        w[self.V - 1] = 1.0
        return w, 0.0
