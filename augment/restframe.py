"""Rest frame and medium of observed wavelengths: Doppler shift to rest, vacuum to air.

Spectra not at rest are shifted to rest with their radial velocity v (km/s) by the relativistic
Doppler formula λ_rest = λ_obs·sqrt((1 − v/c)/(1 + v/c)) (:func:`doppler_to_rest`), applied to
the wavelengths in the file's own medium. The formula is exact for vacuum wavelengths (it is a
ratio of frequencies), so vacuum files are shifted before their conversion to air; for air
files it neglects the change of the refractive index between λ_obs and λ_rest, an error below
3e-4 Å (0.023 km/s) for |v| <= 1000 km/s at 3900-6800 Å. Vacuum wavelengths are then converted
to air (:func:`vacuum_to_air`), because the output pixels, like the grids, are air wavelengths.
"""

from __future__ import annotations

import math

import numpy as np

from gridgen.core.codes import WAVE_MEDIA
from gridgen.core.errors import UserError

from augment.rotation import C_KMS

#: Medium of the output pixels (and of the grids the networks are trained on).
OUTPUT_MEDIUM = "air"
VACUUM_TO_AIR = "IAU standard of Morton (2000, ApJS 130, 403), as used by VALD"
#: Largest accepted |radial velocity|, km/s: beyond any star of the Galaxy and its neighbours,
#: so a larger value is a unit or sign mistake (m/s, or a redshift z).
RV_MAX_KMS = 1000.0


def check_rv(rv_kms: float) -> None:
    """UserError unless ``rv_kms`` (km/s) is finite and |rv_kms| <= RV_MAX_KMS."""
    if not (math.isfinite(rv_kms) and abs(rv_kms) <= RV_MAX_KMS):
        raise UserError(f"--rv: must be a finite radial velocity within ±{RV_MAX_KMS:g} km/s, got {rv_kms:g}")


def check_medium(medium: str) -> None:
    """UserError unless ``medium`` is one of WAVE_MEDIA (``air``, ``vacuum``)."""
    if medium not in WAVE_MEDIA:
        raise UserError(f"--medium: expected one of {', '.join(WAVE_MEDIA)}, got {medium!r}")


def doppler_to_rest(wave_obs_aa: np.ndarray, rv_kms: float) -> np.ndarray:
    """Rest wavelengths of a star receding at ``rv_kms``: λ_obs·sqrt((1 − v/c)/(1 + v/c)).

    Parameters
    ----------
    wave_obs_aa : ndarray
        Observed wavelengths, Å (exact in vacuum; see the module docstring for air).
    rv_kms : float
        Radial velocity, km/s, positive away from the observer.

    Returns
    -------
    ndarray
        Rest wavelengths, Å, in the medium of ``wave_obs_aa``.
    """
    beta = rv_kms / C_KMS
    return np.asarray(wave_obs_aa, dtype=np.float64) * math.sqrt((1.0 - beta) / (1.0 + beta))


def vacuum_to_air(wave_vac_aa: np.ndarray) -> np.ndarray:
    """Air wavelengths of vacuum wavelengths (IAU standard; Morton 2000, ApJS 130, 403).

    n = 1 + 0.0000834254 + 0.02406147 / (130 − s²) + 0.00015998 / (38.9 − s²), with
    s = 10⁴ / λ_vac in µm⁻¹, and λ_air = λ_vac / n (the conversion VALD uses; it agrees with
    NIST's air wavelengths to ~1e-4 Å in the optical, e.g. Na D2 5891.5833 → 5889.9510).
    Valid above 2000 Å.

    Parameters
    ----------
    wave_vac_aa : ndarray
        Vacuum wavelengths, Å.

    Returns
    -------
    ndarray
        Air wavelengths, Å (e.g. Hα 6564.61 → 6562.80).
    """
    wave_vac_aa = np.asarray(wave_vac_aa, dtype=np.float64)
    s2 = (1.0e4 / wave_vac_aa) ** 2
    n = 1.0 + 0.0000834254 + 0.02406147 / (130.0 - s2) + 0.00015998 / (38.9 - s2)
    return wave_vac_aa / n
