"""Linear summary statistics of the flux: cross-fitted ridge estimates of the targets.

Besides (or instead of) the features a network learns from the flux, the cINN's condition can
carry the ridge-regression estimate of every target at a few ridge strengths alpha
(``network.summary_alphas``). A regression estimate of the parameters is the summary statistic
of semi-automatic ABC (Fearnhead & Prangle 2012, JRSS B 74, 419): it holds what a linear map of
the spectrum knows, with no weights for the network to learn or overfit. The coupling blocks
then learn p(targets | summaries, S/N), non-linear corrections and the posterior width
included. Several strengths let the network weight a sharp, noise-sensitive estimate (small
alpha) at high S/N and a smooth one at low S/N. On the 1,024-spectrum benchmark grid this is
what lets the cINN beat ridge regression itself at every measured grid size and S/N
(docs/benchmarks/science.md).

Why cross-fitting. A ridge fit with fewer spectra than pixels nearly interpolates its own
training spectra: on 179 spectra its in-sample Teff residual is 0.05 prior standard deviations
against 0.25 on spectra it did not see. A network trained on in-sample summaries learns to trust
them far more than they deserve on new spectra. Each training spectrum's summaries therefore
come from the fit without its fold (K-fold cross-fitting, as in stacking), and every other
spectrum (validation, test, a user's) uses the fit on all fitted spectra, which it did not take
part in either.

The fits live in the network (:class:`cinn.network.CinnNetwork` buffers ``summary_weights``
and ``summary_offset``, saved in ``weights.pt``):

- ``weights`` (n_pix, n_folds + 1, n_alpha * T) float32 and ``offset`` (n_folds + 1,
  n_alpha * T): fit k + 1 leaves out fold k, fit 0 uses every fitted spectrum (the pixel axis
  first, so that training applies all fits to a batch in one product without a copy);
- they act on the network's standardised flux ((f - flux_mean) / flux_std of
  :class:`cinn.standardize.Standardization`) and give standardised targets;
- summary column j is alpha ``j // T`` and target ``j % T``.

Everything here takes and returns arrays; :func:`cinn.train.train` reads the clean training
fluxes and stores the result.
"""

from __future__ import annotations

import numpy as np

from cinn.baseline import decompose, ridge_weights


def assign_folds(n_rows: int, n_folds: int, max_spectra: int, seed: int) -> np.ndarray:
    """Cross-fitting fold of each training row.

    Parameters
    ----------
    n_rows : int
        Training spectra.
    n_folds : int
    max_spectra : int
        At most this many spectra, drawn at random, enter the fits (the SVD costs
        ~ n^2 n_pix); the others get fold -1 and the fit on all fitted spectra, which they
        are new to.
    seed : int

    Returns
    -------
    ndarray (n_rows,) int64
        Fold in 0 .. n_folds - 1, or -1 for rows left out of the fits.
    """
    fold = np.full(n_rows, -1, dtype=np.int64)
    fitted = np.random.default_rng(seed).permutation(n_rows)[:min(n_rows, max_spectra)]
    fold[fitted] = np.arange(fitted.size) % n_folds
    return fold


def fit_summaries(flux_clean: np.ndarray, x_targets: np.ndarray, fold: np.ndarray, n_folds: int,
                  alphas: tuple[float, ...], flux_mean: np.ndarray,
                  flux_std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ridge fits of the standardised targets on the clean training fluxes: all, and one per left-out fold.

    Each fit centres its own spectra and scales every pixel by the network's ``flux_std``,
    the spread of the noisy training fluxes: scaled by their clean spread instead, pixels that
    hardly vary in the grid (the continuum) would weigh their noise up by orders of magnitude.

    Parameters
    ----------
    flux_clean : ndarray (n_rows, n_pix)
        Noise-free training fluxes (noise is added later, in training, and goes through the
        same linear maps).
    x_targets : ndarray (n_rows, T)
        Standardised targets of the same rows.
    fold : ndarray (n_rows,) int
        From :func:`assign_folds`; rows with -1 are not used.
    n_folds : int
    alphas : tuple of float
        Ridge strengths, as fractions of the per-pixel variance (:data:`cinn.baseline.RIDGE_ALPHAS`).
    flux_mean, flux_std : ndarray (n_pix,)
        The network's flux standardisation (:class:`cinn.standardize.Standardization`, over
        the noisy training fluxes).

    Returns
    -------
    weights : ndarray (n_pix, n_folds + 1, len(alphas) * T) float32
    offset : ndarray (n_folds + 1, len(alphas) * T) float32
    """
    used = fold >= 0

    def fit(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        basis = decompose(flux_clean[rows], flux_std)
        y = np.asarray(x_targets[rows], dtype=np.float64)
        w = np.concatenate(ridge_weights(basis, y, alphas), axis=1)
        # The fit is centred on its own mean flux: (f - m_fit) / s = (f - m) / s + (m - m_fit) / s.
        offset = np.tile(y.mean(axis=0), len(alphas)) + ((flux_mean - basis.flux_mean) / basis.flux_std) @ w
        return w, offset

    fits = [fit(used)] + [fit(used & (fold != k)) for k in range(n_folds)]
    weights = np.stack([w for w, _ in fits], axis=1).astype(np.float32)
    offset = np.stack([b for _, b in fits]).astype(np.float32)
    return weights, offset
