"""The simple baselines (cinn.baseline) on problems with known answers."""

import numpy as np

from cinn.baseline import decompose, fit_knn, fit_ridge


def test_ridge_recovers_a_linear_relation_and_picks_alpha_by_validation():
    """y = f @ w + c with little noise: the smallest ridge wins and the predictions match;
    with noise dominating and few spectra per pixel, a stronger ridge wins."""
    rng = np.random.default_rng(11)
    n_pix = 30
    w_true = rng.normal(0, 1, (n_pix, 2))

    def data(n, noise):
        flux = 1.0 + 0.1 * rng.standard_normal((n, n_pix))
        return flux, flux @ w_true + np.array([3.0, -1.0]) + rng.normal(0, noise, (n, 2))

    f_train, y_train = data(400, 1e-3)
    f_val, y_val = data(200, 1e-3)
    ridge = fit_ridge(decompose(f_train), y_train, f_val, y_val)
    f_test, y_test = data(200, 0.0)
    # The noise 1e-3 over 400 spectra of 30 pixels: weights good to ~1e-3 / (0.1 sqrt(400)).
    assert np.sqrt(np.mean((ridge.predict(f_test) - y_test) ** 2)) < 5e-3
    assert np.all(ridge.alpha == min(ridge.alpha))

    f_train, y_train = data(40, 3.0)
    f_val, y_val = data(400, 3.0)
    noisy = fit_ridge(decompose(f_train), y_train, f_val, y_val)
    assert np.all(noisy.alpha > ridge.alpha)


def _moving_line(t: np.ndarray, depth: np.ndarray | float = 0.6, n_pix: int = 60) -> np.ndarray:
    """Flux with one Gaussian absorption line whose centre moves with t in [0, 1]."""
    x = np.linspace(-0.2, 1.2, n_pix)
    return 1.0 - np.reshape(depth, (-1, 1)) * np.exp(-0.5 * ((x[None, :] - t[:, None]) / 0.05) ** 2)


def test_knn_recovers_a_nonlinear_relation_that_ridge_cannot():
    """The position t of a line whose depth d varies too: the flux is d g(x - t), so any
    linear map of it scales with d (ridge's error ~ t std(d) / mean(d) ~ 0.1), while
    neighbours on the 2-D manifold of 800 spectra are ~1/sqrt(800) = 0.035 apart."""
    rng = np.random.default_rng(5)
    t_train, t_val, t_test = (rng.uniform(0, 1, n) for n in (800, 200, 200))
    f_train, f_val, f_test = (_moving_line(t, rng.uniform(0.2, 0.8, t.size)) for t in (t_train, t_val, t_test))
    knn = fit_knn(decompose(f_train), t_train[:, None], f_val, t_val[:, None])
    ridge = fit_ridge(decompose(f_train), t_train[:, None], f_val, t_val[:, None])
    rms_knn = np.sqrt(np.mean((knn.predict(f_test)[:, 0] - t_test) ** 2))
    rms_ridge = np.sqrt(np.mean((ridge.predict(f_test)[:, 0] - t_test) ** 2))
    assert rms_knn < 0.035
    assert rms_ridge > 0.05 and rms_ridge > 2 * rms_knn


def test_knn_averages_more_neighbours_when_targets_are_noisy():
    """Noise of 0.2 on the training targets: one neighbour inherits all of it (rms ~0.2),
    averaging k of them divides it by sqrt(k); the validation error must pick k > 1."""
    rng = np.random.default_rng(6)
    t_train, t_val = rng.uniform(0, 1, 800), rng.uniform(0, 1, 300)
    noisy = t_train + rng.normal(0, 0.2, t_train.size)
    clean = fit_knn(decompose(_moving_line(t_train)), t_train[:, None], _moving_line(t_val), t_val[:, None])
    smooth = fit_knn(decompose(_moving_line(t_train)), noisy[:, None], _moving_line(t_val), t_val[:, None])
    assert clean.k[0] <= 2
    assert smooth.k[0] >= 8
