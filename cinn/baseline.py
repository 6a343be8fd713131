"""Simple baselines the cINN's point estimates are compared with, on arrays (no file I/O).

A network that cannot beat these on its own grid has not learnt what the spectra hold; the
evaluation report (:mod:`cinn.evaluate`) prints both beside the cINN's MAP.

- :func:`fit_ridge`: ridge regression of the targets on the standardised flux, in closed form,
  the ridge strength chosen per target by the validation error over :data:`RIDGE_ALPHAS`.
- :func:`fit_knn`: k-nearest-neighbour regression in the space of the leading principal
  components of the standardised flux (:data:`KNN_COMPONENTS`), k chosen per target by the
  validation error over :data:`KNN_KS`; non-linear where ridge is linear.

Both work on one :class:`FluxBasis` of the training fluxes (the per-pixel standardisation and
its SVD, computed once by :func:`decompose`), fit in the units of the targets given (the
evaluation uses the network's: log10 Teff, log10 vbroad) and predict in the same.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

#: Ridge strengths tried, in units of the number of training spectra (penalty alpha * n * |w|^2
#: on standardised flux: alpha is a fraction of the per-pixel variance).
RIDGE_ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
#: Neighbour counts tried by the kNN baseline.
KNN_KS = (1, 2, 4, 8, 16, 32)
#: Principal components of the standardised flux the kNN baseline measures distances in.
KNN_COMPONENTS = 32


@dataclass(frozen=True)
class FluxBasis:
    """Training fluxes standardised per pixel, X = (f - flux_mean) / flux_std, and X = U s V^T.

    Attributes
    ----------
    flux_mean, flux_std : ndarray (n_pix,)
        Per-pixel mean and std of the training fluxes; constant pixels get std 1, which keeps
        them at zero weight.
    u : ndarray (n, r)
    s : ndarray (r,)
    vt : ndarray (r, n_pix)
        Thin SVD of X, r = min(n, n_pix).
    """

    flux_mean: np.ndarray
    flux_std: np.ndarray
    u: np.ndarray
    s: np.ndarray
    vt: np.ndarray

    def standardize(self, flux: np.ndarray) -> np.ndarray:
        """(f - flux_mean) / flux_std of fluxes (n, n_pix), float64."""
        return (np.asarray(flux, dtype=np.float64) - self.flux_mean) / self.flux_std


def decompose(flux_train: np.ndarray, flux_std: np.ndarray | None = None) -> FluxBasis:
    """Standardise training fluxes (n, n_pix) per pixel and take the thin SVD, once for all baselines.

    ``flux_std``: a per-pixel scale to use instead of the training fluxes' own std, e.g. one
    that includes the noise when the fluxes are noise-free (a pixel that hardly varies in the
    clean grid must not be scaled up to where its noise dominates).
    """
    flux_train = np.asarray(flux_train, dtype=np.float64)
    flux_mean = flux_train.mean(axis=0)
    if flux_std is None:
        flux_std = flux_train.std(axis=0)
    flux_std = np.where(flux_std > 0, flux_std, 1.0)
    u, s, vt = np.linalg.svd((flux_train - flux_mean) / flux_std, full_matrices=False)
    return FluxBasis(flux_mean, flux_std, u, s, vt)


@dataclass(frozen=True)
class RidgeBaseline:
    """Ridge regression y = y_mean + ((f - f_mean) / f_std) @ weights, one alpha per target.

    Attributes
    ----------
    basis : FluxBasis
        Standardisation of the flux, from the training spectra.
    target_mean : ndarray (T,)
    weights : ndarray (n_pix, T)
    alpha : ndarray (T,)
        Chosen ridge strength per target (see :data:`RIDGE_ALPHAS`).
    """

    basis: FluxBasis
    target_mean: np.ndarray
    weights: np.ndarray
    alpha: np.ndarray

    def predict(self, flux: np.ndarray) -> np.ndarray:
        """Targets (n, T) for fluxes (n, n_pix)."""
        return self.target_mean + self.basis.standardize(flux) @ self.weights


def ridge_weights(basis: FluxBasis, y_train: np.ndarray, alphas: tuple[float, ...]) -> list[np.ndarray]:
    """Ridge weights (n_pix, T) on the standardised flux, one array per alpha.

    Closed form through the SVD of the standardised training flux X = U s V^T:
    w(alpha) = V diag(s / (s^2 + alpha n)) U^T (y - mean y). The prediction for a flux f is
    mean(y) + basis.standardize(f) @ w.
    """
    y_train = np.asarray(y_train, dtype=np.float64)
    uty = basis.u.T @ (y_train - y_train.mean(axis=0))
    n = basis.u.shape[0]
    return [basis.vt.T @ ((basis.s / (basis.s ** 2 + a * n))[:, None] * uty) for a in alphas]


def fit_ridge(basis: FluxBasis, y_train: np.ndarray, flux_val: np.ndarray, y_val: np.ndarray,
              alphas: tuple[float, ...] = RIDGE_ALPHAS) -> RidgeBaseline:
    """Ridge regression on the standardised flux, alpha per target by validation error.

    The weights of every alpha come from one SVD (:func:`ridge_weights`).

    Parameters
    ----------
    basis : FluxBasis
        :func:`decompose` of the training fluxes (n, n_pix).
    y_train : ndarray (n, T)
        Targets of the training spectra (any units; predictions come back in the same).
    flux_val, y_val : ndarray
        Validation spectra that choose alpha (lowest mean squared error per target).
    alphas : tuple of float
    """
    y_train = np.asarray(y_train, dtype=np.float64)
    y_mean = y_train.mean(axis=0)
    x_val = basis.standardize(flux_val)
    best_err = np.full(y_train.shape[1], np.inf)
    weights = np.zeros((basis.vt.shape[1], y_train.shape[1]))
    alpha = np.zeros(y_train.shape[1])
    for a, w in zip(alphas, ridge_weights(basis, y_train, alphas)):
        err = np.mean((y_mean + x_val @ w - y_val) ** 2, axis=0)
        better = err < best_err
        best_err[better], weights[:, better], alpha[better] = err[better], w[:, better], a
    return RidgeBaseline(basis, y_mean, weights, alpha)


@dataclass(frozen=True)
class KnnBaseline:
    """k-nearest-neighbour regression in principal-component space, one k per target.

    Attributes
    ----------
    basis : FluxBasis
        Standardisation of the flux, from the training spectra.
    components : ndarray (n_pix, n_comp)
        Leading principal directions of the standardised training flux.
    train_scores : ndarray (n_train, n_comp)
        The training spectra projected on them.
    y_train : ndarray (n_train, T)
    k : ndarray (T,) of int
        Neighbours averaged per target (see :data:`KNN_KS`).
    """

    basis: FluxBasis
    components: np.ndarray
    train_scores: np.ndarray
    y_train: np.ndarray
    k: np.ndarray

    def _neighbours(self, flux: np.ndarray) -> np.ndarray:
        """Training indices (n, max k) sorted by distance, nearest first."""
        scores = self.basis.standardize(flux) @ self.components
        # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b: memory n x n_train, not n x n_train x n_comp.
        d2 = ((scores ** 2).sum(axis=1)[:, None] + (self.train_scores ** 2).sum(axis=1)[None, :]
              - 2.0 * scores @ self.train_scores.T)
        k_max = min(int(self.k.max()), d2.shape[1])
        nearest = np.argpartition(d2, k_max - 1, axis=1)[:, :k_max]
        order = np.take_along_axis(d2, nearest, axis=1).argsort(axis=1)
        return np.take_along_axis(nearest, order, axis=1)

    def predict(self, flux: np.ndarray) -> np.ndarray:
        """Targets (n, T) for fluxes (n, n_pix): the mean of each target's k nearest spectra."""
        nearest = self._neighbours(flux)
        out = np.empty((nearest.shape[0], self.y_train.shape[1]))
        for j, k in enumerate(self.k):
            out[:, j] = self.y_train[nearest[:, :k], j].mean(axis=1)
        return out


def fit_knn(basis: FluxBasis, y_train: np.ndarray, flux_val: np.ndarray, y_val: np.ndarray,
            ks: tuple[int, ...] = KNN_KS, n_components: int = KNN_COMPONENTS) -> KnnBaseline:
    """k-nearest-neighbour regression on principal components, k per target by validation error.

    Parameters
    ----------
    basis : FluxBasis
        :func:`decompose` of the training fluxes (n, n_pix).
    y_train : ndarray (n, T)
    flux_val, y_val : ndarray
        Validation spectra that choose k (lowest mean squared error per target).
    ks : tuple of int
        Neighbour counts tried (those above n are dropped).
    n_components : int
        Principal components kept (at most n and n_pix).
    """
    y_train = np.asarray(y_train, dtype=np.float64)
    n_comp = min(n_components, basis.vt.shape[0])
    components = basis.vt[:n_comp].T
    # X V = U s: the training spectra's principal-component scores without another product.
    train_scores = basis.u[:, :n_comp] * basis.s[:n_comp]
    ks = tuple(k for k in ks if k <= y_train.shape[0]) or (y_train.shape[0],)
    probe = KnnBaseline(basis, components, train_scores, y_train, np.full(y_train.shape[1], max(ks)))
    nearest = probe._neighbours(flux_val)
    errors = np.array([np.mean((y_train[nearest[:, :k]].mean(axis=1) - y_val) ** 2, axis=0) for k in ks])
    return dataclasses.replace(probe, k=np.asarray(ks)[np.argmin(errors, axis=0)])
