"""Training killed with SIGKILL after its first checkpoint resumes from last.pt to the weights of a
run that was never stopped (issue 14, item 3)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from monai.engines import SupervisedTrainer

from app import api
from tests.conftest import REPO_ROOT

EPOCHS = 3
SMALL = {"network_def#channels": [8, 16, 32], "roi_size": [32, 32, 32], "batch_size": 1, "num_samples": 2,
         "max_epochs": EPOCHS, "val_interval": 2, "aug_spatial_prob": 0.5, "modality_dropout_prob": 0.5}
CHILD = """import json, sys
from app import api
api.train("brats_unet3d", sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), progress=False)
"""


def _kill_after_first_checkpoint(manifest: Path, root: Path, out: Path, timeout_s: float = 600.0) -> int:
    """Start the training in a child process, SIGKILL it once ``last.pt`` exists; the epoch it holds."""
    import json

    log = (out.parent / "killed.log").open("w")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(manifest), str(root), str(out), json.dumps(SMALL)],
                             cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while not (out / "last.pt").is_file() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)  # nothing where the child has already exited
    child.wait()
    log.close()
    assert (out / "last.pt").is_file(), (out.parent / "killed.log").read_text()[-3000:]
    trainer = torch.load(out / "last.pt", weights_only=True)["trainer"]  # ignite keeps the iteration, not the epoch
    return int(trainer["iteration"]) // int(trainer["epoch_length"])


@pytest.mark.slow
def test_sigkilled_training_resumes_to_the_uninterrupted_weights(phantom_root: Path, phantom_manifest: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch):
    reference = torch.load(api.train("brats_unet3d", phantom_manifest, phantom_root, tmp_path / "ref", SMALL, progress=False) / "last.pt",
                           weights_only=True)
    out = tmp_path / "killed"
    killed_at = _kill_after_first_checkpoint(phantom_manifest, phantom_root, out)
    assert 1 <= killed_at < EPOCHS, f"the child finished (epoch {killed_at}) before it could be killed"

    steps = []  # training iterations the resumed run computes: only those after the checkpoint
    step = SupervisedTrainer._iteration
    monkeypatch.setattr(SupervisedTrainer, "_iteration", lambda self, engine, batch: steps.append(engine.state.iteration) or step(self, engine, batch))
    api.train("brats_unet3d", phantom_manifest, phantom_root, out, SMALL, progress=False)
    resumed = torch.load(out / "last.pt", weights_only=True)
    per_epoch = reference["trainer"]["epoch_length"]
    assert steps == list(range(killed_at * per_epoch + 1, EPOCHS * per_epoch + 1))
    assert resumed["trainer"]["iteration"] == reference["trainer"]["iteration"] == EPOCHS * reference["trainer"]["epoch_length"]
    assert resumed["lr_scheduler"]["last_epoch"] == reference["lr_scheduler"]["last_epoch"]
    assert resumed["checkpointer"] == reference["checkpointer"]  # best score and epoch from the validation at epoch 2
    differing = [k for k in reference["model"] if not torch.equal(reference["model"][k], resumed["model"][k])]
    assert not differing, f"{len(differing)} of {len(reference['model'])} tensors differ from the uninterrupted run, e.g. {differing[:3]}"
    state = reference["optimizer"]["state"]
    assert all(torch.equal(state[i]["exp_avg"], resumed["optimizer"]["state"][i]["exp_avg"]) for i in state)
