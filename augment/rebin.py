"""Flux-conserving rebinning between pixel grids given by their bin edges.

Input pixels are treated as bins of constant flux density (their edges are the midpoints
between centres); each output pixel receives the mean flux over its bin, i.e. the exact
integral of the input over the bin divided by its width. This conserves the integrated flux
(and hence equivalent widths) exactly, unlike point interpolation. The operator is linear and
sparse, so it is built once per grid pair as a CSR matrix and applied to many spectra.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse


def edges_from_centres(wave_aa: np.ndarray) -> np.ndarray:
    """Bin edges (n + 1,) of a strictly increasing grid of centres (n,): midpoints, ends mirrored."""
    wave_aa = np.asarray(wave_aa, dtype=np.float64)
    mid = 0.5 * (wave_aa[1:] + wave_aa[:-1])
    return np.concatenate([[2 * wave_aa[0] - mid[0]], mid, [2 * wave_aa[-1] - mid[-1]]])


def rebin_matrix(edges_in: np.ndarray, edges_out: np.ndarray) -> scipy.sparse.csr_matrix:
    """Sparse operator that rebins flux from ``edges_in`` bins to ``edges_out`` bins.

    Parameters
    ----------
    edges_in : ndarray, shape (n_in + 1,)
        Strictly increasing input bin edges (Å or any unit shared with ``edges_out``).
    edges_out : ndarray, shape (n_out + 1,)
        Strictly increasing output bin edges, inside ``[edges_in[0], edges_in[-1]]``
        (the chain plan checks coverage: :meth:`augment.chain.ChainPlan.covered`).

    Returns
    -------
    scipy.sparse.csr_matrix, shape (n_out, n_in)
        Entry (k, j) = overlap of input bin j with output bin k / width of output bin k,
        so each fully covered row sums to one.
    """
    edges_in = np.asarray(edges_in, dtype=np.float64)
    edges_out = np.asarray(edges_out, dtype=np.float64)
    # Every piece between consecutive merged edges lies in exactly one input and one output bin.
    lo = max(edges_in[0], edges_out[0])
    hi = min(edges_in[-1], edges_out[-1])
    merged = np.union1d(edges_in[(edges_in >= lo) & (edges_in <= hi)], edges_out[(edges_out >= lo) & (edges_out <= hi)])
    length = np.diff(merged)
    centre = 0.5 * (merged[1:] + merged[:-1])
    # side="right" and the clip keep rounding in pieces a few ulp long from indexing bin -1.
    j = np.clip(np.searchsorted(edges_in, centre, side="right") - 1, 0, edges_in.size - 2)
    k = np.clip(np.searchsorted(edges_out, centre, side="right") - 1, 0, edges_out.size - 2)
    weight = length / np.diff(edges_out)[k]
    shape = (edges_out.size - 1, edges_in.size - 1)
    return scipy.sparse.csr_matrix((weight, (k, j)), shape=shape)


def rebin(flux: np.ndarray, edges_in: np.ndarray, edges_out: np.ndarray) -> np.ndarray:
    """Rebin spectra flux-conservingly.

    Parameters
    ----------
    flux : ndarray, shape (..., n_in)
        Flux densities (e.g. continuum-normalised flux) in the input bins.
    edges_in, edges_out : ndarray
        Bin edges, see :func:`rebin_matrix`.

    Returns
    -------
    ndarray, shape (..., n_out)
        Mean flux density over each output bin.
    """
    return apply(rebin_matrix(edges_in, edges_out), flux)


def apply(matrix: scipy.sparse.csr_matrix, flux: np.ndarray) -> np.ndarray:
    """Apply a rebinning operator to spectra of shape (..., n_in), returning (..., n_out)."""
    flux = np.asarray(flux, dtype=np.float64)
    flat = flux.reshape(-1, flux.shape[-1])
    out = (matrix @ flat.T).T
    return np.ascontiguousarray(out).reshape(flux.shape[:-1] + (matrix.shape[0],))
