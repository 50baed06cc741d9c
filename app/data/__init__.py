"""Datasets: BraTS case discovery, Decathlon datalists, seeded splits and case checks."""

from app.data.cases import BratsCase, case_id_from_path, default_brats_dir, find_case, scan_brats
from app.data.folder import folder_datalist, inference_datalist
from app.data.manifest import build_decathlon_manifest, build_manifest, kfold_splits, load_datalist, nonempty_split, split_cases

__all__ = [
    "BratsCase",
    "build_decathlon_manifest",
    "build_manifest",
    "case_id_from_path",
    "default_brats_dir",
    "find_case",
    "folder_datalist",
    "inference_datalist",
    "kfold_splits",
    "load_datalist",
    "nonempty_split",
    "scan_brats",
    "split_cases",
]
