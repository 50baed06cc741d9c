"""Start-up of one ``volseg segment`` call: wall time of the process less the case's own seconds.

Start-up here is Python, torch, MONAI and OpenVINO imports, the bundle, the OpenVINO model from its
cache, the run record and the exit; the wall time of the whole call is printed beside it.

Runs the CLI in fresh processes on one case, alternating the packages marked absent at start-up
(``app.cli.SEGMENT_SKIPPED_IMPORTS``, the shipped list) with a shorter list or none, and prints a
table: start-up (wall less ``seconds`` of the case in ``volseg_run.json``), the case's seconds, and
whether the label maps are identical. Alternating pairs share the machine's drift, so compare the
rows of one table.

Example:
    python benchmarks/startup.py --pairs 8
    python benchmarks/startup.py --pairs 4 --compare ignite,sklearn,matplotlib,scipy.signal
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

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

#: runs the CLI with exactly the packages of $STARTUP_SKIP marked absent (VOLSEG_FULL_IMPORT=1 turns the CLI's own list off)
_CHILD = """
import os, sys
for name in filter(None, os.environ["STARTUP_SKIP"].split(",")):
    sys.modules[name] = None
from app.cli import app
sys.argv = ["volseg", *sys.argv[1:]]
try:
    app()
except SystemExit as err:
    code = err.code or 0
else:
    code = 0
import gc
gc.freeze()
sys.stdout.flush()
os._exit(code)
"""


def one_call(case: Path, out: Path, skip: list[str]) -> tuple[float, float, bytes]:
    """(wall s, case s, label bytes) of one ``volseg segment CASE --output OUT`` process."""
    env = {**os.environ, "STARTUP_SKIP": ",".join(skip), "VOLSEG_FULL_IMPORT": "1"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", _CHILD, "segment", str(case), "--output", str(out), "--overwrite", "--quiet"],
                   check=True, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    record = json.loads((out / "volseg_run.json").read_text())
    [entry] = record["cases"]
    return wall, float(entry["seconds"]), Path(entry["output"]).read_bytes()


def main() -> None:
    from app.cli import SEGMENT_SKIPPED_IMPORTS
    from app.data import default_brats_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", type=Path, default=default_brats_dir() / "Brats18_CBICA_AME_1", help="case folder")
    parser.add_argument("--pairs", type=int, default=6, help="alternating pairs of processes")
    parser.add_argument("--compare", default="ignite,sklearn,matplotlib,scipy.signal",
                        help="comma-separated packages to mark absent in the other row ('' for none)")
    args = parser.parse_args()
    rows = {"shipped: " + ",".join(SEGMENT_SKIPPED_IMPORTS): list(SEGMENT_SKIPPED_IMPORTS),
            "compared: " + (args.compare or "none"): [n for n in args.compare.split(",") if n]}
    results: dict[str, list[tuple[float, float, bytes]]] = {name: [] for name in rows}
    with tempfile.TemporaryDirectory() as tmp:
        one_call(args.case, Path(tmp) / "warm", list(SEGMENT_SKIPPED_IMPORTS))  # disk cache, OpenVINO cache
        for _ in range(args.pairs):
            for name, skip in rows.items():
                results[name].append(one_call(args.case, Path(tmp) / "out", skip))
    labels = {r[2] for runs in results.values() for r in runs}
    print(f"case {args.case.name}, {args.pairs} alternating pairs; label maps identical: {len(labels) == 1}")
    print("| packages marked absent | wall s, mean | start-up s, mean | start-up s, min-max | case s, mean |")
    print("| --- | --- | --- | --- | --- |")
    for name, runs in results.items():
        startup = [wall - case for wall, case, _ in runs]
        print(f"| {name} | {statistics.mean(wall for wall, _, _ in runs):.2f} | {statistics.mean(startup):.2f} | "
              f"{min(startup):.2f}-{max(startup):.2f} | {statistics.mean(case for _, case, _ in runs):.2f} |")


if __name__ == "__main__":
    main()
