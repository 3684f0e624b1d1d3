"""Cropland N2O emission inventory pipeline.

Stages (one module each): ``ingest`` -> ``fit`` -> ``estimate`` -> ``grid`` -> ``trend``
-> ``compare`` -> ``report``. Pure computation lives in the stage modules; every file read
and write goes through :mod:`pipeline.io`.
"""

__version__ = "0.1.0"
