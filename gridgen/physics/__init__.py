"""The physics of a spectrum: stellar labels, abundances, atmospheres, line data and Turbospectrum.

Each module holds one physics concept and takes plain values or arrays (labels, abundances,
model atmospheres, wavelength windows); none knows a grid definition, a store or a schedule.
Files are read and written only where the engine itself needs them: its build cache, model
atmospheres, line lists and NLTE departure data. The orchestration in :mod:`gridgen` (runner,
store, cli, ...) imports this package; this package never imports it.
"""
