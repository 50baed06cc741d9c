"""The VolSeg Python API. Every ``volseg`` CLI command is one call here.

Example:
    >>> from app import api
    >>> label, affine = api.segment("../shared/data/brats2018/Brats18_CBICA_AME_1")  # doctest: +SKIP
    >>> label.shape, label.dtype
    ((240, 240, 155), dtype('uint8'))
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import platform
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.bundles import DEFAULT_BUNDLE
from app.data.manifest import build_manifest  # noqa: F401  (re-exported as api.build_manifest)
from app.errors import quiet_interrupt_logs

logger = logging.getLogger(__name__)


def segment(inputs: str | Path | Sequence[str | Path], bundle: str = DEFAULT_BUNDLE, device: str | None = None,
            backend: str | None = None, mode: str | None = None, int8: bool | None = None, n4: bool | None = None,
            resample: bool = False, sequences: Sequence[str] | None = None, label_codes: str | int = "2018") -> tuple[np.ndarray, np.ndarray]:
    """Segment one case: for a BraTS bundle a case folder or its modality files (T1, T1ce, T2,
    FLAIR); for a one-channel bundle (``ct_unet3d``, or a ``volseg train`` output of it) one CT
    volume or DICOM series. The bundle's metadata says which (:class:`app.labels.LabelManager`).

    Returns:
        ``(label, affine)``: ``(H, W, D)`` uint8 label map with the bundle's codes (BraTS 0/1/2/4,
        CT 0/1) in the input's grid, and the input's 4x4 affine (mm). ``backend`` is ``"auto"``, ``"torch"``,
        ``"openvino"`` or None for the bundle's ``inference_backend``. ``mode`` is ``"fast"``
        (one model), ``"accurate"`` (the average of the cross-validation fold models; mirroring
        test-time augmentation only where the bundle's ``mirror_axes`` lists axes, none as shipped) or None for the bundle's ``mode`` (fast). ``int8`` runs the
        bundle's int8 models on OpenVINO (True), float32 (False) or as the bundle says (None).
        ``n4`` applies N4 bias-field correction first (True; the bundle's ``n4_combine`` says
        whether the corrected case alone is segmented or averaged with the case as given), or
        not (False), or as the bundle says (None: ``n4_average`` in fast mode,
        ``accurate_n4_average`` in accurate mode; both on for brats_unet3d), with the sequences and
        settings of the bundle's ``n4_params`` (``accurate_n4_params`` in accurate mode;
        brats_unet3d: T1ce and FLAIR in fast mode, all four in accurate mode). ``resample`` puts
        sequences on different voxel grids onto the finest one first (see :func:`segment_cases`);
        the label and affine are then that grid's. ``sequences`` names the sequence of each
        loose file, in order, where the file names do not (``["t1ce", "flair"]``; the CLI's
        ``--sequences``); the others are missing and zero-filled. ``label_codes`` ``"2023"``
        gives a BraTS label map in the BraTS 2023+ challenge codes (1 NCR, 2 SNFH / edema, 3 ET)
        instead of the bundle's 2018 ones (ET 4).

    Raises:
        app.data.verify.InputError: missing, unreadable, non-3D or non-co-registered input
            (without ``resample``: sequences on different grids), or loose files whose names
            say no sequence (then give ``sequences``).
        ValueError: ``label_codes`` other than ``"2018"`` and ``"2023"``, or ``"2023"`` for a
            bundle that is not BraTS.
    """
    from app.inference import Segmenter, resolve_inputs
    from app.inference.align import grid_reference, load_on_grid
    from app.transforms.regions import relabelled
    from app.labels import labels_of

    manager = labels_of(bundle)
    mapping = manager.code_map(label_codes)  # refused before any model loads
    cases = resolve_inputs([inputs] if isinstance(inputs, (str, Path)) else list(inputs), channels=manager.channels, sequences=sequences)
    if len(cases) != 1:
        raise ValueError(f"segment() takes one case, got {len(cases)}; use segment_cases() for several")
    segmenter = Segmenter(bundle, device=device, backend=backend, mode=mode, int8=int8, n4=n4)
    images = cases[0][1]
    label, affine = segmenter.run(load_on_grid(segmenter, images, grid_reference(images) if resample else None)[0])
    return relabelled(label, mapping), affine


def _label_codes(label_codes: str | int) -> str:
    """``label_codes`` as the text the run record keeps (``2023`` -> ``"2023"``), checked
    (:meth:`app.labels.LabelManager.code_map`; ValueError)."""
    from app.labels import BRATS

    BRATS.code_map(label_codes)  # the values, whatever the bundle; the bundle is asked in check_settings
    return str(label_codes)


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
    uncertainty: bool = False,
    sequences: Sequence[str] | None = None,
    overwrite: bool = True,
    nproc: int = 1,
    report: bool = False,
    int8: bool | None = None,
    n4: bool | None = None,
    resample: bool = False,
    label_codes: str | int = "2018",
) -> list[Any]:
    """Segment several cases, writing ``<output_dir>/<case_id>_seg.<ext>`` (uint8, input geometry;
    the input's format, NIfTI for DICOM input).

    Everything that needs no model is checked first (:func:`app.inference.batch.plan_batch`):
    settings, input paths, and the output folder (created, and proven writable), so an output
    problem stops the run before any model loads. A case that fails (unreadable, truncated,
    corrupt, or a folder that is no case) is reported in its result (``error``) and the others
    still run; nothing is written for it. The same case given twice (also through another path
    or a symbolic link) is segmented once, with a note.

    Args:
        inputs: case folders, dataset folders of case folders (BraTS layout; each stands for
            its case folders, :func:`app.inference.segmenter.expand_dataset_folders`), and/or
            the modality files of one case.
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
        uncertainty: also write ``<case_id>_uncertainty.nii.gz`` (float32, input geometry: the
            entropy in bits of the whole-tumour probability) and record the case's ``quality``
            (expected whole-tumour Dice, :mod:`app.inference.uncertainty`).
        sequences: the sequence of each loose input file, in order (default: from file names).
        overwrite: segment a case whose output exists again; False skips it (a note in its
            result and the run record), so an interrupted batch resumes (``volseg segment``
            skips unless ``--overwrite``).
        nproc: processes, ``torchrun`` with one GPU each on CUDA, gloo on CPU
            (:mod:`app.inference.distributed`); results then carry no ``label`` (it is on disk).
        report: also write ``<output_dir>/report.html`` (see :func:`report`).
        int8: on the OpenVINO backend, run the bundle's int8 models (True) or float32 (False);
            None: the bundle's ``openvino_int8`` (see :class:`app.inference.Segmenter`).
        n4: N4 bias-field correction of each case first (True), or not (False); None: the
            bundle's ``n4_average`` in fast mode, ``accurate_n4_average`` in accurate mode
            (both on for brats_unet3d). The bundle's ``n4_combine`` says whether the corrected
            case alone is segmented or averaged with the case as given, ``n4_params``
            (``accurate_n4_params`` in accurate mode) which sequences are corrected. Slower by
            the N4 fits (brats_unet3d: about 0.2 s a case on 2 CPU cores in fast mode, T1ce and
            FLAIR; about 1.2 s in accurate mode, all four); its CV gain is in the bundle docs (see
            :class:`app.inference.Segmenter`).
        resample: a case whose sequences lie on different voxel grids of one session (e.g. a 5 mm
            2D FLAIR beside a 1 mm 3D T1ce) is resampled onto its finest grid first (linear, in
            scanner coordinates, no registration; :mod:`app.inference.align`), and its label map
            is written on that grid; its record says so under ``resampled``. False: such a case
            fails with an error that names the files.
        label_codes: ``"2018"`` (the bundle's codes; BraTS 0/1/2/4) or ``"2023"``: BraTS label
            maps in the BraTS 2023+ challenge codes (1 NCR, 2 SNFH / edema, 3 ET), for
            submissions and tools that expect them; the label files, DICOM SEG, ``volumes_ml``
            and the report follow, and the run record says ``label_codes``. A label made
            in other codes is made again (as for other settings).

    A case may lack sequences (any non-empty subset of T1, T1ce, T2, FLAIR): they are fed as
    zero channels to the modality-dropout model, and the case's record names them under
    ``missing_sequences``. A batch that cannot start leaves nothing behind: an output folder it
    made is removed where nothing was written into it.

    Returns:
        One :class:`app.inference.CaseResult` per case. ``<output_dir>/volseg_run.json`` records
        the package versions, the bundle settings and each case's outcome.

    Raises:
        app.errors.InputError: inputs that name no case (not found, loose files that form no case).
        app.errors.OutputError: an output folder that is a file, cannot be created or is not
            writable (found before any model loads).
        ValueError: an unknown output format or device, CUDA asked for where there is none,
            ``nproc < 1``, more processes than GPUs, ``sequences``, ``n4`` or ``uncertainty`` for
            a bundle that has no use for them (a one-channel CT bundle), ``label_codes`` other
            than ``"2018"`` / ``"2023"`` or ``"2023"`` for a bundle that is not BraTS.
        FileNotFoundError: the bundle's weights are missing (a template that ships none).
        ImportError: ``dicom_seg`` without highdicom.
    """
    from app.inference.batch import SegmentSettings, plan_batch, run_batch

    settings = SegmentSettings(str(bundle), device, backend, mode, output_format, dicom_seg, uncertainty, tuple(sequences) if sequences else None, int8, n4, resample, _label_codes(label_codes))
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    with _removed_if_left_empty(Path(output_dir)):  # a batch that cannot start leaves no empty output folder
        plan = plan_batch(inputs, output_dir, settings, overwrite=overwrite)
        if nproc > 1:
            from app.inference.distributed import segment_distributed

            results = segment_distributed(plan, settings, nproc, run_info())
        else:
            results = run_batch(plan, settings, run_info(), progress)
    if report:
        from app.evaluation.case_report import write_report

        write_report(plan.output_dir, images={c.case_id: c.images for c in plan.cases})
    return results


def report(run_dir: str | Path, inputs: Sequence[str | Path] = (), out: str | Path | None = None) -> Path:
    """Write the HTML report of a ``volseg segment`` output folder (:mod:`app.evaluation.case_report`):
    per case, the label over the input on three planes through the tumour centre, the volumes
    (mL), missing sequences and quality score of ``volseg_run.json``, and the bundle with its
    cross-validation figures.

    Args:
        run_dir: the ``volseg segment`` output folder.
        inputs: the case folders (or files) that were segmented, for the images under the
            labels (a case not in the run record is named in a warning); without them, the input
            files the run record names, and where it names none the labels are drawn on black.
        out: the HTML file (default ``<run_dir>/report.html``).

    Returns:
        The HTML path.

    Raises:
        FileNotFoundError: ``run_dir`` has no ``volseg_run.json``.
        app.errors.InputError: ``inputs`` that name no case.

    Example:
        >>> report("out", ["../shared/data/brats2018/Brats18_CBICA_AME_1"])  # doctest: +SKIP
        PosixPath('out/report.html')
    """
    from app.evaluation.case_report import write_report
    from app.inference import resolve_inputs

    images = {case_id: files for case_id, files in resolve_inputs(list(inputs))} if inputs else None
    if images:
        from app.inference.batch import earlier_entries

        recorded = earlier_entries(run_dir)
        unknown = [case_id for case_id in images if case_id not in recorded]
        if unknown:
            logging.getLogger(__name__).warning(f"{len(unknown)} of the inputs name cases that {Path(run_dir) / 'volseg_run.json'} does not hold, "
                                                f"so the report has no section for them: {', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''}")
    return write_report(run_dir, images=images, out=out)


def evaluate(pred_dir: str | Path, manifest: str | Path | None = None, data_dir: str | Path | None = None, splits: Sequence[str] = ("training", "validation", "test"),
             csv_path: str | Path | None = None, png_dir: str | Path | None = None, bundle: str | Path | None = None,
             lesion_wise: bool = False) -> list[dict[str, Any]]:
    """Score predicted label maps (``<case>_seg.nii.gz``, ``.nrrd`` or ``.mha``) against a manifest's
    labels: per case and mean Dice, HD95 (mm), sensitivity, specificity and precision per
    evaluation region of the bundle (:class:`app.labels.LabelManager`: WT, TC, ET for BraTS,
    ``spleen`` for ``ct_unet3d``). See ``app.evaluation``.

    Args:
        pred_dir: folder of predictions.
        manifest: Decathlon datalist with the reference labels; default: the bundle's
            ``data_list_file``.
        data_dir: root of the manifest's paths; default: the bundle's ``dataset_dir``, or without
            a bundle ``$VOLSEG_BRATS_DIR`` / ``../shared/data/brats2018``.
        splits: manifest lists to score.
        csv_path, png_dir: where to write the table and the overlays (None: not written).
        bundle: shipped bundle name or folder (a ``volseg train`` output too); None: BraTS.
        lesion_wise: also BraTS 2023+ lesion-wise Dice, HD95 and detection F1 per region, from the
            official ``brats-evaluation`` package (``volseg[lesion]``; :mod:`app.evaluation.lesionwise`).

    Raises:
        FileNotFoundError: ``pred_dir`` or the manifest missing, a reference label missing, or no
            case of ``splits`` has a prediction.
        ValueError: no manifest and no bundle, splits that hold no case; ``csv_path`` or
            ``png_dir`` not writable (:class:`app.errors.OutputError`, before any case is scored).
        app.evaluation.CasesFailed: cases that could not be scored (a prediction off its
            reference's grid, an unreadable file); the others are scored and written, and the
            exception holds their rows.
    """
    from app.data import default_brats_dir, load_datalist
    from app.evaluation import evaluate_predictions
    from app.labels import labels_of

    labels = labels_of(bundle)
    if bundle is not None and (manifest is None or data_dir is None):
        from app.bundle_config import bundle_settings

        settings = bundle_settings(bundle, ("data_list_file", "dataset_dir"))
        manifest, data_dir = manifest or settings.get("data_list_file"), data_dir or settings.get("dataset_dir")
    if manifest is None:
        raise ValueError("evaluate needs a manifest (--manifest) or a bundle (--bundle) whose data_list_file names one")
    if not Path(pred_dir).is_dir():
        raise FileNotFoundError(f"prediction folder '{pred_dir}' does not exist" if not Path(pred_dir).exists() else f"--pred '{pred_dir}' is a file; give the folder of the predictions")
    root = Path(data_dir) if data_dir is not None else default_brats_dir()
    required = ("label", "image") if png_dir is not None else ("label",)  # the images only for the overlays
    items = [item for split in splits for item in load_datalist(manifest, split, root, required)]
    if not items:
        raise ValueError(f"manifest '{manifest}': the split(s) {', '.join(splits)} hold no case; choose others with --split")
    given = items[0].get("image")
    channels = len(given) if isinstance(given, (list, tuple)) else 1 if given else None
    if bundle is None and channels is not None and channels != len(labels.channels):
        logging.getLogger("volseg").warning(
            f"no bundle given: scoring the BraTS regions ({', '.join(labels.region_names)}), but the items of '{manifest}' have "
            f"{channels} image(s) each, not BraTS's {len(labels.channels)}: pass the bundle that made the predictions (--bundle; "
            "bundle= in app.api, e.g. ct_unet3d) to score its own regions")
    return evaluate_predictions(pred_dir, items, csv_path=csv_path, png_dir=png_dir, labels=labels, lesion_wise=lesion_wise)


def cv_folds(manifest: str | Path, out: str | Path, data_dir: str | Path | None = None, k: int = 5, seed: int = 0) -> dict[str, Any]:
    """Write a k-fold cross-validation datalist over every labelled case of ``manifest``, stratified
    by tumour volume (:func:`app.data.folds.build_cv_manifest`).

    Raises:
        FileNotFoundError: the manifest, a label or an image is missing.
        ValueError: fewer labelled cases than folds.
    """
    from app.data import default_brats_dir
    from app.data.folds import build_cv_manifest

    return build_cv_manifest(manifest, Path(data_dir) if data_dir is not None else default_brats_dir(), k=k, seed=seed, out=out)


def check_shipped_folds(cv_manifest: str | Path, folds: Sequence[int] | None = None) -> None:
    """Refuse to score a cross-validation datalist with the shipped fold models where one of them
    trained on a case it would score: the shipped ``fold<k>.pt`` were trained on the folds of
    ``data_manifests/brats2018_cv5.json``, and a datalist of ``volseg cv folds`` assigns the same
    cases other folds, so fold k's model would "score" cases it trained on, and the figures would
    be optimistic without a word. Cases that the shipped datalist does not list are unseen by
    every fold model and pass.

    Raises:
        ValueError: naming the cases, both folds, and the way out (weights trained on these folds).
    """
    from app.bundles import manifest_path

    shipped_path = Path(manifest_path("brats2018_cv5"))
    if Path(cv_manifest).resolve() == shipped_path.resolve():
        return
    shipped = json.loads(shipped_path.read_text())
    trained_on = {item["case_id"]: int(item["fold"]) for item in shipped.get("training", []) if "fold" in item}
    items = json.loads(Path(cv_manifest).read_text()).get("training", [])
    seen = [(it["case_id"], int(it["fold"]), trained_on[it["case_id"]]) for it in items
            if "fold" in it and it.get("case_id") in trained_on and trained_on[it["case_id"]] != int(it["fold"])
            and (folds is None or int(it["fold"]) in folds)]
    if seen:
        listing = ", ".join(f"{case} (fold {mine} here, fold {theirs} in brats2018_cv5.json)" for case, mine, theirs in seen[:3])
        raise ValueError(f"the shipped fold models were trained on the folds of data_manifests/brats2018_cv5.json: in '{cv_manifest}' "
                         f"{len(seen)} case(s) are in a fold whose shipped model trained on them, e.g. {listing}, so their scores would be "
                         "optimistic. Score with weights trained on these folds (volseg cv train --manifest ... then --weights), or use the "
                         "shipped datalist")


def cross_validate(bundle: str = DEFAULT_BUNDLE, cv_manifest: str | Path | None = None, weights: str | Path | None = None, out_dir: str | Path = "cv",
                   data_dir: str | Path | None = None, mode: str = "fast", backend: str | None = None, device: str | None = None,
                   overrides: dict[str, Any] | None = None, progress: Callable[[Any], Any] | None = None,
                   folds: Sequence[int] | None = None, sequences: Sequence[str] | None = None, uncertainty: bool = False) -> dict[str, Any]:
    """Cross-validation scores of a bundle: each case segmented by the fold model that never saw it
    (:func:`app.evaluation.cv.cross_validate`); per-case Dice and HD95, mean and std per region.

    ``cv_manifest`` defaults to the bundle's ``cv_data_list_file`` and ``weights`` to its
    ``models/`` folder (``fold<k>.pt``); a ``runs/.../`` folder of ``fold<k>/model.pt`` also works.
    ``sequences`` keeps only those sequences of every case (the rest missing, zero-filled);
    ``uncertainty`` also scores the uncertainty map and case quality score.

    Raises:
        FileNotFoundError: the manifest, a fold's weights or a case's files are missing.
        ValueError: the bundle's own fold models (no ``weights``) would score cases they trained
            on: ``cv_manifest`` puts a case in another fold than the shipped
            ``brats2018_cv5.json`` they were trained on (:func:`check_shipped_folds`).
    """
    from app.bundles import bundle_path, manifest_path
    from app.evaluation.cv import cross_validate as run_cv

    root = bundle_path(bundle)
    manifest = cv_manifest or manifest_path("brats2018_cv5")
    if weights is None:
        check_shipped_folds(manifest, folds)
    return run_cv(bundle, manifest, weights or root / "models", out_dir, data_dir, mode=mode,
                  segmenter_kwargs={"backend": backend, "device": device, "overrides": overrides or {}}, folds=folds, progress=progress,
                  sequences=sequences, uncertainty=uncertainty)


def run_info() -> dict[str, str]:
    """Versions of Python and the packages that shape results, for run records."""
    import monai
    import torch

    import app

    return {"volseg": app.__version__, "python": platform.python_version(), "monai": monai.__version__, "torch": torch.__version__, "numpy": np.__version__}


def _default_output_dir(bundle: str | Path, root: Path) -> Path:
    """Where a training run without ``output_dir`` writes: ``runs/<name>`` in the working folder for
    a shipped bundle (its folder may sit in a read-only site-packages, and is shared by every run),
    ``<bundle folder>/runs/train`` for a bundle given as a folder (the Model Zoo's place)."""
    return root / "runs" / "train" if Path(bundle).is_dir() else Path.cwd() / "runs" / str(bundle)


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
          fold: int | None = None, init_from: str | Path | None = None, freeze_encoder: bool = False) -> Path:
    """Run a bundle's own ``[common, train]`` configs (the same path as ``python -m monai.bundle run``).

    ``output_dir`` defaults to ``runs/<bundle name>`` in the working folder for a shipped bundle, and
    to ``<bundle folder>/runs/train`` for a bundle given as a folder.
    The resolved config and package versions are saved in ``output_dir`` as ``run_config.json``
    and ``run_info.json``. Checkpoints: ``output_dir/last.pt`` (resumable) and ``model.pt`` (best,
    or the final weights where no validation ran). The finished ``output_dir`` is a complete
    bundle (``configs/`` with the run's overrides, ``metadata.json`` with its figures under
    ``training_run``, ``models/model.pt``, ``docs/README.md``: :mod:`app.engines.trained_bundle`),
    so ``--bundle <output_dir>`` works in ``segment``, ``evaluate`` and ``serve``.

    With ``fold``, ``manifest`` is a cross-validation datalist (``volseg cv folds``): the run
    trains on every other fold, writes the fold's datalist to ``output_dir/datalist.json``, and
    validates once, after the last epoch, on the fold's own cases, so ``model.pt`` holds the
    final weights: nothing is selected on the cases that cross-validation scores.

    With ``init_from`` (a bundle name or folder, whose ``models/model.pt`` is taken, or a
    checkpoint file: ``model.pt``, a float16 ``fold*.pt`` or a ``last.pt``), the network starts
    from those weights (transfer learning / fine-tuning) with a fresh optimizer and learning-rate
    schedule; a run that resumes from its own ``last.pt`` ignores it. ``freeze_encoder`` then
    keeps the encoder's weights fixed (:func:`app.networks.freeze_encoder`).

    The run's data (the cached training and validation cases) are freed before it returns, so
    that runs can follow one another in one process (``volseg cv train``) in the memory of one.

    Returns:
        The output folder.

    Raises:
        ValueError: ``fold`` without ``output_dir``, a fold the manifest does not have,
            ``freeze_encoder`` without ``init_from``, an empty training split, or an empty
            validation split while validation is due (:func:`app.engines.preflight.check_training_splits`),
            or ``augment_on_device`` on CUDA with loader worker processes
            (:func:`app.engines.preflight.check_augment_device`).
        FileNotFoundError: the manifest, the ``init_from`` weights or the ``distill_teacher`` weights
            (knowledge distillation, :mod:`app.engines.distillation`) are missing.
    """
    from app.bundles import config_files, manifest_path
    from app.io.atomic import atomic_write_text

    files = config_files(bundle, "train")
    root = Path(files[0]).parents[1]
    if fold is not None:
        manifest, overrides = _fold_run(manifest or manifest_path("brats2018_cv5"), fold, output_dir, overrides)
    args = _train_args(root, overrides, manifest, data_dir, output_dir if output_dir is not None else _default_output_dir(bundle, root))
    if freeze_encoder and init_from is None:
        raise ValueError("--freeze-encoder needs --init-from: a frozen random encoder learns nothing")
    init_ckpt = _init_checkpoint(init_from) if init_from is not None else None  # a missing checkpoint: before the data are read
    from app.bundle_config import bundle_parser
    from app.engines.preflight import check_overrides

    check_overrides(bundle_parser(root, "train"), dict(overrides or {}))  # a misspelt --set key, text for a number
    _check_not_a_bundle(Path(args["output_dir"]))
    folder_existed = Path(args["output_dir"]).exists()
    with _removed_if_left_empty(Path(args["output_dir"])):  # a run that fails its checks leaves no empty folder
        workflow = _initialized_training(files, root, args)
    out = Path(workflow.parser.get_parsed_content("output_dir"))
    if _resumes(workflow.parser, out):
        _check_resumable(out, workflow.parser.get_parsed_content("network"), bundle)
        trained, max_epochs = _trained_epochs(out / "last.pt"), workflow.parser.get_parsed_content("train#trainer").state.max_epochs
        if trained is not None and max_epochs is not None and trained > max_epochs:  # else MONAI's CheckpointLoader stops the run with a traceback
            raise ValueError(f"the run in {out} has trained {trained} epochs, more than max_epochs {max_epochs}: give --max-epochs above "
                             f"{trained} to train it on from its last.pt, or a new --output-dir to start a new run")
        if trained is not None and trained == max_epochs:
            logging.getLogger("volseg").warning(
                "the run in %s has finished (%d of %d epochs): nothing is trained, its bundle is written again; give --max-epochs above %d "
                "to train it on from its last.pt, or a new --output-dir to start a new run", out, trained, max_epochs, trained)
        else:
            logging.getLogger("volseg").warning(
                "resuming the run in %s from its last.pt: the network, optimizer and learning-rate schedule continue as saved, so %sa new "
                "--set learning_rate is not applied and the schedule keeps the earlier run's length; give a new --output-dir to start a new run",
                out, "--init-from is not applied, " if init_ckpt else "")
        earlier = json.loads((out / "run_info.json").read_text()) if (out / "run_info.json").is_file() else {}
        init_ckpt = Path(earlier["init_from"]) if earlier.get("init_from") else None  # the records say what the run started from
        freeze_encoder = bool(earlier.get("freeze_encoder", False))
        if freeze_encoder:  # requires_grad is not in last.pt: a resumed fine-tune keeps its encoder fixed as before
            from app.networks import freeze_encoder as freeze

            freeze(workflow.parser.get_parsed_content("network"))
    elif init_ckpt is not None:
        from app.inference.ensemble import load_weights

        network = workflow.parser.get_parsed_content("network")
        load_weights(network, init_ckpt).train()
        if freeze_encoder:
            from app.networks import freeze_encoder as freeze

            freeze(network)
        logging.getLogger("volseg").info("initialised the network from %s%s", init_ckpt, " (encoder frozen)" if freeze_encoder else "")
    fresh = not (out / "last.pt").is_file()
    atomic_write_text(out / "run_config.json", json.dumps(workflow.parser.get(), indent=2, default=str))
    atomic_write_text(out / "run_info.json", json.dumps({**run_info(), "bundle": str(bundle), "overrides": {k: str(v) for k, v in args.items()},
                                                            "init_from": str(init_ckpt) if init_ckpt else None, "freeze_encoder": freeze_encoder}, indent=2))
    if progress:
        from ignite.handlers import ProgressBar

        ProgressBar(persist=False).attach(workflow.parser.get_parsed_content("train#trainer"), output_transform=lambda out: {"loss": float(out[0]["loss"])})
    start = time.perf_counter()
    try:
        workflow.parser.get_parsed_content("train#trainer")  # its handlers (StatsHandler's own logger) exist before the filter goes on
        with quiet_interrupt_logs():  # Ctrl-C: the CLI's one line says what is left, not the engines' tracebacks
            workflow.run()
    except BaseException as err:
        if fresh and not (out / "last.pt").is_file():  # failed before its first checkpoint: leave no records of a run that is not there
            for name in ("run_config.json", "run_info.json"):
                (out / name).unlink(missing_ok=True)
            if not folder_existed and (out / "tensorboard").is_dir():  # this run's own event files, of no epoch
                shutil.rmtree(out / "tensorboard", ignore_errors=True)
            if not folder_existed and out.is_dir() and not any(out.iterdir()):
                out.rmdir()
        if not isinstance(err, RuntimeError):
            raise
        from app.engines.preflight import config_error_cause  # MONAI's wrapper of a component built when the run starts: raise its cause

        cause = config_error_cause(err)
        if cause is err:
            raise
        raise cause from err
    _write_trained_bundle(root, out, workflow.parser, args, time.perf_counter() - start, init_ckpt)
    workflow.finalize()
    # The run's objects (parser, engines, datasets with their cached volumes) hold one another in
    # reference cycles, which only Python's cyclic collector frees, and it may not run for a long
    # time: `volseg cv train` kept every finished fold's cached BraTS cases (about 6 GB a fold)
    # and was killed for memory in its fourth fold on a 24 GiB machine. Free them before returning.
    del workflow
    gc.collect()
    return out


def _trained_epochs(last: Path) -> int | None:
    """Epochs a run's ``last.pt`` has finished: its ``progress.json`` (written with it,
    :meth:`app.engines.checkpoint.AtomicCheckpointer.save_progress`), else the Ignite trainer
    state in the checkpoint (``iteration // epoch_length``, runs of earlier versions); None where
    neither says (unreadable, or saved by something else)."""
    import torch

    try:
        return int(json.loads((last.parent / "progress.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        state = torch.load(last, map_location="cpu", weights_only=False)["trainer"]
        return int(state["iteration"]) // int(state["epoch_length"]) if "iteration" in state else int(state["epoch"])
    except Exception:  # noqa: BLE001 - the resume itself reports a broken last.pt
        return None


def _check_not_a_bundle(out: Path) -> None:
    """Refuse an output folder that is a bundle (``configs/metadata.json``) and not a run (no ``last.pt``).

    A finished run writes its bundle (configs, metadata, ``models/model.pt``) into its output
    folder, so ``--output-dir`` set to a bundle folder, the one being trained among them,
    replaced that bundle's weights and metadata without a word.

    Raises:
        ValueError: ``out`` is a file, or holds ``configs/metadata.json`` and no ``last.pt``.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output-dir '{out}' is a file, not a folder; give a folder for the run (it is made where it does not exist)")
    if (out / "configs" / "metadata.json").is_file() and not (out / "last.pt").is_file():
        raise ValueError(f"--output-dir '{out}' is a bundle folder (configs/metadata.json{', models/' if (out / 'models').is_dir() else ''}), "
                         "not a training run to resume: the run's bundle would replace its weights and metadata; give a new --output-dir "
                         "(the finished run there is a bundle of its own)")


def _check_resumable(out: Path, network: Any, bundle: str | Path) -> None:
    """Refuse to resume a ``last.pt`` of another network (a run of another bundle in the folder).

    MONAI's ``CheckpointLoader`` failed only when the run started, after ``run_info.json`` and
    ``run_config.json`` of the other run were overwritten, with a 380-line "size mismatch" traceback.

    Raises:
        ValueError: a weight of ``last.pt`` is missing from ``network`` or has another shape;
            the message names it and the bundle that ``run_info.json`` records.
    """
    import torch

    try:
        saved = torch.load(out / "last.pt", map_location="cpu", weights_only=False, mmap=True).get("model")
    except Exception:  # an unreadable last.pt: MONAI's loader says so as before
        return
    if not isinstance(saved, dict):
        return
    ours = {k.replace("_orig_mod.", ""): tuple(v.shape) for k, v in network.state_dict().items()}
    for key, value in saved.items():
        key = key.replace("_orig_mod.", "")
        if ours.get(key) != tuple(getattr(value, "shape", ())):
            try:
                earlier = json.loads((out / "run_info.json").read_text(encoding="utf-8")).get("bundle")
            except (OSError, ValueError):
                earlier = None
            has = f"has {list(ours[key])}" if key in ours else "has no such weight"
            raise ValueError(f"--output-dir '{out}' holds a run of another network{f' (bundle {earlier!r}, its run_info.json)' if earlier else ''}: "
                             f"its last.pt has {key} {list(getattr(value, 'shape', ()))}, where {Path(str(bundle)).name}'s network {has}; "
                             "give a new --output-dir")


def _resumes(parser: Any, out: Path) -> bool:
    """Whether the run will resume from ``out/last.pt`` (it exists and the config's ``resume`` is on)."""
    from monai.utils import str2bool

    resume = parser.get_parsed_content("resume") if "resume" in parser else False
    return (out / "last.pt").is_file() and (str2bool(resume) if isinstance(resume, str) else bool(resume))


def _initialized_training(files: Sequence[str], root: Path, args: dict[str, Any]) -> Any:
    """The bundle's train workflow (``monai.bundle.ConfigWorkflow``), initialised and checked before
    any epoch (:mod:`app.engines.preflight`).

    Raises:
        ValueError, FileNotFoundError: as listed in :func:`train`; where MONAI wraps a config
            expression's error (a missing data file), its cause.
    """
    from monai.bundle import ConfigWorkflow

    from app.engines.preflight import (check_augment_device, check_distill_teacher, check_label_grids, check_label_values, check_training_splits,
                                       config_error_cause)

    workflow = ConfigWorkflow(config_file=files, meta_file=str(root / "configs" / "metadata.json"), logging_file=str(root / "configs" / "logging.conf"), workflow_type="train", **args)
    try:
        workflow.initialize()
        check_training_splits(workflow.parser)  # an empty training (or due validation) split: one clear ValueError
        check_label_values(workflow.parser)  # label values the network has no output for
        check_label_grids(workflow.parser)  # a label on another grid than its image
        check_augment_device(workflow.parser)  # GPU augmentation with loader worker processes
        check_distill_teacher(workflow.parser)  # a missing teacher: one clear FileNotFoundError
    except RuntimeError as err:  # MONAI's wrapper of a config expression's error: raise the cause (a missing data file)
        cause = config_error_cause(err)
        if cause is err:
            raise
        raise cause from err
    return workflow


@contextlib.contextmanager
def _removed_if_left_empty(folder: Path) -> Iterator[None]:
    """Remove ``folder`` where the block raises, ``folder`` did not exist before it, and is still empty."""
    new = not folder.exists()
    try:
        yield
    except BaseException:
        if new and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise


def _write_trained_bundle(root: Path, out: Path, parser: Any, args: dict[str, Any], seconds: float, init_ckpt: Path | None) -> None:
    """Make the run's output folder a complete bundle (:mod:`app.engines.trained_bundle`)."""
    from app.engines.trained_bundle import run_figures, write_trained_bundle

    datalist, data_dir = (parser.get_parsed_content(k) if k in parser else None for k in ("data_list_file", "dataset_dir"))
    write_trained_bundle(root, out, args, run_figures(parser, seconds, datalist, init_ckpt), datalist, data_dir)


def _init_checkpoint(init_from: str | Path) -> Path:
    """The weights file that ``init_from`` names: a checkpoint file, or a bundle's ``models/model.pt``."""
    path = Path(init_from)
    if path.is_file():
        return path
    from app.bundles import BUNDLES, bundle_path

    if str(init_from) not in BUNDLES and not path.is_dir():
        raise FileNotFoundError(f"--init-from '{init_from}': no such checkpoint file or bundle folder, nor a shipped bundle ({', '.join(sorted(BUNDLES))})")
    ckpt = bundle_path(init_from) / "models" / "model.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"--init-from '{init_from}': no weights at {ckpt}")
    return ckpt


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
    The finished output folder is a complete bundle, as with :func:`train`.

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
    out = Path(output_dir).resolve() if output_dir is not None else _default_output_dir(bundle, root)
    args = _train_args(root, overrides, manifest, data_dir, out)
    from app.bundle_config import bundle_parser, bundle_settings
    from app.engines.preflight import check_overrides, check_process_shares

    if not extra_configs:
        check_overrides(bundle_parser(root, "train"), dict(overrides or {}))

    data = {**bundle_settings(root, ("data_list_file", "dataset_dir")), **{k: args[k] for k in ("data_list_file", "dataset_dir") if k in args}}
    check_process_shares(data.get("data_list_file"), nproc)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "monai.bundle", "run",
           "--config_file", json.dumps(files), "--meta_file", str(root / "configs" / "metadata.json"), "--logging_file", str(root / "configs" / "logging.conf")]
    for key, value in args.items():
        cmd += [f"--{key}", value if isinstance(value, str) else repr(value)]  # MONAI's runner reads arguments with fire: Python literals (False, not false)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "run_info.json", json.dumps({**run_info(), "bundle": str(bundle), "nproc": nproc, "command": cmd}, indent=2))
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    from app.engines.trained_bundle import checkpoint_figures, write_trained_bundle

    write_trained_bundle(root, out, args, checkpoint_figures(out, time.perf_counter() - start, data.get("data_list_file")), data.get("data_list_file"), data.get("dataset_dir"))
    return out


EXPORT_SUFFIX = {"torchscript": ".ts", "onnx": ".onnx", "openvino": ".xml"}


def export(bundle: str = DEFAULT_BUNDLE, fmt: str = "torchscript", out: str | Path | None = None, ckpt_path: str | Path | None = None) -> Path:
    """Export a bundle's trained network (weights from ``models/model.pt`` or ``ckpt_path``).

    Args:
        bundle: bundle name or folder.
        fmt: ``"torchscript"``, ``"onnx"`` or ``"openvino"`` (see :func:`app.inference.export_network`).
        out: output file; default ``<bundle>/models/model.ts``, ``.onnx`` or ``.xml`` (+ ``.bin``)
            for a bundle folder (a copy, a trained run), and ``<name>_model.<ext>`` in the working
            folder for a shipped bundle named by name (never into the installed package).
        ckpt_path: weights to export instead of the bundle's.

    Returns:
        The written file. It takes ``(B, C_in, H, W, D)`` float32 (the bundle's preprocessed
        input) and returns ``(B, C_out, H, W, D)`` logits.

    Raises:
        ValueError: unknown format or bundle. FileNotFoundError: no weights.
        ImportError: ONNX or OpenVINO missing (``pip install "volseg[openvino]"``).
    """
    from app.bundles import BUNDLES, bundle_dir
    from app.inference import EXPORT_FORMATS, Segmenter, export_network

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format '{fmt}'; choose one of {', '.join(EXPORT_FORMATS)}")
    segmenter = Segmenter(bundle, device="cpu", ckpt_path=ckpt_path, backend="torch")
    root = Path(segmenter.parser.get_parsed_content("bundle_root"))
    if out is not None:
        target = Path(out)
    elif str(bundle) in BUNDLES and root.resolve() == bundle_dir(str(bundle)).resolve():  # the shipped copy: not into the package
        target = Path.cwd() / f"{bundle}_model{EXPORT_SUFFIX[fmt]}"
    else:
        target = root / "models" / f"model{EXPORT_SUFFIX[fmt]}"
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
    ``../shared/data/brats2018``; or ``data_dir`` itself, a case folder) that the shipped fast model never trained on (the held-out fold
    of ``models/model.pt``, ``training#fast_model_fold`` in the bundle's metadata), else the
    first case there.
    Where no BraTS data is found in the default folder, a synthetic phantom is generated and used
    instead, and the result says so (``synthetic: True``); a ``data_dir`` given explicitly must
    hold BraTS cases.

    Returns:
        ``{"case_id", "synthetic", "data_dir", "output", "overlay", "seconds", "segment_seconds",
        "metrics"}``: ``seconds`` from reading to scoring, ``segment_seconds`` the segmentation
        alone; metrics as in :func:`app.evaluation.case_metrics`.

    Raises:
        FileNotFoundError: ``data_dir`` given, and it holds no complete BraTS case with a label.
    """
    import nibabel as nib

    from app.data import default_brats_dir, find_case, scan_brats
    from app.data.phantom import make_brats_phantom
    from app.evaluation import case_metrics
    from app.evaluation.overlay import save_overlay
    from app.transforms.regions import brats2018_codes

    root = Path(data_dir) if data_dir is not None else default_brats_dir()
    out_dir = Path(output_dir)
    try:
        try:
            cases = {c.case_id: c for c in scan_brats(root)}
        except FileNotFoundError:
            one = find_case(root, require_label=True)  # data_dir may be one case folder, as volseg segment takes it
            cases = {one.case_id: one}
        synthetic = False
    except FileNotFoundError as err:
        if data_dir is not None:  # asked for this folder: a phantom instead would answer another question
            raise FileNotFoundError(f"--data-dir '{data_dir}' holds no BraTS case to demonstrate on ({err})") from err
        logger.warning(f"no BraTS data found ({err}); running on a SYNTHETIC phantom instead")
        root, synthetic = out_dir / "phantom", True
        make_brats_phantom(root, "Phantom_001")
        cases = {c.case_id: c for c in scan_brats(root)}
    unseen = _unseen_case_ids(bundle)
    case = next((cases[c] for c in unseen if c in cases), next(iter(cases.values())))
    start = time.perf_counter()
    result = segment_cases([case.images[0].parent], out_dir, bundle=bundle, device=device)[0]
    if result.error:
        raise RuntimeError(f"case '{case.case_id}' failed: {result.reason}")
    ref = nib.load(str(case.label))
    ref_label = brats2018_codes(np.asarray(ref.dataobj).astype(np.uint8))  # a BraTS 2023+ label's ET 3 as 4
    metrics = case_metrics(result.label, ref_label, ref.header.get_zooms()[:3])
    overlay = save_overlay(case.images[-1], result.label, ref_label, out_dir / f"{case.case_id}_overlay.png",
                           title=f"{case.case_id}{' (SYNTHETIC)' if synthetic else ''}")
    return {"case_id": case.case_id, "synthetic": synthetic, "data_dir": str(root), "output": str(result.output),
            "overlay": str(overlay), "seconds": time.perf_counter() - start, "segment_seconds": result.seconds, "metrics": metrics}

