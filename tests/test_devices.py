"""--device: a device this machine cannot run on fails in one line, before anything loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from app.cli import app as cli
from app.devices import check_device

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def test_known_devices_pass_and_unknown_ones_fail():
    check_device(None)
    check_device("cpu")
    with pytest.raises(ValueError, match="'tpu' is not a device"):
        check_device("tpu")


@NO_CUDA
@pytest.mark.parametrize("command", [["segment", "missing_case"], ["train", "--max-epochs", "1"], ["demo"], ["serve"]])
def test_cuda_without_cuda_is_one_line(command: list[str], tmp_path: Path):
    result = CliRunner().invoke(cli, [*command, "--device", "cuda", *(["-o", str(tmp_path)] if command[0] == "segment" else [])])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "CUDA is not available" in lines[0] and "--device cpu" in lines[0], result.output
    assert not list(tmp_path.iterdir())  # nothing written


@NO_CUDA
def test_segmenter_refuses_cuda_before_building_the_network():
    from app.inference import Segmenter

    with pytest.raises(ValueError, match="CUDA is not available"):
        Segmenter("brats_unet3d", device="cuda")
