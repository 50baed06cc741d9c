"""Training a bundle on the datastore's labelled studies in a separate process group.

The child runs in its own session (``start_new_session=True``), so stopping it signals the
whole group (data-loader workers included) and a Ctrl-C of the server does not reach it. Its
state (pid, process start time, run) is kept in ``<runs_dir>/state.json``: a server restarted
after a crash finds a run that is still going, reports it, refuses to start a second one and
can stop it. A small wrapper records the exit status in ``<run>/exit_status`` so that even a run
adopted from an earlier server reports DONE or FAILED honestly.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from app.io.atomic import atomic_write_text
from app.serve.datastore import Datastore
from app.serve.errors import DatastoreError

logger = logging.getLogger(__name__)

#: Runs ``argv[2:]``, writes its exit status to ``argv[1]`` atomically and exits with it. SIGTERM
#: (sent to the whole group) is left to the child, which the wrapper outlives to record its status.
_WRAPPER = (
    "import os, signal, subprocess, sys\n"
    "signal.signal(signal.SIGTERM, lambda *_: None)\n"
    "rc = subprocess.call(sys.argv[2:])\n"
    "open(sys.argv[1] + '.part', 'w').write(str(rc))\n"
    "os.replace(sys.argv[1] + '.part', sys.argv[1])\n"
    "sys.exit(rc if rc >= 0 else 128 - rc)\n"
)
STATE_FILE = "state.json"


def process_start_time(pid: int) -> str | None:
    """The start time of a live (not zombie) process, from ``/proc/<pid>/stat``; None when it is gone.

    The start time tells a process from a later one that reuses its pid. Where there is no
    ``/proc``, ``"unknown"`` is returned for any pid that exists.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").is_file():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "unknown"
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...; starttime is field 22
    return None if fields[0] in ("Z", "X") else fields[19]


class TrainingRunner:
    """Runs ``volseg train`` on the studies with a ``final`` label; one run at a time.

    Args:
        store: the datastore.
        runs_dir: where datalists, logs and checkpoints of runs go, and ``state.json``.
        device: passed to ``volseg train --device``.
        stop_timeout_s: seconds a run is given to exit after SIGTERM before SIGKILL.

    Example:
        >>> runner = TrainingRunner(Datastore("volseg_store"), Path("volseg_store/train"))  # doctest: +SKIP
        >>> runner.start("brats_unet3d", {"max_epochs": 1})["status"]  # doctest: +SKIP
        'RUNNING'
    """

    def __init__(self, store: Datastore, runs_dir: Path, device: str | None = None, stop_timeout_s: float = 30.0) -> None:
        self.store, self.runs_dir, self.device, self.stop_timeout_s = store, Path(runs_dir).absolute(), device, stop_timeout_s
        self._proc: subprocess.Popen | None = None
        self._pid: int | None = None  # leader of the running group: ours (_proc) or adopted from an earlier server
        self._start_time: str | None = None
        self._run: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._adopt()

    @property
    def state_file(self) -> Path:
        return self.runs_dir / STATE_FILE

    def _save_state(self) -> None:
        state = {"pid": self._pid, "start_time": self._start_time, "run": self._run}
        atomic_write_text(self.state_file, json.dumps(state, indent=2))

    def _adopt(self) -> None:
        """Take over the record, and the process if it still runs, of an earlier server's run."""
        if not self.state_file.is_file():
            return
        try:
            state = json.loads(self.state_file.read_text())
            run, pid, start_time = dict(state["run"]), state["pid"], state["start_time"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            logger.warning(f"ignoring unreadable training state '{self.state_file}': {err}")
            return
        self._run = run
        if run.get("status") == "RUNNING":
            if pid is not None and start_time is not None and process_start_time(int(pid)) == start_time:
                self._pid, self._start_time = int(pid), start_time
                logger.warning(f"training run '{run.get('id')}' (pid {pid}) of an earlier server is still running; DELETE /train/ stops it")
            else:
                self._finish()

    def _alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self._pid is not None and self._start_time is not None and process_start_time(self._pid) == self._start_time

    def _finish(self, status: str | None = None) -> None:
        """Record the end of the run: ``status``, or DONE/FAILED from the wrapper's exit status."""
        if status is None:
            exit_file = Path(self._run.get("output_dir", "")) / "exit_status"
            code = exit_file.read_text().strip() if exit_file.is_file() else None
            status = "DONE" if code == "0" else "FAILED"
            self._run["exit_status"] = int(code) if code and code.lstrip("-").isdigit() else None
        self._run["status"] = status
        self._run["end_ts"] = int(time.time())
        self._proc, self._pid, self._start_time = None, None, None
        self._save_state()

    def _poll(self) -> None:
        if self._pid is not None and not self._alive():
            self._finish()

    def status(self) -> dict[str, Any]:
        """``{"status": "NONE" | "RUNNING" | "DONE" | "FAILED" | "STOPPED", ...}`` of the last run."""
        with self._lock:
            self._poll()
            if not self._run:
                return {"status": "NONE"}
            log = Path(self._run["log"])
            tail = log.read_text(errors="replace").splitlines()[-20:] if log.is_file() else []
            return {**self._run, "pid": self._pid, "details": tail}

    def stats(self) -> dict[str, Any]:
        """The short form of :meth:`status` shown in ``/info/`` (MONAI Label's ``train_stats``):
        id, model, status, start time, and, once the run has finished an epoch, ``epoch``,
        ``total_epochs``, ``best_metric`` (validation mean Dice) and ``best_metric_epoch`` from its
        ``progress.json``, and ``total_time`` in seconds."""
        with self._lock:
            self._poll()
            stats = {k: self._run[k] for k in ("id", "model", "status", "start_ts") if k in self._run}
            progress = Path(self._run.get("output_dir", "")) / "progress.json"
            if self._run and progress.is_file():
                try:
                    stats.update({k: v for k, v in json.loads(progress.read_text()).items()
                                  if k in ("epoch", "total_epochs", "best_metric", "best_metric_epoch")})
                except (OSError, ValueError, AttributeError):
                    pass  # being replaced: the next request reads it
            if "start_ts" in stats:
                stats["total_time"] = int(self._run.get("end_ts", time.time()) - stats["start_ts"])
            return stats

    def finished_bundle(self) -> Path | None:
        """The output folder of the last run if it ended DONE (a bundle folder to serve), else None."""
        with self._lock:
            self._poll()
            if self._run.get("status") != "DONE" or not self._run.get("output_dir"):
                return None
            return Path(self._run["output_dir"])

    def _command(self, bundle: str, manifest: Path, out: Path, max_epochs: int) -> list[str]:
        cmd = [sys.executable, "-m", "app.cli", "train", "--bundle", bundle, "--manifest", str(manifest), "--data-dir", "/",
               "--output-dir", str(out), "--quiet", "--max-epochs", str(max_epochs)]
        return cmd + (["--device", self.device] if self.device else [])

    def start(self, bundle: str, params: dict[str, Any]) -> dict[str, Any]:
        """Start a run; ``params`` may set ``max_epochs``.

        Raises:
            DatastoreError: 409 while a run is going (also one started by an earlier server),
                400 without labelled studies or for a bad ``max_epochs``.
        """
        with self._lock:
            self._poll()
            if self._pid is not None:
                raise DatastoreError(f"training run '{self._run.get('id')}' (pid {self._pid}) is already running; stop it first (DELETE /train/)", 409)
            try:
                max_epochs = int(params.get("max_epochs", 50))
            except (TypeError, ValueError) as err:
                raise DatastoreError(f"max_epochs must be an integer, got {params.get('max_epochs')!r}") from err
            items = self.store.training_items()
            if not items:
                raise DatastoreError("no study has a 'final' label yet: submit labels before training")
            run_id = time.strftime("%Y%m%d-%H%M%S")
            name = Path(bundle).name
            out = self.runs_dir / name / f"{name}_{run_id}"  # a bundle folder's runs go under its name; served under the run folder's name
            datalist = {"training": items[:-1] or items, "validation": items[-1:], "test": []}
            manifest = atomic_write_text(out / "datalist.json", json.dumps(datalist, indent=2))
            cmd = [sys.executable, "-c", _WRAPPER, str(out / "exit_status"), *self._command(bundle, manifest, out, max_epochs)]
            log = out / "train.log"
            with open(log, "w") as f:
                self._proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            self._pid, self._start_time = self._proc.pid, process_start_time(self._proc.pid)
            self._run = {"id": run_id, "model": bundle, "status": "RUNNING", "start_ts": int(time.time()), "output_dir": str(out), "log": str(log)}
            self._save_state()
            return self.status()

    def _wait(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _signal_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self._pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self) -> dict[str, Any]:
        """Stop the running run, ours or an earlier server's: SIGTERM to its process group, SIGKILL after ``stop_timeout_s``.

        Its ``last.pt`` lets ``volseg train`` resume it later.
        """
        with self._lock:
            self._poll()
            if self._pid is not None:
                self._signal_group(signal.SIGTERM)
                if not self._wait(self.stop_timeout_s):
                    logger.warning(f"training run '{self._run.get('id')}' ignored SIGTERM for {self.stop_timeout_s:.0f} s; killing it")
                self._signal_group(signal.SIGKILL)  # also whatever the group left behind
                self._wait(5.0)
                self._finish("STOPPED")
            return self.status()

    def shutdown(self) -> None:
        """Stop a running run when the server stops (FastAPI lifespan)."""
        with self._lock:
            if self._pid is not None and self._alive():
                logger.warning(f"server stopping: stopping training run '{self._run.get('id')}'")
                self.stop()
