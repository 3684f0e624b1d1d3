"""Cropland N2O emission inventory pipeline.

Stages (one module each): ``ingest`` -> ``fit`` -> ``estimate`` -> ``grid`` -> ``trend``
(``compare`` with EDGAR and ``report`` are planned). Pure computation lives in the stage
modules; every file read and write goes through :mod:`pipeline.io`.
"""

__version__ = "0.1.0"
