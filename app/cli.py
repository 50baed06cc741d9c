"""``volseg``: the command-line front of :mod:`app.api` (one API call per command).

Heavy imports (torch, MONAI) happen inside commands so ``volseg --help`` is instant.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Optional

import typer

# rich_markup_mode=None: help texts are plain text, so "volseg[dicom]" is not taken for Rich markup and dropped
app = typer.Typer(help="VolSeg: 3D segmentation of CT and MRI with MONAI bundles.", no_args_is_help=True, add_completion=False,
                  context_settings={"help_option_names": ["-h", "--help"]}, rich_markup_mode=None)
manifest_app = typer.Typer(help="Build Decathlon-format datalists (manifests).", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(manifest_app, name="manifest")
cv_app = typer.Typer(help="k-fold cross-validation: folds, per-fold training, scores over every case.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(cv_app, name="cv")


def _print_version(value: bool) -> None:
    if value:
        from app import __version__

        typer.echo(f"volseg {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="print VolSeg's version and exit")) -> None:
    """VolSeg: 3D segmentation of CT and MRI with MONAI bundles."""

BACKEND_HELP = "auto (OpenVINO on CPU where installed, else torch), torch or openvino (default: the bundle's inference_backend)"
BUNDLE_HELP = "bundle name (brats_unet3d, brats_deeplab3d, ct_unet3d) or bundle folder"
DEVICE_HELP = "cpu or cuda; default: cuda where available"
MODE_HELP = "fast: one model; accurate: the average of the 5 cross-validation fold models (default: the bundle's mode, fast)"


def _setup(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)


def _fail(err: Exception, code: int = 2) -> None:
    typer.secho(f"error: {err}", err=True, fg="red")
    raise typer.Exit(code)


def _shipped_manifest(manifest: Optional[Path]) -> Optional[Path]:
    """``--manifest`` callback: a path that does not exist but names a shipped datalist, as the README's
    ``data_manifests/brats2018_shared.json`` does outside the source checkout (a wheel install),
    is taken from the installed package, said on stderr (:func:`app.resources.manifest_path`)."""
    if manifest is None or manifest.exists() or (manifest.parent.name not in ("", "data_manifests")):
        return manifest
    from app.resources import manifests_root

    shipped = manifests_root() / manifest.name
    if not shipped.is_file():
        return manifest
    typer.echo(f"note: '{manifest}' is not here; using the shipped datalist {shipped}", err=True)
    return shipped


def _checked_device(device: Optional[str]) -> Optional[str]:
    """``--device`` callback: a device this machine cannot run on (``cuda`` without CUDA) fails
    here, in one line, before any data or model is loaded (:func:`app.devices.check_device`)."""
    if device is not None:
        from app.devices import check_device

        try:
            check_device(device)
        except ValueError as err:
            _fail(err)
    return device


@manifest_app.command("brats")
def manifest_brats(
    data_dir: Path = typer.Argument(..., help="folder of <case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz"),
    out: Path = typer.Option(..., "--out", help="datalist JSON to write"),
    seed: int = typer.Option(0, help="seed of the splits"),
    folds: int = typer.Option(0, help="k-fold cross-validation folds over training+validation (0: none)"),
    quiet: bool = typer.Option(False, "--quiet", help="less output"),
) -> None:
    """Scan a BraTS folder and write a Decathlon datalist: training/validation/test 70/15/15, paths relative to DATA_DIR."""
    _setup(quiet)
    from app.api import build_manifest

    _write_manifest(build_manifest, data_dir, out, seed, folds)


def _write_manifest(builder, data_dir: Path, out: Path, seed: int, folds: int) -> None:
    try:
        manifest = builder(data_dir, out=out, seed=seed, folds=folds)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    typer.echo(f"wrote {out}: {manifest['numTraining']} training, {manifest['numValidation']} validation, {manifest['numTest']} test cases")


@manifest_app.command("decathlon")
def manifest_decathlon(
    data_dir: Path = typer.Argument(..., help="Decathlon folder with imagesTr/ and labelsTr/ (dataset.json optional)"),
    out: Path = typer.Option(..., "--out", help="datalist JSON to write"),
    seed: int = typer.Option(0, help="seed of the splits"),
    folds: int = typer.Option(0, help="k-fold cross-validation folds over training+validation (0: none)"),
    quiet: bool = typer.Option(False, "--quiet", help="less output"),
) -> None:
    """Pair imagesTr/labelsTr of a Decathlon folder into a datalist: 70/15/15 splits, paths relative to DATA_DIR."""
    _setup(quiet)
    from app.data import build_decathlon_manifest

    _write_manifest(build_decathlon_manifest, data_dir, out, seed, folds)


def _parse_overrides(items: list[str]) -> dict:
    """``["overlap=0.25", "infer_mode=whole_volume"]`` -> ``{"overlap": 0.25, "infer_mode": "whole_volume"}``."""
    import json

    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE, got '{item}'")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@app.command("bundles")
def list_bundles() -> None:
    """List the installed bundles: name, folder, weights present (models/*.pt) and description."""
    from app.bundles import BUNDLES, installed_bundles

    for name, folder in installed_bundles().items():
        weights = sorted(p.name for p in (folder / "models").glob("*.pt"))
        info = BUNDLES.get(name)
        typer.echo(f"{name}\n  folder:  {folder}\n  weights: {', '.join(weights) or 'none'}"
                   f"\n  {info.description if info else '(not registered in app.bundles.BUNDLES)'}")


def _output_path(path: Path, option: str, folder: bool = True) -> None:
    """Stop (exit 2) before any work where ``path`` cannot be an output folder (or file):
    :func:`app.io.outputs.check_output_path`."""
    from app.io.outputs import OutputError, check_output_path

    try:
        check_output_path(path, option, folder)
    except OutputError as err:
        _fail(err)


@cv_app.command("folds")
def cv_folds(
    manifest: Path = typer.Argument(..., help="Decathlon datalist whose labelled cases (all splits) are pooled", callback=_shipped_manifest),
    out: Path = typer.Option(..., "--out", help="cross-validation datalist JSON to write"),
    data_dir: Optional[Path] = typer.Option(None, help="data root of the manifest's paths (default $VOLSEG_BRATS_DIR or ../shared/data/brats2018)"),
    folds: int = typer.Option(5, help="number of folds"),
    seed: int = typer.Option(0, help="seed of the folds"),
) -> None:
    """Seeded k-fold split over every labelled case, stratified by tumour volume (each case in one fold)."""
    _setup(True)
    from app.api import cv_folds as cv_folds_api

    _output_path(out, "--out", folder=False)
    try:
        cv = cv_folds_api(manifest, out, data_dir, folds, seed)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    for fold in range(folds):
        ids = [it["case_id"] for it in cv["training"] if it["fold"] == fold]
        typer.echo(f"fold {fold}: {', '.join(ids)}")
    typer.echo(f"wrote {out}")


@cv_app.command("n4-copies")
def cv_n4_copies(
    manifest: Optional[Path] = typer.Option(None, help="cross-validation datalist (default: the shipped brats2018_cv5.json)", callback=_shipped_manifest),
    data_dir: Optional[Path] = typer.Option(None, help="data root of the manifest's paths (default $VOLSEG_BRATS_DIR or ../shared/data/brats2018)"),
    out_dir: Path = typer.Option(..., help="folder of the N4-corrected copies (<case>_n4/) and of the datalist of both"),
    shrink_factor: int = typer.Option(6, help="N4 fit on a copy shrunk by this factor"),
    iterations: list[int] = typer.Option([25, 25], help="N4 iterations per fitting level (repeat the option, one per level)"),
    crop_foreground: bool = typer.Option(True, "--crop-foreground/--whole-volume", help="fit N4 on the brain's bounding box or the whole volume"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """N4-corrected copies of every case and a datalist listing each case twice (as given and
    corrected, same fold), for `volseg cv train --manifest` (the N4-mixed ablation of the brats_unet3d README)."""
    _setup(quiet)
    from tqdm import tqdm

    from app.bundles import manifest_path
    from app.data import default_brats_dir
    from app.engines.n4_copies import n4_mixed_datalist

    _output_path(out_dir, "--out-dir")
    try:
        dest = n4_mixed_datalist(manifest or manifest_path("brats2018_cv5"), data_dir or default_brats_dir(), out_dir, shrink_factor, iterations,
                                 crop_foreground, progress=lambda it: tqdm(it, desc="N4", unit="case", disable=True if quiet else None))
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    typer.echo(f"wrote {dest}: train with volseg cv train --manifest {dest} --output-dir DIR")


@cv_app.command("train")
def cv_train(
    bundle: str = typer.Option("brats_unet3d", help=BUNDLE_HELP),
    manifest: Optional[Path] = typer.Option(None, help="cross-validation datalist (volseg cv folds; default: the shipped brats2018_cv5.json)", callback=_shipped_manifest),
    data_dir: Optional[Path] = typer.Option(None, help="data root of the manifest's paths"),
    output_dir: Path = typer.Option(..., help="runs go to <output-dir>/fold<k>/ (resumed from last.pt)"),
    fold: list[int] = typer.Option([], help="folds to train (repeat the option; default: every fold whose run has not finished: no model.pt, or progress.json short of its epochs)"),
    max_epochs: Optional[int] = typer.Option(None, help="override the bundle's max_epochs"),
    init_from: Optional[str] = typer.Option(None, help="start each fold from these weights; '{fold}' is replaced by the fold, e.g. bundles/brats_unet3d/models/fold{fold}.pt"),
    set_: list[str] = typer.Option([], "--set", help="config override KEY=VALUE, VALUE as JSON where it parses (repeat); '{fold}' in a text VALUE is replaced by the fold, e.g. --set 'distill_teacher=runs/t/fold{fold}.pt'"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Train one model per fold, one after another (same as `volseg train --fold k` for each k)."""
    _setup(quiet)
    import json

    from app.api import train as train_api

    from app.bundles import manifest_path
    from app.engines.checkpoint import unfinished_run

    try:
        manifest = manifest or manifest_path("brats2018_cv5")
        k = int(json.loads(manifest.read_text()).get("numFolds", 0))
        overrides = _parse_overrides(set_)
        if max_epochs is not None:
            overrides["max_epochs"] = max_epochs
        f = None
        todo = fold or [f for f in range(k) if not (output_dir / f"fold{f}" / "model.pt").is_file() or unfinished_run(output_dir / f"fold{f}")]
        if not todo:
            typer.echo(f"every fold's run in {output_dir} has finished ({k} folds): nothing to train; `volseg cv evaluate --weights {output_dir}` "
                       "scores them (--fold K --max-epochs N trains fold K on to epoch N)")
        for f in todo:
            typer.echo(f"fold {f}: training in {output_dir / f'fold{f}'}")
            fold_overrides = {key: v.replace("{fold}", str(f)) if isinstance(v, str) else v for key, v in overrides.items()}
            train_api(bundle, manifest, data_dir, output_dir / f"fold{f}", fold_overrides, progress=not quiet, fold=f,
                      init_from=init_from.replace("{fold}", str(f)) if init_from else None)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    except KeyboardInterrupt:
        if not quiet:
            typer.echo("", err=True)  # below Ignite's unfinished progress bar
        where = f"fold {f} from {output_dir / f'fold{f}'}/last.pt (written after each finished epoch)" if f is not None else "where it stopped"
        _fail(f"interrupted; the same command resumes {where}; without --fold it trains every fold whose run has not finished", 130)


@cv_app.command("evaluate")
def cv_evaluate(
    bundle: str = typer.Option("brats_unet3d", help=BUNDLE_HELP),
    manifest: Optional[Path] = typer.Option(None, help="cross-validation datalist (default data_manifests/brats2018_cv5.json)", callback=_shipped_manifest),
    weights: Optional[Path] = typer.Option(None, help="folder of fold<k>.pt or fold<k>/model.pt (default: the bundle's models/)"),
    output: Path = typer.Option(Path("cv"), "--output", "-o", help="predictions, cv_cases.csv, cv_summary.json"),
    data_dir: Optional[Path] = typer.Option(None, help="data root of the manifest's paths"),
    mode: str = typer.Option("fast", help="fast: each fold model once; accurate: each fold model with the bundle's accurate settings (brats_unet3d: N4; mirroring only where its mirror_axes lists axes, none as shipped)"),
    backend: Optional[str] = typer.Option(None, help=BACKEND_HELP),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP, callback=_checked_device),
    infer_mode: Optional[str] = typer.Option(None, help="override infer_mode (both modes): sliding_window or whole_volume"),
    set_: list[str] = typer.Option([], "--set", help="config override KEY=VALUE, VALUE as JSON where it parses (repeat), e.g. --set min_component_mm3=0"),
    fold: list[int] = typer.Option([], help="folds to score (repeat the option; default: every fold)"),
    sequences: Optional[str] = typer.Option(None, help="keep only these sequences of every case, comma-separated (e.g. t1ce,flair); the others are scored as missing"),
    uncertainty: bool = typer.Option(False, "--uncertainty", help="also score the uncertainty map (AUROC of wrong vs right WT voxels) and the case quality score"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Score every case with the fold model that never saw it: per-case Dice and HD95, mean and std per region."""
    _setup(quiet)
    from tqdm import tqdm

    from app.api import cross_validate
    from app.evaluation.cv import format_cv

    _output_path(output, "--output")
    try:
        overrides = _parse_overrides(set_)
    except ValueError as err:
        _fail(err)
    if infer_mode:
        overrides.update(infer_mode=infer_mode, accurate_infer_mode=infer_mode)
    try:
        result = cross_validate(bundle, manifest, weights, output, data_dir, mode=mode, backend=backend, device=device, overrides=overrides,
                                progress=lambda it: tqdm(it, desc="cases", unit="case", disable=True if quiet else None), folds=fold or None,
                                sequences=sequences.split(",") if sequences else None, uncertainty=uncertainty)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    typer.echo(format_cv(result))
    if "uncertainty" in result["summary"]:
        u = result["summary"]["uncertainty"]
        typer.echo(f"uncertainty: WT AUROC pooled {u['WT_auroc_pooled']:.3f}, per-case mean {u['WT_auroc_case_mean']:.3f}; "
                   f"quality score vs WT Dice: Spearman {u['quality_vs_WT_dice_spearman']:.3f}")
    typer.echo(f"wrote {output / 'cv_cases.csv'} and {output / 'cv_summary.json'}")


@app.command()
def segment(
    inputs: list[Path] = typer.Argument(..., help="BraTS case folders (or a dataset folder of them), or modality files named <case>_t1|_t1ce|_t2|_flair (BraTS 2023+: -t1n|-t1c|-t2w|-t2f); any non-empty subset of the four sequences; for a one-channel bundle (ct_unet3d): CT volumes, DICOM series or folders of them, one case each"),
    output: Path = typer.Option(..., "--output", "-o", help="output folder for <case>_seg.nii.gz"),
    bundle: str = typer.Option("brats_unet3d", help=BUNDLE_HELP),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP, callback=_checked_device),
    output_format: str = typer.Option("same", help="same: the input's format (NIfTI for DICOM input); nifti: always .nii.gz"),
    dicom_seg: bool = typer.Option(False, "--dicom-seg", help="for DICOM input, also write a DICOM SEG object (needs volseg[dicom])"),
    backend: Optional[str] = typer.Option(None, help=BACKEND_HELP),
    mode: Optional[str] = typer.Option(None, help=MODE_HELP),
    uncertainty: bool = typer.Option(False, "--uncertainty", help="also write <case>_uncertainty.nii.gz (whole-tumour entropy, bits) and a case quality score"),
    sequences: Optional[str] = typer.Option(None, help="sequence of each loose file, in order, comma-separated (e.g. flair,t1ce); default: from the file names"),
    nproc: int = typer.Option(1, help="processes via torchrun, each segmenting its share of the cases (one GPU each on CUDA); 1: this process"),
    overwrite: bool = typer.Option(False, "--overwrite", help="segment cases whose label map is already in the output folder again (default: skip them, so a stopped batch resumes; a label made with another bundle, mode, N4, precision, label codes, other weights (a bundle folder trained again) or other sequences, or without the uncertainty map asked for, is made again; earlier cases stay in volseg_run.json and volumes.csv)"),
    report: bool = typer.Option(False, "--report", help="also write <output>/report.html: per case, overlays on three planes, volumes (mL), missing sequences, quality score, the bundle's CV figures"),
    int8: Optional[bool] = typer.Option(None, "--int8/--no-int8", help="OpenVINO backend: run the bundle's int8 models (NNCF post-training quantization; brats_unet3d, 5-fold CV, all four sequences: WT 0.009 below float32, TC and ET within 0.005) or float32; default: the bundle's openvino_int8"),
    n4: Optional[bool] = typer.Option(None, "--n4/--no-n4", help="N4 bias-field correction before the model, of the sequences the bundle's n4_params name (brats_unet3d: T1ce and FLAIR in --mode fast, about 0.2 s a case more on 2 CPU cores; all four in --mode accurate, accurate_n4_params) and as its n4_combine says (the corrected case only, or averaged with the case as given; brats_unet3d 5-fold CV gain in its docs); default: the bundle's (brats_unet3d: on in both modes since 0.11.0; brats_deeplab3d: off); --no-n4 skips it"),
    resample: bool = typer.Option(False, "--resample", help="a case whose sequences lie on different voxel grids of one session (e.g. a 5 mm 2D FLAIR beside a 1 mm 3D T1ce) is resampled onto its finest grid first (linear, scanner coordinates, no registration), where its label map is written; default: such a case fails"),
    label_codes: str = typer.Option("2018", "--label-codes", help="label codes of the written maps: 2018 (the bundle's; BraTS 1 NCR/NET, 2 ED, 4 ET) or 2023 (BraTS 2023+ challenges: 1 NCR, 2 SNFH/edema, 3 ET; BraTS bundles only)"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Segment cases into uint8 label maps (the bundle's codes: BraTS 0/1/2/4, ct_unet3d 0/1) with the input's shape and affine.

    Inputs may be NIfTI, NRRD or MetaImage files or DICOM series folders.

    Exit status: 0 when every case was written; 1 when a case failed (the other cases are still
    written, and volseg_run.json gives each case's error); 2 when nothing could start (an input
    that does not exist, a bad option, an output folder that cannot be written); 130 when
    interrupted by Ctrl-C and 143 by SIGTERM (timeout, kill, a batch scheduler), with --nproc
    too: the case being segmented is dropped (outputs are written atomically), volseg_run.json
    lists the cases written so far, and the same command goes on."""
    _setup(quiet)
    from tqdm import tqdm

    from app.api import segment_cases
    from app.data.verify import InputError
    from app.inference.batch import signal_name, stop_signals_interrupt
    from app.inference.distributed import RankError

    try:
        with stop_signals_interrupt():  # SIGTERM (timeout, a scheduler) stops as Ctrl-C does: written cases recorded
            results = segment_cases(inputs, output, bundle=bundle, device=device, progress=lambda it: tqdm(it, desc="cases", unit="case", disable=True if quiet else None), output_format=output_format, dicom_seg=dicom_seg, backend=backend, mode=mode,
                                    uncertainty=uncertainty, sequences=sequences.split(",") if sequences else None, overwrite=overwrite, nproc=nproc, report=report, int8=int8, n4=n4,
                                    resample=resample, label_codes=label_codes)
    except ImportError as err:
        skipped = [name for name in SEGMENT_SKIPPED_IMPORTS if name in sys.modules and sys.modules[name] is None]
        halted = isinstance(err, ModuleNotFoundError) and skipped  # an import of a skipped package, not a missing extra
        _fail(ImportError(f"{err}" + (f" (volseg segment skips {', '.join(skipped)}; set VOLSEG_FULL_IMPORT=1 if the bundle needs them)" if halted else "")))
    except (InputError, FileNotFoundError, ValueError) as err:  # OutputError is a ValueError
        _fail(err)
    except RankError as err:  # a rank of --nproc failed (its own traceback is above)
        _fail(err, code=1)
    except KeyboardInterrupt as stop:
        done = [r for r in getattr(stop, "results", []) if r.output is not None and not r.note]
        for r in done:
            typer.echo(f"{r.case_id}: {r.output} ({r.seconds:.1f} s)")
        terminated = signal_name(stop) == "SIGTERM"
        typer.echo(f"{'terminated (SIGTERM)' if terminated else 'interrupted'}: {len(done)} case(s) written in {output}"
                   + (" (volseg_run.json says which)" if hasattr(stop, "results") else "")
                   + "; run the same command again to go on (written cases are skipped)", err=True)
        raise typer.Exit(143 if terminated else 130) from None
    failed = [r for r in results if r.error]
    used_n4, used_int8, used_mode = _run_path(output)
    for r in results:
        if r.note:
            typer.echo(f"{r.case_id}: {r.note}")
        elif not r.error:
            typer.echo(f"{r.case_id}: {r.output} ({r.seconds:.1f} s)")
            if r.extra.get("resampled"):
                grid = r.extra["resampled"]
                typer.echo(f"  resampled onto the grid of {Path(grid['grid']).name} ({' x '.join(map(str, grid['grid_size']))} voxels of "
                           f"{' x '.join(f'{s:g}' for s in grid['spacing_mm'])} mm): " + ", ".join(f"{n} ({g})" for n, g in grid["resampled"].items()))
            if r.extra.get("dicom_seg"):
                typer.echo(f"  DICOM SEG: {r.extra['dicom_seg']}")
            if r.extra.get("missing_sequences"):
                typer.echo(f"  {_missing_line(bundle, r.extra['missing_sequences'], used_n4, used_int8, used_mode)}")
            if "quality" in r.extra:
                caveat = "; not to be trusted: the input warnings above say the case is unlike BraTS MRI" if r.extra.get("input_warnings") else ""
                typer.echo(f"  uncertainty: {r.extra['uncertainty']} (quality score {r.extra['quality']:.3f}: lower is less sure; it ranks cases for review "
                           f"and sits below the Dice they score, not a Dice estimate{caveat})")
    if label_codes != "2018" and any(not r.error and not r.note for r in results):
        from app.labels import labels_of

        typer.echo(f"label codes {label_codes}: " + ", ".join(f"{v} {n}" for v, n in labels_of(bundle).with_codes(label_codes).labels.items()))
    if (output / "volumes.csv").is_file():
        typer.echo(f"volumes (mL): {output / 'volumes.csv'}" + (f"; report: {output / 'report.html'}" if report and (output / "report.html").is_file() else ""))
    elif report and (output / "report.html").is_file():  # every case failed: the report says why, case by case
        typer.echo(f"report: {output / 'report.html'}")
    if not report and (output / "report.html").is_file() and any(not r.error and not r.note for r in results):
        typer.echo(f"note: {output / 'report.html'} is an earlier run's and does not show this one; `volseg report {output}` writes it again",
                   err=True)
    if failed:
        typer.secho(f"{len(failed)} of {len(results)} case(s) failed:", err=True, fg="red")
        for r in failed:
            typer.secho(f"  {r.case_id}: {r.reason}", err=True, fg="red")
        raise typer.Exit(1)


def _run_path(output: Path) -> tuple[bool, bool, str]:
    """Whether the batch's run record (``volseg_run.json``) says it ran N4 (``--n4``), and int8 models, and its mode."""
    from app.bundles import ran_int8

    try:
        record = json.loads((output / "volseg_run.json").read_text())
    except (OSError, ValueError):
        return False, False, "fast"
    return bool(record.get("n4_average")), ran_int8(record.get("precision")), str(record.get("mode") or "fast")


def _missing_line(bundle: str, missing: list[str], n4: bool = False, int8: bool = False, mode: str = "fast") -> str:
    """``missing sequences: t2 (zero-filled; 5-fold CV Dice with this subset: WT 0.800  TC 0.700  ET 0.600)``;
    the bundle's figures for the path that ran (``n4``: ``--n4``; ``int8``: its int8 models) where it
    has them, else the nearest ones, said so (:func:`app.bundles.run_subset_cv`)."""
    from app.bundles import run_subset_cv

    cv, source = run_subset_cv(bundle, missing, n4, int8, mode)
    which = f" {source}" if source else ""
    cost = (f"; 5-fold CV Dice with this subset{which}: " + "  ".join(f"{r} {cv[r]:.3f}" for r in ("WT", "TC", "ET") if r in cv)) if cv else "; no CV figure for this subset"
    return f"missing sequences: {', '.join(missing)} (zero-filled{cost})"


@app.command()
def evaluate(
    pred: Path = typer.Option(..., "--pred", help="folder of <case>_seg.nii.gz (or .nrrd, .mha) predictions"),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="Decathlon datalist with the reference labels (default with --bundle: that bundle's data_list_file)", callback=_shipped_manifest),
    bundle: Optional[str] = typer.Option(None, help="bundle whose labels and evaluation regions are scored (name or folder, e.g. a `volseg train` output); default: BraTS WT, TC, ET"),
    data_dir: Optional[Path] = typer.Option(None, help="data root of the manifest's paths (default: the bundle's dataset_dir; without --bundle $VOLSEG_BRATS_DIR or ../shared/data/brats2018)"),
    split: list[str] = typer.Option(["training", "validation", "test"], help="manifest lists to score (repeat the option)"),
    csv: Optional[Path] = typer.Option(None, help="CSV to write (default <pred>/metrics.csv)"),
    png: bool = typer.Option(False, "--png", help="write <pred>/<case>_overlay.png on the slice with the largest labelled area"),
    lesion_wise: bool = typer.Option(False, "--lesion-wise", help="also BraTS 2023+ lesion-wise Dice, HD95 and detection F1 per region (official brats-evaluation package, volseg[lesion]; seconds per case)"),
    quiet: bool = typer.Option(False, "--quiet", help="less output"),
) -> None:
    """Per-case and mean Dice, HD95 (mm), sensitivity, specificity and precision per evaluation region of the bundle (BraTS: WT, TC, ET)."""
    _setup(quiet)
    from app.api import evaluate as evaluate_api
    from app.evaluation import CasesFailed, format_table

    failures: list[str] = []
    try:
        rows = evaluate_api(pred, manifest, data_dir, split, csv_path=csv or pred / "metrics.csv", png_dir=pred if png else None, bundle=bundle, lesion_wise=lesion_wise)
    except CasesFailed as err:  # the other cases are scored and written
        rows, failures = err.rows, err.failures
    except (FileNotFoundError, ValueError, ImportError) as err:
        _fail(err)
    if rows:
        typer.echo(format_table(rows))
        if lesion_wise:
            from app.evaluation.lesionwise import BRATS23_METRICS, LESION_METRICS, package_version

            typer.echo(f"lesion-wise ({package_version()}; dice and hd95 over matched lesions, brats23: the BraTS 2023 ranking's form, "
                       "reference lesions within 3 voxels merged, those of <= 50 mm^3 left out, every missed or false lesion Dice 0 / HD95 374 mm):\n" + format_table(rows, (*LESION_METRICS, *BRATS23_METRICS)))
        typer.echo(f"wrote {csv or pred / 'metrics.csv'}")
    if failures:
        typer.secho(f"{len(failures)} case(s) could not be scored" + (" (the table and the mean leave them out)" if rows else "") + ":", err=True, fg="red")
        for line in failures:
            typer.secho(f"  {line}", err=True, fg="red")
        raise typer.Exit(1)


@app.command()
def train(
    bundle: str = typer.Option("brats_unet3d", help=BUNDLE_HELP),
    manifest: Optional[Path] = typer.Option(None, help="Decathlon datalist (default: the bundle's data_list_file)", callback=_shipped_manifest),
    data_dir: Optional[Path] = typer.Option(None, help="data root of the manifest's paths"),
    output_dir: Optional[Path] = typer.Option(None, help="checkpoints, TensorBoard logs and the resolved config; the finished folder is a bundle (default: runs/<bundle name> in the working folder for a shipped bundle, <bundle folder>/runs/train for a bundle folder)"),
    max_epochs: Optional[int] = typer.Option(None, help="override the bundle's max_epochs"),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP, callback=_checked_device),
    nproc: int = typer.Option(1, help="processes (GPUs) for DistributedDataParallel via torchrun; 1: single process"),
    fold: Optional[int] = typer.Option(None, help="cross-validation fold to hold out (--manifest: a `volseg cv folds` datalist, default data_manifests/brats2018_cv5.json); needs --output-dir"),
    init_from: Optional[str] = typer.Option(None, help="start from these weights (fine-tuning): a bundle name or folder (its models/model.pt) or a checkpoint file"),
    freeze_encoder: bool = typer.Option(False, "--freeze-encoder", help="with --init-from: keep the encoder's weights fixed"),
    set_: list[str] = typer.Option([], "--set", help="config override KEY=VALUE, VALUE as JSON where it parses (repeat), e.g. --set learning_rate=0.003"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
) -> None:
    """Train with the bundle's own train config (same code path as `python -m monai.bundle run`); resumes from last.pt.

    The network is torch.compile'd where a C++ compiler is found: about a minute (several on a
    slow CPU) before the first step, then about 1.3x faster steps on CPU. For a short run, such as
    a 1-epoch smoke test, train eagerly: --set compile=false (or VOLSEG_COMPILE=0).
    """
    _setup(quiet)
    from app.api import train as train_api

    try:
        overrides: dict = _parse_overrides(set_)
    except ValueError as err:
        _fail(err)
    if max_epochs is not None:
        overrides["max_epochs"] = max_epochs
    if device is not None:
        overrides["device"] = f"$torch.device('{device}')"
    from app.inference.batch import signal_name, stop_signals_interrupt

    try:
        with stop_signals_interrupt():  # SIGTERM (timeout, a batch scheduler) stops the run as Ctrl-C does, with the same line
            if nproc > 1:
                from app.api import train_distributed

                out = train_distributed(bundle, nproc, manifest, data_dir, output_dir, overrides)
            else:
                out = train_api(bundle, manifest, data_dir, output_dir, overrides, progress=not quiet, fold=fold,
                                init_from=init_from, freeze_encoder=freeze_encoder)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    except KeyboardInterrupt as stop:
        _fail(_interrupted_training(output_dir, quiet, signal_name(stop)), 143 if signal_name(stop) == "SIGTERM" else 130)
    except RuntimeError as err:
        from app.errors import find_cause

        stop = find_cause(err, KeyboardInterrupt)
        if stop is None:  # Ctrl-C inside torch.save: "unexpected pos ..." from the writer, MONAI's wrapper around it
            raise
        _fail(_interrupted_training(output_dir, quiet, signal_name(stop)), 143 if signal_name(stop) == "SIGTERM" else 130)
    except subprocess.CalledProcessError as err:  # --nproc: a rank failed; its own error is printed above
        _fail(f"a training process failed (exit status {err.returncode}); its error is above")
    typer.echo(f"training outputs in {out}")


def _interrupted_training(output_dir: Path | None, quiet: bool = True, signal: str = "SIGINT") -> str:
    """What an interrupted ``volseg train`` left: a run to resume, or nothing yet (on a line of its
    own below Ignite's unfinished progress bar unless ``quiet``)."""
    if not quiet:
        typer.echo("", err=True)
    how = "terminated (SIGTERM)" if signal == "SIGTERM" else "interrupted"
    last = Path(output_dir) / "last.pt" if output_dir is not None else None
    if last is not None and not last.is_file():
        return f"{how} before its first epoch finished: no last.pt in {output_dir} yet; the same command starts the run again"
    return f"{how}; the same command resumes from {last or 'the output folder/last.pt'} (written atomically after each finished epoch)"


@app.command()
def demo(
    data_dir: Optional[Path] = typer.Option(None, help="BraTS data folder (default $VOLSEG_BRATS_DIR or ../shared/data/brats2018)"),
    output_dir: Path = typer.Option(Path("volseg_demo"), help="where the label map and overlay go"),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP, callback=_checked_device),
    quiet: bool = typer.Option(False, "--quiet", help="less output"),
) -> None:
    """Segment one BraTS case with the shipped weights and print its Dice per region (a synthetic phantom if no data)."""
    _setup(quiet)
    from app.api import demo as demo_api

    try:
        result = demo_api(data_dir, output_dir, device=device)
    except FileNotFoundError as err:
        _fail(err)
    kind = "SYNTHETIC phantom (no BraTS data found)" if result["synthetic"] else f"real BraTS case from {result['data_dir']}"
    typer.echo(f"case {result['case_id']}: {kind}")
    typer.echo(f"label map: {result['output']}  ({result['segment_seconds']:.1f} s to load, segment and save)")
    typer.echo(f"overlay:   {result['overlay']}")
    m = result["metrics"]
    typer.echo("Dice  " + "  ".join(f"{r} {m[f'{r}_dice']:.3f}" for r in ("WT", "TC", "ET")))
    typer.echo("HD95  " + "  ".join(f"{r} {m[f'{r}_hd95']:.1f} mm" for r in ("WT", "TC", "ET")))


@app.command()
def serve(
    studies: Optional[Path] = typer.Option(None, help="read-only folder of BraTS case folders to serve as studies"),
    store: Path = typer.Option(Path("volseg_store"), help="writable datastore: uploads, submitted labels (labels/final), training runs"),
    host: str = typer.Option("127.0.0.1", help="address to bind; the default serves this machine only"),
    port: int = typer.Option(8000, help="TCP port"),
    bundle: list[str] = typer.Option(["brats_unet3d"], help="bundles to serve as models (repeat the option)"),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP, callback=_checked_device),
    token: Optional[str] = typer.Option(None, envvar="VOLSEG_TOKEN", help="require 'Authorization: Bearer TOKEN' (default: $VOLSEG_TOKEN; none: no auth)"),
    max_upload_mb: float = typer.Option(512.0, help="largest accepted upload in MiB"),
    quiet: bool = typer.Option(False, "--quiet", help="less output"),
) -> None:
    """Serve bundles over the MONAI Label protocol for 3D Slicer's MONAI Label module."""
    _setup(quiet)
    import uvicorn

    from app.serve import ServerConfig, create_app, serve_address

    try:
        address = serve_address(host, port)  # before anything is built or written: a port in use fails here
        api = create_app(ServerConfig(store, studies, list(bundle), device, token, max_upload_mb))
    except (ValueError, OSError) as err:  # OSError: a port in use, a bundle without weights (FileNotFoundError)
        _fail(err)
    found = api.state.datastore.stats()["total"]
    if studies and not found:
        typer.secho(f"warning: {api.state.datastore.studies_hint()}", err=True, fg="yellow")
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        typer.secho(f"warning: --host {host} serves other machines without a token: anyone who reaches port {port} can read the studies "
                    "and write labels; give --token T (or VOLSEG_TOKEN)", err=True, fg="yellow")
    if not quiet:
        typer.echo(f"volseg serve: models {', '.join(map(str, bundle))}; studies {f'{found} in {studies}' if studies else 'none (upload them, or --studies DIR)'}; "
                   f"datastore {store.resolve()}; MONAI Label server at {address} (3D Slicer: MONAI Label module, this address)")
    uvicorn.run(api, host=host, port=port, log_level="warning" if quiet else "info")


@app.command("report")
def report_command(
    run_dir: Path = typer.Argument(..., help="a volseg segment output folder (it holds volseg_run.json)"),
    inputs: Optional[list[Path]] = typer.Option(None, "--inputs", help="case folders or files that were segmented, for the images under the labels "
                                                "(default: the input files the run record names)"),
    out: Optional[Path] = typer.Option(None, "--out", help="the HTML file (default <run_dir>/report.html)"),
) -> None:
    """Write (again) the HTML report of a volseg segment output folder, as --report does: per case,
    overlays on three planes, volumes (mL), missing sequences, quality score, the bundle's CV figures."""
    _setup(True)
    from app import api
    from app.data.verify import InputError

    if out is not None:
        _output_path(out, "--out", folder=False)
    try:
        path = api.report(run_dir, inputs or (), out)
    except (FileNotFoundError, ValueError, InputError) as err:
        _fail(err)
    typer.echo(f"report: {path}")


@app.command("dicom-sort")
def dicom_sort(
    source: Path = typer.Argument(..., help="a DICOM export whose series lie mixed in one folder (or in any sub-folders)"),
    output: Path = typer.Option(..., "--output", "-o", help="folder for the study folders (<patient ID>/<NN>_<SeriesDescription>/)"),
) -> None:
    """Copy each DICOM series of an export into a folder of its own, one study folder per study.

    volseg segment then reads, for a BraTS bundle, each study folder as a case (series matched to
    T1/T1ce/T2/FLAIR by SeriesDescription), and for a one-channel bundle (CT: ct_unet3d or one you
    trained), each series folder as a case."""
    _setup(True)
    from app.data.dicom_study import sort_dicom_export

    _output_path(output, "--output")
    try:
        written = sort_dicom_export(source, output)
    except (ValueError, OSError) as err:
        _fail(err)
    for study, rows in written.items():
        typer.echo(f"{study}: " + "; ".join(f"{folder} ('{description}') -> {key or 'not a BraTS sequence'}" for folder, description, key in rows))
    typer.echo(f"segment them with: volseg segment {output} --output <folder> (BraTS bundles: a study folder is a case, its series named "
               f"T1/T1ce/T2/FLAIR above, others left out; one-channel bundles, --bundle ct_unet3d or your own: each series folder is a case)")


@app.command("split-channels")
def split_channels(
    source: Path = typer.Argument(..., help="a 4D NIfTI (channels last), a folder of them, or a Decathlon task folder "
                                            "(dataset.json, imagesTr/, labelsTr/, imagesTs/) such as Task01_BrainTumour"),
    output: Path = typer.Option(..., "--output", "-o", help="folder for the case folders (<case>/<case>_<sequence>.nii.gz, <case>_seg.nii.gz)"),
    sequences: Optional[str] = typer.Option(None, help="sequence of each channel, in order, comma-separated (Task01_BrainTumour: "
                                                       "flair,t1,t1ce,t2); default: the task's dataset.json 'modality'"),
) -> None:
    """Split 4D multi-channel volumes (one file a case, as the Medical Segmentation Decathlon's
    Task01_BrainTumour stores BraTS) into one file a sequence, with the labels in BraTS codes (1 NCR/NET,
    2 ED, 4 ET): the case folders volseg segment, evaluate, cv and train read."""
    _setup(True)
    from app.data.split_channels import split_multichannel

    _output_path(output, "--output")
    try:
        cases = split_multichannel(source, output, sequences)
    except (ValueError, OSError) as err:
        _fail(err)
    for case in cases:
        names = ", ".join(p.name for p in sorted(case.written + case.kept))
        typer.echo(f"{case.case_id}: {names}" + (f" ({len(case.kept)} there already, kept)" if case.kept else ""))
    for folder in dict.fromkeys(case.folder.parent for case in cases):  # <output>, or <output>/training and <output>/test
        group = [case for case in cases if case.folder.parent == folder]
        labelled = sum(case.label is not None for case in group)
        typer.echo(f"{folder}: {len(group)} case(s), {labelled} with a label map in BraTS codes; segment them with: volseg segment {folder} --output <folder>"
                   + (f"; a datalist of them: volseg manifest brats {folder} --out <datalist.json>" if labelled == len(group) else ""))


@app.command("export-monailabel")
def export_monailabel(
    bundle: str = typer.Argument(..., help="shipped bundle name"),
    dest: Path = typer.Argument(..., help="target folder, e.g. <monailabel app>/model/brats_unet3d"),
) -> None:
    """Write a copy of a bundle with single-file configs, as MONAI Label's bundle tasks read them."""
    from app.serve.monailabel_export import export_for_monailabel

    _output_path(dest, "DEST")
    try:
        out = export_for_monailabel(bundle, dest)
    except (ValueError, FileExistsError) as err:
        _fail(err)
    typer.echo(f"exported {bundle} to {out}")


@app.command()
def export(
    bundle: str = typer.Argument(..., help=BUNDLE_HELP),
    format: str = typer.Option(..., "--format", "-f", help="torchscript, onnx or openvino"),
    out: Optional[Path] = typer.Option(None, "--out", help="output file (default: <bundle>/models/model.{ts,onnx,xml} for a bundle folder; <name>_model.{ts,onnx,xml} here for a shipped bundle)"),
    ckpt: Optional[Path] = typer.Option(None, help="weights (default: the bundle's models/model.pt)"),
) -> None:
    """Export a bundle's trained network for deployment: TorchScript, ONNX (opset 18, dynamic batch
    and spatial axes) or OpenVINO IR (.xml + .bin)."""
    _setup(False)
    from app.api import export as export_api

    try:
        path = export_api(bundle, format, out, ckpt)
    except (ValueError, FileNotFoundError, ImportError) as err:
        _fail(err)
    typer.echo(f"wrote {path}")


#: Packages that ``import monai`` loads (it imports every MONAI submodule, and with them their optional
#: dependencies: Ignite for engines, scikit-learn for one metric, matplotlib for notebooks,
#: scipy.signal for ultrasound; ITK for MONAI's ITK reader and writer, tifffile for whole-slide
#: images, pydicom for MONAI's DICOM reader (through nibabel), jsonschema for bundle checks,
#: requests for downloads, pydot through torch.fx's graph drawer) and that segmentation never uses
#: (VolSeg reads and writes volumes with SimpleITK). The first four cost 2.8 of the 4 s ``import
#: monai`` took on 2 cores, the other six 1.0-1.3 s more; ``volseg segment`` marks them absent, as if
#: not installed, which MONAI handles (``optional_import``). Set ``VOLSEG_FULL_IMPORT=1`` for a
#: custom bundle whose inference needs one of them.
SEGMENT_SKIPPED_IMPORTS = ("ignite", "sklearn", "matplotlib", "scipy.signal", "itk", "tifffile", "pydicom", "jsonschema", "requests", "pydot")
#: The option of ``volseg segment`` that needs each package it would otherwise skip.
_NEEDED_BY = {"matplotlib": "--report", "pydicom": "--dicom-seg"}


def skip_unused_imports(argv: list[str]) -> list[str]:
    """For a ``segment`` command (and unless ``$VOLSEG_FULL_IMPORT`` is 1), mark the packages of
    :data:`SEGMENT_SKIPPED_IMPORTS` that are not yet imported as absent in this process
    (matplotlib stays importable for ``--report``, which draws with it, and pydicom for
    ``--dicom-seg``, which writes with it: :data:`_NEEDED_BY`).

    Returns:
        The names marked absent.
    """
    if argv[:1] != ["segment"] or os.environ.get("VOLSEG_FULL_IMPORT", "0") == "1":
        return []
    skipped = [name for name in SEGMENT_SKIPPED_IMPORTS if name not in sys.modules and _NEEDED_BY.get(name) not in argv]
    for name in skipped:
        sys.modules[name] = None  # Python's documented marker: importing it raises ImportError
    return skipped


def _exit_now(code: int) -> None:
    """Leave at once after Ctrl-C or SIGTERM, while worker threads may still be inside native code.

    MONAI's ``CacheDataset`` fills its cache on a thread pool, and a thread interrupted in the
    middle of a torch or ITK call keeps running. A normal interpreter exit then runs the C++
    static destructors under it and aborts ("terminate called without an active exception",
    exit status 134) after the one-line message was printed. Nothing is left to write at this
    point (checkpoints and outputs are written atomically), so the process ends with ``os._exit``.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    """Console-script entry point."""
    skip_unused_imports(sys.argv[1:])
    try:
        app()
    except SystemExit as stop:
        if stop.code in (130, 143) and threading.active_count() > 1:
            _exit_now(stop.code)
        raise
    finally:
        import gc

        gc.freeze()  # at exit, the collector need not walk every torch/MONAI/OpenVINO object: 1-1.5 s on 2 cores


if __name__ == "__main__":
    sys.exit(main())
