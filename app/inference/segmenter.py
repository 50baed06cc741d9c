"""Segment BraTS cases with a bundle's own inference config (one code path for CLI, API and bundle)."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.constants import MODALITIES
from app.data.cases import find_case
from app.data.verify import InputError, check_case_images
from app.inference.backends import OpenVINONetwork, resolve_backend
from app.inference.ensemble import MODES, MirrorEnsemble, ensemble_members

logger = logging.getLogger(__name__)

_MODALITY_SUFFIX = re.compile(r"_(t1|t1ce|t2|flair|seg)$", re.IGNORECASE)


def case_id_from_path(path: str | Path) -> str:
    """``.../Brats18_X/Brats18_X_t1.nii.gz`` -> ``Brats18_X`` (file name without extension and
    modality); a DICOM series folder gives its folder name."""
    from app.io.readers import strip_volume_suffix

    return _MODALITY_SUFFIX.sub("", strip_volume_suffix(Path(path).name))


def _is_dicom_folder(folder: Path) -> bool:
    import SimpleITK as sitk

    return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def resolve_inputs(inputs: Sequence[str | Path]) -> list[tuple[str, list[Path]]]:
    """Turn CLI inputs into cases: each a BraTS case folder, or exactly four modality volumes
    (files in NIfTI, NRRD or MetaImage, or DICOM series folders) in the order T1, T1ce, T2, FLAIR.

    Returns:
        ``[(case_id, [t1, t1ce, t2, flair]), ...]``.

    Raises:
        InputError: volumes that are not four, a folder that is neither a case nor a DICOM
            series, or a path that does not exist.
    """
    paths = [Path(p) for p in inputs]
    folders, files = [], []
    for p in paths:
        if p.is_dir() and not any(p.glob(f"{p.name}_t1.*")) and _is_dicom_folder(p):
            files.append(p)  # one modality as a DICOM series
        elif p.is_dir():
            folders.append(p)
        else:
            files.append(p)
    missing = [str(p) for p in files if not p.exists()]
    if missing:
        raise InputError(f"input not found: {', '.join(missing)}")
    if files and len(files) != len(MODALITIES):
        raise InputError(f"expected a case folder or 4 modality volumes ({', '.join(MODALITIES)}), got {len(files)}: "
                         + ", ".join(str(f) for f in files))
    cases: list[tuple[str, list[Path]]] = []
    for folder in folders:
        try:
            case = find_case(folder)
        except FileNotFoundError as err:
            raise InputError(str(err)) from err
        cases.append((case.case_id, list(case.images)))
    if files:
        cases.append((case_id_from_path(files[0]), files))
    return cases


@dataclass
class CaseResult:
    """Outcome of one case: ``label`` is ``(H, W, D)`` uint8 (codes 0/1/2/4) in the input geometry."""

    case_id: str
    label: np.ndarray | None = None
    affine: np.ndarray | None = None
    output: Path | None = None
    seconds: float = 0.0
    error: str | None = None
    extra: dict = field(default_factory=dict)


class Segmenter:
    """Load a bundle's inference workflow once and segment many cases with it.

    The bundle's ``[common.yaml, inference.yaml]`` configs give the network, ``preprocessing``
    (load, RAS, 1 mm, brain crop, z-score), ``inferer`` (sliding window) and ``postprocessing``
    (sigmoid, ``Invertd`` back to the input grid, threshold, regions to labels 0/1/2/4).

    Args:
        bundle: a shipped bundle name or a bundle folder.
        device: ``"cpu"``, ``"cuda"`` or None for CUDA where available.
        ckpt_path: weights to load instead of ``models/model.pt``.
        overrides: further config overrides, e.g. ``{"overlap": 0.25}`` or ``{"infer_mode": "sliding_window"}``.
        backend: ``"auto"``, ``"torch"`` or ``"openvino"`` (see :func:`app.inference.backends.resolve_backend`);
            None takes the bundle's ``inference_backend``.
        mode: ``"fast"`` (one model, ``ckpt_path``) or ``"accurate"`` (the bundle's
            ``ensemble_ckpt_paths``, the cross-validation fold models, each over every mirroring
            of ``mirror_axes``, with the ``accurate_*`` inference settings); None takes the
            bundle's ``mode``.

    Raises:
        FileNotFoundError: the bundle or its weights are missing.
        ValueError, ImportError: an unknown backend or mode, a bundle without an ensemble for
            ``accurate``, or OpenVINO asked for but not installed.
    """

    def __init__(self, bundle: str | Path = "brats_unet3d", device: str | None = None, ckpt_path: str | Path | None = None, overrides: dict | None = None,
                 backend: str | None = None, mode: str | None = None) -> None:
        from monai.bundle import ConfigParser

        from app.bundles import config_files

        root = Path(bundle) if Path(bundle).is_dir() else None
        files = config_files(root or str(bundle), "inference")
        parser = ConfigParser()
        parser.read_config(files)
        meta = Path(files[0]).parent / "metadata.json"
        if meta.is_file():  # BraTS bundles take name, network_def and training recipe from it (`_meta_`)
            parser.read_meta(str(meta))
        parser["bundle_root"] = str(Path(files[0]).parents[1])
        if device is not None:
            parser["device"] = f"$torch.device('{device}')"
        for key, value in (overrides or {}).items():
            parser[key] = value
        if ckpt_path is not None:
            parser["ckpt_path"] = str(ckpt_path)
        self.mode = mode or parser.get("mode", "fast")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got '{self.mode}'")
        if self.mode == "accurate" and "ensemble_ckpt_paths" not in parser:
            raise ValueError(f"bundle '{bundle}' has no ensemble (ensemble_ckpt_paths) for --mode accurate; use --mode fast")
        if self.mode == "accurate":
            for key in ("infer_mode", "overlap", "sw_batch_size"):
                if f"accurate_{key}" in parser:
                    parser[key] = parser[f"accurate_{key}"]
        self.parser = parser
        self.device = parser.get_parsed_content("device")
        inputs = parser.get("_meta_", {}).get("network_data_format", {}).get("inputs", {})
        self.in_channels = int(next(iter(inputs.values()))["num_channels"]) if inputs else len(MODALITIES)
        self.backend = resolve_backend(backend or parser.get("inference_backend", "torch"), self.device)
        self.network = self._build_network(parser)
        self.preprocessing = parser.get_parsed_content("preprocessing")
        self.inferer = parser.get_parsed_content("inferer")
        self.postprocessing = parser.get_parsed_content("postprocessing")
        self.amp = bool(parser.get_parsed_content("amp"))

    def _build_network(self, parser) -> Any:
        """``fast``: the network with ``ckpt_path``; ``accurate``: a :class:`MirrorEnsemble` of
        ``ensemble_ckpt_paths`` over the mirrorings of ``mirror_axes``. On the OpenVINO backend
        each member runs through OpenVINO."""
        network = parser.get_parsed_content("network")
        paths = parser.get_parsed_content("ensemble_ckpt_paths") if self.mode == "accurate" else [parser.get_parsed_content("ckpt_path")]
        members = ensemble_members(network, paths, self.device)
        if self.backend == "openvino":
            members = [OpenVINONetwork(m, self.in_channels) for m in members]
        self.precision = members[0].precision if self.backend == "openvino" else "f32"
        if self.mode == "fast":
            return members[0]
        return MirrorEnsemble(members, parser.get_parsed_content("mirror_axes"), int(parser.get("ensemble_max_batch", 8)))

    def load(self, images: Sequence[str | Path]) -> dict:
        """Check and preprocess one case (reading, RAS, spacing, crop, z-score): the CPU-side half
        of :meth:`predict`, safe to run in a background thread while another case computes.

        Returns:
            The preprocessed data dict, with ``"shape"`` and ``"affine"`` of the input added.

        Raises:
            InputError: unreadable, non-3D or non-co-registered files, or NaN/infinite voxels.
        """
        import torch

        shape, affine = check_case_images(images)
        data = self.preprocessing({"image": [str(p) for p in images]})
        if not torch.isfinite(data["image"]).all():
            raise InputError(f"case '{case_id_from_path(images[0])}': NaN or infinite voxel values in {', '.join(str(p) for p in images)}")
        data["shape"], data["affine"] = shape, affine
        return data

    def run(self, data: dict) -> tuple[np.ndarray, np.ndarray]:
        """Sliding-window inference and postprocessing of a case prepared by :meth:`load`."""
        import torch

        shape, affine = data.pop("shape"), data.pop("affine")
        image = data["image"].unsqueeze(0).to(self.device)
        with torch.no_grad(), torch.autocast(self.device.type, enabled=self.amp and self.device.type == "cuda"):
            data["pred"] = self.inferer(image, self.network)[0].float()
        out = self.postprocessing(data)
        label = np.asarray(out["pred"].cpu().numpy()[0], dtype=np.uint8)
        if label.shape != shape:
            raise RuntimeError(f"internal error: output shape {label.shape} != input shape {shape}")
        return label, affine

    def predict(self, images: Sequence[str | Path]) -> tuple[np.ndarray, np.ndarray]:
        """Segment one case.

        Args:
            images: T1, T1ce, T2 and FLAIR files of one case, co-registered.

        Returns:
            ``(label, affine)``: ``(H, W, D)`` uint8 with codes {0, 1, 2, 4}, exactly the shape
            of the input, and the input's 4x4 affine.

        Raises:
            InputError: unreadable, non-3D or non-co-registered files (see ``check_case_images``).
        """
        return self.run(self.load(images))
