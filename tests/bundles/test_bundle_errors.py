"""``python -m monai.bundle run`` on a bad input or setting: the traceback ends with the cause
(:mod:`app.bundle_errors`), not with MONAI's "Failed to evaluate ConfigExpression" wrapper."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app import bundle_errors
from app.bundle_errors import cause_line
from app.errors import CasesFailedError, InputError
from tests.bundles.test_standalone import copy_bundle


def wrapped(message: str, cause: BaseException) -> RuntimeError:
    try:
        raise RuntimeError(message) from cause
    except RuntimeError as err:
        return err


def test_the_cause_line_names_the_error_inside_each_monai_wrapper():
    line = cause_line(wrapped("Failed to evaluate ConfigExpression: ('$app.data.inference_datalist(...)')",
                              FileNotFoundError("dataset_dir '/nope' does not exist or is not a folder")))
    assert line == ("error: FileNotFoundError: dataset_dir '/nope' does not exist or is not a folder "
                    "(the cause of MONAI's \"Failed to evaluate ConfigExpression\" above)")
    inner = wrapped("applying transform <LoadImaged>", InputError("case 'x': 'x_t1.nii.gz' is not a 3D volume\n(shape (2, 2))"))
    line = cause_line(wrapped("Failed to instantiate {'_target_': 'Dataset'}", inner))
    assert line == ("error: InputError: case 'x': 'x_t1.nii.gz' is not a 3D volume (shape (2, 2)) "
                    "(the cause of MONAI's \"Failed to instantiate\" above)")
    skipped = CasesFailedError("1 of 2 case(s) failed and were skipped; the other 1 were segmented and written. Failed: B: InputError: ...")
    line = cause_line(wrapped("Failed to evaluate ConfigExpression: \"$__local_refs['dataset'].raise_failures()\"", skipped))
    assert line == ("error: CasesFailedError: 1 of 2 case(s) failed and were skipped; the other 1 were segmented and written. Failed: B: InputError: ... "
                    "(the cause of MONAI's \"Failed to evaluate ConfigExpression\" above)")


@pytest.mark.parametrize("err", [RuntimeError("Failed to evaluate ConfigExpression"),  # no cause to name
                                 wrapped("Failed to evaluate ConfigExpression", KeyError("x")),  # not an input error
                                 wrapped("CUDA out of memory", ValueError("x")),  # not a MONAI wrapper
                                 ValueError("roi_size must be ...")])  # already the last line
def test_no_cause_line_where_the_traceback_already_ends_with_the_error(err: BaseException):
    assert cause_line(err) is None


def test_the_hook_prints_the_traceback_then_the_cause_and_is_installed_once(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    shown: list[BaseException] = []
    monkeypatch.setattr(sys, "excepthook", lambda t, e, tb: shown.append(e))
    assert not bundle_errors.under_monai_bundle()  # pytest: importing the module installed nothing
    assert bundle_errors.install() and bundle_errors.install()
    err = wrapped("Failed to evaluate ConfigExpression", FileNotFoundError("no 'x.nii.gz'"))
    sys.excepthook(type(err), err, err.__traceback__)
    assert shown == [err]  # the previous hook ran once: one traceback, the chain installed once
    assert capsys.readouterr().err.splitlines() == ["error: FileNotFoundError: no 'x.nii.gz' (the cause of MONAI's \"Failed to evaluate ConfigExpression\" above)"]


def test_monai_bundle_run_on_a_missing_dataset_dir_ends_with_the_cause(tmp_path: Path):
    """A copied bundle, run as its README says, with a --dataset_dir that does not exist."""
    bundle = copy_bundle("brats_unet3d", tmp_path)
    done = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml",
                           "--dataset_dir", str(tmp_path / "nope"), "--output_dir", str(tmp_path / "out")],
                          cwd=bundle, capture_output=True, encoding="utf-8", errors="replace", timeout=300)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last == (f"error: FileNotFoundError: dataset_dir '{tmp_path / 'nope'}' does not exist or is not a folder "
                    "(the cause of MONAI's \"Failed to evaluate ConfigExpression\" above)"), done.stderr[-2000:]
    assert "Traceback" in done.stderr  # nothing hidden: MONAI's traceback comes first
    assert not (tmp_path / "out").exists()


def test_ctrl_c_under_monai_bundle_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """Ctrl-C in `python -m monai.bundle run` ended in a bare KeyboardInterrupt traceback, with no word
    on what it left (volseg train says that the same command resumes from last.pt)."""
    shown: list[BaseException] = []
    monkeypatch.setattr(sys, "excepthook", lambda t, e, tb: shown.append(e))
    bundle_errors.install()
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 619712 vs 619604")  # Ctrl-C inside torch.save
    except RuntimeError as err:
        wrapped_stop = err
    for err in (KeyboardInterrupt(), wrapped_stop):
        sys.excepthook(type(err), err, err.__traceback__)
    assert shown == []  # no traceback
    assert capsys.readouterr().err.splitlines() == [bundle_errors.INTERRUPTED] * 2
    assert "resumes from the last.pt in its output_dir" in bundle_errors.INTERRUPTED
    assert not bundle_errors.interrupted(ValueError("x"))
