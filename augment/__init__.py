"""augment: turn grid stores of synthetic spectra into 4MOST-like training stores.

The chain per base spectrum (docs/method.md §2) is Gaussian line-spread function, rotational
broadening, degradation to the 4MOST high-resolution resolving power, flux-conserving
rebinning onto the arm pixels and Gaussian noise at a list of S/N levels. The numerical
building blocks (:mod:`augment.lsf`, :mod:`augment.rotation`, :mod:`augment.rebin`,
:mod:`augment.noise`) take and return arrays; :mod:`augment.chain` composes them;
:mod:`augment.store` and :mod:`augment.observe` do the I/O; :mod:`augment.resimulate`
composes gridgen's synthesis of a parameter table with the chain (no noise).
"""
