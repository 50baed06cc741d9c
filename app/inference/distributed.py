"""``volseg segment --nproc N``: one batch of cases over N processes with ``torchrun``.

The MONAI Model Zoo's multi-GPU evaluation pattern (``configs/multi_gpu_evaluate.json`` of its
bundles: ``torchrun``, a ``DistributedSampler`` over the datalist, each rank writing its own
outputs) applied to ``volseg segment``: the parent process plans the batch
(:func:`app.inference.batch.plan_batch`: inputs, output folder, duplicates, outputs already
written) before any model loads, then ``torchrun --standalone --nproc_per_node=N`` starts N ranks
(one GPU each on CUDA). Each rank segments its share of the cases to do
(:func:`rank_share`: the split of :func:`monai.data.partition_dataset` with
``even_divisible=False`` and of ``monai.data.DistributedSampler``, no case twice, none left out) with the same per-case
loop as a single process (:func:`app.inference.batch.run_cases`), writing its own label maps; the
ranks then pass their case records to rank 0 (as files), which writes ``volseg_run.json`` in input
order.

A run stopped part-way keeps every label map written (atomic writes); run again without
``--overwrite``, it skips them. Ctrl-C or SIGTERM of ``volseg segment`` goes on to ``torchrun`` and
the ranks: each drops the case it is segmenting (nothing is half-written), and the run record names
the cases written. For several nodes, run the bundle's ``multi_gpu_inference.yaml``
overlay with ``torchrun --nnodes`` (the command is in its header comment).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from app.inference.batch import (INTERRUPTED, RUN_RECORD, BatchPlan, Interrupted, SegmentSettings, case_entry, earlier_entries, make_segmenter, run_batch, run_cases,
                                 signal_name, stale_skips, stop_signals_interrupt, write_run_record)
from app.inference.segmenter import CaseResult

T = TypeVar("T")

logger = logging.getLogger(__name__)


class RankError(RuntimeError):
    """A rank of a multi-process run failed (its own traceback precedes); outputs written are kept."""


def launch_command(plan_file: str | Path, nproc: int) -> list[str]:
    """The ``torchrun`` command that runs :func:`main` on ``nproc`` local processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "app.inference.distributed", str(plan_file)]


def segment_distributed(plan: BatchPlan, settings: SegmentSettings, nproc: int, info: dict[str, Any]) -> list[CaseResult]:
    """Segment a planned batch on ``nproc`` processes (see the module docstring).

    Fewer processes are started where fewer cases are left to do (one process: no ``torchrun``).
    On CPU each rank's torch gets ``cpu_count // nproc`` threads unless ``OMP_NUM_THREADS`` is
    set (OpenVINO sizes its own thread pool).

    Args:
        plan: the checked batch (:func:`app.inference.batch.plan_batch`).
        settings: bundle, device and output settings.
        nproc: processes, one per GPU on CUDA.
        info: package versions for the run record (:func:`app.api.run_info`).

    Returns:
        One :class:`CaseResult` per planned case, in input order, read back from the run record
        (``label`` and ``affine`` are None: the label maps are on disk).

    Raises:
        ValueError: ``nproc < 1``, or more processes than GPUs on CUDA.
        RankError: a rank failed; label maps already written are kept (a rerun skips them).
        Interrupted: Ctrl-C or SIGTERM (within :func:`app.inference.batch.stop_signals_interrupt`)
            of this process: the same signal goes to ``torchrun`` and the ranks (their own process
            group), each rank drops the case it is segmenting, rank 0 writes the run record of the
            cases written, and this process waits for them (at most 60 s, then kills them).
    """
    import torch

    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    earlier = earlier_entries(plan.output_dir)  # a skipped case may be segmented again (stale_skips, on the ranks)
    asked, nproc = nproc, min(nproc, max(1, len(plan.todo()) + sum(1 for c in plan.cases if c.note and c.case_id in earlier)))
    if nproc < asked:  # said in the run record's notes, beside its "nproc"
        plan.notes.append(f"--nproc {asked}: {nproc} process(es) started, no more than the cases to segment")
    cuda = _uses_cuda(settings.device)
    if cuda and nproc > torch.cuda.device_count():
        raise ValueError(f"--nproc {nproc} on CUDA needs {nproc} GPUs (one per process); this machine has {torch.cuda.device_count()}")
    if nproc == 1:
        return run_batch(plan, settings, info)
    env = dict(os.environ)
    if not cuda:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="volseg_nproc_") as tmp:
        plan_file = Path(tmp) / "plan.json"
        plan_file.write_text(json.dumps({"plan": plan.to_json(), "settings": asdict(settings), "info": info, "log_level": logging.getLogger().getEffectiveLevel()}))
        # a process group of its own: a signal to this process reaches the ranks only through _stop, so none is left running
        ranks = subprocess.Popen(launch_command(plan_file, nproc), env=env, start_new_session=True)
        try:
            returncode = ranks.wait()
        except KeyboardInterrupt as stop:
            _stop(ranks, Path(tmp), signal.SIGTERM if signal_name(stop) == "SIGTERM" else signal.SIGINT)
            raise Interrupted(_recorded_results(plan, started) or [CaseResult(plan.cases[i].case_id, error=INTERRUPTED) for i in plan.todo()],
                              signal_name(stop)) from stop
    if returncode != 0:
        raise RankError(f"segmentation on {nproc} processes failed (torchrun exit code {returncode}); "
                        f"label maps already written in {plan.output_dir} are kept, and a rerun without --overwrite skips them")
    record = json.loads((Path(plan.output_dir) / RUN_RECORD).read_text())
    return [_result(c) for c in record["cases"]]


def _result(entry: dict[str, Any]) -> CaseResult:
    """A :class:`CaseResult` from a run record entry."""
    return CaseResult(entry["case_id"], output=Path(entry["output"]) if entry["output"] else None, seconds=entry["seconds"], error=entry["error"],
                      note=entry.get("note"), extra={k: v for k, v in entry.items() if k not in ("case_id", "output", "seconds", "error", "note")})


def _stop(ranks: subprocess.Popen, exchange: Path, signum: int, wait_s: float = 60.0) -> None:
    """Send ``signum`` to the ranks (the pids they wrote to ``exchange``; to ``torchrun`` and all its
    processes, the process group of ``ranks``, where none has yet) and wait for them to record what
    they wrote and ``torchrun`` to end; kill them all after ``wait_s`` seconds."""
    pids = [int(text) for text in (f.read_text().strip() for f in exchange.glob("pid*")) if text.isdigit()]
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:  # already done
            pass
    try:
        if not pids:
            os.killpg(ranks.pid, signum)
        ranks.wait(timeout=wait_s)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        logger.warning(f"the ranks did not stop within {wait_s:.0f} s of the signal: killed")
        os.killpg(ranks.pid, signal.SIGKILL)
        ranks.wait()


def _recorded_results(plan: BatchPlan, since: float) -> list[CaseResult]:
    """The results of ``plan``'s cases in the run record, where a rank wrote it after ``since``
    (epoch seconds); empty otherwise."""
    path = Path(plan.output_dir) / RUN_RECORD
    try:
        if path.stat().st_mtime < since:
            return []
        entries = {c["case_id"]: c for c in json.loads(path.read_text())["cases"]}
    except (OSError, ValueError, KeyError):
        return []
    return [_result(entries[c.case_id]) if c.case_id in entries else c.result() for c in plan.cases]


def _uses_cuda(device: str | None) -> bool:
    import torch

    return torch.device(device).type == "cuda" if device else torch.cuda.is_available()


def run_rank(plan: BatchPlan, settings: SegmentSettings, info: dict[str, Any], exchange: Path) -> None:
    """One rank under ``torchrun``: segment this rank's share, then rank 0 writes the run record of
    every rank's cases in input order.

    Cases whose label the output folder already holds, made with other settings or without the
    uncertainty map asked for, are segmented again (:func:`app.inference.batch.stale_skips`, the
    same on every rank). The share is :func:`rank_share`'s (rank ``r`` of ``N`` takes cases
    ``r, r + N, ...``); a rank may have none.

    The ranks pass their case entries to rank 0 as files (``exchange/rank<r>.json``), not through
    ``torch.distributed`` collectives: a rank waiting in a collective cannot be stopped, and a
    rank stopped by a signal (Ctrl-C, SIGTERM; see :func:`main`) still records what it wrote. Rank
    0 waits for every other rank's file; once stopped, for at most 15 s more, and a case of a rank
    whose file did not come is recorded as interrupted.

    Args:
        plan: the batch the parent process planned (the same on every rank).
        settings: bundle, device and output settings.
        info: package versions for the run record.
        exchange: a folder shared by the ranks (the plan file's).

    Raises:
        Interrupted: this rank was stopped (after its entries, or the run record, are written).
    """
    import torch

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun
    cuda = _uses_cuda(settings.device)
    if cuda:
        torch.cuda.set_device(local_rank)
    segmenter = make_segmenter(settings, f"cuda:{local_rank}" if cuda else "cpu")
    for line in stale_skips(plan, segmenter, settings):  # the same on every rank: each reads the same earlier record
        if rank == 0:
            logger.warning(line)
    mine = rank_share(plan.todo(), rank, world)
    stopped: Interrupted | None = None
    try:
        results = run_cases(segmenter, [plan.cases[i] for i in mine], settings) if mine else []
        logger.info(f"rank {rank}: {sum(1 for r in results if not r.error)} of {len(mine)} case(s) segmented")
    except Interrupted as stop:
        results, stopped = stop.results, stop
    entries = [(i, case_entry(r)) for i, r in zip(mine, results)]
    if rank != 0:
        from app.io.atomic import atomic_write_text

        atomic_write_text(exchange / f"rank{rank}.json", json.dumps(entries, default=str))
    else:
        computed, stopped = _gather_entries(dict(entries), world, exchange, stopped)
        todo = set(plan.todo())
        write_run_record(plan, segmenter, settings, [computed.get(i) or case_entry(CaseResult(c.case_id, error=INTERRUPTED) if i in todo else c.result())
                                                     for i, c in enumerate(plan.cases)], info, nproc=world)
    if stopped is not None:
        raise stopped


def _gather_entries(entries: dict[int, dict[str, Any]], world: int, exchange: Path, stopped: Interrupted | None,
                    wait_s: float = 15.0) -> tuple[dict[int, dict[str, Any]], Interrupted | None]:
    """Rank 0: ``entries`` (case entries by plan index) with those of ranks 1..``world``-1 read from
    ``exchange/rank<r>.json`` as they come; after a stop (``stopped``, or a signal while waiting)
    for at most ``wait_s`` seconds more. Returns the merged entries and the stop, if any."""
    pending = set(range(1, world))
    deadline = time.monotonic() + wait_s if stopped is not None else None
    while pending and (deadline is None or time.monotonic() < deadline):
        try:
            for r in sorted(pending):
                part = exchange / f"rank{r}.json"
                if part.is_file():
                    entries.update((int(i), e) for i, e in json.loads(part.read_text()))
                    pending.discard(r)
            if pending:
                time.sleep(0.2)
        except KeyboardInterrupt as stop:  # stopped while waiting for the others: they record theirs within wait_s
            stopped = Interrupted([], signal_name(stop))
            deadline = time.monotonic() + wait_s
    if pending:
        logger.warning(f"rank(s) {', '.join(map(str, sorted(pending)))} recorded nothing within {wait_s:.0f} s of the stop: their cases are recorded as interrupted")
    return entries, stopped


def rank_share(items: Sequence[T], rank: int, world: int) -> list[T]:
    """Rank ``rank`` of ``world``'s share of ``items``: ``items[rank]``, ``items[rank + world]``, ...

    The split of :func:`monai.data.partition_dataset` with ``shuffle=False, even_divisible=False``
    (and of ``monai.data.DistributedSampler`` so configured): no item twice, none left out. MONAI's
    function raises a ``RuntimeError`` where there are fewer items than ranks, which is what
    resuming a nearly finished cohort gives; here a rank may get none.

    Raises:
        ValueError: ``world`` < 1, or ``rank`` outside ``[0, world)``.

    Example:
        >>> rank_share(["a", "b", "c"], 1, 2), rank_share(["a"], 1, 2)
        (['b'], [])
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} of world size {world}: the rank must be in [0, {world})")
    return list(items[rank::world])


def pending_items(datalist: list[dict[str, Any]], output_dir: str | Path, overwrite: bool = False) -> list[dict[str, Any]]:
    """The items of a bundle datalist whose label map is not yet in ``output_dir`` (all with
    ``overwrite``): what the bundle's ``multi_gpu_inference.yaml`` overlay segments, so an
    interrupted cohort resumes. Output names as :class:`app.transforms.SaveLabelMapd` writes them.

    Args:
        datalist: items ``{"image": [t1, t1ce, t2, flair]}`` (None for a missing sequence) or
            ``{"image": path}``.
        output_dir: the workflow's output folder.
        overwrite: keep every item.

    Returns:
        The items to segment, in order.

    Example:
        >>> pending_items([{"image": "ct_1.nii.gz"}], "/nonexistent")
        [{'image': 'ct_1.nii.gz'}]
    """
    from app.data.cases import case_id_from_path
    from app.io.writers import output_suffix

    if overwrite:
        return list(datalist)
    todo = []
    for item in datalist:
        source = next(p for p in item["image"] if p is not None) if isinstance(item["image"], (list, tuple)) else item["image"]
        if not (Path(output_dir) / f"{case_id_from_path(source)}_seg{output_suffix(source)}").is_file():
            todo.append(item)
    return todo


def main(argv: list[str] | None = None) -> None:
    """Rank entry point: ``python -m app.inference.distributed PLAN.json`` under ``torchrun``."""
    args = sys.argv[1:] if argv is None else argv
    payload = json.loads(Path(args[0]).read_text())
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=payload.get("log_level", logging.INFO), format=f"%(levelname)s rank{rank} %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=FutureWarning)  # as the volseg CLI does
    settings = payload["settings"]
    exchange = Path(args[0]).parent
    (exchange / f"pid{rank}").write_text(str(os.getpid()))  # for the parent's stop signal (segment_distributed)
    try:
        with stop_signals_interrupt():  # the parent (volseg segment) passes a stop on as SIGINT or SIGTERM; torchrun as SIGTERM
            run_rank(BatchPlan.from_json(payload["plan"]), SegmentSettings(**{**settings, "sequences": tuple(settings["sequences"]) if settings["sequences"] else None}),
                     payload["info"], exchange=exchange)
    except KeyboardInterrupt as stop:  # recorded by run_rank; the parent says what was written. Exit 0: no torchrun error report
        logging.getLogger(__name__).warning(f"rank {rank}: stopped ({signal_name(stop)})")


if __name__ == "__main__":
    main()
