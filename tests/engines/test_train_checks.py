"""What a researcher's own training runs hit: two processes, resumed runs, misspelt overrides, bad labels.

Synthetic CT phantoms (``ct_phantom_root``: 2 training, 2 validation cases) and the ct_unet3d
template, tiny settings (32^3 crops, one sample a step).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from app import api

RUN = {"max_epochs": 1, "val_interval": 2, "roi_size": [32, 32, 32], "batch_size": 1, "num_samples": 1, "spacing_mm": [3.0, 3.0, 4.0],
       "device": "$torch.device('cpu')"}


def test_two_process_training_runs_past_its_first_epoch(ct_phantom_root: Path, ct_phantom_manifest: Path, tmp_path: Path):
    """--nproc 2 hung after every first epoch: Ignite's DiskSaver asked ignite.distributed for the
    rank on rank 0 alone, which built a process group with a collective that rank 1 never joined."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "app.cli", "train", "--bundle", "ct_unet3d", "--manifest", str(ct_phantom_manifest), "--data-dir", str(ct_phantom_root),
           "--output-dir", str(out), "--max-epochs", "3", "--nproc", "2", "--quiet", "--set", "compile=false", "--set", "val_interval=2",
           "--set", "roi_size=[32,32,32]", "--set", "batch_size=1", "--set", "num_samples=1", "--set", "spacing_mm=[3.0,3.0,4.0]"]
    run = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=420, env={**os.environ, "VOLSEG_COMPILE": "0"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (out / "models" / "model.pt").is_file() and (out / "last.pt").is_file()
    command = json.loads((out / "run_info.json").read_text())["command"]
    assert command[command.index("--compile") + 1] == "False"  # MONAI's runner reads arguments with fire: "false" was the truthy text 'false'


def test_a_datalist_without_a_share_for_every_process_is_refused_before_torchrun(ct_phantom_manifest: Path, tmp_path: Path):
    content = json.loads(ct_phantom_manifest.read_text())
    one_validation = tmp_path / "one_val.json"
    one_validation.write_text(json.dumps({**content, "validation": content["validation"][:1]}))
    with pytest.raises(ValueError, match=r"has 1 validation case\(s\) for --nproc 2: each process validates on its own share, so give at least 2"):
        api.train_distributed("ct_unet3d", 2, one_validation, tmp_path, tmp_path / "run", {"max_epochs": 1})
    assert not (tmp_path / "run").exists()


def test_misspelt_keys_and_text_for_numbers_are_refused_before_the_run(ct_phantom_root: Path, ct_phantom_manifest: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="--set learning_rat: the bundle's configs have no key 'learning_rat'; did you mean learning_rate"):
        api.train("ct_unet3d", ct_phantom_manifest, ct_phantom_root, tmp_path / "a", {**RUN, "learning_rat": 0.001}, progress=False)
    with pytest.raises(ValueError, match=r"--set learning_rate=abc: the bundle's learning_rate is a number \(.*\); give a number"):
        api.train("ct_unet3d", ct_phantom_manifest, ct_phantom_root, tmp_path / "b", {**RUN, "learning_rate": "abc"}, progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    from app.bundle_config import bundle_parser
    from app.engines.preflight import check_overrides

    check_overrides(bundle_parser("ct_unet3d", "train"), {"loss#gamma": 0.0, "val_interval": "@max_epochs", "learning_rate": 1, "output_dir": "/x"})
    # brats_unet3d's learning_rate is "%_meta_#training#learning_rate": the check follows the reference to its number
    with pytest.raises(ValueError, match=r"--set learning_rate=abc: the bundle's learning_rate is a number \(0.01\); give a number"):
        check_overrides(bundle_parser("brats_unet3d", "train"), {"learning_rate": "abc"})
    check_overrides(bundle_parser("brats_unet3d", "train"), {"learning_rate": 0.003})


def test_a_label_off_its_image_grid_and_an_image_with_nan_stop_with_one_line(ct_phantom_root: Path, ct_phantom_manifest: Path, tmp_path: Path):
    root = tmp_path / "data"
    shutil.copytree(ct_phantom_root, root)
    item = json.loads(ct_phantom_manifest.read_text())["validation"][1]
    label = nib.load(root / item["label"])
    nib.save(nib.Nifti1Image(np.asarray(label.dataobj)[:30], label.affine), root / item["label"])  # 30 of 40 rows
    with pytest.raises(ValueError, match=r"label '.*' has 30 x 36 x 20 voxels, its image '.*' 40 x 36 x 20: a label must lie on its image's voxel grid"):
        api.train("ct_unet3d", ct_phantom_manifest, root, tmp_path / "grid", dict(RUN), progress=False)
    shutil.copy(ct_phantom_root / item["label"], root / item["label"])
    image_path = root / json.loads(ct_phantom_manifest.read_text())["training"][1]["image"]
    image = nib.load(image_path)
    values = np.asarray(image.dataobj).astype(np.float32)
    values[5, 5, 5] = np.nan
    nib.save(nib.Nifti1Image(values, image.affine), image_path)
    with pytest.raises(ValueError, match=rf"{image_path.name}.*NaN"):  # MONAI's "Failed to instantiate CacheDataset" had it 160 lines deep
        api.train("ct_unet3d", ct_phantom_manifest, root, tmp_path / "nan", dict(RUN), progress=False)


def test_a_resumed_run_says_what_it_does_not_apply_and_records_what_it_started_from(ct_phantom_root: Path, ct_phantom_manifest: Path,
                                                                                   tmp_path: Path, capsys: pytest.CaptureFixture):
    """A rerun into a folder with last.pt resumed it silently while run_info and metadata named the
    new --init-from as the weights it started from."""
    first = api.train("ct_unet3d", ct_phantom_manifest, ct_phantom_root, tmp_path / "first", dict(RUN), progress=False)
    progress = json.loads((first / "progress.json").read_text())  # what volseg serve's train_stats shows
    assert progress["epoch"] == 1 and progress["total_epochs"] == 1 and progress["key_metric"] == "val_mean_dice"
    tuned = api.train("ct_unet3d", ct_phantom_manifest, ct_phantom_root, tmp_path / "tuned", dict(RUN), progress=False, init_from=first)
    started = json.loads((tuned / "run_info.json").read_text())["init_from"]
    assert started == str(first / "models" / "model.pt")
    capsys.readouterr()
    api.train("ct_unet3d", ct_phantom_manifest, ct_phantom_root, tuned, {**RUN, "max_epochs": 2, "learning_rate": 0.001}, progress=False,
              init_from=tuned / "last.pt")
    [warning] = [line for line in capsys.readouterr().out.splitlines() if "resuming the run" in line]  # the bundle's logging.conf: stdout
    assert "WARNING" in warning and "--init-from is not applied, a new --set learning_rate is not applied" in warning
    assert json.loads((tuned / "run_info.json").read_text())["init_from"] == started
    # a finished run, rerun: said so, not resumed; with fewer epochs than it trained: one line, not MONAI's traceback
    api.train("ct_unet3d", ct_phantom_manifest, ct_phantom_root, tuned, {**RUN, "max_epochs": 2}, progress=False)
    out = capsys.readouterr().out
    assert f"the run in {tuned} has finished (2 of 2 epochs): nothing is trained" in out and "resuming the run" not in out
    with pytest.raises(ValueError, match=f"the run in {tuned} has trained 2 epochs, more than max_epochs 1: give --max-epochs above 2"):
        api.train("ct_unet3d", ct_phantom_manifest, ct_phantom_root, tuned, dict(RUN), progress=False)


def test_init_from_a_missing_file_or_another_network_is_one_clear_line(ct_phantom_root: Path, ct_phantom_manifest: Path, tmp_path: Path):
    from app.bundles import bundle_path

    with pytest.raises(FileNotFoundError, match="--init-from 'nosuch.pt': no such checkpoint file or bundle folder, nor a shipped bundle"):
        api.train("ct_unet3d", ct_phantom_manifest, ct_phantom_root, tmp_path / "a", dict(RUN), progress=False, init_from="nosuch.pt")
    brats = bundle_path("brats_unet3d") / "models" / "model.pt"  # 4 input channels and 3 regions, not the CT template's 1 and 2
    with pytest.raises(ValueError, match=r"weights '.*model.pt' do not fit this network: \d+ tensor\(s\) missing, \d+ unexpected, \d+ of another shape"):
        api.train("ct_unet3d", ct_phantom_manifest, ct_phantom_root, tmp_path / "b", dict(RUN), progress=False, init_from=brats)


def test_an_interrupted_or_failed_training_command_ends_with_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from typer.testing import CliRunner

    import app.api
    from app.cli import app as cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    def rank_failed(*args, **kwargs):
        raise subprocess.CalledProcessError(1, ["torchrun"])

    def interrupted_while_saving(*args, **kwargs):  # Ctrl-C inside torch.save, as MONAI's runner wraps it
        try:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 619712 vs 619604")
        except RuntimeError as err:
            raise RuntimeError("Failed to evaluate ConfigExpression: \"$__local_refs['train::trainer'].run()\"") from err

    monkeypatch.setattr(app.api, "train", interrupted)
    result = CliRunner().invoke(cli, ["train", "--bundle", "ct_unet3d", "--output-dir", str(tmp_path / "r"), "--quiet"])
    assert result.exit_code == 130 and f"interrupted before its first epoch finished: no last.pt in {tmp_path / 'r'} yet" in result.output
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "last.pt").write_bytes(b"")
    result = CliRunner().invoke(cli, ["train", "--bundle", "ct_unet3d", "--output-dir", str(tmp_path / "r"), "--quiet"])
    assert result.exit_code == 130 and f"interrupted; the same command resumes from {tmp_path / 'r'}/last.pt" in result.output
    monkeypatch.setattr(app.api, "train", interrupted_while_saving)
    result = CliRunner().invoke(cli, ["train", "--bundle", "ct_unet3d", "--output-dir", str(tmp_path / "r"), "--quiet"])
    assert result.exit_code == 130 and f"interrupted; the same command resumes from {tmp_path / 'r'}/last.pt" in result.output
    monkeypatch.setattr(app.api, "train", interrupted)
    result = CliRunner().invoke(cli, ["cv", "train", "--bundle", "ct_unet3d", "--output-dir", str(tmp_path / "cv"), "--quiet"])
    assert result.exit_code == 130 and f"interrupted; the same command resumes fold 0 from {tmp_path / 'cv' / 'fold0'}/last.pt" in result.output
    monkeypatch.setattr(app.api, "train_distributed", rank_failed)
    result = CliRunner().invoke(cli, ["train", "--bundle", "ct_unet3d", "--nproc", "2", "--quiet"])
    assert result.exit_code == 2 and "a training process failed (exit status 1); its error is above" in result.output


class _Datalists:
    """The two keys of a run's parser that :func:`app.engines.preflight.check_label_grids` reads."""

    def __init__(self, items: list[dict]) -> None:
        self.items = {"train_datalist": items}

    def __contains__(self, key: str) -> bool:
        return key in self.items

    def get_parsed_content(self, key: str) -> list[dict]:
        return self.items[key]


def test_a_label_of_the_same_voxel_count_on_another_grid_is_refused(tmp_path: Path):
    """Same 40 x 36 x 20 voxels, other spacing or a shifted origin: it trained misaligned without a
    word. The same grid stored in another axis order or direction passes."""
    from app.engines.preflight import check_label_grids

    affine = np.diag([1.0, 0.9, 1.5, 1.0])
    affine[:3, 3] = (-20.0, 10.0, 5.0)
    values = np.zeros((40, 36, 20), np.uint8)
    values[10:20, 10:20, 5:10] = 1
    nib.save(nib.Nifti1Image(values.astype(np.float32), affine), tmp_path / "image.nii.gz")
    shifted, coarse = affine.copy(), affine.copy()
    shifted[0, 3] += 20.0
    coarse[:3, :3] *= 1.5
    nib.save(nib.Nifti1Image(values, shifted), tmp_path / "shifted.nii.gz")
    nib.save(nib.Nifti1Image(values, coarse), tmp_path / "coarse.nii.gz")
    flipped = affine @ np.array([[-1, 0, 0, 39], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)  # x stored the other way
    nib.save(nib.Nifti1Image(values[::-1].copy(), flipped), tmp_path / "flipped.nii.gz")
    swapped = affine[:, [1, 0, 2, 3]]  # axes 0 and 1 stored in the other order
    nib.save(nib.Nifti1Image(values.transpose(1, 0, 2).copy(), swapped), tmp_path / "swapped.nii.gz")
    image = str(tmp_path / "image.nii.gz")
    for name in ("shifted", "coarse"):
        with pytest.raises(ValueError, match=rf"label '.*{name}.nii.gz' \(.*\) is not on the voxel grid of its image '.*image.nii.gz' .*40 x 36 x 20 voxels"):
            check_label_grids(_Datalists([{"image": [image], "label": str(tmp_path / f"{name}.nii.gz")}]))
    check_label_grids(_Datalists([{"image": [image], "label": str(tmp_path / n)} for n in ("image.nii.gz", "flipped.nii.gz", "swapped.nii.gz")]))
    mirrored = affine.copy()
    mirrored[0, 0] = -1.0  # x negated, origin kept: the first voxels agree, so the message shows the last ones
    nib.save(nib.Nifti1Image(values, mirrored), tmp_path / "mirrored.nii.gz")
    with pytest.raises(ValueError, match=r"mirrored.nii.gz' \(1 x 0.9 x 1.5 mm voxels, first voxel at \(20.0, -10.0, 5.0\) mm, last at \(59.0, -41.5, 33.5\) mm\)"
                                         r" is not on the voxel grid of its image .*\(1 x 0.9 x 1.5 mm voxels, first voxel at \(20.0, -10.0, 5.0\) mm, "
                                         r"last at \(-19.0, -41.5, 33.5\) mm\)"):
        check_label_grids(_Datalists([{"image": [image], "label": str(tmp_path / "mirrored.nii.gz")}]))


def test_a_brats_reference_with_a_value_that_is_no_brats_code_is_refused(phantom_root: Path, phantom_manifest: Path, tmp_path: Path):
    """Edema recoded as 5 in one training label trained as background without a word
    (ConvertToMultiChannelBasedOnBratsClassesd knows 1, 2 and 4); 3 (BraTS 2023+ ET) is taken."""
    root = tmp_path / "data"
    shutil.copytree(phantom_root, root)
    items = json.loads(phantom_manifest.read_text())["training"]
    path = root / items[-1]["label"]
    label = nib.load(path)
    values = np.asarray(label.dataobj).copy()
    assert (values == 2).any()
    values[values == 2] = 5
    nib.save(nib.Nifti1Image(values, label.affine), path)
    small = {"network_def#channels": [8, 16, 32], "roi_size": [32, 32, 32], "sw_batch_size": 2, "batch_size": 1, "num_samples": 1, "max_epochs": 1}
    with pytest.raises(ValueError, match=rf"label '.*{path.name}' has the value\(s\) 5, which are no label of this task \(allowed: 0, 1, 2, 3, 4\)"):
        api.train("brats_unet3d", phantom_manifest, root, tmp_path / "run", small, progress=False)

    from app.transforms import CheckLabelValuesd

    checked = CheckLabelValuesd("label", allowed=[0, 1, 2, 3, 4])({"label": np.array([[0, 1, 2, 3, 4]])})
    assert checked["label"].tolist() == [[0, 1, 2, 3, 4]]


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_run_records(ct_phantom_root: Path, ct_phantom_manifest: Path, tmp_path: Path):
    """--set roi_size=abc passes the override check (roi_size is a reference in the configs) and
    fails when the run starts: run_config.json and run_info.json of a run that never was stayed."""
    with pytest.raises(ValueError, match="roi_size must be three positive whole numbers of voxels"):
        api.train("ct_unet3d", ct_phantom_manifest, ct_phantom_root, tmp_path / "new", {**RUN, "roi_size": "abc"}, progress=False)
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("the user's")
    with pytest.raises(ValueError, match="roi_size must be"):
        api.train("ct_unet3d", ct_phantom_manifest, ct_phantom_root, kept, {**RUN, "roi_size": "abc"}, progress=False)
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]  # a folder that was there stays, with what it held


@pytest.mark.parametrize("stop", [KeyboardInterrupt, ValueError])
def test_ctrl_c_in_a_training_step_is_not_logged_as_an_error_and_leaves_no_run(stop: type[BaseException], ct_phantom_root: Path,
                                                                              ct_phantom_manifest: Path, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch):
    """Ctrl-C in the first step printed Ignite's "Engine run is terminating due to exception" and
    StatsHandler's "Exception:" with a 70-line torch traceback before volseg train's one line; and the
    run's tensorboard folder kept a folder of no epoch. Any other error is still logged in full."""
    import logging

    from monai.engines import SupervisedTrainer

    def step(self, engine, batch):
        raise stop("a step that stops")

    printed: list[str] = []  # what passed the handlers' filters to the console (logging.conf's and StatsHandler's own StreamHandlers)
    monkeypatch.setattr(logging.StreamHandler, "emit", lambda self, record: printed.append(record.getMessage() + (" +traceback" if record.exc_info else "")))
    monkeypatch.setattr(SupervisedTrainer, "_iteration", step)
    with pytest.raises(stop):
        api.train("ct_unet3d", ct_phantom_manifest, ct_phantom_root, tmp_path / "run", {**RUN, "compile": False}, progress=False)
    assert not (tmp_path / "run").exists()  # no checkpoint yet: no records, no tensorboard events, no folder
    assert any(line.startswith("Engine run resuming from iteration 0") for line in printed)  # the engines' other records still print
    errors = [line for line in printed if "terminating due to exception" in line or line.startswith("Exception:")]
    if stop is KeyboardInterrupt:
        assert errors == []
    else:
        assert "Engine run is terminating due to exception: a step that stops" in errors and "Exception: a step that stops +traceback" in errors


def test_quiet_interrupt_logs_drops_only_errors_of_an_interruption():
    import logging

    from app.errors import quiet_interrupt_logs

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    log = logging.getLogger("volseg.test.quiet")
    log.addHandler(handler)
    log.propagate = False
    try:
        with quiet_interrupt_logs():
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                log.error("terminating")  # Ignite's line: no exc_info, logged while it is handled
                log.warning("a warning passes")
            try:
                raise ValueError("bad")
            except ValueError:
                log.exception("a real error passes")
            log.error("interrupted, in exc_info", exc_info=(KeyboardInterrupt, KeyboardInterrupt(), None))
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            log.error("after the block, as before")
    finally:
        log.removeHandler(handler)
    assert records == ["a warning passes", "a real error passes", "after the block, as before"]
    assert not handler.filters


def test_an_interrupted_cli_leaves_at_once_while_worker_threads_run(monkeypatch: pytest.MonkeyPatch):
    """Ctrl-C while CacheDataset's thread pool was inside N4 ended in "terminate called without an
    active exception" (exit 134) after the message: the entry point now leaves with os._exit(130)."""
    import threading

    import app.cli

    exits: list[int] = []
    monkeypatch.setattr(app.cli, "_exit_now", exits.append)
    busy = threading.Event()
    worker = threading.Thread(target=busy.wait, daemon=True)
    worker.start()
    try:
        for code, expected in ((130, [130]), (143, [143]), (2, []), (0, [])):
            exits.clear()
            monkeypatch.setattr(app.cli, "app", lambda code=code: sys.exit(code))
            with pytest.raises(SystemExit):  # the patched _exit_now returns, so the exit goes on as before
                app.cli.main()
            assert exits == expected
    finally:
        busy.set()
        worker.join()


def _run_folder(folder: Path, epoch: int | None, total: int = 60, bundle: bool = False) -> None:
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"best so far")
    if epoch is not None:
        (folder / "last.pt").write_bytes(b"resumable")
        (folder / "progress.json").write_text(json.dumps({"epoch": epoch, "total_epochs": total}))
    if bundle:
        (folder / "models").mkdir()
        (folder / "models" / "model.pt").write_bytes(b"final")


def test_a_fold_interrupted_after_a_validation_is_not_taken_as_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """model.pt (the best validation so far) is written at each validation: `volseg cv train` took a
    fold interrupted at epoch 7 of 60 as finished, and `volseg cv evaluate` scored it without a word."""
    from typer.testing import CliRunner

    import app.api
    from app.cli import app as cli
    from app.engines.checkpoint import unfinished_run

    _run_folder(tmp_path / "cv" / "fold0", 60, bundle=True)
    _run_folder(tmp_path / "cv" / "fold1", 7)
    _run_folder(tmp_path / "cv" / "fold2", None)  # weights put there by hand: no run's records to judge by
    assert [unfinished_run(tmp_path / "cv" / f"fold{k}") for k in range(4)] == [None, "stopped at epoch 7 of 60", None, None]
    trained: list[int] = []
    monkeypatch.setattr(app.api, "train", lambda *args, fold, **kwargs: trained.append(fold))
    result = CliRunner().invoke(cli, ["cv", "train", "--bundle", "ct_unet3d", "--output-dir", str(tmp_path / "cv"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert trained == [1, 3, 4]  # brats2018_cv5: 5 folds; 0 finished, 2 has weights and no run
    for k in (1, 3, 4):
        _run_folder(tmp_path / "done" / f"fold{k}", 60, bundle=True)
    for k in (0, 2):
        _run_folder(tmp_path / "done" / f"fold{k}", 30, total=30)
    trained.clear()
    result = CliRunner().invoke(cli, ["cv", "train", "--bundle", "ct_unet3d", "--output-dir", str(tmp_path / "done"), "--quiet"])
    assert result.exit_code == 0 and trained == [] and "every fold's run in" in result.output and "has finished (5 folds): nothing to train" in result.output


def test_cv_evaluate_finds_every_folds_weights_before_any_case_and_names_a_stopped_fold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                                   caplog: pytest.LogCaptureFixture):
    import app.inference
    from app.evaluation.cv import cross_validate
    from app.bundles import manifest_path

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(app.inference, "Segmenter", no_model)
    _run_folder(tmp_path / "cv" / "fold0", 7)
    with pytest.raises(FileNotFoundError, match=r"no weights for fold 1 in"):
        cross_validate("brats_unet3d", manifest_path("brats2018_cv5"), tmp_path / "cv", tmp_path / "out", data_dir=tmp_path, folds=[0, 1])
    with pytest.raises(FileNotFoundError, match=r"name files that do not exist"):  # the data are checked next, after the word on fold 0
        cross_validate("brats_unet3d", manifest_path("brats2018_cv5"), tmp_path / "cv", tmp_path / "out", data_dir=tmp_path, folds=[0])
    assert "fold 0: the run in" in caplog.text and "stopped at epoch 7 of 60 (progress.json)" in caplog.text


def test_a_bundle_folder_or_another_networks_run_is_refused_as_output_dir(ct_phantom_root: Path, ct_phantom_manifest: Path, phantom_root: Path,
                                                                          phantom_manifest: Path, tmp_path: Path):
    """--output-dir set to the bundle being trained replaced its weights and metadata without a word;
    a folder holding another bundle's run had its run_info.json and run_config.json overwritten,
    and the run then stopped on a 380-line "size mismatch" traceback."""
    from app.bundles import bundle_dir

    bundle = shutil.copytree(bundle_dir("ct_unet3d"), tmp_path / "my_ct", ignore=shutil.ignore_patterns("runs", "__pycache__"))
    before = {p.relative_to(bundle): p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=r"--output-dir '.*my_ct' is a bundle folder \(configs/metadata.json\), not a training run to resume"):
        api.train(str(bundle), ct_phantom_manifest, ct_phantom_root, bundle, {**RUN, "compile": False}, progress=False)
    assert {p.relative_to(bundle): p.read_bytes() for p in bundle.rglob("*") if p.is_file()} == before
    (tmp_path / "a_file").write_text("notes")
    with pytest.raises(ValueError, match=r"--output-dir '.*a_file' is a file, not a folder"):
        api.train("ct_unet3d", ct_phantom_manifest, ct_phantom_root, tmp_path / "a_file", {**RUN, "compile": False}, progress=False)
    run = api.train("ct_unet3d", ct_phantom_manifest, ct_phantom_root, tmp_path / "ct_run", {**RUN, "compile": False}, progress=False)
    records = {name: (run / name).read_bytes() for name in ("run_info.json", "run_config.json", "last.pt")}
    small = {"network_def#channels": [8, 16, 32], "roi_size": [32, 32, 32], "batch_size": 1, "num_samples": 1, "max_epochs": 2, "val_interval": 10,
             "compile": False}
    with pytest.raises(ValueError, match=r"holds a run of another network \(bundle 'ct_unet3d', its run_info.json\): its last.pt has "
                                         r"model\.0\.conv\.unit0\.conv\.weight \[16, 1, 3, 3, 3\], where brats_unet3d's network has \[8, 4, 3, 3, 3\]"):
        api.train("brats_unet3d", phantom_manifest, phantom_root, run, small, progress=False)
    assert {name: (run / name).read_bytes() for name in records} == records


def test_sigterm_stops_training_with_its_own_line_and_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """SIGTERM (timeout, a batch scheduler) ended volseg train with status 143 and no word."""
    import signal

    from typer.testing import CliRunner

    import app.api
    from app.cli import app as cli

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # the handler of the CLI's block raises it here
        raise AssertionError("SIGTERM did not stop the run")

    monkeypatch.setattr(app.api, "train", terminated)
    result = CliRunner().invoke(cli, ["train", "--bundle", "ct_unet3d", "--output-dir", str(tmp_path / "r"), "--quiet"])
    assert result.exit_code == 143 and f"terminated (SIGTERM) before its first epoch finished: no last.pt in {tmp_path / 'r'} yet" in result.output
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # Python's handlers are back after the run


def test_a_resumed_run_says_so_under_monai_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    """`python -m monai.bundle run --config_file configs/train.yaml --learning_rate 0.5` on a folder
    with a last.pt resumed with the saved optimizer and schedule, and did not say that the new rate
    was not applied (volseg train says it before the run)."""
    import logging

    import torch
    from ignite.engine import Engine

    import app.errors
    from app.engines.checkpoint import AtomicCheckpointer

    (tmp_path / "last.pt").write_bytes(b"")
    net = torch.nn.Linear(1, 1)
    with caplog.at_level(logging.WARNING):
        AtomicCheckpointer(tmp_path, {"model": net}, net).attach(Engine(lambda engine, batch: None))
        assert "resuming the run" not in caplog.text
        monkeypatch.setattr(app.errors, "under_monai_bundle", lambda: True)
        AtomicCheckpointer(tmp_path, {"model": net}, net).attach(Engine(lambda engine, batch: None))
        AtomicCheckpointer(tmp_path / "new", {"model": net}, net).attach(Engine(lambda engine, batch: None))  # nothing to resume: no word
    assert caplog.text.count("resuming the run") == 1
    assert f"resuming the run in {tmp_path} from its last.pt" in caplog.text and "a new --learning_rate is not applied" in caplog.text
