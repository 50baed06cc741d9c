"""A batch of cases for ``volseg segment``: planned and checked before any model loads, then run.

Planning (:func:`plan_batch`) catches every problem that needs no model, so a run never computes
for minutes and then fails on its output: settings (bundle, device, output format), input paths,
the output folder (created and proven writable), each case's files (a folder that is no case
fails alone; the others still run), duplicates (the same files given twice, through
another relative or absolute path or a symbolic link, are segmented once) and outputs already
written (skipped unless ``overwrite``, so an interrupted cohort resumes). :func:`run_cases` is
the one per-case loop, shared by the single-process run (:func:`run_batch`) and each rank of
``--nproc N`` (:mod:`app.inference.distributed`), so both write the same labels.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from app.bundles import DEFAULT_BUNDLE
from app.errors import InputError, OutputError
from app.inference.segmenter import CaseResult, Segmenter, _is_case_folder, _is_dicom_folder, expand_dataset_folders, resolve_inputs
from app.io.outputs import prepare_output_dir

logger = logging.getLogger(__name__)

RUN_RECORD = "volseg_run.json"
OUTPUT_FORMATS = ("same", "nifti")


@dataclass(frozen=True)
class SegmentSettings:
    """What every case of a batch is segmented with (see :func:`app.api.segment_cases`)."""

    bundle: str = DEFAULT_BUNDLE
    device: str | None = None
    backend: str | None = None
    mode: str | None = None
    output_format: str = "same"
    dicom_seg: bool = False
    uncertainty: bool = False
    sequences: tuple[str, ...] | None = None
    int8: bool | None = None
    n4: bool | None = None
    resample: bool = False
    label_codes: str = "2018"


@dataclass
class PlannedCase:
    """One case of a batch: its files and output, or why it will not run.

    Attributes:
        case_id: the case ID (folder name, or file name without modality and extension).
        images: T1, T1ce, T2, FLAIR paths as given (None for a missing sequence); empty where
            the case could not be resolved.
        output: ``<output_dir>/<case_id>_seg.<ext>``, or None where unresolved.
        error: why the case fails before inference (None: it can run).
        note: why it is skipped (its output exists); None: it runs.
        grid: with ``resample``, the volume whose voxel grid the others are resampled onto (the
            finest; :func:`app.inference.align.grid_reference`); None where they share one.
    """

    case_id: str
    images: list[str | None] = field(default_factory=list)
    output: str | None = None
    error: str | None = None
    note: str | None = None
    grid: str | None = None

    @property
    def todo(self) -> bool:
        return self.error is None and self.note is None

    @property
    def reference(self) -> str:
        """The volume whose geometry and format the outputs take: ``grid`` where set, else the
        first volume the case has."""
        return self.grid or next(p for p in self.images if p is not None)

    def result(self) -> CaseResult:
        """The result of a case that does not run (failed in planning, or skipped)."""
        return CaseResult(self.case_id, output=Path(self.output) if self.note and self.output else None, error=self.error, note=self.note)


@dataclass
class BatchPlan:
    """The cases of a batch in input order, with notes on inputs merged as duplicates."""

    output_dir: str
    cases: list[PlannedCase]
    notes: list[str] = field(default_factory=list)

    def todo(self) -> list[int]:
        """Indices of the cases to segment."""
        return [i for i, c in enumerate(self.cases) if c.todo]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BatchPlan:
        return cls(data["output_dir"], [PlannedCase(**c) for c in data["cases"]], list(data.get("notes", [])))


def check_settings(settings: SegmentSettings) -> None:
    """Refuse settings no case could run with, before any input is read or model loaded.

    Raises:
        ValueError: an unknown output format, or a device this machine cannot run on
            (:func:`app.devices.check_device`: one line naming the flag and the fix), or label
            codes the bundle cannot write (:meth:`app.labels.LabelManager.code_map`: ``"2023"``
            for a bundle that is not BraTS).
        FileNotFoundError: the bundle or its inference config is missing.
        ImportError: DICOM SEG output (``dicom_seg``) without highdicom installed.
    """
    import importlib.util

    from app.bundles import config_files
    from app.devices import check_device

    if settings.output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be 'same' or 'nifti', got '{settings.output_format}'")
    check_device(settings.device)
    config_files(settings.bundle, "inference")
    if settings.label_codes != "2018":
        from app.labels import labels_of

        labels_of(settings.bundle).code_map(settings.label_codes)
    if settings.dicom_seg and importlib.util.find_spec("highdicom") is None:  # found now, not after the first case is segmented
        raise ImportError("--dicom-seg (DICOM SEG output) needs highdicom: pip install 'volseg[dicom]'")


def _is_case_input(path: Path) -> bool:
    """A folder read as one case, not one sequence's DICOM series (as ``resolve_inputs`` tells)."""
    return path.is_dir() and (_is_case_folder(path) or not _is_dicom_folder(path))


def _resolve(paths: list[Path], channels: Sequence[str], sequences: Sequence[str] | None) -> list[tuple[str, PlannedCase]]:
    """``(key, case)`` per case in input order. Each case folder is resolved alone, so one that
    cannot be read as a case fails alone; loose files (and DICOM series folders) are grouped by
    ``resolve_inputs``, and a problem with them stops the batch (a user error). For a one-channel
    bundle (CT) every path is a case."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise InputError(f"input not found: {', '.join(missing)}")
    if len(channels) > 1:
        paths = expand_dataset_folders(paths)  # a BraTS-style dataset folder: each of its case folders fails alone
    folders = [p for p in paths if len(channels) == 1 or _is_case_input(p)]
    loose = [p for p in paths if p not in folders]
    planned = []
    for folder in folders:
        try:
            resolved = resolve_inputs([folder], channels=channels)  # one case; a CT dataset folder: one per volume
        except InputError as err:
            planned.append((os.path.realpath(folder), PlannedCase(folder.name, error=str(err))))
            continue
        for case_id, images in resolved:
            planned.append((_key(images), PlannedCase(case_id, [str(p) if p is not None else None for p in images])))
    if loose:
        for case_id, images in resolve_inputs(loose, channels=channels, sequences=sequences):
            planned.append((_key(images), PlannedCase(case_id, [str(p) if p is not None else None for p in images])))
    return planned


def _key(images: Sequence[str | Path | None]) -> str:
    """Identity of a case: the real paths of its files (symbolic links and ``..`` resolved)."""
    return "|".join(os.path.realpath(p) if p is not None else "-" for p in images)


def _merge_duplicates(planned: list[tuple[str, PlannedCase]]) -> tuple[list[PlannedCase], list[str]]:
    """Keep the first of cases with the same files; a second case with the same ID but other
    files fails (both would write ``<case_id>_seg``)."""
    by_key: dict[str, PlannedCase] = {}
    by_id: dict[str, PlannedCase] = {}
    cases, notes = [], []
    for key, case in planned:
        if key in by_key:
            notes.append(f"case '{case.case_id}' was given more than once ({next(k for k in key.split('|') if k != '-')}); segmented once")
            continue
        first = by_id.get(case.case_id)
        if first is not None and case.error is None:
            case.error = (f"case ID '{case.case_id}' of {case.reference} is also the ID of {first.reference if first.images else first.case_id} "
                          "(other files): both would write the same output; rename one case")
        by_key[key] = case
        by_id.setdefault(case.case_id, case)
        cases.append(case)
    return cases, notes


def plan_batch(inputs: Sequence[str | Path], output_dir: str | Path, settings: SegmentSettings, overwrite: bool = True) -> BatchPlan:
    """Check a batch before any model is loaded, and decide what each case does.

    Args:
        inputs: case folders and/or the four modality files of one case.
        output_dir: output folder; created here, and proven writable.
        settings: bundle, device and output settings (checked by :func:`check_settings`).
        overwrite: segment cases whose output exists again; False skips them (resume).

    Returns:
        The plan: every case in input order (failed ones with their error, skipped ones with a
        note), and a note per duplicate input dropped.

    Raises:
        InputError: a path that does not exist, or loose files that form no case (see
            :func:`app.inference.resolve_inputs`).
        app.errors.OutputError: an output folder that is a file, cannot be created or is not writable.
        ValueError: ``sequences`` for a one-channel bundle; see also :func:`check_settings`.
        FileNotFoundError, ImportError: see :func:`check_settings`.

    Example:
        >>> plan = plan_batch(["data/Brats18_X", "data/Brats18_Y"], "out", SegmentSettings())  # doctest: +SKIP
        >>> [c.case_id for c in plan.cases if c.todo]  # doctest: +SKIP
        ['Brats18_X', 'Brats18_Y']
    """
    from app.inference.align import grid_reference
    from app.io.writers import output_suffix
    from app.labels import labels_of

    check_settings(settings)
    channels = labels_of(settings.bundle).channels
    if settings.sequences and len(channels) < 2:
        raise ValueError(f"--sequences names the sequences of a multi-sequence bundle (BraTS: t1, t1ce, t2, flair); bundle '{settings.bundle}' "
                         f"takes one volume a case ({', '.join(channels)})")
    cases, notes = _merge_duplicates(_resolve([Path(p) for p in inputs], channels, settings.sequences))
    out_dir = prepare_output_dir(output_dir)
    recorded = {os.path.abspath(e["output"]) for e in earlier_entries(out_dir).values() if isinstance(e.get("output"), str)}
    for case in cases:
        if case.error is None and settings.resample:
            try:
                case.grid = grid_reference(case.images)
            except InputError as err:
                case.error = str(err)
        if case.error is not None:
            continue
        output = out_dir / f"{case.case_id}_seg{output_suffix(case.reference, settings.output_format)}"
        case.output = str(output)
        beside_inputs = {Path(p).resolve().parent for p in case.images if p is not None}
        if output.exists() and not output.is_file():
            case.error = str(OutputError(f"output '{output}' exists and is not a file; remove it or choose another --output"))
        elif output.is_file() and output.resolve().parent in beside_inputs and os.path.abspath(output) not in recorded:
            # the case folder as --output: <case>_seg.nii.gz there is the case's reference label, which --overwrite replaced,
            # and a resumed run took for its own result (its volumes reported as the model's)
            case.error = str(OutputError(f"output '{output}' is a file beside the case's input files that VolSeg did not write (no entry in "
                                         f"{out_dir / RUN_RECORD}): the case's reference label? It is never written over or taken as this "
                                         "run's result; give an --output folder outside the case folder"))
        elif output.is_file() and not overwrite and not _dicom_seg_missing(case, settings, out_dir):
            unreadable = _unreadable_label(output, case.grid or case.reference)
            if unreadable:
                logger.warning(f"case '{case.case_id}': the label map already in {out_dir} {unreadable}; segmenting it again")
            else:
                case.note = f"skipped: {output.absolute()} exists (--overwrite to segment it again)"
    for note in notes:
        logger.warning(note)
    return BatchPlan(str(out_dir), cases, notes)


def _unreadable_label(output: Path, reference: str | Path) -> str | None:
    """Why a label map left in the output folder cannot be kept (a resumed batch would skip it):
    it cannot be read whole (a file cut short when a run was killed), or its size is not the
    size of the case's reference volume; None where it can be kept."""
    from app.io.readers import read_image_information, read_volume

    try:
        size = read_volume(output, check_finite=False, refuse_all_zero=False).GetSize()  # the whole file: a .nii.gz cut short fails here
    except (ValueError, RuntimeError, OSError) as err:  # InputError is a ValueError
        return f"cannot be read ({str(err).strip().splitlines()[-1][:300]})"
    if Path(reference).is_file():  # a DICOM series (a folder) is not read again here
        try:
            expected = read_image_information(reference).GetSize()[:3]  # its header only
        except (ValueError, RuntimeError, OSError):
            return None  # the case's own reading reports an unreadable input
        if tuple(expected) != tuple(size[:3]):
            return f"is {' x '.join(map(str, size))} voxels, not the {' x '.join(map(str, expected))} of {reference}"
    return None


def _dicom_seg_missing(case: PlannedCase, settings: SegmentSettings, out_dir: Path) -> bool:
    from app.io.readers import volume_format

    return settings.dicom_seg and volume_format(case.reference) == "dicom" and not (out_dir / f"{case.case_id}_seg.dcm").is_file()


def run_cases(segmenter: Segmenter, cases: Sequence[PlannedCase], settings: SegmentSettings,
              progress: Callable[[Any], Any] | None = None) -> list[CaseResult]:
    """Segment ``cases`` one after another, reading the next case while this one computes.

    A case that fails is reported in its result (``error``) and the others still run; nothing
    is written for it (outputs are written atomically).

    Returns:
        One :class:`CaseResult` per case, in order.

    Raises:
        Interrupted: Ctrl-C (KeyboardInterrupt, or SIGTERM within :func:`stop_signals_interrupt`); it carries a result per case, the case it
            stopped in and those after it with an "interrupted" error, for the run record.
    """
    results: list[CaseResult] = []
    try:
        _run_cases(segmenter, cases, settings, progress, results)
    except KeyboardInterrupt as err:
        results += [CaseResult(c.case_id, error=INTERRUPTED) for c in cases[len(results):]]
        raise Interrupted(results, signal_name(err)) from err
    return results


#: The error of the cases a Ctrl-C or SIGTERM stopped (their label maps are not written).
INTERRUPTED = "interrupted (Ctrl-C or SIGTERM) before its label map was written; run the same command again to segment it (written cases are skipped)"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during :func:`run_cases`; ``results`` holds one result per case (see
    there); ``signal`` is ``"SIGTERM"`` or ``"SIGINT"``."""

    def __init__(self, results: list[CaseResult], signal: str = "SIGINT") -> None:
        super().__init__("interrupted")
        self.results = results
        self.signal = signal


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as a Ctrl-C is (:func:`stop_signals_interrupt`)."""


def signal_name(stop: BaseException) -> str:
    """``"SIGTERM"`` where ``stop`` (or the interrupt it wraps) came from SIGTERM, else ``"SIGINT"``."""
    return "SIGTERM" if isinstance(stop, Terminated) or getattr(stop, "signal", None) == "SIGTERM" else "SIGINT"


@contextmanager
def stop_signals_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (``timeout``, ``kill``, a batch scheduler stopping a job) stops a
    batch as Ctrl-C does: the cases written are kept and recorded in the run record. The first
    SIGINT or SIGTERM raises (:class:`KeyboardInterrupt` or :class:`Terminated`) and later ones are
    ignored until the block ends, so that the run record is written whole. Python's handlers are
    restored after the block. Only in the main thread (elsewhere a no-op: Python runs signal
    handlers there only)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def stop(signum: int, frame: Any) -> None:
        for sig in before:
            signal.signal(sig, signal.SIG_IGN)  # the record is being written: a second Ctrl-C must not cut it short
        raise Terminated("terminated") if signum == signal.SIGTERM else KeyboardInterrupt

    for sig in before:
        signal.signal(sig, stop)
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _run_cases(segmenter: Segmenter, cases: Sequence[PlannedCase], settings: SegmentSettings, progress: Callable[[Any], Any] | None,
               results: list[CaseResult]) -> None:
    """:func:`run_cases`' loop, appending to ``results`` as each case finishes."""
    from app.io.readers import volume_format
    from app.io.writers import write_label_like, write_map_like
    from app.labels import labels_of
    from app.transforms.regions import relabelled

    manager = labels_of(settings.bundle) if settings.label_codes != "2018" else None
    written_labels = manager.with_codes(settings.label_codes) if manager is not None else None
    code_map = manager.code_map(settings.label_codes) if manager is not None else {}
    with ThreadPoolExecutor(max_workers=1) as reader:  # reads the next case while this one computes
        pending = reader.submit(_load, segmenter, cases[0]) if cases else None
        for index, case in enumerate((progress or (lambda x: x))(cases)):
            start = time.perf_counter()
            try:
                loading, pending = pending, (reader.submit(_load, segmenter, cases[index + 1]) if index + 1 < len(cases) else None)
                data, aligned = loading.result()
                done = segmenter.run_case(data)
                label, affine, ref, out_dir = done["label"], done["affine"], case.reference, Path(case.output).parent
                label = relabelled(label, code_map)  # e.g. BraTS 2023+ codes: ET 4 -> 3; {}: as the bundle writes it
                out = write_label_like(label, ref, case.output)
                extra = {"missing_sequences": done["missing_sequences"], **({"resampled": aligned} if aligned else {})}
                if done.get("input_warnings"):
                    extra["input_warnings"] = done["input_warnings"]
                stale_map = out_dir / f"{case.case_id}_uncertainty.nii.gz"
                if "uncertainty" in done:
                    extra["uncertainty"] = str(write_map_like(done["uncertainty"], ref, stale_map))
                    extra["quality"] = done["quality"]
                elif stale_map.is_file():  # an earlier run's map of this case belongs to the label just replaced
                    stale_map.unlink()
                if settings.dicom_seg and volume_format(ref) == "dicom":
                    from app.bundles import label_names
                    from app.io.dicom_seg import write_dicom_seg

                    names = dict(written_labels.labels) if written_labels is not None else label_names(settings.bundle)
                    try:
                        extra["dicom_seg"] = str(write_dicom_seg(label, ref, out_dir / f"{case.case_id}_seg.dcm", names,
                                                                 model_name=Path(str(settings.bundle)).name))
                    except Exception as err:  # the label map is written: say so, and fail the case for its DICOM SEG alone
                        error = f"case '{case.case_id}': its label map {out} is written, its DICOM SEG is not ({type(err).__name__}: {err}; source series {ref})"
                        results.append(CaseResult(case.case_id, label, affine, out, time.perf_counter() - start, error=error, extra=extra))
                        logger.error(error)
                        continue
                results.append(CaseResult(case.case_id, label, affine, out, time.perf_counter() - start, extra=extra))
            except Exception as err:  # one bad case must not abort the batch
                results.append(CaseResult(case.case_id, seconds=time.perf_counter() - start, error=str(err)))
                logger.error(f"case '{case.case_id}' failed: {results[-1].reason}")


def _load(segmenter: Segmenter, case: PlannedCase) -> tuple[dict, dict | None]:
    """``segmenter.load`` of a case, on ``case.grid`` where set (:func:`app.inference.align.load_on_grid`)."""
    from app.inference.align import load_on_grid

    return load_on_grid(segmenter, case.images, case.grid)


#: Run-record keys that name a file the batch wrote in its output folder.
OUTPUT_KEYS = ("output", "uncertainty", "dicom_seg")


def case_entry(result: CaseResult) -> dict[str, Any]:
    """One case of the run record; the files it names as absolute paths (usable from any working folder)."""
    entry = {"case_id": result.case_id, "output": str(result.output) if result.output else None, "seconds": round(result.seconds, 3),
             "error": result.error, "note": result.note, **result.extra}
    return {k: os.path.abspath(v) if k in OUTPUT_KEYS and v else v for k, v in entry.items()}


def write_run_record(plan: BatchPlan, segmenter: Segmenter, settings: SegmentSettings, entries: list[dict[str, Any]], info: dict[str, Any],
                     nproc: int = 1) -> Path:
    """Write ``<output_dir>/volseg_run.json``: ``info`` (package versions, :func:`app.api.run_info`),
    bundle settings, precision, the number of processes, notes on the inputs, and each case's
    outcome, and ``volumes.csv`` beside it.

    An output folder that holds an earlier batch keeps it: the earlier record's cases that this batch
    did not touch (and whose label map is still there) stay in ``cases``, first, and a case this batch
    skipped keeps its earlier entry with the skip note. Each entry carries the ``settings`` it was
    segmented with (bundle, mode, N4, precision, weights), since cases of one folder may differ."""
    from app.bundles import ran_int8
    from app.inference.volumes import add_case_volumes
    from app.io.atomic import atomic_write_text

    keys = ("infer_mode", "roi_size", "sw_batch_size", "overlap", "spacing_mm", "ckpt_path", *(("ensemble_ckpt_paths", "mirror_axes") if segmenter.mode == "accurate" else ()))
    config = {k: segmenter.parser.get_parsed_content(k) for k in keys if k in segmenter.parser}
    if getattr(segmenter, "model_files", None):
        config["model_files"] = segmenter.model_files  # what ran: an int8 model's .xml, or the checkpoint
    record = {**info, **current_settings(settings, segmenter), "device": str(segmenter.device), "backend": segmenter.backend,
              "n4_combine": getattr(segmenter, "n4_combine", None) if getattr(segmenter, "n4", False) else None, "nproc": nproc, "config": config,
              "notes": plan.notes}
    ran = [e for e in entries if not e.get("note")]
    for entry, case in zip(entries, plan.cases):
        entry.setdefault("inputs", [os.path.abspath(p) if p is not None else None for p in case.images])  # usable from any working folder
    for entry in ran:
        entry["settings"] = run_settings(record)
    add_missing_sequence_cv(ran, settings.bundle, record["n4_average"], ran_int8(segmenter.precision), segmenter.mode)
    record["cases"] = _with_earlier_cases(entries, earlier_entries(plan.output_dir))
    kept = len(record["cases"]) - len(entries)
    if kept:
        record["notes"] = [*plan.notes, f"{kept} case(s) of earlier batches in this folder are kept, first; the settings above are this batch's, "
                                        "each case's own are under its 'settings'"]
        other = [c["case_id"] for c in record["cases"] if c.get("output") and c.get("settings") is not None
                 and (c["settings"].get("label_codes") or "2018") != settings.label_codes]
        if other:  # one folder, two label codes (e.g. ET 4 and ET 3): a challenge upload would mix them
            mixed = (f"{len(other)} label map(s) in {plan.output_dir} from earlier batches are in other label codes than this batch's "
                     f"{settings.label_codes} ({', '.join(other[:5])}{', ...' if len(other) > 5 else ''}): the folder mixes codes; "
                     f"segment them again with --label-codes {settings.label_codes} --overwrite, or use another --output")
            logger.warning(mixed)
            record["notes"].append(mixed)
    add_case_volumes(record["cases"], settings.bundle, plan.output_dir)  # volumes_ml per case from the written labels (each in its own label codes), and volumes.csv
    _keep_unreadable_record(plan.output_dir)
    return atomic_write_text(Path(plan.output_dir) / RUN_RECORD, json.dumps(record, indent=2, default=str) + "\n")


SETTING_KEYS = ("bundle", "mode", "n4_average", "n4_params", "precision", "weights", "label_codes")


def current_settings(settings: SegmentSettings, segmenter: Segmenter) -> dict[str, Any]:
    """What this batch segments with: ``bundle``, ``mode``, ``n4_average``, ``n4_params`` (the
    mode's N4 settings where N4 runs, else None), ``precision``, ``weights``
    (:func:`weights_fingerprint`: a bundle folder trained again keeps its name) and
    ``label_codes`` (the codes of the written label maps, ``"2018"`` or ``"2023"``)."""
    n4 = bool(getattr(segmenter, "n4", False))
    n4_params = segmenter.parser.get_parsed_content("n4_params") if n4 and "n4_params" in segmenter.parser else None
    return {"bundle": str(settings.bundle), "mode": segmenter.mode, "n4_average": n4, "n4_params": n4_params, "precision": segmenter.precision,
            "weights": weights_fingerprint(segmenter), "label_codes": settings.label_codes}


def weights_fingerprint(segmenter: Segmenter) -> str | None:
    """The first 16 hex digits of the SHA-256 of the SHA-256s of the checkpoints ``segmenter`` runs
    (``ckpt_path``, or ``ensemble_ckpt_paths`` in accurate mode), computed once a segmenter (about
    0.05 s a 10 MB checkpoint); None where it names none."""
    cached = getattr(segmenter, "_weights_fingerprint", False)
    if cached is not False:
        return cached
    import hashlib

    parser = segmenter.parser
    key = "ensemble_ckpt_paths" if segmenter.mode == "accurate" else "ckpt_path"
    paths = parser.get_parsed_content(key) if key in parser else None
    paths = [paths] if isinstance(paths, (str, Path)) else paths
    fingerprint = None
    if paths and all(Path(p).is_file() for p in paths):
        digest = hashlib.sha256()
        for path in paths:
            digest.update(hashlib.sha256(Path(path).read_bytes()).digest())
        fingerprint = digest.hexdigest()[:16]
    try:
        segmenter._weights_fingerprint = fingerprint
    except AttributeError:
        pass
    return fingerprint


def run_settings(record: dict[str, Any]) -> dict[str, Any]:
    """What a run record's cases were segmented with (:data:`SETTING_KEYS`; those an older record lacks are left out)."""
    return {key: record[key] for key in SETTING_KEYS if key in record}


def unreadable_record(out_dir: str | Path) -> str | None:
    """Why the run record in ``out_dir`` cannot be read (not JSON, not a record), or None where it
    reads or there is none."""
    path = Path(out_dir) / RUN_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return f"{type(err).__name__}: {err}"
    if not isinstance(record, dict) or not isinstance(record.get("cases", []), list):
        return "not a VolSeg run record (no list of cases)"
    return None


def _keep_unreadable_record(out_dir: str | Path) -> None:
    """Rename an unreadable run record in ``out_dir`` to ``volseg_run.unreadable-<UTC time>.json``,
    so that writing the new one loses nothing (said in the log)."""
    problem = unreadable_record(out_dir)
    if problem is None:
        return
    from datetime import datetime, timezone

    path = Path(out_dir) / RUN_RECORD
    kept = path.with_name(f"{path.stem}.unreadable-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}{path.suffix}")
    path.replace(kept)
    logger.warning(f"{path} could not be read ({problem}): kept as {kept.name}; a new run record is written")


def earlier_entries(out_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Case ID -> entry of the run record already in ``out_dir`` (``{}`` where there is none or it
    cannot be read), each with its ``settings`` (from the record's top level where an older record
    has none per case)."""
    try:
        record = json.loads((Path(out_dir) / RUN_RECORD).read_text())
        entries = {e["case_id"]: {**e, "settings": e.get("settings") or run_settings(record)} for e in record.get("cases", [])}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
    for entry in entries.values():  # the record describes the files beside it: a folder copied or moved, or a record that
        for key in OUTPUT_KEYS:     # named them relative to another working folder, still points at its own files
            if isinstance(entry.get(key), str):
                entry[key] = os.path.abspath(Path(out_dir) / Path(entry[key]).name)
    return entries


def _with_earlier_cases(entries: list[dict[str, Any]], earlier: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """This batch's entries after the earlier record's cases it did not touch (label still on disk);
    a skipped case takes its earlier entry, with the skip note."""
    ids = {e["case_id"] for e in entries}
    kept = [e for cid, e in earlier.items() if cid not in ids and e.get("output") and Path(e["output"]).is_file()]
    merged = [{**earlier[e["case_id"]], "note": e["note"]} if e.get("note") and e["case_id"] in earlier else e for e in entries]
    return kept + merged


def stale_skips(plan: BatchPlan, segmenter: Segmenter, settings: SegmentSettings) -> list[str]:
    """Un-skip the planned cases whose label in the output folder was made from other input files,
    with other settings (bundle, mode, N4 and its settings, precision, weights, label codes) or from other sequences (the
    earlier run record says so), or lacks the uncertainty map this run asks for: they are
    segmented again. Labels the record does not list are kept, with one warning. Returns a line
    per case for the log."""
    from app.labels import labels_of

    earlier = earlier_entries(plan.output_dir)
    now = current_settings(settings, segmenter)
    channels = labels_of(settings.bundle).channels
    lines = []
    unknown = [case.case_id for case in plan.cases if case.note and case.case_id not in earlier]
    if unknown:
        problem = unreadable_record(plan.output_dir)
        why = (f"its {RUN_RECORD} cannot be read ({problem}; it is kept beside the new one as {RUN_RECORD.replace('.json', '.unreadable-<time>.json')})"
               if problem else f"they have no entry in its {RUN_RECORD}")
        logger.warning(f"{len(unknown)} label map(s) in {plan.output_dir}: {why}, so what made them is unknown: "
                       f"kept ({', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''}); --overwrite segments them again")
    for case in plan.cases:
        entry = earlier.get(case.case_id)
        if not case.note or entry is None:
            continue
        given = [os.path.abspath(p) if p is not None else None for p in case.images]
        if entry.get("inputs") is not None and len(entry["inputs"]) == len(given) and entry["inputs"] != given:
            case.note = None
            other = next((old, new) for old, new in zip(entry["inputs"], given) if old != new)
            lines.append(f"case '{case.case_id}': its label in {plan.output_dir} was made from other input files ({other[0]}, now {other[1]}); "
                         "segmenting it again")
            continue
        before = {"label_codes": "2018", **entry["settings"]}  # VolSeg before 0.11.2 wrote 2018 codes only
        changed = {k: (before[k], v) for k, v in now.items() if k in before and before[k] != v}  # an older record's lacking keys: unknown
        missing = [c for c, p in zip(channels, case.images) if p is None] if len(case.images) == len(channels) else None
        if missing is not None and entry.get("missing_sequences") is not None and sorted(entry["missing_sequences"]) != sorted(missing):
            changed["missing sequences"] = (",".join(entry["missing_sequences"]) or "none", ",".join(missing) or "none")
        no_map = settings.uncertainty and not (entry.get("uncertainty") and Path(entry["uncertainty"]).is_file())
        if changed or no_map:
            case.note = None
            why = (f"was made with other settings or sequences ({', '.join(f'{k} {old} -> {new}' for k, (old, new) in changed.items())})" if changed
                   else "has no uncertainty map, which this run asks for")
            lines.append(f"case '{case.case_id}': its label in {plan.output_dir} {why}; segmenting it again")
    return lines


def add_missing_sequence_cv(entries: list[dict[str, Any]], bundle: str | Path, n4: bool, int8: bool, mode: str | None = "fast") -> None:
    """Give each run-record entry that lacked sequences what that costs: ``missing_sequences_cv_dice``,
    the bundle's 5-fold CV Dice per region for the sequences present (``{}`` where it has none), and
    ``missing_sequences_cv_source``, which figures those are (:func:`app.bundles.run_subset_cv`: the
    path that ran, ``n4`` and ``int8``, where the bundle has figures for it; None without figures)."""
    from app.bundles import run_subset_cv

    for entry in entries:
        if entry.get("missing_sequences"):
            cv, source = run_subset_cv(bundle, entry["missing_sequences"], n4, int8, mode)
            entry["missing_sequences_cv_dice"] = cv
            entry["missing_sequences_cv_source"] = (source or "float32, without N4") if cv else None


def merge_results(plan: BatchPlan, computed: dict[int, CaseResult]) -> list[CaseResult]:
    """Every case's result in input order: computed ones from ``computed`` (by plan index), the
    others from the plan (failed before inference, or skipped)."""
    return [computed[i] if i in computed else case.result() for i, case in enumerate(plan.cases)]


def make_segmenter(settings: SegmentSettings, device: str | None = None) -> Segmenter:
    """The :class:`Segmenter` of ``settings`` (on ``device`` where given, e.g. a rank's GPU)."""
    return Segmenter(settings.bundle, device=device or settings.device, backend=settings.backend, mode=settings.mode, uncertainty=settings.uncertainty,
                     int8=settings.int8, n4=settings.n4)


def run_batch(plan: BatchPlan, settings: SegmentSettings, info: dict[str, Any], progress: Callable[[Any], Any] | None = None) -> list[CaseResult]:
    """Segment a planned batch in this process and write its run record (``info``: versions).

    Returns:
        One :class:`CaseResult` per planned case, in input order.
    """
    segmenter = make_segmenter(settings)
    for line in stale_skips(plan, segmenter, settings):
        logger.warning(line)
    for case in plan.cases:  # refused while planning (2D, 4D, an empty or missing file): logged as a case failing while it runs is
        if case.error is not None:
            logger.error(f"case '{case.case_id}' failed: {case.result().reason}")
    todo = plan.todo()
    try:
        computed = dict(zip(todo, run_cases(segmenter, [plan.cases[i] for i in todo], settings, progress)))
    except Interrupted as stop:  # the record still says which cases were written, and with what
        write_run_record(plan, segmenter, settings, [case_entry(r) for r in merge_results(plan, dict(zip(todo, stop.results)))], info)
        raise
    results = merge_results(plan, computed)
    write_run_record(plan, segmenter, settings, [case_entry(r) for r in results], info)
    return results
