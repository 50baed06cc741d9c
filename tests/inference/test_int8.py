"""Int8 OpenVINO models (app.inference.int8): calibration windows, the checkpoint-hash lookup, NNCF
quantization of a small network, and the shipped brats_unet3d int8 models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from app.inference import Segmenter
from app.inference.int8 import calibration_windows, file_sha256, find_int8_ir, int8_paths, quantize_checkpoint
from app.networks import create_network
from tests.conftest import REPO_ROOT, SHARED_BRATS, case_files

ov = pytest.importorskip("openvino")
MODELS = REPO_ROOT / "bundles" / "brats_unet3d" / "models"


def test_calibration_windows_have_the_roi_size_and_pad_small_volumes():
    big = np.random.default_rng(0).normal(size=(4, 120, 100, 97)).astype(np.float32)
    small = np.ones((4, 50, 96, 20), np.float32)
    windows = calibration_windows([big, small], roi_size=(96, 96, 96), per_volume=2, seed=1)
    assert len(windows) == 4 and all(w.shape == (1, 4, 96, 96, 96) and w.dtype == np.float32 for w in windows)
    # a window of the big volume is a piece of it; the small volume is kept whole and zero-padded
    w = windows[0][0]
    found = [(i, j, k) for i in range(25) for j in range(5) for k in range(2) if np.array_equal(big[:, i:i + 96, j:j + 96, k:k + 96], w)]
    assert len(found) == 1
    assert windows[2][0, :, :50, :, :20].min() == 1 and windows[2][0, :, 50:].max() == 0 and windows[2][0, :, :, :, 20:].max() == 0
    again = calibration_windows([big, small], roi_size=(96, 96, 96), per_volume=2, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(windows, again))


def test_calibration_windows_add_zero_filled_copies_for_missing_sequences():
    volume = np.random.default_rng(0).normal(size=(4, 40, 40, 40)).astype(np.float32) + 10  # no zero voxel
    plain = calibration_windows([volume], roi_size=(32, 32, 32), per_volume=2, seed=3)
    windows = calibration_windows([volume], roi_size=(32, 32, 32), per_volume=2, seed=3, keep_subsets=[[1, 3], [0, 1, 3]])
    assert len(windows) == 6
    # the same windows as without subsets, each followed by its T1ce + FLAIR and no-T2 copies
    assert np.array_equal(windows[0], plain[0]) and np.array_equal(windows[3], plain[1])
    for full, kept, channels in [(windows[0], windows[1], [1, 3]), (windows[0], windows[2], [0, 1, 3]), (windows[3], windows[4], [1, 3])]:
        dropped = [c for c in range(4) if c not in channels]
        assert np.array_equal(kept[0, channels], full[0, channels]) and not kept[0, dropped].any()
    with pytest.raises(ValueError, match="subset"):
        calibration_windows([volume], roi_size=(32, 32, 32), keep_subsets=[[1, 4]])
    with pytest.raises(ValueError, match="subset"):
        calibration_windows([volume], roi_size=(32, 32, 32), keep_subsets=[[]])


def _fake_int8(ckpt: Path, sha: str) -> Path:
    xml, record = int8_paths(ckpt)
    xml.write_text("<net/>")
    xml.with_suffix(".bin").write_bytes(b"\0")
    record.write_text(json.dumps({"source": ckpt.name, "source_sha256": sha}))
    return xml


def test_find_int8_ir_matches_the_checkpoint_bytes_not_its_name(tmp_path: Path):
    fold = tmp_path / "fold2.pt"
    fold.write_bytes(b"weights of fold 2")
    assert int8_paths(fold) == (tmp_path / "fold2_int8.xml", tmp_path / "fold2_int8.json")
    assert find_int8_ir(fold) is None
    xml = _fake_int8(fold, file_sha256(fold))
    assert find_int8_ir(fold) == xml
    shutil.copy(fold, tmp_path / "model.pt")  # the fast model is a copy of a fold: same int8 model
    assert find_int8_ir(tmp_path / "model.pt") == xml
    fold.write_bytes(b"retrained weights")  # stale: never run an int8 model of other weights
    assert find_int8_ir(fold) is None and find_int8_ir(tmp_path / "model.pt") == xml
    xml.with_suffix(".bin").unlink()
    assert find_int8_ir(tmp_path / "model.pt") is None
    (tmp_path / "other_int8.json").write_text("{not json")
    assert find_int8_ir(tmp_path / "model.pt") is None


def test_quantize_checkpoint_writes_an_int8_ir_that_tracks_the_float_network(tmp_path: Path):
    pytest.importorskip("nncf")
    from app.inference.backends import OpenVINONetwork

    torch.manual_seed(0)
    net = create_network("unet3d", in_channels=2, out_channels=3, channels=[8, 16, 32, 64, 128]).eval()
    ckpt = tmp_path / "fold0.pt"
    torch.save(net.state_dict(), ckpt)
    rng = np.random.default_rng(0)
    windows = [rng.normal(size=(1, 2, 32, 32, 32)).astype(np.float32) for _ in range(4)]
    xml = quantize_checkpoint(create_network("unet3d", in_channels=2, out_channels=3, channels=[8, 16, 32, 64, 128]), ckpt, windows, 2,
                              {"cases": ["a", "b"]})
    assert xml == tmp_path / "fold0_int8.xml" and xml.with_suffix(".bin").is_file()
    record = json.loads((tmp_path / "fold0_int8.json").read_text())
    assert record["source_sha256"] == file_sha256(ckpt) and record["calibration"] == {"windows": 4, "cases": ["a", "b"]}
    assert record["overflow_fix"] == "enable"
    assert find_int8_ir(ckpt) == xml
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fold0.pt", "fold0_int8.bin", "fold0_int8.json", "fold0_int8.xml"]  # no temporaries
    model = ov.Core().read_model(str(xml))
    assert any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
    int8 = OpenVINONetwork(None, 2, cache_dir=tmp_path / "cache", ir=xml)
    assert int8.precision == "int8"
    x = torch.from_numpy(rng.normal(size=(2, 2, 48, 32, 32)).astype(np.float32))  # another batch and size than calibrated
    with torch.no_grad():
        ref = net(x)
    out = int8(x)
    assert out.shape == ref.shape
    assert np.corrcoef(out.flatten().numpy(), ref.flatten().numpy())[0, 1] > 0.98


def test_quantize_checkpoint_keeps_float_layers_unquantized(tmp_path: Path):
    pytest.importorskip("nncf")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    windows = [rng.normal(size=(1, 2, 32, 32, 32)).astype(np.float32) for _ in range(2)]
    counts = {}
    for name, layers in [("all", ()), ("float_ends", (r".*module\.model\.0\.conv\.unit0\.conv/.*", r".*module\.model\.2\..*"))]:
        folder = tmp_path / name
        folder.mkdir()
        torch.save(create_network("unet3d", in_channels=2, out_channels=3, channels=[8, 16, 32, 64, 128]).state_dict(), folder / "fold0.pt")
        xml = quantize_checkpoint(create_network("unet3d", in_channels=2, out_channels=3, channels=[8, 16, 32, 64, 128]), folder / "fold0.pt",
                                  windows, 2, float_layers=layers)
        counts[name] = sum(op.get_type_name() == "FakeQuantize" for op in ov.Core().read_model(str(xml)).get_ops())
        assert json.loads((folder / "fold0_int8.json").read_text()).get("float_layers", []) == list(layers)
    assert 0 < counts["float_ends"] < counts["all"]


def int8_weight_range(xml: Path) -> tuple[int, int]:
    """Smallest and largest value of the IR's int8 weight constants."""
    consts = [op.get_data() for op in ov.Core().read_model(str(xml)).get_ops()
              if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8]
    assert consts, f"{xml}: no int8 weight constants"
    return min(int(c.min()) for c in consts), max(int(c.max()) for c in consts)


def test_quantize_checkpoint_overflow_fix_keeps_every_weight_in_7_bits(tmp_path: Path):
    """On CPUs without VNNI, 8-bit weights saturate OpenVINO's 16-bit intermediate sums; NNCF's
    overflow fix ("enable", our default) stores every layer's weights in [-64, 63]."""
    pytest.importorskip("nncf")
    rng = np.random.default_rng(0)
    windows = [rng.normal(size=(1, 2, 32, 32, 32)).astype(np.float32) for _ in range(2)]
    ranges = {}
    for fix in ("enable", "first_layer_only"):
        folder = tmp_path / fix
        folder.mkdir()
        torch.manual_seed(0)
        torch.save(create_network("unet3d", in_channels=2, out_channels=3, channels=[8, 16, 32, 64, 128]).state_dict(), folder / "fold0.pt")
        xml = quantize_checkpoint(create_network("unet3d", in_channels=2, out_channels=3, channels=[8, 16, 32, 64, 128]), folder / "fold0.pt",
                                  windows, 2, overflow_fix=fix)
        ranges[fix] = int8_weight_range(xml)
        assert json.loads((folder / "fold0_int8.json").read_text())["overflow_fix"] == fix
    assert -64 <= ranges["enable"][0] and ranges["enable"][1] <= 63
    assert ranges["first_layer_only"][1] > 64  # NNCF's default keeps 8 bits after the first layer
    with pytest.raises(ValueError, match="overflow_fix must be one of"):
        quantize_checkpoint(create_network("unet3d", channels=[8, 16, 32, 64, 128]), tmp_path / "model.pt", windows, 4, overflow_fix="on")


def test_quantize_checkpoint_needs_windows(tmp_path: Path):
    pytest.importorskip("nncf")
    with pytest.raises(ValueError, match="at least one input window"):
        quantize_checkpoint(create_network("unet3d", channels=[8, 16, 32, 64, 128]), tmp_path / "model.pt", [], 4)


def test_every_shipped_checkpoint_has_its_int8_model():
    """Replacing a weight file without re-running app.bundle_tools.quantize fails here (the
    old int8 model would be silently skipped at run time)."""
    keep = json.loads((MODELS.parent / "configs" / "metadata.json").read_text())["training"].get("int8_keep_subsets", [])
    ckpts = sorted(MODELS.glob("*.pt"))
    assert [p.name for p in ckpts] == ["fold0.pt", "fold1.pt", "fold2.pt", "fold3.pt", "fold4.pt", "model.pt"]
    for ckpt in ckpts:
        xml = find_int8_ir(ckpt)
        assert xml is not None, f"{ckpt.name}: no int8 model made from it; run python -m app.bundle_tools.quantize bundles/brats_unet3d"
        record = json.loads(int8_paths(xml.with_name(xml.name.replace("_int8.xml", ".pt")))[1].read_text())
        if ckpt.name.startswith("fold"):  # calibrated on the fold's training cases only: its CV cases stay unseen
            cv = json.loads((REPO_ROOT / "data_manifests" / "brats2018_cv5.json").read_text())
            held_out = {c["case_id"] for c in cv["training"] if c["fold"] == int(ckpt.stem[4:])}
            assert len(record["calibration"]["cases"]) == 12 and not held_out & set(record["calibration"]["cases"])
        # made as `python -m app.bundle_tools.quantize bundles/brats_unet3d` makes them by default (the bundle's own subsets)
        assert record["calibration"].get("keep_subsets", []) == keep and "float_layers" not in record
        # 7-bit weights: the same labels on CPUs without VNNI (8-bit weights lost 0.034 TC Dice on an AVX2 CPU)
        assert record.get("overflow_fix") == "enable", f"{ckpt.name}: int8 model made without NNCF's overflow fix"
        low, high = int8_weight_range(xml)
        assert -64 <= low and high <= 63, (ckpt.name, low, high)
    assert sum(p.stat().st_size for p in MODELS.iterdir()) < 100e6


def test_segmenter_picks_the_int8_model_of_its_checkpoint(phantom_root: Path):
    images = case_files(phantom_root / "Phantom_001")
    f32 = Segmenter("brats_unet3d", device="cpu", backend="openvino", int8=False)
    int8 = Segmenter("brats_unet3d", device="cpu", backend="openvino", int8=True)
    assert (f32.precision, int8.precision) == ("f32", "int8") and int8.network.xml.name == "fold2_int8.xml"  # model.pt = fold 2
    assert [Path(f).name for f in int8.model_files] == ["fold2_int8.xml"] and [Path(f).name for f in f32.model_files] == ["model.pt"]  # volseg_run.json's config.model_files
    assert Segmenter("brats_unet3d", device="cpu", backend="openvino").precision == "int8"  # the bundle's openvino_int8
    label, affine = int8.predict(images)
    ref, ref_affine = f32.predict(images)
    assert label.shape == ref.shape and label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1, 2, 4}
    np.testing.assert_array_equal(affine, ref_affine)
    assert Segmenter("brats_unet3d", device="cpu", backend="torch", int8=True).precision == "f32"  # int8 models are OpenVINO's
    other = Segmenter("brats_unet3d", device="cpu", backend="openvino", int8=True, ckpt_path=MODELS / "fold0.pt")
    assert other.precision == "int8" and other.network.xml.name == "fold0_int8.xml"


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.skipif(not SHARED_BRATS.is_dir(), reason=f"no BraTS data at {SHARED_BRATS}")
def test_shipped_int8_model_agrees_with_float32_on_an_unseen_real_case():
    """On a real case that models/model.pt never trained on (the first of its held-out fold),
    the int8 label map matches the float32 one and the reference. (The synthetic phantoms are no
    test of int8 accuracy: their intensities lie outside the calibrated activation ranges.)"""
    import nibabel as nib

    from app.evaluation import case_metrics

    meta = json.loads((REPO_ROOT / "bundles" / "brats_unet3d" / "configs" / "metadata.json").read_text())
    cv = json.loads((REPO_ROOT / "data_manifests" / "brats2018_cv5.json").read_text())
    case_id = next(c["case_id"] for c in cv["training"] if c["fold"] == meta["training"]["fast_model_fold"])
    images = case_files(SHARED_BRATS / case_id)
    ref, _ = Segmenter("brats_unet3d", device="cpu", backend="openvino", int8=False).predict(images)
    label, _ = Segmenter("brats_unet3d", device="cpu", backend="openvino", int8=True).predict(images)
    agreement = case_metrics(label, ref)
    assert min(agreement["WT_dice"], agreement["TC_dice"], agreement["ET_dice"]) > 0.95, agreement
    truth = np.asarray(nib.load(SHARED_BRATS / case_id / f"{case_id}_seg.nii.gz").dataobj).astype(np.uint8)
    assert case_metrics(label, truth)["WT_dice"] > 0.70


def test_an_int8_model_that_does_not_compile_falls_back_to_float32(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    ckpt = tmp_path / "fold0.pt"
    shutil.copy(MODELS / "fold0.pt", ckpt)
    _fake_int8(ckpt, file_sha256(ckpt))  # matches the weights, but is no readable IR
    seg = Segmenter("brats_unet3d", device="cpu", backend="openvino", int8=True, ckpt_path=ckpt)
    assert seg.precision == "f32"
    assert "cannot run the int8 model" in caplog.text and "fold0_int8.xml" in caplog.text


def test_cpu_lacks_vnni_reads_the_cpu_flags(tmp_path: Path):
    from app.inference.int8 import cpu_lacks_vnni

    def cpuinfo(flags: str) -> Path:
        path = tmp_path / f"cpuinfo_{len(list(tmp_path.iterdir()))}"
        path.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\n")
        return path

    assert cpu_lacks_vnni(cpuinfo("fpu sse sse2 avx avx2 fma")) is True  # e.g. AMD EPYC Zen 3
    assert cpu_lacks_vnni(cpuinfo("fpu sse sse2 avx2 avx512f avx512_vnni avx512_bf16")) is False
    assert cpu_lacks_vnni(cpuinfo("fpu sse sse2 avx2 avx_vnni")) is False
    assert cpu_lacks_vnni(cpuinfo("fp asimd evtstrm")) is None  # not x86
    assert cpu_lacks_vnni(tmp_path / "missing") is None


def test_an_int8_model_without_the_overflow_fix_warns_on_a_cpu_without_vnni(tmp_path: Path):
    from app.inference.int8 import int8_may_saturate

    avx2 = tmp_path / "avx2"
    avx2.write_text("flags\t\t: fpu sse sse2 avx2\n")
    vnni = tmp_path / "vnni"
    vnni.write_text("flags\t\t: fpu sse sse2 avx2 avx512_vnni\n")
    xml = tmp_path / "fold0_int8.xml"
    xml.with_suffix(".json").write_text(json.dumps({"source_sha256": "x"}))  # made before the fix: no overflow_fix
    assert int8_may_saturate(xml, avx2) and not int8_may_saturate(xml, vnni)
    xml.with_suffix(".json").write_text(json.dumps({"source_sha256": "x", "overflow_fix": "enable"}))
    assert not int8_may_saturate(xml, avx2)
