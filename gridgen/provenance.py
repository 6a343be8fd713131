"""The provenance a grid store records: everything its spectra depend on, and the run.

:func:`grid_provenance` is the ``provenance`` attribute of a grid store (see :mod:`gridgen.store`
for its place in the contract); :func:`inputs_provenance` is its part that depends on the inputs
only, which resuming a store compares (:func:`gridgen.runner.prepare_store`). Hashing, the code
version and the run context are shared by every store and live in :mod:`gridgen.core.provenance`.
"""

from __future__ import annotations

import json

from gridgen.config import GridConfig
from gridgen.core.provenance import run_context, sha256_file
from gridgen.physics import nlte as nlte_mod
from gridgen.physics.linelist import DEFAULT_CUT_MARGIN_AA
from gridgen.physics.priors import clip_fe_h_prior
from gridgen.physics.solar import SOLAR_MIXTURES
from gridgen.store import SCHEMA
from gridgen.synthesis import linelist_provenance


def grid_provenance(config: GridConfig, engine, provider, wave_medium: str) -> dict:
    """The ``provenance`` attribute of a grid store made from ``config`` (see gridgen.store)."""
    return {**inputs_provenance(config, engine, provider, wave_medium), **run_context()}


def inputs_provenance(config: GridConfig, engine, provider, wave_medium: str,
                      hash_nlte: bool = True) -> dict:
    """Everything a grid store's spectra depend on, as JSON-compatible values.

    Engine files and the molecular lists are verified against their manifests when loaded, so
    their recorded SHA-256s are reused; NLTE grids (up to tens of GB) are hashed only with
    ``hash_nlte`` (store creation) and otherwise described by name and size.
    """
    table = config.sampler.table if config.sampler.method == "table" else None
    return json.loads(json.dumps({
        "schema": SCHEMA,
        "grid": {
            "name": config.name,
            "version": config.version,
            "description": config.description,
            "toml": config.source_text,
            "toml_sha256": config.source_sha256,
            "source_path": config.source_path,
        },
        "sampler": {
            "method": config.sampler.method,
            "seed": config.seed,
            "fe_h_prior_used": vars(clip_fe_h_prior(config.sampler.priors["fe_h"], provider.feh_range_dex))
            if table is None else None,
            "table": {"path": table, "sha256": sha256_file(table)} if table else None,
        },
        "engine": engine.provenance(),
        "linelists": linelist_provenance(engine, config),
        "atmosphere": provider.describe(),
        "solar_mixture": {"name": config.sampler.solar_mixture,
                          **SOLAR_MIXTURES[config.sampler.solar_mixture]},
        "nlte": nlte_mod.provenance(config.nlte, nlte_mod.load_nlte_grids(config.nlte), hash_nlte)
        if config.nlte else {"nlte_elements": [], "note": "LTE: no departure coefficients used"},
        "synthesis": {
            "windows_aa": [list(w) for w in config.synthesis.windows_aa],
            "step_aa": config.synthesis.step_aa,
            "broadening": "none (no instrumental, rotational or macroturbulent broadening)",
            "wave_medium": wave_medium,
            "linelist_cut_margin_aa": DEFAULT_CUT_MARGIN_AA,
        },
    }))
