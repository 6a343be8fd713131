"""Interoperability with TSFitPy: hand a grid's parameters to it, bring its spectra back.

Survey groups that hold MARCS atmospheres and NLTE departure grids run Turbospectrum through
TSFitPy's ``generate_synthetic_spectra.py``. This package writes that script's inputs for a grid
definition (:mod:`gridgen.tsfitpy.export`), reads the files it writes
(:mod:`gridgen.tsfitpy.outputs`) and turns its output folder into a grid store of this toolkit
(:mod:`gridgen.tsfitpy.importer`), so that ``augment`` and ``cinn`` read TSFitPy spectra as any
other grid. The workflow is in ``docs/tsfitpy.md``.
"""
