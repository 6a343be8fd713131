"""One labels -> spectrum path: a grid definition's physics applied to rows of grid labels.

:func:`synthesize_labels` turns one row of grid labels (``LABEL_NAMES`` order) into an
unbroadened, continuum-normalised spectrum: atmosphere from the grid's provider, abundances from
the labels and the solar mixture, NLTE departure files where asked, then Turbospectrum on the
grid's windows with the grid's line lists (and, where the grid draws one, the spectrum's own
perturbation of the atmosphere, :func:`spectrum_t_outer_scales`). :func:`synthesize_rows` does it for many rows and
records each failure instead of raising; the grid runner (:func:`gridgen.chunktask.run_chunk`) and
the re-simulation of parameter tables (:mod:`augment.resimulate`) both use it, so a re-simulated
spectrum is made exactly as a grid spectrum of the same labels.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gridgen.config import GridConfig, load_grid_config
from gridgen.core.errors import UserError
from gridgen.physics import engine as engine_mod
from gridgen.physics import nlte as nlte_mod
from gridgen.physics.abundances import absolute_abundances
from gridgen.physics.atmospheres.perturbation import t_outer_scales
from gridgen.physics.atmospheres.provider import ALPHA_LABELS, make_provider
from gridgen.physics.labels import FE_H, LABEL_NAMES, LOGG, TEFF, VMIC
from gridgen.physics.linelist import summarize_linelist
from gridgen.physics.molecules import load_molecular_linelists, molecules_dir
from gridgen.physics.solar import solar_abundances

_ALPHA = [LABEL_NAMES.index(n) for n in ALPHA_LABELS]
"""Columns whose mean is the atmosphere's [alpha/Fe] (dex)."""


@dataclass(frozen=True)
class SynthesisContext:
    """Everything one worker needs to synthesise spectra of a grid definition, loaded once."""

    config: GridConfig
    engine: engine_mod.Engine
    provider: object
    solar: dict[int, float]
    linelists: list[Path]
    nlte_grids: dict

    @classmethod
    def load(cls, config_path: str | Path, engine_dir: str | None = None) -> "SynthesisContext":
        """Load the grid definition, engine, atmosphere provider, line lists and NLTE grids."""
        config = load_grid_config(config_path)
        engine = engine_mod.load_engine(Path(engine_dir) if engine_dir else None)
        return cls(
            config=config,
            engine=engine,
            provider=make_provider(config.atmosphere, engine),
            solar=solar_abundances(config.sampler.solar_mixture),
            linelists=resolve_linelists(engine, config),
            nlte_grids=nlte_mod.load_nlte_grids(config.nlte) if config.nlte else {},
        )


def synthesize_labels(labels: np.ndarray, context: SynthesisContext,
                      t_outer_scale: float | None = None) -> tuple[np.ndarray, str]:
    """One unbroadened, continuum-normalised spectrum of the grid definition.

    Parameters
    ----------
    labels : ndarray, shape (25,)
        Grid labels in ``LABEL_NAMES`` order (K, dex, dex, km/s, 21 x dex).
    context : SynthesisContext
        From :meth:`SynthesisContext.load`.
    t_outer_scale : float, optional
        This spectrum's delta of ``atmosphere.t_outer_scale_range``
        (:func:`spectrum_t_outer_scales`); None: the grid's fixed ``atmosphere.t_outer_scale``.

    Returns
    -------
    flux_norm : ndarray, shape (n_wave,), float32
        On :func:`gridgen.physics.engine.synthesis_wavelengths` of the grid's windows and step.
    note : str
        Elements synthesised in LTE although NLTE was asked for, and why ("" if none).

    Raises
    ------
    gridgen.physics.engine.SynthesisError, UserError
        The synthesis failed, or the parameters are outside a provider's or departure grid's range.
    """
    config = context.config
    abundances = absolute_abundances(labels, context.solar)
    lte_fallback: dict[str, str] = {}

    def write_departures(atmosphere, workdir):
        inputs = nlte_mod.write_nlte_inputs(config.nlte, context.nlte_grids, atmosphere, abundances, workdir)
        lte_fallback.update(inputs.lte_fallback)
        return inputs.info_file

    drawn = {} if t_outer_scale is None else {"t_outer_scale": float(t_outer_scale)}
    atmosphere = context.provider.model(labels[TEFF], labels[LOGG], labels[FE_H], labels[VMIC],
                                        alpha_fe_dex=float(np.mean(labels[_ALPHA])), **drawn)
    spectrum = engine_mod.synthesize(
        context.engine, atmosphere, abundances, float(labels[FE_H]), float(labels[VMIC]),
        config.synthesis.windows_aa, config.synthesis.step_aa, linelists=context.linelists,
        nlte=write_departures if context.nlte_grids else None, timeout_s=config.synthesis.timeout_s)
    notes = [atmosphere.note, *(f"{el} in LTE: {why}" for el, why in lte_fallback.items())]
    return spectrum.flux_norm, "; ".join(filter(None, notes))


def synthesize_rows(rows: np.ndarray, context: SynthesisContext,
                    t_outer_scales: np.ndarray | None = None) -> Iterator[tuple[np.ndarray | None, str, str]]:
    """Synthesise rows of grid labels one after the other, recording failures.

    Parameters
    ----------
    rows : ndarray, shape (n, 25)
        Grid labels in ``LABEL_NAMES`` order, one spectrum per row.
    context : SynthesisContext
        From :meth:`SynthesisContext.load`.
    t_outer_scales : ndarray, shape (n,), optional
        Each row's delta of ``atmosphere.t_outer_scale_range`` (:func:`spectrum_t_outer_scales`);
        None: the grid's fixed ``atmosphere.t_outer_scale`` for every row.

    Yields
    ------
    flux_norm : ndarray of float32, shape (n_wave,), or None
        The spectrum (see :func:`synthesize_labels`); None where the synthesis failed.
    note : str
        How the spectrum deviates from the definition ("" if it does not or failed).
    error : str
        Why the synthesis failed ("" if it succeeded).
    """
    deltas = [None] * len(rows) if t_outer_scales is None else np.asarray(t_outer_scales, dtype=float)
    for labels, delta in zip(rows, deltas):
        try:
            flux, note = synthesize_labels(labels, context, delta)
        except (engine_mod.SynthesisError, UserError) as exc:
            # A failed spectrum is a recorded outcome, not the end of the run.
            yield None, "", str(getattr(exc, "reason", exc))
            continue
        yield flux, note, ""


def spectrum_t_outer_scales(config: GridConfig, index: np.ndarray) -> np.ndarray | None:
    """The deltas of grid spectra ``index`` under ``atmosphere.t_outer_scale_range``; None without one.

    :func:`gridgen.physics.atmospheres.perturbation.t_outer_scales` with the grid's seed: what the
    grid runner passes to :func:`synthesize_rows` for those spectra.
    """
    pair = config.atmosphere.t_outer_scale_range
    return None if pair is None else t_outer_scales(config.seed, index, *pair)


def resolve_linelists(engine, config) -> list[Path]:
    """Line-list paths of a grid, in the order bsyn reads them.

    ``"default"`` is the engine's atomic list (and its hydrogen lines); other entries are the
    user's lists, already resolved and checked when the grid TOML was loaded
    (:attr:`gridgen.config.GridConfig.linelists`); with ``synthesis.molecules`` the molecular
    lists built with the engine follow.
    """
    user = iter(config.linelists)
    paths: list[Path] = []
    for entry in config.synthesis.linelists:
        paths.extend(engine.linelists if entry == "default" else [Path(next(user).path)])
    if config.synthesis.molecules:
        paths.extend(load_molecular_linelists(engine)[0])
    return paths


def linelist_provenance(engine, config) -> dict:
    """The ``linelists`` provenance section of a grid store: one record per list bsyn reads.

    Each record has ``path``, ``sha256``, ``n_species``, ``n_lines`` and ``n_lines_in_windows``
    (:class:`LinelistSummary`), in bsyn's order. Lists of the engine and the molecular cache are
    named relative to their directory (``engine:linelists/...``, ``molecules:moogc2.ts``) so that
    machines with other cache paths agree; the user's lists by absolute path. ``molecules`` is
    the molecular cache's own record (source package, conversion), or None.
    """
    user = {summary.path: summary for summary in config.linelists}
    windows = config.synthesis.windows_aa
    records = []
    for path in resolve_linelists(engine, config):
        if str(path) in user:
            records.append(user[str(path)].provenance())
            continue
        in_engine = os.path.relpath(path, engine.root)
        name = (f"engine:{in_engine}" if not in_engine.startswith("..")
                else f"molecules:{os.path.relpath(path, molecules_dir(engine))}")
        records.append(summarize_linelist(path, windows).provenance(name))
    return {
        "files": records,
        "molecules": load_molecular_linelists(engine)[1] if config.synthesis.molecules else None,
    }
