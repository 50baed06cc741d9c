"""Training a bundle on the datastore's labelled studies in a separate process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from app.io.atomic import atomic_write_text
from app.serve.datastore import Datastore, DatastoreError


class TrainingRunner:
    """Runs ``volseg train`` on the studies with a ``final`` label; one run at a time.

    Args:
        store: the datastore.
        runs_dir: where datalists, logs and checkpoints of runs go.
        device: passed to ``volseg train --device``.
    """

    def __init__(self, store: Datastore, runs_dir: Path, device: str | None = None) -> None:
        self.store, self.runs_dir, self.device = store, Path(runs_dir), device
        self._proc: subprocess.Popen | None = None
        self._run: dict[str, Any] = {}

    def _poll(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._run["status"] = "DONE" if self._proc.returncode == 0 else "FAILED"
            self._run["end_ts"] = int(time.time())
            self._proc = None

    def status(self) -> dict[str, Any]:
        """``{"status": "NONE" | "RUNNING" | "DONE" | "FAILED" | "STOPPED", ...}`` of the last run."""
        self._poll()
        if not self._run:
            return {"status": "NONE"}
        log = Path(self._run["log"])
        tail = log.read_text(errors="replace").splitlines()[-20:] if log.is_file() else []
        return {**self._run, "details": tail}

    def stats(self) -> dict[str, Any]:
        self._poll()
        return {k: self._run[k] for k in ("id", "model", "status", "start_ts") if k in self._run}

    def start(self, bundle: str, params: dict[str, Any]) -> dict[str, Any]:
        """Start a run; ``params`` may set ``max_epochs``.

        Raises:
            DatastoreError: 409 while a run is going, 400 without labelled studies.
        """
        self._poll()
        if self._proc is not None:
            raise DatastoreError("a training run is already running; stop it first (DELETE /train/)", 409)
        items = self.store.training_items()
        if not items:
            raise DatastoreError("no study has a 'final' label yet: submit labels before training")
        run_id = time.strftime("%Y%m%d-%H%M%S")
        out = self.runs_dir / bundle / run_id
        datalist = {"training": items[:-1] or items, "validation": items[-1:], "test": []}
        manifest = atomic_write_text(out / "datalist.json", json.dumps(datalist, indent=2))
        cmd = [sys.executable, "-m", "app.cli", "train", "--bundle", bundle, "--manifest", str(manifest), "--data-dir", "/",
               "--output-dir", str(out), "--quiet", "--max-epochs", str(int(params.get("max_epochs", 50)))]
        if self.device:
            cmd += ["--device", self.device]
        log = out / "train.log"
        with open(log, "w") as f:
            self._proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        self._run = {"id": run_id, "model": bundle, "status": "RUNNING", "start_ts": int(time.time()), "output_dir": str(out), "log": str(log)}
        return self.status()

    def stop(self) -> dict[str, Any]:
        """Stop a running run (its ``last.pt`` lets ``volseg train`` resume it later)."""
        self._poll()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
            self._run["status"] = "STOPPED"
        return self.status()
