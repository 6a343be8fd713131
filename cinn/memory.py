"""The memory of a prediction batch, estimated before anything is allocated.

``cinn predict`` and ``cinn evaluate`` hold every posterior sample of every spectrum of a batch
at once (:meth:`cinn.posterior.Posterior.sample`). :func:`sample_bytes` is what one sample
costs at the batch's peak; :func:`plan_batch` compares a batch with the memory free on the
model's device and predicts fewer spectra at a time where the batch would not fit, or refuses,
in one line, where not even the smallest batch fits.

The estimate counts the arrays alive at the peak (below), and is checked against the measured
peak resident memory of real batches (tests/test_cinn_memory.py); the spectra's fluxes and
conditions (a few times n_pix floats per spectrum) are left out, being small beside thousands
of samples.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import torch

from gridgen.core.errors import UserError

from cinn.config import NetworkConfig, PredictConfig
from cinn.predict import CHUNK_BYTES

#: Bytes per posterior value (one sample of one target) at the peak of a batch: the most
#: arrays alive at once, counted stage by stage. In the flow: the latent draws, its state, a
#: sub-network's output, the halves and log-scales, the new state (float32: 4 + 4 + 4 + 8 + 4
#: = 24 B); converting to target units: the draws, the samples, two float64 temporaries and
#: the float32 result (4 + 4 + 16 + 4 = 28 B); the quantiles: the samples in target and in
#: physical units and the masked float64 copy and its source (4 + 4 + 16 = 24 B).
BYTES_PER_VALUE = 28
#: Bytes per sample besides its values: the log density, its copy ranked for the MAP and the
#: log-Jacobian (float32: 12 B) and the acceptance flag (1 B), rounded up to 16 B.
BYTES_PER_SAMPLE = 16
#: Kept samples (``keep_samples``, and ``cinn evaluate``, which ranks the truth among them)
#: stay alive while the next batch is computed (the writer holds the previous batch, float32:
#: 4 B), and are copied for the store's encoder or compared for the ranks (4 B).
KEPT_BYTES_PER_VALUE = 8
#: Writing kept samples costs about four chunks of the posterior store's ``samples`` array
#: whatever the batch (measured): Zarr fills a whole chunk buffer, copies it for the codecs and
#: compresses it.
KEPT_WRITER_BYTES = 4 * CHUNK_BYTES
#: A batch may take this fraction of the free memory, as a resident training split may
#: (:func:`cinn.train.plan_resident`): the rest holds the batches read ahead, the previous
#: batch while it is written and the allocator's fragmentation.
FREE_FRACTION = 0.5

_LOG = logging.getLogger("cinn4most.memory")


def sample_bytes(n_targets: int, network: NetworkConfig, precision: str, keep_samples: bool) -> int:
    """Peak bytes one posterior sample of ``n_targets`` targets takes in a prediction batch.

    Parameters
    ----------
    n_targets : int
    network : NetworkConfig
        Its widest coupling sub-network layer sets the activations: a layer's input and
        output (two values per hidden unit) in the sub-network precision.
    precision : str
        "fp32" (4 B per activation) or "bf16" (2 B).
    keep_samples : bool
        Whether the samples are kept (written or ranked), :data:`KEPT_BYTES_PER_VALUE` more.
    """
    activation = 2 if precision == "bf16" else 4
    per_value = BYTES_PER_VALUE + (KEPT_BYTES_PER_VALUE if keep_samples else 0)
    return n_targets * per_value + 2 * max(network.subnet_hidden) * activation + BYTES_PER_SAMPLE


def batch_spectra(spectra_per_batch: int, levels: int) -> int:
    """Spectra in one batch: :func:`cinn.inference.iterate_input` batches whole input rows,
    each with all its ``levels`` S/N levels (a training store's; 1 for an observed store)."""
    return max(1, spectra_per_batch // levels) * levels


def free_bytes(device: torch.device) -> int:
    """Memory free for a batch: on a GPU the smaller of the GPU's and the host's, since the
    samples come back to the host for the quantiles."""
    from cinn.data import free_device_bytes

    free = free_device_bytes(device)
    return min(free, free_device_bytes(torch.device("cpu"))) if device.type == "cuda" else free


def plan_batch(config: PredictConfig, n_targets: int, network: NetworkConfig, device: torch.device,
               levels: int, samples_from: str, keep_samples: bool | None = None,
               free: int | None = None) -> PredictConfig:
    """``config`` with ``spectra_per_batch`` lowered so that a batch fits in memory.

    Parameters
    ----------
    config : PredictConfig
    n_targets : int
    network : NetworkConfig
    device : torch.device
        Where the model runs.
    levels : int
        S/N levels per input row (see :func:`batch_spectra`).
    samples_from : str
        What set ``n_samples``, for the message (``"--samples"`` or the model's config key).
    keep_samples : bool or None
        Whether the samples are kept; None: ``config.keep_samples``.
    free : int or None
        Free bytes; None: :func:`free_bytes` of ``device``.

    Raises
    ------
    UserError
        If the smallest batch (one row: ``levels`` spectra) needs more than
        :data:`FREE_FRACTION` of the free memory; the line gives the number of samples that fit.
    """
    keep = config.keep_samples if keep_samples is None else keep_samples
    per_sample = sample_bytes(n_targets, network, config.precision, keep)
    per_spectrum = config.n_samples * per_sample
    free = free_bytes(device) if free is None else free
    writer = KEPT_WRITER_BYTES if keep else 0
    budget = max(int(free * FREE_FRACTION) - writer, 0)
    rows = budget // (levels * per_spectrum)
    if rows < 1:
        what = "one spectrum" if levels == 1 else f"one row ({levels} S/N levels)"
        raise UserError(f"{samples_from} {config.n_samples}: the posterior samples of {what} need "
                        f"{_gib(levels * per_spectrum + writer)} of memory, more than half of the "
                        f"{_gib(free)} free on {device}; at most {budget // (levels * per_sample):,} "
                        "samples per spectrum fit")
    wanted = batch_spectra(config.spectra_per_batch, levels)
    if wanted <= rows * levels:
        return config
    _LOG.warning(f"predict: {wanted} spectra per batch would need {_gib(wanted * per_spectrum)}, more "
                 f"than half of the {_gib(free)} free on {device}; predicting {rows * levels} at a time")
    return replace(config, spectra_per_batch=rows * levels)


def _gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.3g} GiB"
