"""Side-by-side table of the BraTS bundles, measured in one run: parameters, Dice per region on the
validation and test splits, seconds per case of `volseg segment`, peak memory of inference.

For each bundle and backend, one `volseg segment` call (a subprocess, so its peak resident memory
is its own: `ru_maxrss` of that child from `os.wait4`) segments the validation and test cases of the shared
manifest; seconds per case are the command's own per-case times (read, segment, write;
`volseg_run.json`) and the whole call's wall time is given too. Dice is scored by `volseg
evaluate`'s code on the label maps in the input geometry. Prints a Markdown table. Measures only.

    python benchmarks/compare_bundles.py --backends torch openvino
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    from app.api import evaluate
    from app.bundles import REPO_ROOT
    from app.data import default_brats_dir
    from app.inference import Segmenter

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", nargs="+", default=["brats_unet3d", "brats_deeplab3d"])
    parser.add_argument("--backends", nargs="+", default=["torch", "openvino"])
    parser.add_argument("--data-dir", type=Path, default=default_brats_dir())
    args = parser.parse_args()
    manifest_path = REPO_ROOT / "data_manifests" / "brats2018_shared.json"
    manifest = json.loads(manifest_path.read_text())
    splits = ("validation", "test")
    cases = [args.data_dir / item["case_id"] for split in splits for item in manifest[split]]
    volseg = Path(sys.executable).parent / "volseg"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for bundle in args.bundles:
            params = sum(p.numel() for p in Segmenter(bundle, device="cpu", backend="torch").network.parameters())
            for backend in args.backends:
                out = Path(tmp) / f"{bundle}_{backend}"
                start = time.perf_counter()
                log = Path(tmp) / f"{bundle}_{backend}.log"
                with log.open("w") as sink:  # a file, not a pipe: a chatty child cannot block on a full pipe
                    proc = subprocess.Popen([str(volseg), "segment", *map(str, cases), "--output", str(out), "--bundle", bundle, "--backend", backend,
                                             "--device", "cpu", "--quiet"], stdout=sink, stderr=subprocess.STDOUT)
                    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS (KiB)
                wall = time.perf_counter() - start
                if status != 0:
                    sys.exit(f"volseg segment failed for {bundle} / {backend}: {log.read_text()[-2000:]}")
                peak = usage.ru_maxrss
                record = json.loads((out / "volseg_run.json").read_text())
                seconds = [c["seconds"] for c in record["cases"]]
                dice = {split: next(row for row in evaluate(out, manifest_path, args.data_dir, [split]) if row["case"] == "mean") for split in splits}
                dice = {split: {r: dice[split][f"{r}_dice"] for r in ("TC", "WT", "ET")} for split in splits}
                rows.append((bundle, backend, params, dice, seconds, wall, peak / 1024))
    print(f"{len(cases)} cases ({', '.join(f'{len(manifest[s])} {s}' for s in splits)}), one `volseg segment` call per row")
    print("| bundle | backend | parameters | val TC | val WT | val ET | test TC | test WT | test ET | s/case (median, min-max) | wall s (call) | peak RSS MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for bundle, backend, params, dice, seconds, wall, peak in rows:
        d = " | ".join(f"{dice[s][r]:.3f}" for s in splits for r in ("TC", "WT", "ET"))
        print(f"| {bundle} | {backend} | {params:,} | {d} | {statistics.median(seconds):.2f} ({min(seconds):.2f}-{max(seconds):.2f}) | {wall:.1f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
