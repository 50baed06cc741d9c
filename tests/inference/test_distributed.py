"""`volseg segment --nproc N` and the bundle's multi_gpu_inference overlay (issue 14, item 6): two
gloo processes on CPU write the labels and run record of one process, each case once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from app import api
from app.bundles import bundle_dir
from app.inference.distributed import pending_items, rank_share


@pytest.fixture()
def three_cases(phantom_copies: list[Path]) -> list[Path]:
    return phantom_copies


def _voxels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(path)
    return np.asarray(img.dataobj), img.affine


def test_pending_items_skips_cases_whose_label_is_written(three_cases: list[Path], tmp_path: Path):
    items = [{"image": [str(c / f"{c.name}_{s}.nii.gz") for s in ("t1", "t1ce", "t2", "flair")]} for c in three_cases]
    items[2]["image"][0] = None  # a case without T1: named from its first present sequence
    out = tmp_path / "out"
    out.mkdir()
    (out / "Phantom_001_seg.nii.gz").write_bytes(b"written")
    assert pending_items(items, out) == [items[0], items[2]]
    assert pending_items(items, out, overwrite=True) == items


def test_rank_share_is_partition_datasets_split_and_allows_an_empty_share():
    from monai.data import partition_dataset

    items = list(range(7))
    assert [rank_share(items, r, 3) for r in range(3)] == partition_dataset(items, num_partitions=3, shuffle=False, even_divisible=False)
    assert [rank_share(items[:1], r, 2) for r in range(2)] == [[0], []]  # partition_dataset raises here
    assert rank_share([], 0, 4) == []
    with pytest.raises(ValueError, match=r"rank 2 of world size 2: the rank must be in \[0, 2\)"):
        rank_share(items, 2, 2)


def test_two_gloo_processes_write_what_one_process_writes(three_cases: list[Path], tmp_path: Path):
    flair = three_cases[1] / "Phantom_001_flair.nii.gz"
    flair.write_bytes(flair.read_bytes()[: flair.stat().st_size // 2])  # a failing case in the middle: rank 1's only case
    one = api.segment_cases(three_cases, tmp_path / "one", device="cpu")
    two = api.segment_cases(three_cases, tmp_path / "two", device="cpu", nproc=2)
    assert [(r.case_id, r.error is None) for r in two] == [(r.case_id, r.error is None) for r in one] == \
        [("Phantom_000", True), ("Phantom_001", False), ("Phantom_002", True)]
    for case in ("Phantom_000", "Phantom_002"):
        (a, affine_a), (b, affine_b) = _voxels(tmp_path / "one" / f"{case}_seg.nii.gz"), _voxels(tmp_path / "two" / f"{case}_seg.nii.gz")
        assert np.array_equal(a, b) and np.array_equal(affine_a, affine_b) and (a > 0).any()
    records = [json.loads((tmp_path / run / "volseg_run.json").read_text()) for run in ("one", "two")]
    assert [r["nproc"] for r in records] == [1, 2]
    keys = ("case_id", "note", "missing_sequences")
    cases = [[({k: c.get(k) for k in keys}, Path(c["output"]).name if c["output"] else None, c["error"] is None) for c in r["cases"]] for r in records]
    assert cases[0] == cases[1]
    assert "is truncated" in records[1]["cases"][1]["error"]


def test_bundle_overlay_on_two_gloo_processes_resumes_and_writes_each_case_once(three_cases: list[Path], tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "Phantom_000_seg.nii.gz").write_bytes(b"written before")  # skipped: not read, not rewritten
    root = bundle_dir("brats_unet3d")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run",
           "--config_file", "['configs/inference.yaml','configs/multi_gpu_inference.yaml']",
           "--dataset_dir", str(three_cases[0].parent), "--output_dir", str(out), "--device", "$torch.device('cpu')"]
    done = subprocess.run(cmd, cwd=root, capture_output=True, encoding="utf-8", errors="replace", env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "Phantom_000_seg.nii.gz").read_bytes() == b"written before"
    assert sorted(p.name for p in out.iterdir()) == ["Phantom_000_seg.nii.gz", "Phantom_001_seg.nii.gz", "Phantom_002_seg.nii.gz"]
    reference = api.segment_cases(three_cases[1:], tmp_path / "one", device="cpu")
    for result in reference:
        (a, affine_a), (b, affine_b) = _voxels(result.output), _voxels(out / result.output.name)
        assert np.array_equal(affine_a, affine_b) and (a > 0).any()
        assert np.array_equal(a, b), f"{result.case_id}: {(a != b).sum()} voxels differ from volseg segment"
    # one case left to do on two ranks: rank 1's share is empty, and it ends without error or a second write
    (out / "Phantom_002_seg.nii.gz").unlink()
    kept = {name: (out / name).stat().st_mtime_ns for name in ("Phantom_000_seg.nii.gz", "Phantom_001_seg.nii.gz")}
    again = subprocess.run(cmd, cwd=root, capture_output=True, encoding="utf-8", errors="replace", env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert again.returncode == 0, again.stderr[-3000:]
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept
    assert np.array_equal(_voxels(out / "Phantom_002_seg.nii.gz")[0], _voxels(tmp_path / "one" / "Phantom_002_seg.nii.gz")[0])


def test_two_gloo_processes_segment_again_a_written_case_that_lacks_what_the_run_asks_for(three_cases: list[Path], tmp_path: Path):
    """A rerun into the same folder skips a written case, unless it was made with other settings or
    lacks the uncertainty map now asked for: with --nproc as in one process."""
    out = tmp_path / "out"
    api.segment_cases(three_cases[:2], out, device="cpu", overwrite=False)
    assert not list(out.glob("*_uncertainty.nii.gz"))
    again = api.segment_cases(three_cases, out, device="cpu", nproc=2, uncertainty=True, overwrite=False)
    assert [(r.case_id, r.error, r.note) for r in again] == [(f"Phantom_00{i}", None, None) for i in range(3)]  # none skipped
    record = json.loads((out / "volseg_run.json").read_text())
    assert record["nproc"] == 2 and all(Path(c["uncertainty"]).is_file() for c in record["cases"])
    skipped = api.segment_cases(three_cases, out, device="cpu", nproc=2, uncertainty=True, overwrite=False)
    assert all(r.note and r.note.startswith("skipped") for r in skipped)  # now they have everything asked for


def test_fewer_processes_than_asked_are_said_in_the_record(three_cases: list[Path], tmp_path: Path):
    """--nproc 3 with one case to do ran one process and recorded "nproc": 1 without a word."""
    api.segment_cases(three_cases[:1], tmp_path, device="cpu", backend="torch", nproc=3)
    record = json.loads((tmp_path / "volseg_run.json").read_text())
    assert record["nproc"] == 1 and "--nproc 3: 1 process(es) started, no more than the cases to segment" in record["notes"]
