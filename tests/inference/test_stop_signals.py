"""SIGTERM (`timeout`, `kill`, a batch scheduler) stops `volseg segment` as Ctrl-C does, with one
process or with `--nproc`: the cases written are kept and named in the run record, and no rank is
left running."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


#: Run in a fresh interpreter: a signal sent to the test process itself reaches whatever native
#: threads earlier tests left in it.
_HANDLER_CHECK = """
import os, signal, time
from app.inference.batch import Terminated, stop_signals_interrupt

before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
try:
    with stop_signals_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises here, in the main thread
    raise SystemExit("no Terminated")
except Terminated:
    pass
with stop_signals_interrupt():
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
        raise SystemExit("no KeyboardInterrupt")
    except Terminated:
        raise SystemExit("SIGINT raised Terminated")
    except KeyboardInterrupt:
        pass
    os.kill(os.getpid(), signal.SIGTERM)  # after the first stop, ignored: the run record is being written
    time.sleep(0.2)
assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
print("handlers ok")
"""


def test_sigterm_raises_terminated_once_and_the_handlers_come_back():
    done = subprocess.run([sys.executable, "-c", _HANDLER_CHECK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "handlers ok", done.stderr[-2000:]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_nproc_batch_records_its_written_cases_and_leaves_no_rank_running(phantom_root: Path, tmp_path: Path, signum: int):
    """--nproc 2: Ctrl-C printed a traceback a rank and no run record; a signal to the parent alone
    left both ranks running, and they went on writing labels after it said it had stopped."""
    data = tmp_path / "data"
    for i in range(16):
        shutil.copytree(phantom_root / f"Phantom_{i % 5:03d}", data / f"Case_{i:03d}")
        for f in (data / f"Case_{i:03d}").iterdir():
            f.rename(f.with_name(f.name.replace(f"Phantom_{i % 5:03d}", f"Case_{i:03d}")))
    out = tmp_path / "out"
    cli = Path(sys.executable).with_name("volseg")
    run = subprocess.Popen([str(cli), "segment", str(data), "--output", str(out), "--nproc", "2", "--device", "cpu", "--backend", "torch", "--quiet"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list(out.glob("*_seg.nii.gz")) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    run.send_signal(signum)
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == (143 if signum == signal.SIGTERM else 130), stderr[-3000:]
    assert "case(s) written in" in stderr and "Traceback" not in stderr, stderr[-3000:]
    written = sorted(p.name for p in out.glob("*_seg.nii.gz"))
    time.sleep(3)
    assert sorted(p.name for p in out.glob("*_seg.nii.gz")) == written  # no rank goes on after the parent has ended
    record = json.loads((out / "volseg_run.json").read_text())
    assert record["nproc"] == 2 and len(record["cases"]) == 16
    done = sorted(Path(c["output"]).name for c in record["cases"] if c["error"] is None)
    assert done == written and 0 < len(written) < 16
    assert all(c["error"].startswith("interrupted (Ctrl-C or SIGTERM)") for c in record["cases"] if c["error"] is not None)
    assert all(f"{Path(name).name.removesuffix('_seg.nii.gz')}: " in stdout for name in written)
