"""Inference backends (torch, OpenVINO), whole-volume inference and network export."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from app.cli import app as cli
from app.inference import OpenVINONetwork, Segmenter, export_network, resolve_backend
from app.networks import create_network
from tests.conftest import case_files

ov = pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def small_unet() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_network("unet3d", channels=[8, 16, 32, 64, 128]).eval()


def test_resolve_backend(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("VOLSEG_BACKEND", raising=False)
    assert resolve_backend("auto", "cpu") == "openvino" and resolve_backend(None, "cpu") == "openvino"
    assert resolve_backend("auto", "cuda") == "torch" and resolve_backend("torch", "cpu") == "torch"
    monkeypatch.setenv("VOLSEG_BACKEND", "torch")
    assert resolve_backend("auto", "cpu") == "torch" and resolve_backend("openvino", "cpu") == "openvino"
    with pytest.raises(ValueError, match="unknown inference backend 'tensorrt'"):
        resolve_backend("tensorrt", "cpu")
    with pytest.raises(ValueError, match="runs on CPU"):
        resolve_backend("openvino", "cuda")


def test_whole_volume_mode_pads_with_divisible_padd_and_inverts_to_the_input_grid(phantom_root: Path):
    """infer_mode whole_volume: MONAI DivisiblePadd in the bundle's preprocessing, undone by Invertd."""
    seg = Segmenter("brats_unet3d", device="cpu", backend="torch", overrides={"infer_mode": "whole_volume"})
    data = seg.preprocessing({"image": [str(p) for p in case_files(phantom_root / "Phantom_001")]})
    assert all(s % 16 == 0 for s in data["image"].shape[1:])
    assert data["image"].applied_operations[-1]["class"] == "DivisiblePad"
    assert type(seg.inferer).__name__ == "SimpleInferer"


def test_openvino_network_matches_torch_and_caches_its_ir(small_unet: torch.nn.Module, tmp_path: Path):
    net = OpenVINONetwork(small_unet, 4, cache_dir=tmp_path)
    stamp = net.xml.stat().st_mtime_ns
    for shape in [(1, 4, 64, 48, 32), (2, 4, 32, 32, 48)]:  # dynamic batch and spatial sizes
        x = torch.randn(*shape)
        with torch.no_grad():
            ref = small_unet(x)
        out = net(x)
        assert out.shape == ref.shape
        assert (out - ref).abs().max() < 0.25  # instance norm summed in another order
        assert ((out > 0) == (ref > 0)).float().mean() > 0.99
    again = OpenVINONetwork(small_unet, 4, cache_dir=tmp_path)
    assert again.xml == net.xml and again.xml.stat().st_mtime_ns == stamp  # converted once, then read


def test_openvino_network_with_an_input_shape_compiles_it_static_and_runs_other_shapes_dynamic(small_unet: torch.nn.Module, tmp_path: Path):
    """input_shape: that shape runs a statically compiled model, any other the dynamic one (compiled on
    first use); both give the dynamic-only network's logits."""
    dynamic = OpenVINONetwork(small_unet, 4, cache_dir=tmp_path)
    static = OpenVINONetwork(small_unet, 4, cache_dir=tmp_path, input_shape=(2, 4, 32, 32, 32))
    assert static.input_shape == (2, 4, 32, 32, 32) and dynamic.input_shape is None
    assert static.compiled.input(0).get_partial_shape().is_static and dynamic.compiled.input(0).get_partial_shape().is_dynamic
    x = torch.randn(2, 4, 32, 32, 32)
    assert torch.allclose(static(x), dynamic(x), atol=1e-4)
    assert static._dynamic is None  # the window shape never needs the dynamic model
    y = torch.randn(1, 4, 48, 32, 32)  # a last, smaller batch of windows; another size
    assert torch.allclose(static(y), dynamic(y), atol=1e-4)
    assert static._dynamic is not None and static._dynamic.input(0).get_partial_shape().is_dynamic


def test_segmenter_compiles_the_sliding_window_shape_unless_shapes_vary(phantom_root: Path):
    """Sliding windows without mirrorings: the OpenVINO model is compiled for (sw_batch_size, C, *roi_size);
    whole-volume forwards and mirrored ensembles keep the dynamic model. The labels are the same either way."""
    images = case_files(phantom_root / "Phantom_001")
    seg = Segmenter("brats_unet3d", device="cpu", backend="openvino", int8=False, overrides={"sw_batch_size": 2})
    roi = tuple(seg.parser.get_parsed_content("roi_size"))
    assert seg.network.input_shape == (2, 4, *roi)
    whole = Segmenter("brats_unet3d", device="cpu", backend="openvino", int8=False, overrides={"infer_mode": "whole_volume"})
    assert whole.network.input_shape is None
    ensemble = Segmenter("brats_unet3d", device="cpu", backend="openvino", int8=True, mode="accurate")
    assert all(m.input_shape == (int(ensemble.parser.get_parsed_content("sw_batch_size")), 4, *roi) for m in ensemble.network.members)
    mirrored = Segmenter("brats_unet3d", device="cpu", backend="openvino", int8=True, mode="accurate", overrides={"mirror_axes": [0]})
    assert all(m.input_shape is None for m in mirrored.network.members)
    dynamic = Segmenter("brats_unet3d", device="cpu", backend="openvino", int8=False, overrides={"sw_batch_size": 2, "openvino_static_shapes": False})
    assert dynamic.network.input_shape is None
    labels, _ = seg.predict(images)
    again, _ = dynamic.predict(images)
    assert labels.any() and np.array_equal(labels, again)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx", "openvino"])
def test_export_formats_run_at_other_sizes(fmt: str, small_unet: torch.nn.Module, tmp_path: Path):
    path = export_network(small_unet, fmt, tmp_path / {"torchscript": "m.ts", "onnx": "m.onnx", "openvino": "m.xml"}[fmt], 4, example_size=32)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["m.bin", "m.xml"] if fmt == "openvino" else [path.name])  # no temporary left
    x = torch.randn(2, 4, 48, 32, 64)
    with torch.no_grad():
        ref = small_unet(x)
        out = torch.jit.load(str(path))(x) if fmt == "torchscript" else torch.from_numpy(ov.Core().compile_model(str(path), "CPU")(x.numpy())[0])
    assert out.shape == ref.shape and (out - ref).abs().max() < 0.25
    if fmt == "onnx":  # the dynamic axes carry names, not the exporter's symbols (s77)
        import onnx

        graph = onnx.load(str(path)).graph
        dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in (graph.input[0], graph.output[0])]
        assert dims[0] == ["batch", 4, "height", "width", "depth"]
        assert dims[1][:2] == ["batch", 3] and [n in str(d) for n, d in zip(("height", "width", "depth"), dims[1][2:])] == [True] * 3
        params = [d.dim_param for v in (*graph.input, *graph.output, *graph.value_info) for d in v.type.tensor_type.shape.dim if d.dim_param]
        assert params and not [p for p in params if re.search(r"\bs\d+\b", p)]


def test_unknown_export_format(small_unet: torch.nn.Module, tmp_path: Path):
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        export_network(small_unet, "tflite", tmp_path / "m", 4)


def test_shipped_bundle_openvino_and_whole_volume_agree_with_torch(phantom_root: Path):
    images = case_files(phantom_root / "Phantom_001")
    ref, affine = Segmenter("brats_unet3d", device="cpu", backend="torch").predict(images)
    ov_seg = Segmenter("brats_unet3d", device="cpu", backend="openvino", int8=False)  # the int8 models: tests/inference/test_int8.py
    assert ov_seg.backend == "openvino"
    label, ov_affine = ov_seg.predict(images)
    np.testing.assert_array_equal(affine, ov_affine)
    # float32 explicitly (OpenVINO's CPU default is bf16 where the CPU has bf16 units); instance
    # norm sums in another order, so a few voxels at the 0.5 boundary may still differ, and the
    # component rules can pass such a flip on (0.4.0 weights: 0.012 % of the phantom's voxels;
    # 0.10.0: 0.056 %, 39 of 69,120 voxels, each a swap of neighbouring labels 0/2, 2/1, 1/4 or 0/1
    # on this synthetic phantom). The logits themselves are compared tightly in
    # test_openvino_network_matches_torch_and_caches_its_ir;
    # a wrong layout or preprocessing disagrees on far more than 0.1 % of the voxels.
    assert ov_seg.precision == "f32"
    assert (label == ref).mean() > 0.999
    whole, _ = Segmenter("brats_unet3d", device="cpu", backend="torch", overrides={"infer_mode": "whole_volume"}).predict(images)
    assert whole.shape == ref.shape and set(np.unique(whole)) <= {0, 1, 2, 4}


def test_cli_export_and_segment_backend(tmp_path: Path, phantom_root: Path):
    out = tmp_path / "unet.ts"
    result = CliRunner().invoke(cli, ["export", "brats_unet3d", "--format", "torchscript", "--out", str(out)])
    assert result.exit_code == 0 and out.is_file(), result.output
    assert torch.jit.load(str(out))(torch.zeros(1, 4, 32, 32, 32)).shape == (1, 3, 32, 32, 32)
    bad = CliRunner().invoke(cli, ["export", "brats_unet3d", "--format", "caffe"])
    assert bad.exit_code == 2 and "unknown export format 'caffe'" in bad.output
    seg = CliRunner().invoke(cli, ["segment", str(phantom_root / "Phantom_000"), "--output", str(tmp_path / "o"), "--quiet", "--backend", "nope"])
    assert seg.exit_code == 2 and "unknown inference backend 'nope'" in seg.output


def test_export_of_a_shipped_bundle_by_name_writes_to_the_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Without --out, the installed bundle's models/ (inside site-packages for a wheel) was written to."""
    from app.bundles import bundle_dir

    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in (bundle_dir("brats_unet3d") / "models").iterdir())
    result = CliRunner().invoke(cli, ["export", "brats_unet3d", "--format", "torchscript"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "brats_unet3d_model.ts").is_file() and f"wrote {tmp_path / 'brats_unet3d_model.ts'}" in result.output
    assert sorted(p.name for p in (bundle_dir("brats_unet3d") / "models").iterdir()) == before
