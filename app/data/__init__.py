"""Datasets: BraTS case discovery, Decathlon datalists, seeded splits and case checks."""

from app.data.cases import BratsCase, default_brats_dir, find_case, scan_brats
from app.data.manifest import build_decathlon_manifest, build_manifest, kfold_splits, load_datalist, split_cases

__all__ = [
    "BratsCase",
    "build_decathlon_manifest",
    "build_manifest",
    "default_brats_dir",
    "find_case",
    "kfold_splits",
    "load_datalist",
    "scan_brats",
    "split_cases",
]
