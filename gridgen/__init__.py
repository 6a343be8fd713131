"""gridgen: sample stellar parameters, build atmospheres, run Turbospectrum, write grid stores."""

__version__ = "0.1.0"
