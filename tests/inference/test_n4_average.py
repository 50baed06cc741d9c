"""``--n4`` / ``n4_average``: N4 bias-field correction before the model; ``n4_combine`` "n4"
segments the corrected case only, "average" also the case as given and averages the two sigmoid
probabilities. Phantom cases and the shipped brats_unet3d weights."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from app.cli import app as cli
from app.inference import Segmenter
from app.transforms import N4BiasCorrection
from tests.conftest import case_files


def test_n4_leaves_a_missing_sequence_and_the_background_at_zero():
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in (24, 28, 20)], indexing="ij")
    brain = (grid[0] ** 2 + grid[1] ** 2 + grid[2] ** 2) < 0.7
    present = np.where(brain, 100.0 * np.exp(0.3 * grid[0]), 0.0)
    image = torch.from_numpy(np.stack([present, np.zeros_like(present)])).float()
    out = N4BiasCorrection(shrink_factor=2, iterations=(10,))(image)
    assert out.shape == image.shape and out.dtype == torch.float32
    assert torch.count_nonzero(out[1]) == 0  # the zero-filled sequence: no fit, still zero
    assert torch.count_nonzero(out[0][torch.from_numpy(~brain)]) == 0 and bool((out[0][torch.from_numpy(brain)] > 0).all())
    assert not torch.equal(out[0], image[0])  # the present one was corrected


def test_n4_channels_corrects_only_the_named_channels():
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in (24, 28, 20)], indexing="ij")
    brain = (grid[0] ** 2 + grid[1] ** 2 + grid[2] ** 2) < 0.7
    biased = np.where(brain, 100.0 * np.exp(0.3 * grid[0]), 0.0)
    image = torch.from_numpy(np.stack([biased, 2 * biased, 3 * biased])).float()
    every = N4BiasCorrection(shrink_factor=2, iterations=(10,), num_threads=1)(image)
    some = N4BiasCorrection(shrink_factor=2, iterations=(10,), num_threads=1, channels=[2, 0])(image)
    assert torch.equal(some[1], image[1])  # not named: as given
    assert torch.allclose(some[0], every[0]) and torch.allclose(some[2], every[2])  # named: as when every channel is fitted
    assert not torch.equal(some[0], image[0])
    with pytest.raises(ValueError, match=r"distinct indices >= 0.*\[1, 1\]"):
        N4BiasCorrection(channels=[1, 1])
    with pytest.raises(ValueError, match="distinct indices >= 0"):
        N4BiasCorrection(channels=[-1])
    with pytest.raises(IndexError, match=r"channels \[3\] name a channel past the input's 3"):
        N4BiasCorrection(shrink_factor=2, iterations=(2,), channels=[3])(image)


def test_n4_on_the_foreground_box_matches_the_whole_volume_fit():
    """``crop_foreground``: the fit on the bounding box of the brain corrects the same smooth
    field as the fit on the whole volume (to a few percent inside the brain), and leaves the
    voxels outside the box as they were."""
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in (40, 48, 36)], indexing="ij")
    brain = ((grid[0] / 0.6) ** 2 + (grid[1] / 0.7) ** 2 + (grid[2] / 0.6) ** 2) < 1
    truth = np.where(brain, 100.0 + 20.0 * (grid[1] > 0.2), 0.0)
    biased = torch.from_numpy((truth * np.exp(0.4 * grid[0] - 0.3 * grid[2]))[None]).float()
    whole = N4BiasCorrection(shrink_factor=2, iterations=(20, 20))(biased)[0].numpy()
    boxed = N4BiasCorrection(shrink_factor=2, iterations=(20, 20), crop_foreground=True)(biased)[0].numpy()
    inside = truth > 0
    def cv(x):  # coefficient of variation inside the brain's bright and dark parts
        return max(np.std(x[inside & m]) / np.mean(x[inside & m]) for m in (grid[1] > 0.2, grid[1] <= 0.2))
    assert cv(boxed) < 0.5 * cv(biased[0].numpy()) and cv(whole) < 0.5 * cv(biased[0].numpy())
    ratio = boxed[inside] / whole[inside]
    assert np.std(np.log(ratio)) < 0.03  # the field itself varies by a log-sd of about 0.12 inside the brain
    assert np.count_nonzero(boxed[~inside]) == 0
    with pytest.raises(ValueError, match="shrink_factor"):
        N4BiasCorrection(shrink_factor=0)
    with pytest.raises(ValueError, match="iterations"):
        N4BiasCorrection(iterations=())


def test_n4_threads_give_the_serial_result():
    """``num_threads``: the channels fitted in parallel threads give exactly the serial fits
    (each channel's fit is independent), a zero-filled channel still untouched; and a thread
    count below 1 is refused with its value named."""
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in (24, 28, 20)], indexing="ij")
    brain = (grid[0] ** 2 + grid[1] ** 2 + grid[2] ** 2) < 0.7
    channels = [np.where(brain, 100.0 * np.exp(a * grid[0] - b * grid[2]), 0.0) for a, b in ((0.3, 0.1), (-0.2, 0.3), (0.1, -0.4))]
    image = torch.from_numpy(np.stack([channels[0], np.zeros_like(channels[0]), channels[1], channels[2]])).float()
    given = image.clone()
    serial = N4BiasCorrection(shrink_factor=2, iterations=(10, 10), crop_foreground=True, num_threads=1)(image)
    threaded = N4BiasCorrection(shrink_factor=2, iterations=(10, 10), crop_foreground=True, num_threads=3)(image)
    assert torch.equal(image, given)  # the output is a new array: the input is not corrected in place
    assert torch.equal(serial, threaded)
    assert torch.count_nonzero(threaded[1]) == 0
    assert all(not torch.equal(threaded[c], image[c]) for c in (0, 2, 3))
    with pytest.raises(ValueError, match="num_threads >= 1.*got 0"):
        N4BiasCorrection(num_threads=0)


def test_n4_field_on_a_coarse_grid_and_mask_of_the_shrunk_copy_match_the_full_fit():
    """``field_spacing``: the log field evaluated every 2 voxels and interpolated gives the
    full-grid evaluation's output to 5e-3 (relative, inside the brain; the error falls with the
    square of spacing / volume size: 7e-4 at most at 4 voxels on a 140-voxel BraTS brain) on a
    volume whose axes are not multiples of the spacing; ``mask_shrunk``: the Otsu mask of the
    shrunk copy still flattens the field; background stays zero; a spacing below 1 is refused."""
    shape = (37, 42, 30)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    brain = ((grid[0] / 0.7) ** 2 + (grid[1] / 0.8) ** 2 + (grid[2] / 0.7) ** 2) < 1
    truth = np.where(brain, 100.0 + 20.0 * (grid[1] > 0.2), 0.0)
    biased = torch.from_numpy((truth * np.exp(0.4 * grid[0] - 0.3 * grid[2]))[None]).float()
    settings = dict(shrink_factor=2, iterations=(20, 20), crop_foreground=True)
    exact = N4BiasCorrection(**settings)(biased)[0].numpy()
    coarse = N4BiasCorrection(**settings, field_spacing=2)(biased)[0].numpy()
    shrunk_mask = N4BiasCorrection(**settings, field_spacing=4, mask_shrunk=True)(biased)[0].numpy()
    inside = truth > 0
    relative = np.abs(coarse[inside] - exact[inside]) / exact[inside]
    assert 0 < relative.max() < 5e-3 and relative.mean() < 1e-3  # interpolated, not the same evaluation, and close to it
    def cv(x):  # coefficient of variation inside the brain's bright and dark parts
        return max(np.std(x[inside & m]) / np.mean(x[inside & m]) for m in (grid[1] > 0.2, grid[1] <= 0.2))
    assert cv(shrunk_mask) < 0.5 * cv(biased[0].numpy()) and cv(coarse) < 0.5 * cv(biased[0].numpy())
    assert np.count_nonzero(coarse[~inside]) == 0 and np.count_nonzero(shrunk_mask[~inside]) == 0
    with pytest.raises(ValueError, match="field_spacing >= 1.*got 0"):
        N4BiasCorrection(field_spacing=0)


def test_identity_correction_gives_the_plain_label(phantom_root: Path, monkeypatch: pytest.MonkeyPatch):
    """With N4 replaced by the identity the two branches are the same case: the average of a
    probability with itself must give exactly the label of a plain run (the branches share the
    read, the crop and the inverse)."""
    files = case_files(phantom_root / "Phantom_002")
    plain, affine = Segmenter("brats_unet3d", device="cpu", backend="torch", n4=False).predict(files)
    assert len(np.unique(plain)) > 1  # a tumour to compare
    monkeypatch.setattr(N4BiasCorrection, "_fit", lambda self, array, *_: array.astype(np.float32))
    seg = Segmenter("brats_unet3d", device="cpu", backend="torch", n4=True, overrides={"n4_combine": "average"})
    data = seg.load(files)
    assert "image_n4" in data and data["image_n4"].shape == data["image"].shape
    torch.testing.assert_close(data["image_n4"].as_tensor(), data["image"].as_tensor())
    label, affine_n4 = seg.run(data)
    assert np.array_equal(label, plain) and np.allclose(affine_n4, affine)


def test_n4_only_segments_the_corrected_case(phantom_root: Path, monkeypatch: pytest.MonkeyPatch):
    """``n4_combine: n4``: one branch, the corrected one: its preprocessed image is the
    ``image_n4`` of the averaging mode and differs from the plain one (a non-linear stand-in for
    N4, which z-scoring cannot undo); with the identity as N4 the label is the plain run's."""
    files = case_files(phantom_root / "Phantom_002")
    monkeypatch.setattr(N4BiasCorrection, "_fit", lambda self, array, *_: np.sqrt(array).astype(np.float32))
    only = Segmenter("brats_unet3d", device="cpu", backend="torch", n4=True, overrides={"n4_combine": "n4"})
    assert only.n4_combine == "n4"
    data = only.load(files)
    averaged = Segmenter("brats_unet3d", device="cpu", backend="torch", n4=True, overrides={"n4_combine": "average"}).load(files)
    assert "image_n4" not in data
    torch.testing.assert_close(data["image"].as_tensor(), averaged["image_n4"].as_tensor())
    assert not torch.allclose(data["image"].as_tensor(), averaged["image"].as_tensor(), atol=1e-2)
    plain, affine = Segmenter("brats_unet3d", device="cpu", backend="torch", n4=False).predict(files)
    monkeypatch.setattr(N4BiasCorrection, "_fit", lambda self, array, *_: array.astype(np.float32))
    label, affine_n4 = only.predict(files)
    assert np.array_equal(label, plain) and np.allclose(affine_n4, affine) and len(np.unique(plain)) > 1
    with pytest.raises(ValueError, match="n4_combine must be one of n4, average, got 'mean'"):
        Segmenter("brats_unet3d", device="cpu", backend="torch", n4=True, overrides={"n4_combine": "mean"})


def test_bundle_key_and_argument(phantom_root: Path):
    assert Segmenter("brats_unet3d", device="cpu", backend="torch").n4 is True  # metadata inference#fast_n4, since 0.11.0
    assert Segmenter("brats_unet3d", device="cpu", backend="torch", overrides={"n4_average": False}).n4 is False
    assert Segmenter("brats_deeplab3d", device="cpu", backend="torch").n4 is False  # its weights were not trained for N4
    assert Segmenter("brats_unet3d", device="cpu", backend="torch", overrides={"n4_average": True}).n4 is True
    assert Segmenter("brats_unet3d", device="cpu", backend="torch", overrides={"n4_average": True}, n4=False).n4 is False
    data = Segmenter("brats_unet3d", device="cpu", backend="torch", n4=False).load(case_files(phantom_root / "Phantom_002"))
    assert "image_n4" not in data
    seg = Segmenter("brats_unet3d", device="cpu", backend="torch", n4=True,
                    overrides={"n4_params": {"shrink_factor": 6, "iterations": [25, 25], "crop_foreground": True}})
    corrector = seg._n4_branch[1].corrector
    assert (corrector.shrink_factor, corrector.iterations, corrector.crop_foreground) == (6, [25, 25], True)
    with pytest.raises(ValueError, match="n4_params: unknown key.*known: shrink_factor, iterations.*channels"):
        Segmenter("brats_unet3d", device="cpu", backend="torch", n4=True, overrides={"n4_params": {"shrinkfactor": 6}})
    seg = Segmenter("brats_unet3d", device="cpu", backend="torch", n4=True, overrides={"n4_params": {"shrink_factor": 8, "iterations": [25, 25], "num_threads": 1}})
    assert seg._n4_branch[1].corrector.num_threads == 1
    seg = Segmenter("brats_unet3d", device="cpu", backend="torch", n4=True,
                    overrides={"n4_params": {"shrink_factor": 8, "iterations": [25, 25], "field_spacing": 2, "mask_shrunk": False}})
    assert (seg._n4_branch[1].corrector.field_spacing, seg._n4_branch[1].corrector.mask_shrunk) == (2, False)
    seg = Segmenter("brats_unet3d", device="cpu", backend="torch", n4=True, overrides={"n4_params": {"channels": [1, 3]}})
    assert seg._n4_branch[1].corrector.channels == [1, 3]


def test_accurate_mode_runs_n4_where_the_bundle_says():
    """``--mode accurate`` takes ``accurate_n4_average`` (metadata ``inference#accurate_n4``):
    on for brats_unet3d (weights trained on N4-corrected copies), as in fast mode since 0.11.0
    (metadata ``inference#fast_n4``); ``n4=False``
    (``--no-n4``) and the override ``accurate_n4_average`` turn it off, and the shipped N4
    settings are the ones chosen on CV: accurate_n4_params in accurate mode (all four sequences,
    shrink 8, 2 x 25 iterations, the brain's box), n4_params with ``--n4`` in fast mode (T1ce and
    FLAIR only, shrink 10); each mode keeps its own where the other is overridden."""
    meta = json.loads((Path(__file__).resolve().parents[2] / "bundles" / "brats_unet3d" / "configs" / "metadata.json").read_text())
    assert meta["inference"]["accurate_n4"] is True
    accurate = Segmenter("brats_unet3d", device="cpu", backend="torch", mode="accurate")
    assert accurate.n4 is True and accurate._n4_branch is not None
    corrector = accurate._n4_branch[1].corrector
    assert (corrector.shrink_factor, corrector.iterations, corrector.crop_foreground, corrector.channels) == (8, [25, 25], True, None)
    fast = Segmenter("brats_unet3d", device="cpu", backend="torch", mode="fast", n4=True)._n4_branch[1].corrector
    assert (fast.shrink_factor, fast.iterations, fast.channels) == (10, [25, 25], [1, 3])
    assert Segmenter("brats_unet3d", device="cpu", backend="torch", mode="accurate",
                     overrides={"n4_params": {"shrink_factor": 3}})._n4_branch[1].corrector.shrink_factor == 8
    assert Segmenter("brats_unet3d", device="cpu", backend="torch", mode="fast", n4=True,
                     overrides={"accurate_n4_params": {"shrink_factor": 3}})._n4_branch[1].corrector.shrink_factor == 10
    assert meta["inference"]["fast_n4"] is True
    default_fast = Segmenter("brats_unet3d", device="cpu", backend="torch", mode="fast")
    assert default_fast.n4 is True and default_fast._n4_branch[1].corrector.channels == [1, 3]  # n4_params, not accurate's
    assert Segmenter("brats_unet3d", device="cpu", backend="torch", mode="fast", n4=False).n4 is False
    assert Segmenter("brats_unet3d", device="cpu", backend="torch", mode="accurate", n4=False).n4 is False
    assert Segmenter("brats_unet3d", device="cpu", backend="torch", mode="accurate", overrides={"accurate_n4_average": False}).n4 is False


def test_cli_n4_with_a_missing_sequence_records_it(phantom_root: Path, tmp_path: Path):
    case = tmp_path / "in" / "FlairT1ce"
    case.mkdir(parents=True)
    for m in ("t1ce", "flair"):
        (case / f"FlairT1ce_{m}.nii.gz").write_bytes((phantom_root / "Phantom_003" / f"Phantom_003_{m}.nii.gz").read_bytes())
    result = CliRunner().invoke(cli, ["segment", str(case), "--output", str(tmp_path / "out"), "--n4", "--quiet", "--backend", "torch"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "volseg_run.json").read_text())
    assert record["n4_average"] is True and record["cases"][0]["missing_sequences"] == ["t1", "t2"]
    assert record["n4_combine"] == Segmenter("brats_unet3d", device="cpu", backend="torch").n4_combine
    assert record["n4_params"]["channels"] == [1, 3] and record["cases"][0]["settings"]["n4_params"] == record["n4_params"]  # fast mode's N4 settings
    assert [Path(f).name for f in record["config"]["model_files"]] == ["model.pt"]  # torch: the checkpoint itself
    # the missing-sequence line quotes the bundle's --n4 figures for FLAIR + T1ce
    from app.bundles import missing_sequence_cv

    cv = missing_sequence_cv("brats_unet3d", ["t1", "t2"], n4=True)
    assert cv and f"with this subset with N4: WT {cv['WT']:.3f}" in result.output
    assert record["cases"][0]["missing_sequences_cv_dice"] == cv and record["cases"][0]["missing_sequences_cv_source"] == "with N4"
    label = nib.load(tmp_path / "out" / "FlairT1ce_seg.nii.gz")
    ref = nib.load(case / "FlairT1ce_flair.nii.gz")
    assert label.shape == ref.shape and np.allclose(label.affine, ref.affine)
    assert set(np.unique(np.asarray(label.dataobj))) <= {0, 1, 2, 4}


def _workflow_parser(bundle: str, **overrides):
    from monai.bundle import ConfigParser

    from app.bundles import bundle_dir

    parser = ConfigParser()
    parser.read_config(str(bundle_dir(bundle) / "configs" / "inference.yaml"))
    parser.read_meta(str(bundle_dir(bundle) / "configs" / "metadata.json"))
    for key, value in overrides.items():
        parser[key] = value
    return parser


def test_bundle_workflow_runs_n4_where_volseg_segment_would(phantom_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``python -m monai.bundle run --mode accurate`` corrects the bias field after the brain
    crop, RAS and spacing and before the z-score, as ``volseg segment --mode accurate`` does (brats_unet3d), not in fast mode; a bundle
    whose ``n4_combine`` is "average" refuses N4 in the one-pass workflow with a clear error; the
    Segmenter keeps its own N4 branch only (no second correction); and the workflow's accurate
    label is the Segmenter's."""
    from monai.bundle.scripts import run

    from app.transforms import N4BiasCorrectiond

    names = lambda parser: [type(t).__name__ for t in parser.get_parsed_content("preprocessing").transforms]  # noqa: E731
    fast = names(_workflow_parser("brats_unet3d"))  # fast mode: N4 since 0.11.0 (metadata inference#fast_n4)
    assert fast[-2:] == ["N4BiasCorrectiond", "NonzeroZScored"] and fast.count("N4BiasCorrectiond") == 1
    assert "N4BiasCorrectiond" not in names(_workflow_parser("brats_unet3d", n4_average=False))
    accurate = names(_workflow_parser("brats_unet3d", mode="accurate"))
    assert accurate[-2:] == ["N4BiasCorrectiond", "NonzeroZScored"] and accurate.count("N4BiasCorrectiond") == 1
    assert accurate.index("Orientationd") < accurate.index("Spacingd") < accurate.index("CropForegroundd") < accurate.index("N4BiasCorrectiond")
    assert "N4BiasCorrectiond" not in names(_workflow_parser("brats_unet3d", mode="accurate", accurate_n4_average=False))
    n4_step = lambda parser: next(t for t in parser.get_parsed_content("preprocessing").transforms if type(t).__name__ == "N4BiasCorrectiond")  # noqa: E731
    assert n4_step(_workflow_parser("brats_unet3d", mode="accurate")).corrector.channels is None  # accurate_n4_params: all four
    assert n4_step(_workflow_parser("brats_unet3d", n4_average=True)).corrector.channels == [1, 3]  # fast: n4_params
    assert "N4BiasCorrectiond" not in names(_workflow_parser("brats_deeplab3d", mode="accurate"))
    with pytest.raises(Exception) as refused:  # MONAI's ConfigParser raises its own error from ours
        _workflow_parser("brats_deeplab3d", n4_average=True).get_parsed_content("preprocessing")
    assert "needs n4_combine 'n4'" in str(refused.value.__cause__) and "got 'average'" in str(refused.value.__cause__)
    from app.inference import workflow_n4_transforms

    assert workflow_n4_transforms("accurate", False, "false", "n4", {}) == []  # what `--accurate_n4_average false` passes: off
    with pytest.raises(ValueError, match="accurate_n4_average must be true or false, got 'nope'"):
        workflow_n4_transforms("accurate", False, "nope", "n4", {})
    with pytest.raises(ValueError, match=r"^n4_params: unknown key\(s\) shrinkfactor; known: shrink_factor, iterations"):  # not a TypeError deep in MONAI
        workflow_n4_transforms("fast", True, False, "n4", {"shrinkfactor": 6})
    with pytest.raises(ValueError, match=r"^accurate_n4_params: unknown key\(s\) shrinkfactor"):
        workflow_n4_transforms("accurate", False, True, "n4", {"shrinkfactor": 6})
    with pytest.raises(ValueError, match=r"accurate_n4_params: unknown key\(s\) shrinkfactor"):
        Segmenter("brats_unet3d", device="cpu", backend="torch", mode="accurate", overrides={"accurate_n4_params": {"shrinkfactor": 6}})
    segmenter = Segmenter("brats_unet3d", device="cpu", backend="torch", mode="accurate")
    assert not any(isinstance(t, N4BiasCorrectiond) for t in segmenter.preprocessing.transforms) and segmenter._n4_branch is not None

    # the same accurate label from both paths (N4 made cheap: 2x shrink of a small phantom, 5 iterations)
    params = {"shrink_factor": 2, "iterations": [5], "crop_foreground": True}
    case = tmp_path / "data" / "Phantom_001"
    case.mkdir(parents=True)
    for f in case_files(phantom_root / "Phantom_001"):
        (case / f.name).write_bytes(f.read_bytes())
    from app.bundles import bundle_dir

    monkeypatch.chdir(bundle_dir("brats_unet3d"))
    run(config_file="configs/inference.yaml", meta_file="configs/metadata.json", dataset_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "out"),
        mode="accurate", accurate_n4_params=params, logging_file=False)
    workflow = np.asarray(nib.load(tmp_path / "out" / "Phantom_001_seg.nii.gz").dataobj)
    label, _ = Segmenter("brats_unet3d", device="cpu", backend="torch", mode="accurate", overrides={"accurate_n4_params": params}).predict(case_files(case))
    plain, _ = Segmenter("brats_unet3d", device="cpu", backend="torch", mode="accurate", n4=False).predict(case_files(case))
    assert workflow.shape == label.shape and np.mean(workflow == label) > 0.999
    assert not np.array_equal(label, plain)  # N4 ran on this path


def test_a_label_made_with_other_n4_settings_is_segmented_again(phantom_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """The run record keeps each case's N4 settings (``n4_params``); a rerun with --n4 into the same
    folder segments again a label made with other ones (an edited bundle), as it does for another mode."""
    out = tmp_path / "out"
    args = ["segment", str(phantom_root / "Phantom_001"), "--output", str(out), "--n4", "--quiet", "--backend", "torch"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "skipped" in again.output  # the same settings: kept
    record = json.loads((out / "volseg_run.json").read_text())
    record["cases"][0]["settings"]["n4_params"] = {**record["n4_params"], "channels": None, "shrink_factor": 8}  # as 0.10.7 made it
    (out / "volseg_run.json").write_text(json.dumps(record))
    with caplog.at_level("INFO"):
        redo = CliRunner().invoke(cli, args)
    assert redo.exit_code == 0 and "skipped" not in redo.output, redo.output
    assert "was made with other settings or sequences (n4_params" in caplog.text and "segmenting it again" in caplog.text
    assert json.loads((out / "volseg_run.json").read_text())["cases"][0]["settings"]["n4_params"]["channels"] == [1, 3]
