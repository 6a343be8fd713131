"""The one object every atmosphere provider returns and the synthesis engine consumes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class AtmosphereModel:
    """A 1D model atmosphere as Turbospectrum's babsma reads it.

    Attributes
    ----------
    teff_k, logg_cgs, feh_dex
        Stellar parameters the model was built for (K, dex cgs, dex).
    text
        The full model file contents, written verbatim to babsma's ``MODELINPUT`` file.
    is_marcs
        True for MARCS format (babsma ``MARCS-FILE: .true.``), False for Kurucz/ATLAS format
        (``MARCS-FILE: .false.``; microturbulence then comes from ``XIFIX``).
    n_depth
        Number of depth points in the model.
    log_tau5000
        log10 of the optical depth at 5000 Å at each depth point, top first (needed to write
        NLTE departure files on the model's own τ scale).
    provider
        Short description of the provider (name, version) for provenance.
    note
        How the model deviates from the grid definition ("" if it does not), e.g. a depth grid
        trimmed to the emulated model's own range; recorded as the spectrum's note.
    """

    teff_k: float
    logg_cgs: float
    feh_dex: float
    text: str
    is_marcs: bool
    n_depth: int
    log_tau5000: tuple[float, ...] = field(default=())
    provider: str = ""
    note: str = ""
