"""Int8 OpenVINO models: post-training quantization of a bundle's checkpoints, and finding them.

OpenVINO runs int8 3D convolutions faster than float32 ones on x86 CPUs (1.5x per 96^3 window on
an AVX2 CPU without VNNI, docs/performance.md). The quantized model is made once, offline, with
NNCF's post-training quantization (``nncf.quantize``: per-channel int8 weights, int8 activations
calibrated on sample inputs; Intel's Neural Network Compression Framework,
https://github.com/openvinotoolkit/nncf), from the OpenVINO IR that
:func:`app.inference.backends.export_network` writes, and saved beside the checkpoint as
``<name>_int8.xml``/``.bin`` with a ``<name>_int8.json`` record. The record holds the SHA-256 of
the checkpoint it was made from: :func:`find_int8_ir` only returns an IR whose record matches the
checkpoint's bytes, so retrained or replaced weights never run through a stale int8 model.

Making one needs ``pip install "volseg[quantize]"`` (NNCF); running one needs only OpenVINO.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)

INT8_SUFFIX = "_int8"
#: NNCF ``OverflowFix`` values (:func:`quantize_checkpoint`); "enable" is VolSeg's default
OVERFLOW_FIXES = ("enable", "first_layer_only", "disable")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (the hash ``large_files.yml`` lists)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def int8_paths(ckpt_path: str | Path) -> tuple[Path, Path]:
    """``(<name>_int8.xml, <name>_int8.json)`` beside ``ckpt_path`` (``models/fold0.pt`` ->
    ``models/fold0_int8.xml``)."""
    path = Path(ckpt_path)
    stem = path.parent / f"{path.stem}{INT8_SUFFIX}"
    return stem.with_suffix(".xml"), stem.with_suffix(".json")


def find_int8_ir(ckpt_path: str | Path) -> Path | None:
    """The int8 IR made from exactly these weights, or None.

    Looks at every ``*_int8.json`` record in the checkpoint's folder (so ``model.pt``, a copy of
    ``fold2.pt``, finds ``fold2_int8.xml``) and returns the ``.xml`` whose record's
    ``source_sha256`` is the checkpoint's and whose ``.xml`` and ``.bin`` exist.
    """
    path = Path(ckpt_path)
    records = sorted(path.parent.glob(f"*{INT8_SUFFIX}.json"))
    if not path.is_file() or not records:
        return None
    sha = file_sha256(path)
    for record in records:
        try:
            info = json.loads(record.read_text())
        except (OSError, ValueError):
            logger.warning("skipping unreadable int8 record %s", record)
            continue
        xml = record.with_suffix(".xml")
        if info.get("source_sha256") == sha and xml.is_file() and xml.with_suffix(".bin").is_file():
            return xml
    return None


VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@functools.cache
def cpu_lacks_vnni(cpuinfo: str | Path = "/proc/cpuinfo") -> bool | None:
    """Whether this x86 CPU lacks VNNI (``avx512_vnni``, ``avx_vnni`` or ``amx_int8`` in its flags).

    Without VNNI, OpenVINO computes int8 convolutions through 16-bit intermediate sums that can
    saturate with 8-bit weights (OpenVINO's "Saturation (overflow) issue"), unless the model was
    quantized with NNCF's overflow fix (:func:`quantize_checkpoint`). Returns None where it cannot
    tell (no readable ``cpuinfo``, or a CPU that lists no x86 flags, e.g. ARM).
    """
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), None)
    if not flags or "sse2" not in flags:
        return None
    return not any(f in flags for f in VNNI_FLAGS)


def int8_may_saturate(xml: str | Path, cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True when the int8 IR at ``xml`` was made without NNCF's overflow fix in every layer (its
    record has no ``"overflow_fix": "enable"``) and this CPU lacks VNNI (:func:`cpu_lacks_vnni`):
    its labels can then differ from those on a VNNI CPU (the 0.10.0 models lost 0.034 TC Dice on
    an AVX2-only CPU)."""
    try:
        info = json.loads(Path(xml).with_suffix(".json").read_text())
    except (OSError, ValueError):
        info = {}
    return info.get("overflow_fix") != "enable" and bool(cpu_lacks_vnni(cpuinfo))


def calibration_windows(volumes: Iterable[np.ndarray], roi_size: Sequence[int] = (96, 96, 96), per_volume: int = 3,
                        seed: int = 0, keep_subsets: Sequence[Sequence[int]] = ()) -> list[np.ndarray]:
    """Random ``roi_size`` windows of preprocessed volumes, as a sliding window would see them.

    Args:
        volumes: ``(C, H, W, D)`` float32 arrays, preprocessed as for inference (brain crop,
            z-score).
        roi_size: window size in voxels; volumes smaller than it are zero-padded at the end.
        per_volume: windows drawn per volume, uniformly over the positions inside it.
        seed: random seed.
        keep_subsets: channel subsets (e.g. ``[[1, 3]]``: T1ce + FLAIR of a BraTS input); each
            window is also added once per subset with the other channels zeroed, as a case with
            missing sequences reaches the network (zero-filled channels), so that the int8
            activation ranges cover those inputs too.

    Returns:
        ``(1, C, *roi_size)`` float32 arrays: ``per_volume * (1 + len(keep_subsets))`` per volume.

    Raises:
        ValueError: a subset names a channel the volumes do not have, or keeps none.
    """
    rng = np.random.default_rng(seed)
    subsets = [[int(c) for c in subset] for subset in keep_subsets]
    windows = []
    for volume in volumes:
        for subset in subsets:
            if not subset or any(not 0 <= c < volume.shape[0] for c in subset):
                raise ValueError(f"calibration subset {subset}: channels must be a non-empty subset of 0..{volume.shape[0] - 1}")
        for _ in range(per_volume):
            start = [int(rng.integers(0, max(0, volume.shape[i + 1] - roi_size[i]) + 1)) for i in range(3)]
            window = volume[:, start[0]:start[0] + roi_size[0], start[1]:start[1] + roi_size[1], start[2]:start[2] + roi_size[2]]
            window = np.ascontiguousarray(np.pad(window, [(0, 0)] + [(0, roi_size[i] - window.shape[i + 1]) for i in range(3)])[None], dtype=np.float32)
            windows.append(window)
            for subset in subsets:
                kept = np.zeros_like(window)
                kept[:, subset] = window[:, subset]
                windows.append(kept)
    return windows


def quantize_checkpoint(network: torch.nn.Module, ckpt_path: str | Path, windows: Sequence[np.ndarray], in_channels: int,
                        calibration: dict | None = None, fast_bias_correction: bool = True,
                        float_layers: Sequence[str] = (), overflow_fix: str = "enable") -> Path:
    """Make the int8 IR of a checkpoint with NNCF post-training quantization.

    Args:
        network: the bundle's network (weights are loaded from ``ckpt_path``).
        ckpt_path: the checkpoint (``model.pt``, compact ``fold*.pt``).
        windows: calibration inputs, ``(1, C, H, W, D)`` float32 (:func:`calibration_windows`);
            for cross-validation fold models, windows of that fold's training cases only.
        in_channels: input channels ``C``.
        calibration: what the windows were (cases, counts), stored in the record.
        fast_bias_correction: NNCF's fast bias correction (True) or its full, slower one.
        float_layers: regular expressions of OpenVINO layer names to leave in float32 (NNCF
            ``IgnoredScope(patterns=...)``), e.g. the first and last convolutions, which are
            often the most sensitive to quantization.
        overflow_fix: NNCF's ``OverflowFix``: ``"enable"`` quantizes the weights of every layer to 7
            bits, ``"first_layer_only"`` (NNCF's default) only the first layer's, ``"disable"`` none.
            x86 CPUs without VNNI (AVX2 only, or AVX-512 without VNNI) compute int8 dot products
            through 16-bit intermediate sums that saturate with 8-bit weights (OpenVINO's
            "Saturation (overflow) issue"); with 7-bit weights the result is the same on every
            CPU. Measured: the 0.10.0 fold models made with the NNCF default lost 0.034 TC Dice on
            an AVX2-only AMD EPYC against float32 (bundle README, "Int8 models").

    Returns:
        The ``<name>_int8.xml`` path. The ``.bin`` and the ``.json`` record (source checkpoint
        and its SHA-256, NNCF and OpenVINO versions, calibration) are written beside it; each
        file is written to a temporary name first and renamed, the record last.

    Raises:
        ImportError: NNCF or OpenVINO is not installed (the message gives the install command).
        ValueError: no calibration windows, or an unknown ``overflow_fix``.
    """
    if overflow_fix not in OVERFLOW_FIXES:
        raise ValueError(f"overflow_fix must be one of {', '.join(OVERFLOW_FIXES)}, got '{overflow_fix}'")
    try:
        import nncf
        import openvino as ov
    except ImportError as err:
        raise ImportError(f'making int8 models needs NNCF and OpenVINO: pip install "volseg[quantize]" ({err})') from err
    from app.inference.backends import export_network
    from app.inference.ensemble import load_weights

    if not windows:
        raise ValueError("int8 calibration needs at least one input window")
    ckpt_path = Path(ckpt_path)
    xml, record = int8_paths(ckpt_path)
    net = load_weights(network, ckpt_path)
    with tempfile.TemporaryDirectory(dir=xml.parent, prefix=f".{xml.stem}.tmp") as tmp:
        f32_xml = export_network(net, "openvino", Path(tmp) / "f32.xml", in_channels)
        model = ov.Core().read_model(str(f32_xml))
        ignored = nncf.IgnoredScope(patterns=list(float_layers), validate=False) if float_layers else None
        advanced = nncf.AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix(overflow_fix))
        quantized = nncf.quantize(model, nncf.Dataset(list(windows)), subset_size=len(windows), preset=nncf.QuantizationPreset.MIXED,
                                  fast_bias_correction=fast_bias_correction, ignored_scope=ignored, advanced_parameters=advanced)
        staged = Path(tmp) / xml.name
        ov.save_model(quantized, str(staged), compress_to_fp16=False)
        os.replace(staged.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(staged, xml)
        info = {"source": ckpt_path.name, "source_sha256": file_sha256(ckpt_path), "method": "nncf.quantize (post-training, preset mixed, "
                f"{'fast' if fast_bias_correction else 'full'} bias correction, overflow fix {overflow_fix})",
                "nncf": nncf.__version__, "openvino": ov.__version__.split("-")[0], "overflow_fix": overflow_fix,
                "calibration": {"windows": len(windows), **(calibration or {})}}
        if float_layers:
            info["float_layers"] = list(float_layers)
        staged_record = Path(tmp) / record.name
        staged_record.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(staged_record, record)
    return xml
