"""Fold ensembles with mirroring TTA, and compact float16 weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet

from app.inference import MirrorEnsemble, ensemble_members, load_weights, mirrorings, save_compact


def _net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return UNet(3, 4, 3, channels=(8, 16, 32), strides=(2, 2), num_res_units=1).eval()


def test_mirrorings_are_every_subset_of_the_axes():
    assert mirrorings([0, 1, 2]) == [(), (2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)]
    assert mirrorings([]) == [()]
    with pytest.raises(ValueError, match="spatial axes"):
        mirrorings([3])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_ensemble_is_flip_equivariant(axis: int):
    """A mirrored input gives the mirrored output: the TTA averages over the whole flip group."""
    x = torch.randn(2, 4, 24, 32, 40)
    ensemble = MirrorEnsemble([_net(0), _net(1)], mirror_axes=(0, 1, 2), max_batch=4)
    with torch.no_grad():
        out, out_flipped = ensemble(x), ensemble(x.flip(axis + 2))
    assert out.shape == (2, 3, 24, 32, 40)
    assert torch.allclose(out.flip(axis + 2), out_flipped, atol=1e-4)
    plain = _net(0)
    with torch.no_grad():  # a single network is not: the test could fail
        assert not torch.allclose(plain(x).flip(axis + 2), plain(x.flip(axis + 2)), atol=1e-4)


def test_ensemble_averages_member_probabilities():
    x = torch.randn(1, 4, 16, 16, 16)
    a, b = _net(0), _net(1)
    with torch.no_grad():
        expected = (torch.sigmoid(a(x)) + torch.sigmoid(b(x))) / 2
        got = torch.sigmoid(MirrorEnsemble([a, b], mirror_axes=())(x))
    assert torch.allclose(got, expected, atol=1e-5)


def test_ensemble_labels_are_mirrored_on_a_phantom(tmp_path: Path):
    """Through a whole bundle config: a case mirrored left-right gets the mirrored label map."""
    from monai.inferers import SlidingWindowInferer

    x = torch.zeros(1, 4, 40, 48, 36)
    x[:, :, 5:18, 10:30, 8:20] = 2.0  # an off-centre bright blob
    inferer = SlidingWindowInferer(roi_size=(32, 32, 32), sw_batch_size=1, overlap=0.5, mode="gaussian")
    ensemble = MirrorEnsemble([_net(2)], mirror_axes=(0,))
    with torch.no_grad():
        label = (torch.sigmoid(inferer(x, ensemble)) > 0.5).numpy()
        label_flipped = (torch.sigmoid(inferer(x.flip(2), ensemble)) > 0.5).numpy()
    # Gaussian blending over windows placed from the low end is not itself symmetric, so compare
    # labels rather than bits: all but a handful of boundary voxels agree.
    assert np.mean(label[:, :, ::-1] == label_flipped) > 0.999


def test_compact_weights_load_as_float32_and_match(tmp_path: Path):
    net = _net(3)
    torch.save(net.state_dict(), tmp_path / "model.pt")
    save_compact(tmp_path / "model.pt", tmp_path / "fold0.pt")
    assert (tmp_path / "fold0.pt").stat().st_size < 0.6 * (tmp_path / "model.pt").stat().st_size
    assert all(v.dtype == torch.float16 for v in torch.load(tmp_path / "fold0.pt", weights_only=True).values() if torch.is_floating_point(v))
    loaded = load_weights(_net(4), tmp_path / "fold0.pt")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.randn(1, 4, 24, 32, 16)
    with torch.no_grad():
        ref, out = net(x), loaded(x)
    assert torch.allclose(ref, out, atol=2e-2)
    assert (torch.sigmoid(ref) > 0.5).eq(torch.sigmoid(out) > 0.5).float().mean() > 0.999


def test_members_name_a_missing_checkpoint(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="fold9.pt"):
        ensemble_members(_net(0), [tmp_path / "fold9.pt"])
    with pytest.raises(ValueError, match="at least one"):
        MirrorEnsemble([])


@pytest.mark.slow
def test_segment_accurate_mode_cli_and_api_agree(phantom_root: Path, tmp_path: Path):
    """`volseg segment --mode accurate` runs the shipped fold ensemble with mirroring, like the API."""
    import json

    import nibabel as nib
    from typer.testing import CliRunner

    from app import api
    from app.cli import app as cli

    case = phantom_root / "Phantom_002"
    result = CliRunner().invoke(cli, ["segment", str(case), "--output", str(tmp_path), "--mode", "accurate", "--backend", "torch", "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "volseg_run.json").read_text())
    assert record["mode"] == "accurate" and len(record["config"]["ensemble_ckpt_paths"]) == 5 and record["config"]["mirror_axes"] == []
    assert [Path(f).name for f in record["config"]["model_files"]] == [f"fold{k}.pt" for k in range(5)]
    assert record["n4_average"] is True
    assert "channels" not in record["n4_params"]  # accurate mode: accurate_n4_params, all four sequences
    written = nib.load(tmp_path / "Phantom_002_seg.nii.gz")
    label, affine = api.segment(case, device="cpu", backend="torch", mode="accurate")
    assert written.shape == label.shape == (40, 48, 36)
    np.testing.assert_array_equal(np.asarray(written.dataobj), label)
    bad = CliRunner().invoke(cli, ["segment", str(case), "--output", str(tmp_path), "--mode", "best"])
    assert bad.exit_code == 2 and "mode must be one of fast, accurate" in bad.output


def test_accurate_mode_of_a_bundle_without_fold_models_says_so():
    """brats_deeplab3d ships its fast model only: --mode accurate names the missing fold files and
    the way out, before any network is built."""
    from app.bundles import bundle_path
    from app.inference import Segmenter

    with pytest.raises(FileNotFoundError, match=r"no fold models for --mode accurate in '.*brats_deeplab3d.models' \(missing: fold0.pt, .*fold4.pt\); use --mode fast"):
        Segmenter("brats_deeplab3d", device="cpu", backend="torch", mode="accurate")
    with pytest.raises(FileNotFoundError, match="fold0.pt, .*fold4.pt"):  # the bundle workflow's path (mode_network) says the same
        ensemble_members(_net(0), [bundle_path("brats_deeplab3d") / "models" / f"fold{k}.pt" for k in range(5)])
    assert Segmenter("brats_deeplab3d", device="cpu", backend="torch", mode="fast").mode == "fast"
