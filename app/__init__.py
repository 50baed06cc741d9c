"""VolSeg: 3D medical image segmentation of CT and MRI built on MONAI.

The package is grouped by concern: ``app.data`` (manifests, splits, case checks),
``app.io`` (reading and atomic writing), ``app.transforms`` (dictionary transforms MONAI
lacks), ``app.networks`` (network registry), ``app.engines`` (Ignite handlers),
``app.inference`` (bundle-driven segmentation), ``app.evaluation`` (metrics and overlays),
``app.resources`` (where the shipped bundles and datalists are), ``app.errors`` (the shared
error types, lowest of all), ``app.bundle_tools`` (generated bundle copies and weight hashes),
``app.bundle_config`` (a bundle's configs as its workflows read them), ``app.api`` (the Python API) and ``app.cli`` (the ``volseg`` command, a thin front over the API).
"""

__version__ = "0.1.0"

_SUBMODULES = {"api", "bundle_config", "bundle_tools", "bundles", "constants", "devices", "labels", "data", "engines", "errors", "evaluation", "inference", "io", "networks", "resources", "transforms"}


def __getattr__(name: str):
    """Import submodules on first access, so ``import app`` is instant and bundle configs
    can say ``$import app`` then ``$app.data.default_brats_dir()``."""
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"app.{name}")
    raise AttributeError(f"module 'app' has no attribute '{name}'")
