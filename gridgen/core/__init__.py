"""Shared infrastructure of the toolkit: errors, provenance, seeds, Zarr I/O, codes and
the TOML loader. Imports nothing else from the toolkit."""
