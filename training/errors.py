"""The errors and names that cross from model loading to the serving side.

Kept in a module of their own, with no imports, so a router, or a model server whose slot is
idle, starts without importing MLflow, scikit-learn or Ray Tune (each replica pays its imports
when it starts; `training.safe_load` is imported when a version is loaded).
"""

from __future__ import annotations

PYFUNC = "python_function"  # MLflow's generic flavor: load_served's fallback


class ModelRefused(ValueError):
    """The artifact holds a format, type, estimator or flavor this deployment does not load."""


class ModelLoadFailed(ModelRefused):
    """The artifact's own loader raised: the version cannot be served as it is."""
