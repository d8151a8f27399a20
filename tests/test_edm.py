"""EDM core: official SV3D numbers pinned, Euler exact on analytic Gaussian denoisers."""

import math

import pytest
import torch

from orbitforge.kernels.diffusion import edm


def _ref_sigma(i, n, smin=0.002, smax=700.0, rho=7.0):
    a, b = smax ** (1 / rho), smin ** (1 / rho)
    return (a + (i / (n - 1)) * (b - a)) ** rho


def test_sigmas_official_50_steps():
    s = edm.edm_sigmas(50)
    assert s.shape == (51,) and s.dtype == torch.float32
    assert s[-1].item() == 0.0
    assert s[0].item() == pytest.approx(700.0, rel=1e-6)
    assert s[-2].item() == pytest.approx(0.002, rel=1e-6)
    # pinned values (computed independently with math in float64)
    assert s[1].item() == pytest.approx(620.3277869375236, rel=1e-6)
    assert s[25].item() == pytest.approx(14.051309800563208, rel=1e-6)
    assert s[48].item() == pytest.approx(0.004048989992129131, rel=1e-6)
    for i in range(50):
        assert s[i].item() == pytest.approx(_ref_sigma(i, 50), rel=1e-6)
    assert bool((s[:-1] > s[1:]).all())


def test_sigmas_match_official_float32_definition():
    # the official EDMDiscretization computes in float32 with torch.linspace
    n = 50
    ramp = torch.linspace(0, 1, n)
    off = (700.0 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 700.0 ** (1 / 7))) ** 7
    torch.testing.assert_close(edm.edm_sigmas(n)[:-1], off, rtol=2e-6, atol=0)


def test_sigmas_bad_input():
    with pytest.raises(ValueError, match="steps"):
        edm.edm_sigmas(0)
    with pytest.raises(ValueError, match="sigma_min"):
        edm.edm_sigmas(10, sigma_min=800.0)


def test_vscaling_values():
    c_skip, c_out, c_in, c_noise = edm.vscaling(torch.tensor([700.0, 1.0, 0.002],
                                                             dtype=torch.float64))
    torch.testing.assert_close(c_skip, torch.tensor([1 / (700**2 + 1), 0.5, 1 / (0.002**2 + 1)],
                                                    dtype=torch.float64))
    torch.testing.assert_close(
        c_out,
        torch.tensor([-700 / math.sqrt(700**2 + 1), -1 / math.sqrt(2),
                      -0.002 / math.sqrt(1 + 0.002**2)], dtype=torch.float64)
    )
    torch.testing.assert_close(c_in, torch.tensor([1 / math.sqrt(700**2 + 1), 1 / math.sqrt(2),
                                                   1 / math.sqrt(1 + 0.002**2)],
                                                  dtype=torch.float64))
    torch.testing.assert_close(c_noise, torch.tensor([1.637770083760851, 0.0, -1.5536520246055479],
                                                     dtype=torch.float64))
    # V-prediction consistency (sigma_data 1): c_skip + c_out^2 == 1
    torch.testing.assert_close(c_skip + c_out**2, torch.ones(3, dtype=torch.float64))
    # float input works too
    cs, co, ci, cn = edm.vscaling(2.0)
    assert float(cs) == pytest.approx(0.2) and float(cn) == pytest.approx(0.25 * math.log(2.0))


def test_vpred_denoise_recovers_x0_from_true_velocity():
    # For x = x0 + sigma*n, the v-target in this parameterisation is F* = (x0*c_skip... ) solved:
    # D = F c_out + x c_skip == x0  <=>  F = (x0 - x c_skip)/c_out.
    # A network returning F* must give x0.
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 5, 5, generator=g)
    sig = torch.tensor([700.0, 3.0, 0.01])
    n = torch.randn(x0.shape, generator=g)
    x = x0 + sig.view(-1, 1, 1, 1) * n
    c_skip, c_out, c_in, c_noise = edm.vscaling(sig)

    def net(x_in, c_noise_in):
        assert torch.allclose(c_noise_in, 0.25 * sig.log())
        torch.testing.assert_close(x_in, x * c_in.view(-1, 1, 1, 1))
        return (x0 - x * c_skip.view(-1, 1, 1, 1)) / c_out.view(-1, 1, 1, 1)

    torch.testing.assert_close(edm.vpred_denoise(net, x, sig), x0, rtol=1e-4, atol=1e-3)


def test_initial_noise_scale_and_determinism():
    g1 = torch.Generator().manual_seed(123)
    g2 = torch.Generator().manual_seed(123)
    a = edm.initial_noise((21, 4, 8, 8), 700.0, g1)
    b = edm.initial_noise((21, 4, 8, 8), 700.0, g2)
    assert torch.equal(a, b)
    raw = torch.randn((21, 4, 8, 8), generator=torch.Generator().manual_seed(123))
    # official: x *= sqrt(1 + sigmas[0]**2), not sigma_max
    torch.testing.assert_close(a, raw * math.sqrt(1 + 700.0**2))
    assert math.sqrt(1 + 700.0**2) == pytest.approx(700.0007142853499)


def _gauss_denoiser(mu, sd):
    # exact x0-denoiser for data x0 ~ N(mu, sd^2) elementwise
    def D(x, sigma):
        s2 = torch.as_tensor(sigma, dtype=x.dtype) ** 2
        return (sd**2 * x + s2 * mu) / (sd**2 + s2)

    return D


def test_euler_exact_discrete_recursion_on_gaussian():
    mu, sd = 0.3, 0.7
    sig = edm.edm_sigmas(20, dtype=torch.float64)
    x_init = edm.initial_noise((2, 3), 700.0, torch.Generator().manual_seed(1), dtype=torch.float64)
    out = edm.sample_euler(_gauss_denoiser(mu, sd), x_init.clone(), sig)
    # closed form of the Euler recursion: y <- y (1 + (s' - s) s / (sd^2 + s^2)), y = x - mu
    y = x_init - mu
    for i in range(20):
        s, sn = sig[i].item(), sig[i + 1].item()
        y = y * (1 + (sn - s) * s / (sd**2 + s**2))
    torch.testing.assert_close(out, y + mu)


def test_euler_converges_to_probability_flow_solution():
    mu, sd = -0.2, 0.5
    sig = edm.edm_sigmas(400, dtype=torch.float64)
    x_init = edm.initial_noise((64,), 700.0, torch.Generator().manual_seed(2), dtype=torch.float64)
    out = edm.sample_euler(_gauss_denoiser(mu, sd), x_init.clone(), sig)
    # exact ODE: x(s) - mu = (x(S) - mu) sqrt(sd^2 + s^2) / sqrt(sd^2 + S^2)
    exact = mu + (x_init - mu) * sd / math.sqrt(sd**2 + 700.0**2)
    torch.testing.assert_close(out, exact, rtol=0, atol=2e-2)
    # the generated distribution has the data's std (up to sampling error of 64 samples)
    assert abs(out.std().item() - sd) < 0.15


def test_euler_step_formula():
    x = torch.tensor([1.0, 2.0])
    D = torch.tensor([0.5, 0.0])
    torch.testing.assert_close(edm.euler_step(x, D, 2.0, 1.0), x + (1.0 - 2.0) * (x - D) / 2.0)


def test_churn_matches_official_gamma_and_is_seeded():
    assert edm.churn_gamma(5.0, 50, 0.0) == 0.0
    assert edm.churn_gamma(5.0, 50, 10.0) == pytest.approx(10.0 / 50)
    assert edm.churn_gamma(5.0, 50, 1000.0) == pytest.approx(2**0.5 - 1)
    assert edm.churn_gamma(5.0, 50, 10.0, s_tmin=6.0) == 0.0
    seen = []

    def D(x, s):
        seen.append(float(s))
        return torch.zeros_like(x)

    sig = edm.edm_sigmas(5, dtype=torch.float64)
    x = torch.ones(4, dtype=torch.float64)
    a = edm.sample_euler(D, x.clone(), sig, s_churn=1.0, generator=torch.Generator().manual_seed(0))
    b = edm.sample_euler(D, x.clone(), sig, s_churn=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    # denoiser sees sigma_hat = sigma (1 + churn/steps)
    assert seen[0] == pytest.approx(700.0 * 1.2)
    # deterministic: D == 0 -> x scales by s_next/s each step
    c = edm.sample_euler(D, x.clone(), sig)
    torch.testing.assert_close(c, torch.zeros(4, dtype=torch.float64))


def test_callback_called_each_step():
    calls = []
    edm.sample_euler(lambda x, s: x * 0, torch.ones(2), edm.edm_sigmas(7),
                     callback=lambda i, x, d, s: calls.append(i))
    assert calls == list(range(7))
