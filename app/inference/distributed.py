"""``volseg segment --nproc N``: one batch of cases over N processes with ``torchrun``.

The MONAI Model Zoo's multi-GPU evaluation pattern (``configs/multi_gpu_evaluate.json`` of its
bundles: ``torchrun``, a ``DistributedSampler`` over the datalist, each rank writing its own
outputs) applied to ``volseg segment``: the parent process plans the batch
(:func:`app.inference.batch.plan_batch`: inputs, output folder, duplicates, outputs already
written) before any model loads, then ``torchrun --standalone --nproc_per_node=N`` starts N ranks
(NCCL and one GPU each on CUDA, gloo on CPU). Each rank segments its share of the cases to do
(:func:`monai.data.partition_dataset` with ``even_divisible=False``, the split
``monai.data.DistributedSampler`` makes: no case twice, none left out) with the same per-case
loop as a single process (:func:`app.inference.batch.run_cases`), writing its own label maps; the
ranks then gather their case records and rank 0 writes ``volseg_run.json`` in input order.

A run stopped part-way keeps every label map written (atomic writes); run again without
``--overwrite``, it skips them. For several nodes, run the bundle's ``multi_gpu_inference.yaml``
overlay with ``torchrun --nnodes`` (the command is in its header comment).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

from app.inference.batch import RUN_RECORD, BatchPlan, SegmentSettings, case_entry, earlier_entries, make_segmenter, run_batch, run_cases, stale_skips, write_run_record
from app.inference.segmenter import CaseResult

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
    """
    import torch

    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    earlier = earlier_entries(plan.output_dir)  # a skipped case may be segmented again (stale_skips, on the ranks)
    nproc = min(nproc, max(1, len(plan.todo()) + sum(1 for c in plan.cases if c.note and c.case_id in earlier)))
    cuda = _uses_cuda(settings.device)
    if cuda and nproc > torch.cuda.device_count():
        raise ValueError(f"--nproc {nproc} on CUDA needs {nproc} GPUs (one per process); this machine has {torch.cuda.device_count()}")
    if nproc == 1:
        return run_batch(plan, settings, info)
    env = dict(os.environ)
    if not cuda:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    with tempfile.TemporaryDirectory(prefix="volseg_nproc_") as tmp:
        plan_file = Path(tmp) / "plan.json"
        plan_file.write_text(json.dumps({"plan": plan.to_json(), "settings": asdict(settings), "info": info, "log_level": logging.getLogger().getEffectiveLevel()}))
        done = subprocess.run(launch_command(plan_file, nproc), env=env)
    if done.returncode != 0:
        raise RankError(f"segmentation on {nproc} processes failed (torchrun exit code {done.returncode}); "
                        f"label maps already written in {plan.output_dir} are kept, and a rerun without --overwrite skips them")
    record = json.loads((Path(plan.output_dir) / RUN_RECORD).read_text())
    return [CaseResult(c["case_id"], output=Path(c["output"]) if c["output"] else None, seconds=c["seconds"], error=c["error"], note=c.get("note"),
                       extra={k: v for k, v in c.items() if k not in ("case_id", "output", "seconds", "error", "note")})
            for c in record["cases"]]


def _uses_cuda(device: str | None) -> bool:
    import torch

    return torch.device(device).type == "cuda" if device else torch.cuda.is_available()


def run_rank(plan: BatchPlan, settings: SegmentSettings, info: dict[str, Any]) -> None:
    """One rank under ``torchrun``: segment this rank's share, then gather the case records on
    every rank, and rank 0 writes the run record in input order.

    Cases whose label the output folder already holds, made with other settings or without the
    uncertainty map asked for, are segmented again (:func:`app.inference.batch.stale_skips`, the
    same on every rank). The share is that of :func:`monai.data.partition_dataset` with
    ``even_divisible=False`` (rank ``r`` of ``N`` takes cases ``r, r + N, ...``), the split of
    ``monai.data.DistributedSampler(shuffle=False, even_divisible=False)``; a rank may have none.

    Args:
        plan: the batch the parent process planned (the same on every rank).
        settings: bundle, device and output settings.
        info: package versions for the run record.
    """
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = _uses_cuda(settings.device)
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        device = f"cuda:{local_rank}" if cuda else "cpu"
        segmenter = make_segmenter(settings, device)
        for line in stale_skips(plan, segmenter, settings):  # the same on every rank: each reads the same earlier record
            if rank == 0:
                logger.warning(line)
        mine = plan.todo()[rank::world]  # partition_dataset's split, which refuses fewer cases than ranks
        results = run_cases(segmenter, [plan.cases[i] for i in mine], settings) if mine else []
        logger.info(f"rank {rank}: {len(mine)} case(s) done")
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, [(i, case_entry(r)) for i, r in zip(mine, results)])
        if rank == 0:
            computed = dict(pair for part in gathered for pair in part)
            write_run_record(plan, segmenter, settings, [computed.get(i) or case_entry(c.result()) for i, c in enumerate(plan.cases)], info, nproc=world)
        dist.barrier()
    finally:
        dist.destroy_process_group()


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
    run_rank(BatchPlan.from_json(payload["plan"]), SegmentSettings(**{**settings, "sequences": tuple(settings["sequences"]) if settings["sequences"] else None}), payload["info"])


if __name__ == "__main__":
    main()
