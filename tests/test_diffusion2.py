"""Diffusion² matrix sampler kernels (host-free): weights, schedules, composition, the sampler loop
(chunking, VRS, cost), and the exact Gaussian case."""

import math

import pytest
import torch

from orbitforge.kernels.diffusion.edm import edm_sigmas, sample_euler
from orbitforge.kernels.dynamic.diffusion2 import (
    MatrixStats,
    cfg_combine,
    compose,
    composition_weights,
    count_forwards,
    flatten_matrix,
    frame_times,
    lambda_schedule,
    sample_matrix,
    unflatten_matrix,
    view_weights,
    view_weights_from_azimuths,
)

from gaussian_matrix import GaussianMatrix, gaussian_denoise  # tests/gaussian_matrix.py

# The official code's table of 0.5 * (1 + cos(2 pi (v + 1) / 10.5)) for v = 0..20
OFFICIAL_COS_TABLE = [0.91311939, 0.68267051, 0.38873953, 0.13347406, 0.00558459, 0.04951557, 0.25,
                      0.53736505, 0.8117449, 0.9777864, 0.9777864, 0.8117449, 0.53736505, 0.25,
                      0.04951557, 0.00558459, 0.13347406, 0.38873953, 0.68267051, 0.91311939, 1.0]


# ---------------------------------------------------------------------------------------------
# Weights, schedules, composition
# ---------------------------------------------------------------------------------------------


def test_view_weights_match_official_table_and_azimuth_form():
    w = view_weights(21)
    ref = 1 - 0.75 * (1 - torch.tensor(OFFICIAL_COS_TABLE))
    assert torch.allclose(w, ref, atol=1e-6)
    assert w[20] == pytest.approx(1.0) and w.min() >= 0.25 - 1e-6
    # SV3D static orbit: view v at (v + 1) * 360 / 21, the reference (last) view at 0
    az = [((v + 1) * 360.0 / 21) % 360 for v in range(21)]
    assert torch.allclose(view_weights_from_azimuths(az, 0.0), w, atol=1e-6)
    # a side view gets the minimum, front and back 1
    wa = view_weights_from_azimuths([0.0, 90.0, 180.0, 270.0], 0.0, min_weight=0.4)
    assert torch.allclose(wa, torch.tensor([1.0, 0.4, 1.0, 0.4]), atol=1e-6)


def test_lambda_schedules():
    c = lambda_schedule(50)
    assert torch.all(c == 0.6) and c.shape == (50,)
    lo = lambda_schedule(50, "logistic", value=0.6, k=15.0)
    assert torch.all(lo[1:] < lo[:-1]), "logistic must decrease (multi-view first, video late)"
    assert lo[0] > 0.99 and lo[-1] < 0.01
    # paper setting s0 = 0.5, k = 20: exactly 1/2 at the midpoint of an odd number of steps
    pa = lambda_schedule(51, "logistic", value=0.5, k=20.0)
    assert pa[25].item() == pytest.approx(0.5)
    x = 10 / 50
    assert pa[10].item() == pytest.approx(1 - 1 / (1 + math.exp(-20 * (x - 0.5))))
    li = lambda_schedule(5, "linear", lmin=0.2, lmax=0.8)
    assert torch.allclose(li, torch.tensor([0.8, 0.65, 0.5, 0.35, 0.2], dtype=torch.float64))
    co = lambda_schedule(3, "cosine")
    assert torch.allclose(co, torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64), atol=1e-12)
    with pytest.raises(ValueError, match="unknown"):
        lambda_schedule(10, "sigmoid")


def test_composition_formula_and_limits():
    g = torch.Generator().manual_seed(0)
    dm, dv = torch.randn(5, 3, 4, generator=g), torch.randn(5, 3, 4, generator=g)
    w = torch.rand(5, generator=g)
    out = compose(dm, dv, w, 0.6)
    a = (1 - w + w * 0.6)[:, None, None]
    b = (w * 0.4)[:, None, None]
    assert torch.allclose(out, a * dm + b * dv)
    a2, b2 = composition_weights(w, 0.3)
    assert torch.allclose(a2 + b2, torch.ones(5))
    assert torch.allclose(compose(dm, dv, torch.ones(5), 0.0), dv)  # video only
    assert torch.allclose(compose(dm, dv, torch.zeros(5), 0.0), dm)  # multi-view only
    assert torch.allclose(compose(dm, dv, torch.ones(5), 1.0), dm)
    # per-frame CFG in x0 space
    du, dc = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    s = torch.tensor([1.5, 2.25, 3.0])
    assert torch.allclose(cfg_combine(du, dc, s), du + s[None, :, None] * (dc - du))


# ---------------------------------------------------------------------------------------------
# The exact Gaussian case
# ---------------------------------------------------------------------------------------------


def _true_noisy_start(gm, n, smax, gen):
    """Exact samples of the noisy matrix at sigma_max ``[V, F, n, C]``: x0 + sigma_max eps."""
    return gm.sample(n, gen) + smax * torch.randn(gm.V, gm.F, n, gm.C, generator=gen,
                                                  dtype=torch.float64)


def test_gaussian_matrix_composition_is_exact_and_recovers_joint_statistics():
    """Exactness. ``GaussianMatrix`` (see tests/gaussian_matrix.py) is a V x F matrix of vectors
    in R^C where, for each frame t, the views 0..V-2 of column t are jointly Gaussian (dense
    covariance: "geometry"), the reference view V-1 is a dense Gaussian along time ("dynamics"),
    and these blocks are mutually independent. Adding independent noise keeps the blocks
    independent, so the paper's Assumption 3.1 holds at every sigma and Theorem 3.1,
    ``score = score_column + score_row - score_single``, is exact. For an entry of views 0..V-2 the
    row marginal equals the single-entry marginal (its row mates are independent), and for the
    reference view the column marginal equals the single-entry marginal. Hence the exact joint x0
    is ``D_column`` on views 0..V-2 and ``D_row`` on view V-1, i.e. the Diffusion² composition
    ``[1 - w_v + w_v lam] D_mv + [w_v (1 - lam)] D_video`` with w = (0, ..., 0, 1), lam = 0.
    The column / row denoisers are the closed-form Gaussian posterior means of the column and
    row marginals (what ideal multi-view and video models would output).

    Checks: (1) pathwise -- with chunked rows/columns, the matrix sampler's trajectory equals plain
    Euler on the true joint denoiser to float64 round-off; (2) statistics -- with enough steps the
    samples match the true mean and covariance within sampling error; (3) the test can fail: the
    official (non-exact for this distribution) weights give clearly wrong statistics.
    """
    V, F, C, N, steps, smax = 4, 5, 2, 2000, 200, 80.0
    gm = GaussianMatrix(V, F, C, seed=1)
    mu, K = gm.mean().flatten(), gm.covariance()
    gen = torch.Generator().manual_seed(0)
    x0 = _true_noisy_start(gm, N, smax, gen)  # [V, F, N, C]
    sig = edm_sigmas(steps, 0.002, smax, dtype=torch.float64)
    w, lam = gm.exact_weights()
    stats = MatrixStats()
    out = sample_matrix(x0, sig, gm.column_denoiser, gm.row_denoiser, w,
                        torch.full((steps,), lam, dtype=torch.float64), vrs_steps=0,
                        column_chunk=2, row_chunk=3, stats=stats)
    flat = out.permute(2, 0, 1, 3).reshape(N, -1)  # [N, V F C] in (v, t, c) order

    # (1) pathwise equality with Euler on the exact joint posterior mean
    start = x0.permute(2, 0, 1, 3).reshape(N, -1)
    ref = sample_euler(lambda x, s: gaussian_denoise(x, mu, K, s), start, sig)
    assert (flat - ref).abs().max().item() < 1e-9
    assert stats.column_sequences == [F] * steps and stats.row_sequences == [V] * steps

    # (2) statistics within sampling error (z-scores of every mean and covariance entry)
    var = K.diagonal()
    z_mean = (flat.mean(0) - mu) / (var / N).sqrt()
    cov = torch.cov(flat.T)
    z_cov = (cov - K) / ((var[:, None] * var[None, :] + K**2) / N).sqrt()
    assert z_mean.abs().max() < 4.5 and (z_mean**2).mean() < 1.5
    assert z_cov.abs().max() < 5.0 and (z_cov**2).mean() < 1.5

    # (3) the official view weights and lam = 0.6 are not exact here: statistics visibly off
    bad = sample_matrix(x0, edm_sigmas(40, 0.002, smax, dtype=torch.float64), gm.column_denoiser,
                        gm.row_denoiser, view_weights(V), lambda_schedule(40), vrs_steps=0)
    bflat = bad.permute(2, 0, 1, 3).reshape(N, -1)
    zb = (torch.cov(bflat.T) - K) / ((var[:, None] * var[None, :] + K**2) / N).sqrt()
    assert zb.abs().max() > 10.0


def test_independent_entries_any_convex_weights_exact_with_vrs():
    """With all entries independent (V = F = ... blocks of size 1) both marginals equal the
    single-entry one, so *every* convex composition is exact -- here the official view weights
    and the logistic schedule, with VRS (variance-preserving re-noise)."""
    V, F, N, steps, smax = 3, 4, 3000, 120, 80.0
    gen = torch.Generator().manual_seed(3)
    mean = torch.randn(V, F, 1, 1, generator=gen, dtype=torch.float64)
    var = (0.3 + torch.rand(V, F, 1, 1, generator=gen, dtype=torch.float64))

    def single(x, s, mean_, var_):
        return mean_ + var_ / (var_ + float(s) ** 2) * (x - mean_)

    def col(x, s, idx):  # [n, V, N, 1]
        return single(x, s, mean[:, idx].transpose(0, 1), var[:, idx].transpose(0, 1))

    def row(x, s, idx):  # [n, F, N, 1]
        return single(x, s, mean[idx], var[idx])

    x0 = mean + var.sqrt() * torch.randn(V, F, N, 1, generator=gen, dtype=torch.float64)
    x0 = x0 + smax * torch.randn(V, F, N, 1, generator=gen, dtype=torch.float64)
    lam = lambda_schedule(steps, "logistic", value=0.5, k=20.0)
    out = sample_matrix(x0, edm_sigmas(steps, 0.002, smax, dtype=torch.float64), col, row,
                        view_weights(V), lam, vrs_steps=10, renoise="variance",
                        generator=torch.Generator().manual_seed(4), column_chunk=3, row_chunk=1)
    m, v = out.mean(2), out.var(2)
    assert ((m - mean[..., 0]).abs() / (var[..., 0] / N).sqrt()).max() < 4.5
    assert ((v - var[..., 0]).abs() / (var[..., 0] * math.sqrt(2 / N))).max() < 5.0


# ---------------------------------------------------------------------------------------------
# Sampler mechanics: cost, chunking, VRS, OOM, interrupts, bad input
# ---------------------------------------------------------------------------------------------


class CountingModel:
    """A fake guided model: one batched call per chunk evaluates cond and uncond branches (2n
    sequences); records sequences per pass and the largest batch."""

    def __init__(self, scale, seq_len):
        self.scale = torch.as_tensor(scale)
        self.seq_len = seq_len
        self.sequences = 0
        self.max_batch = 0
        self.calls = 0

    def __call__(self, x, sigma, idx):
        assert x.shape[1] == self.seq_len
        batch = torch.cat([x, x])  # [2n, L, ...]: uncond, cond
        self.sequences += batch.shape[0]
        self.max_batch = max(self.max_batch, batch.shape[0])
        self.calls += 1
        d = torch.tanh(batch) * (1.0 + idx.repeat(2).to(x).reshape(-1, *[1] * (x.ndim - 1)) * 0.01)
        du, dc = d.chunk(2)
        return cfg_combine(du, dc * 0.9, self.scale)


def test_cost_exactly_F_columns_and_V_rows_per_branch_per_pass():
    V, F, steps, vrs = 5, 7, 6, 3
    col = CountingModel(2.5, V)
    row = CountingModel(torch.linspace(1.5, 3.0, F), F)
    x = torch.randn(V, F, 2, 3, 3, generator=torch.Generator().manual_seed(0)) * 10
    stats = MatrixStats()
    seen = []
    sample_matrix(x, edm_sigmas(steps, 0.002, 10.0), col, row, view_weights(V),
                  lambda_schedule(steps), vrs_steps=vrs, column_chunk=3, row_chunk=2,
                  generator=torch.Generator().manual_seed(1), stats=stats,
                  callback=lambda k, total, i, xx, dd: seen.append((k, total, i)))
    passes = steps + vrs
    assert stats.passes == passes
    assert stats.column_sequences == [F] * passes and stats.row_sequences == [V] * passes
    assert col.sequences == 2 * F * passes and row.sequences == 2 * V * passes  # 2 CFG branches
    assert col.max_batch == 2 * 3 and row.max_batch == 2 * 2  # chunks respected
    assert col.calls == math.ceil(F / 3) * passes and row.calls == math.ceil(V / 2) * passes
    cf = count_forwards(V, F, steps, vrs)
    assert cf["passes"] == passes and cf["total_sequences"] == col.sequences + row.sequences
    assert [s[0] for s in seen] == list(range(1, passes + 1)) and all(s[1] == passes for s in seen)
    assert [s[2] for s in seen] == [0, 0, 1, 1, 2, 2, 3, 4, 5]  # VRS: first steps twice


def _nonlinear_fns(V, F):
    def col(x, s, idx):
        per_item = idx.to(x).reshape(-1, *[1] * (x.ndim - 1))
        return torch.tanh(x / (1 + float(s))) * (1 + 0.1 * per_item)

    def row(x, s, idx):
        return torch.sin(x / (1 + float(s))) + 0.05 * idx.to(x).reshape(-1, *[1] * (x.ndim - 1))

    return col, row


def test_chunk_size_does_not_change_result_and_oom_halves_chunks():
    V, F, steps = 4, 6, 5
    col, row = _nonlinear_fns(V, F)
    x = torch.randn(V, F, 3, 2, 2, generator=torch.Generator().manual_seed(0)) * 5
    sig = edm_sigmas(steps, 0.002, 5.0)
    lam = lambda_schedule(steps)

    def run(cc, rc, cf=col, rf=row, oom=(), stats=None):
        return sample_matrix(x, sig, cf, rf, view_weights(V), lam, vrs_steps=2, column_chunk=cc,
                             row_chunk=rc, generator=torch.Generator().manual_seed(5),
                             oom_exceptions=oom, stats=stats)

    full = run(None, None)
    assert torch.allclose(run(1, 1), full, atol=1e-5)
    assert torch.allclose(run(4, 3), full, atol=1e-5)

    class FakeOOM(RuntimeError):
        pass

    def small_col(xx, s, idx):
        if xx.shape[0] > 2:
            raise FakeOOM("out of memory")
        return col(xx, s, idx)

    stats = MatrixStats()
    out = run(6, 4, cf=small_col, oom=(FakeOOM,), stats=stats)
    assert torch.allclose(out, full, atol=1e-5)
    assert stats.column_chunk == 1 or stats.column_chunk == 2
    assert stats.oom_retries >= 1 and stats.column_sequences == [F] * (steps + 2)
    with pytest.raises(FakeOOM):  # not declared as OOM: propagates
        run(6, 4, cf=small_col)


def test_vrs_official_renoise_amount():
    """Official VRS: after the first pass of step i, x += |sigma_{i+1} - sigma_i| * eps, then the
    step is redone from sigma_i. With a zero denoiser an Euler step scales x by sigma_next/sigma."""
    V, F, steps = 2, 3, 3
    zero = lambda x, s, idx: torch.zeros_like(x)
    sig = edm_sigmas(steps, 0.002, 10.0, dtype=torch.float64)
    x = torch.randn(V, F, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sample_matrix(x, sig, zero, zero, view_weights(V), lambda_schedule(steps), vrs_steps=1,
                        renoise="official", generator=torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    s0, s1 = sig[0], sig[1]
    y = x * s1 / s0 + (s0 - s1).abs() * torch.randn(x.shape, generator=g, dtype=torch.float64)
    y = y * s1 / s0  # second pass of step 0
    for i in range(1, steps):
        y = y * sig[i + 1] / sig[i]
    assert torch.allclose(out, y, atol=1e-12)


def test_interrupt_leaves_input_untouched_and_bad_input_raises():
    V, F, steps = 3, 4, 5
    col, row = _nonlinear_fns(V, F)
    x = torch.randn(V, F, 2)
    keep = x.clone()

    class Stop(Exception):
        pass

    def cb(k, total, i, xx, dd):
        if k == 3:
            raise Stop

    with pytest.raises(Stop):
        sample_matrix(x, edm_sigmas(steps), col, row, view_weights(V), lambda_schedule(steps),
                      callback=cb)
    assert torch.equal(x, keep)
    sig = edm_sigmas(steps)
    with pytest.raises(ValueError, match="lambdas"):
        sample_matrix(x, sig, col, row, view_weights(V), lambda_schedule(steps + 1))
    with pytest.raises(ValueError, match="view weights"):
        sample_matrix(x, sig, col, row, view_weights(V + 1), lambda_schedule(steps))
    with pytest.raises(ValueError, match="renoise"):
        sample_matrix(x, sig, col, row, view_weights(V), lambda_schedule(steps), renoise="x")
    with pytest.raises(ValueError, match="returned"):
        sample_matrix(x, sig, lambda a, s, i: a[:, :-1], row, view_weights(V),
                      lambda_schedule(steps))


def test_layout_helpers():
    x = torch.arange(3 * 4 * 2).reshape(3, 4, 2)
    f = flatten_matrix(x)
    assert torch.equal(f[1 * 4 + 2], x[1, 2])  # view-major
    assert torch.equal(unflatten_matrix(f, 3, 4), x)
    with pytest.raises(ValueError):
        unflatten_matrix(f, 4, 4)
    assert torch.allclose(frame_times(3, 6.0), torch.tensor([0.0, 1 / 6, 2 / 6]))


# ---------------------------------------------------------------------------------------------
# End to end on tiny random-weight diffusers SVD UNets (host-free)
# ---------------------------------------------------------------------------------------------


def test_tiny_diffusers_unets_end_to_end_chunking_and_cost():
    pytest.importorskip("diffusers")
    from orbitforge.bench.diffusion2 import run_matrix

    V, F, steps, vrs = 3, 4, 2, 1
    out, _stats, times, col, row = run_matrix(V, F, 64, steps, None, None, vrs=vrs, seed=3)
    assert out.shape == (V, F, 4, 8, 8) and torch.isfinite(out).all()
    passes = steps + vrs
    # one UNet forward per chunk (cond + uncond batched), F columns and V rows per branch per pass
    assert col.forwards == passes and row.forwards == passes
    assert col.sequences == 2 * F * passes and row.sequences == 2 * V * passes
    assert len(times) == passes
    out1, _stats1, _, col1, row1 = run_matrix(V, F, 64, steps, 1, 2, vrs=vrs, seed=3)
    assert col1.max_batch == 2 and row1.max_batch == 4
    assert col1.forwards == F * passes and row1.forwards == 2 * passes
    # chunking: only float32 round-off (|x| ~ 700 at the start)
    assert (out1 - out).abs().max() < 2e-3
    out2, *_ = run_matrix(V, F, 64, steps, None, None, vrs=vrs, seed=4)
    assert (out2 - out).abs().max() > 1e-2  # the seed matters
