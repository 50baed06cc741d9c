"""The VolSeg Python API. Every ``volseg`` CLI command is one call here.

Example:
    >>> from app import api
    >>> label, affine = api.segment("../shared/data/brats2018/Brats18_CBICA_AME_1")  # doctest: +SKIP
    >>> label.shape, label.dtype
    ((240, 240, 155), dtype('uint8'))
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from app.bundles import DEFAULT_BUNDLE
from app.data.manifest import build_manifest  # noqa: F401  (re-exported as api.build_manifest)

logger = logging.getLogger(__name__)


def segment(inputs: str | Path | Sequence[str | Path], bundle: str = DEFAULT_BUNDLE, device: str | None = None,
            backend: str | None = None, mode: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Segment one BraTS case: a case folder, or its four modality files (T1, T1ce, T2, FLAIR).

    Returns:
        ``(label, affine)``: ``(H, W, D)`` uint8 label map with codes 0/1/2/4 in the input's
        grid, and the input's 4x4 affine (mm). ``backend`` is ``"auto"``, ``"torch"``,
        ``"openvino"`` or None for the bundle's ``inference_backend``. ``mode`` is ``"fast"``
        (one model), ``"accurate"`` (the cross-validation fold models, each with mirroring
        test-time augmentation) or None for the bundle's ``mode`` (fast).

    Raises:
        app.data.verify.InputError: missing, unreadable, non-3D or non-co-registered input.
    """
    from app.inference import Segmenter, resolve_inputs

    cases = resolve_inputs([inputs] if isinstance(inputs, (str, Path)) else list(inputs))
    if len(cases) != 1:
        raise ValueError(f"segment() takes one case, got {len(cases)}; use segment_cases() for several")
    return Segmenter(bundle, device=device, backend=backend, mode=mode).predict(cases[0][1])


def segment_cases(
    inputs: Sequence[str | Path],
    output_dir: str | Path,
    bundle: str = DEFAULT_BUNDLE,
    device: str | None = None,
    progress: Callable[[Any], Any] | None = None,
    output_format: str = "same",
    dicom_seg: bool = False,
    backend: str | None = None,
    mode: str | None = None,
) -> list[Any]:
    """Segment several cases, writing ``<output_dir>/<case_id>_seg.<ext>`` (uint8, input geometry;
    the input's format, NIfTI for DICOM input).

    A case that fails is reported in its result (``error``) and the others still run; nothing
    is written for it.

    Args:
        inputs: case folders and/or the four modality files of one case.
        output_dir: output folder.
        bundle: bundle name or folder.
        device: ``"cpu"``, ``"cuda"`` or None (CUDA where available).
        progress: wraps the case iterator (e.g. ``tqdm``).
        output_format: ``"same"`` (the input's format; NIfTI for DICOM input) or ``"nifti"``.
        dicom_seg: for DICOM input, also write ``<case_id>_seg.dcm``, a DICOM Segmentation
            referencing the source series (needs ``volseg[dicom]``).
        backend: ``"auto"`` (OpenVINO on CPU where installed), ``"torch"``, ``"openvino"``, or
            None for the bundle's ``inference_backend``.
        mode: ``"fast"``, ``"accurate"`` or None for the bundle's ``mode`` (see :func:`segment`).

    Returns:
        One :class:`app.inference.CaseResult` per case. ``<output_dir>/volseg_run.json`` records
        the package versions, the bundle settings and each case's outcome.

    Raises:
        app.data.verify.InputError: inputs that name no case (not found, wrong file count).
    """
    from app.inference import CaseResult, Segmenter, resolve_inputs
    from app.io.readers import volume_format
    from app.io.writers import output_suffix, write_label_like

    if output_format not in ("same", "nifti"):
        raise ValueError(f"output_format must be 'same' or 'nifti', got '{output_format}'")
    cases = resolve_inputs(inputs)
    segmenter = Segmenter(bundle, device=device, backend=backend, mode=mode)
    results = []
    with ThreadPoolExecutor(max_workers=1) as reader:  # reads the next case while this one computes
        pending = reader.submit(segmenter.load, cases[0][1]) if cases else None
        for index, (case_id, images) in enumerate((progress or (lambda x: x))(cases)):
            start = time.perf_counter()
            try:
                loading, pending = pending, (reader.submit(segmenter.load, cases[index + 1][1]) if index + 1 < len(cases) else None)
                label, affine = segmenter.run(loading.result())
                out = write_label_like(label, images[0], Path(output_dir) / f"{case_id}_seg{output_suffix(images[0], output_format)}")
                if dicom_seg and volume_format(images[0]) == "dicom":
                    from app.bundles import label_names
                    from app.io.dicom_seg import write_dicom_seg

                    write_dicom_seg(label, images[0], Path(output_dir) / f"{case_id}_seg.dcm", label_names(bundle), model_name=Path(str(bundle)).name)
                results.append(CaseResult(case_id, label, affine, out, time.perf_counter() - start))
            except Exception as err:  # one bad case must not abort the batch
                logger.error(f"case '{case_id}' failed: {err}")
                results.append(CaseResult(case_id, seconds=time.perf_counter() - start, error=str(err)))
    _write_run_record(Path(output_dir) / "volseg_run.json", segmenter, bundle, results)
    return results


def _write_run_record(path: Path, segmenter: Any, bundle: str, results: list[Any]) -> None:
    from app.io.atomic import atomic_write_text

    record = {**run_info(), "bundle": str(bundle), "device": str(segmenter.device), "backend": segmenter.backend, "precision": segmenter.precision, "mode": segmenter.mode,
              "config": {k: segmenter.parser.get_parsed_content(k) for k in ("infer_mode", "roi_size", "sw_batch_size", "overlap", "spacing_mm", "ckpt_path", *(("ensemble_ckpt_paths", "mirror_axes") if segmenter.mode == "accurate" else ()))
                         if k in segmenter.parser},
              "cases": [{"case_id": r.case_id, "output": str(r.output) if r.output else None, "seconds": round(r.seconds, 3), "error": r.error} for r in results]}
    atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")


def evaluate(pred_dir: str | Path, manifest: str | Path, data_dir: str | Path | None = None, splits: Sequence[str] = ("training", "validation", "test"),
             csv_path: str | Path | None = None, png_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Score predicted label maps against a manifest's labels: per case and mean Dice, HD95 (mm),
    sensitivity, specificity and precision for WT, TC and ET. See ``app.evaluation``.

    Raises:
        FileNotFoundError: manifest missing, or no case of ``splits`` has a prediction.
    """
    from app.data import default_brats_dir, load_datalist
    from app.evaluation import evaluate_predictions

    root = Path(data_dir) if data_dir is not None else default_brats_dir()
    items = [item for split in splits for item in load_datalist(manifest, split, root)]
    return evaluate_predictions(pred_dir, items, csv_path=csv_path, png_dir=png_dir)


def cv_folds(manifest: str | Path, out: str | Path, data_dir: str | Path | None = None, k: int = 5, seed: int = 0) -> dict[str, Any]:
    """Write a k-fold cross-validation datalist over every labelled case of ``manifest``, stratified
    by tumour volume (:func:`app.data.folds.build_cv_manifest`).

    Raises:
        FileNotFoundError: the manifest or a label is missing.
        ValueError: fewer labelled cases than folds.
    """
    from app.data import default_brats_dir
    from app.data.folds import build_cv_manifest

    return build_cv_manifest(manifest, Path(data_dir) if data_dir is not None else default_brats_dir(), k=k, seed=seed, out=out)


def cross_validate(bundle: str = DEFAULT_BUNDLE, cv_manifest: str | Path | None = None, weights: str | Path | None = None, out_dir: str | Path = "cv",
                   data_dir: str | Path | None = None, mode: str = "fast", backend: str | None = None, device: str | None = None,
                   overrides: dict[str, Any] | None = None, progress: Callable[[Any], Any] | None = None,
                   folds: Sequence[int] | None = None) -> dict[str, Any]:
    """Cross-validation scores of a bundle: each case segmented by the fold model that never saw it
    (:func:`app.evaluation.cv.cross_validate`); per-case Dice and HD95, mean and std per region.

    ``cv_manifest`` defaults to the bundle's ``cv_data_list_file`` and ``weights`` to its
    ``models/`` folder (``fold<k>.pt``); a ``runs/.../`` folder of ``fold<k>/model.pt`` also works.

    Raises:
        FileNotFoundError: the manifest, a fold's weights or a case's files are missing.
    """
    from app.bundles import bundle_path, manifest_path
    from app.evaluation.cv import cross_validate as run_cv

    root = bundle_path(bundle)
    manifest = cv_manifest or manifest_path("brats2018_cv5")
    return run_cv(bundle, manifest, weights or root / "models", out_dir, data_dir, mode=mode,
                  segmenter_kwargs={"backend": backend, "device": device, "overrides": overrides or {}}, folds=folds, progress=progress)


def run_info() -> dict[str, str]:
    """Versions of Python and the packages that shape results, for run records."""
    import monai
    import torch

    import app

    return {"volseg": app.__version__, "python": platform.python_version(), "monai": monai.__version__, "torch": torch.__version__, "numpy": np.__version__}


def _train_args(root: Path, overrides: dict[str, Any] | None, manifest: str | Path | None, data_dir: str | Path | None,
                output_dir: str | Path | None) -> dict[str, Any]:
    """Config overrides for a training run: bundle root, data and output paths made absolute."""
    args: dict[str, Any] = {"bundle_root": str(root), **(overrides or {})}
    for key, value in (("data_list_file", manifest), ("dataset_dir", data_dir), ("output_dir", output_dir)):
        if value is not None:
            args[key] = str(Path(value).resolve())
    return args


def train(bundle: str = DEFAULT_BUNDLE, manifest: str | Path | None = None, data_dir: str | Path | None = None,
          output_dir: str | Path | None = None, overrides: dict[str, Any] | None = None, progress: bool = True,
          fold: int | None = None) -> Path:
    """Run a bundle's own ``[common, train]`` configs (the same path as ``python -m monai.bundle run``).

    The resolved config and package versions are saved in ``output_dir`` as ``run_config.json``
    and ``run_info.json``. Checkpoints: ``output_dir/last.pt`` (resumable) and ``model.pt`` (best).

    With ``fold``, ``manifest`` is a cross-validation datalist (``volseg cv folds``): the run
    trains on every other fold, writes the fold's datalist to ``output_dir/datalist.json``, and
    validates once, after the last epoch, on the fold's own cases, so ``model.pt`` holds the
    final weights: nothing is selected on the cases that cross-validation scores.

    Returns:
        The output folder.

    Raises:
        ValueError: ``fold`` without ``output_dir``, or a fold the manifest does not have.
        FileNotFoundError: the manifest is missing.
    """
    from monai.bundle import ConfigWorkflow

    from app.bundles import config_files, manifest_path
    from app.io.atomic import atomic_write_text

    files = config_files(bundle, "train")
    root = Path(files[0]).parents[1]
    if fold is not None:
        manifest, overrides = _fold_run(manifest or manifest_path("brats2018_cv5"), fold, output_dir, overrides)
    args = _train_args(root, overrides, manifest, data_dir, output_dir)
    workflow = ConfigWorkflow(config_file=files, meta_file=str(root / "configs" / "metadata.json"), logging_file=str(root / "configs" / "logging.conf"), workflow_type="train", **args)
    workflow.initialize()
    out = Path(workflow.parser.get_parsed_content("output_dir"))
    atomic_write_text(out / "run_config.json", json.dumps(workflow.parser.get(), indent=2, default=str))
    atomic_write_text(out / "run_info.json", json.dumps({**run_info(), "bundle": str(bundle), "overrides": {k: str(v) for k, v in args.items()}}, indent=2))
    if progress:
        from ignite.handlers import ProgressBar

        ProgressBar(persist=False).attach(workflow.parser.get_parsed_content("train#trainer"), output_transform=lambda out: {"loss": float(out[0]["loss"])})
    workflow.run()
    workflow.finalize()
    return out


def _fold_run(cv_manifest: str | Path, fold: int, output_dir: str | Path | None, overrides: dict[str, Any] | None) -> tuple[Path, dict[str, Any]]:
    """Write one fold's datalist into ``output_dir`` and set validation to the last epoch only."""
    from app.data.folds import fold_datalist

    if output_dir is None:
        raise ValueError("a cross-validation fold needs an output folder (--output-dir), one per fold")
    datalist = Path(output_dir) / "datalist.json"
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    fold_datalist(cv_manifest, fold, out=datalist)
    overrides = dict(overrides or {})
    overrides.setdefault("val_interval", "@max_epochs")
    return datalist, overrides


def train_distributed(bundle: str = DEFAULT_BUNDLE, nproc: int = 2, manifest: str | Path | None = None, data_dir: str | Path | None = None,
                      output_dir: str | Path | None = None, overrides: dict[str, Any] | None = None, extra_configs: Sequence[str | Path] = ()) -> Path:
    """Train on ``nproc`` processes: ``torchrun --standalone --nproc_per_node=N -m monai.bundle run``
    with the bundle's ``[common, train, multi_gpu_train]`` configs (DistributedDataParallel; NCCL on
    GPUs, gloo on CPU). For several nodes, run the torchrun command in the bundle's README instead.

    Returns:
        The output folder.

    Raises:
        ValueError: ``nproc < 1``.
        subprocess.CalledProcessError: a rank failed.
    """
    import subprocess
    import sys

    from app.bundles import config_files
    from app.io.atomic import atomic_write_text

    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    files = config_files(bundle, "train", "multi_gpu_train") + [str(Path(f).resolve()) for f in extra_configs]
    root = Path(files[0]).parents[1]
    out = Path(output_dir).resolve() if output_dir is not None else root / "runs" / "train"
    args = _train_args(root, overrides, manifest, data_dir, out)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "monai.bundle", "run",
           "--config_file", json.dumps(files), "--meta_file", str(root / "configs" / "metadata.json"), "--logging_file", str(root / "configs" / "logging.conf")]
    for key, value in args.items():
        cmd += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "run_info.json", json.dumps({**run_info(), "bundle": str(bundle), "nproc": nproc, "command": cmd}, indent=2))
    subprocess.run(cmd, check=True)
    return out


EXPORT_SUFFIX = {"torchscript": ".ts", "onnx": ".onnx", "openvino": ".xml"}


def export(bundle: str = DEFAULT_BUNDLE, fmt: str = "torchscript", out: str | Path | None = None, ckpt_path: str | Path | None = None) -> Path:
    """Export a bundle's trained network (weights from ``models/model.pt`` or ``ckpt_path``).

    Args:
        bundle: bundle name or folder.
        fmt: ``"torchscript"``, ``"onnx"`` or ``"openvino"`` (see :func:`app.inference.export_network`).
        out: output file; default ``<bundle>/models/model.ts``, ``.onnx`` or ``.xml`` (+ ``.bin``).
        ckpt_path: weights to export instead of the bundle's.

    Returns:
        The written file. It takes ``(B, C_in, H, W, D)`` float32 (the bundle's preprocessed
        input) and returns ``(B, C_out, H, W, D)`` logits.

    Raises:
        ValueError: unknown format or bundle. FileNotFoundError: no weights.
        ImportError: ONNX or OpenVINO missing (``pip install "volseg[openvino]"``).
    """
    from app.inference import EXPORT_FORMATS, Segmenter, export_network

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format '{fmt}'; choose one of {', '.join(EXPORT_FORMATS)}")
    segmenter = Segmenter(bundle, device="cpu", ckpt_path=ckpt_path, backend="torch")
    root = Path(segmenter.parser.get_parsed_content("bundle_root"))
    target = Path(out) if out is not None else root / "models" / f"model{EXPORT_SUFFIX[fmt]}"
    return export_network(segmenter.network, fmt, target, segmenter.in_channels)


def _unseen_case_ids(bundle: str | Path) -> list[str]:
    """Shared BraTS cases that a bundle's ``models/model.pt`` never trained on: its held-out CV fold."""
    from app.bundles import bundle_path
    from app.resources import manifests_root

    meta = json.loads((bundle_path(bundle) / "configs" / "metadata.json").read_text())
    fold = meta.get("training", {}).get("fast_model_fold")
    cv = manifests_root() / "brats2018_cv5.json"
    if fold is None or not cv.is_file():
        return []
    return [item["case_id"] for item in json.loads(cv.read_text())["training"] if item["fold"] == fold]


def demo(data_dir: str | Path | None = None, output_dir: str | Path = "volseg_demo", bundle: str = DEFAULT_BUNDLE, device: str | None = None) -> dict[str, Any]:
    """The README's first command: segment one real BraTS case with the shipped weights and score it.

    The case is the first case found in ``data_dir`` (default ``$VOLSEG_BRATS_DIR`` or
    ``../shared/data/brats2018``) that the shipped fast model never trained on (the held-out fold
    of ``models/model.pt``, ``training#fast_model_fold`` in the bundle's metadata), else the
    first case there.
    Where no BraTS data is found, a synthetic phantom is generated and used instead, and the
    result says so (``synthetic: True``).

    Returns:
        ``{"case_id", "synthetic", "data_dir", "output", "overlay", "seconds", "metrics"}`` with
        metrics as in :func:`app.evaluation.case_metrics`.
    """
    import nibabel as nib

    from app.data import default_brats_dir, scan_brats
    from app.data.phantom import make_brats_phantom
    from app.evaluation import case_metrics
    from app.evaluation.overlay import save_overlay

    root = Path(data_dir) if data_dir is not None else default_brats_dir()
    out_dir = Path(output_dir)
    try:
        cases = {c.case_id: c for c in scan_brats(root)}
        synthetic = False
    except FileNotFoundError as err:
        logger.warning(f"no BraTS data found ({err}); running on a SYNTHETIC phantom instead")
        root, synthetic = out_dir / "phantom", True
        make_brats_phantom(root, "Phantom_001")
        cases = {c.case_id: c for c in scan_brats(root)}
    unseen = _unseen_case_ids(bundle)
    case = next((cases[c] for c in unseen if c in cases), next(iter(cases.values())))
    start = time.perf_counter()
    result = segment_cases([case.images[0].parent], out_dir, bundle=bundle, device=device)[0]
    if result.error:
        raise RuntimeError(f"case '{case.case_id}' failed: {result.error}")
    ref = nib.load(str(case.label))
    ref_label = np.asarray(ref.dataobj).astype(np.uint8)
    metrics = case_metrics(result.label, ref_label, ref.header.get_zooms()[:3])
    overlay = save_overlay(case.images[-1], result.label, ref_label, out_dir / f"{case.case_id}_overlay.png",
                           title=f"{case.case_id}{' (SYNTHETIC)' if synthetic else ''}")
    return {"case_id": case.case_id, "synthetic": synthetic, "data_dir": str(root), "output": str(result.output),
            "overlay": str(overlay), "seconds": time.perf_counter() - start, "segment_seconds": result.seconds, "metrics": metrics}

