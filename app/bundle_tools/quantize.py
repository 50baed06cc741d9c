"""Make the int8 OpenVINO models of a bundle's checkpoints (NNCF post-training quantization).

Each cross-validation fold model ``fold<k>.pt`` is calibrated on windows of its own training cases
only (the cases of the other folds in the cross-validation datalist), so that its held-out cases
stay unseen and the int8 models can be scored by the same cross-validation as the float32 ones.
Any other checkpoint (``model.pt``) that is not a byte-for-byte copy of a fold model is
calibrated on every case of the datalist. Checkpoints whose int8 model is up to date (same
SHA-256 in its record) are skipped. See :mod:`app.inference.int8`.

Usage (needs ``pip install "volseg[quantize]"``)::

    python -m app.bundle_tools.quantize bundles/brats_unet3d
    python -m app.bundle_tools.quantize bundles/brats_unet3d --weights runs/cv/weights   # fold<k>.pt there
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

FOLD_PATTERN = re.compile(r"^fold(\d+)\.pt$")


def quantize_bundle(bundle: str | Path, weights_dir: str | Path | None = None, manifest: str | Path | None = None,
                    data_dir: str | Path | None = None, per_case: int = 3, force: bool = False,
                    fast_bias_correction: bool = True, keep_subsets: Sequence[Sequence[int]] | None = None,
                    float_layers: Sequence[str] = (), overflow_fix: str = "enable") -> list[Path]:
    """Write ``<name>_int8.xml`` beside each checkpoint of ``weights_dir`` that lacks an up-to-date one.

    Args:
        bundle: bundle name or folder (network, preprocessing and ``roi_size``).
        weights_dir: folder of ``fold<k>.pt`` and/or ``model.pt`` (default: the bundle's ``models/``).
        manifest: the cross-validation datalist with a ``fold`` per case (default: the shipped
            ``brats2018_cv5.json``).
        data_dir: data root of the manifest's paths (default: :func:`app.data.default_brats_dir`).
        per_case: calibration windows per case.
        force: remake int8 models that are up to date.
        fast_bias_correction: NNCF's fast bias correction, or (False) its full one.
        keep_subsets: input-channel subsets whose zero-filled copies of each window are added to
            the calibration set (:func:`app.inference.int8.calibration_windows`), e.g.
            ``[[1, 3], [0, 1, 3]]`` for BraTS cases with only T1ce + FLAIR or without T2. None: the
            bundle's ``training#int8_keep_subsets`` in ``configs/metadata.json`` (what its shipped
            int8 models were made with), or none where it has no such key.
        float_layers: regular expressions of layer names kept in float32
            (:func:`app.inference.int8.quantize_checkpoint`).
        overflow_fix: NNCF's overflow fix, ``"enable"`` (7-bit weights in every layer: the same
            results on CPUs with and without VNNI), ``"first_layer_only"`` or ``"disable"``
            (:func:`app.inference.int8.quantize_checkpoint`).

    Returns:
        The ``.xml`` paths written.

    Raises:
        FileNotFoundError: no checkpoint in ``weights_dir``, or a case of the manifest is missing.
        ImportError: NNCF or OpenVINO is not installed.
    """
    from app.data import default_brats_dir
    from app.inference import Segmenter
    from app.inference.int8 import calibration_windows, find_int8_ir, quantize_checkpoint
    from app.resources import manifest_path

    seg = Segmenter(bundle, device="cpu", backend="torch")
    weights = Path(weights_dir) if weights_dir is not None else Path(seg.parser["bundle_root"]) / "models"
    ckpts = [p for p in sorted(weights.glob("*.pt")) if FOLD_PATTERN.match(p.name) or p.name == "model.pt"]  # folds first: model.pt may copy one
    if not ckpts:
        raise FileNotFoundError(f"no fold<k>.pt or model.pt in '{weights}'")
    cases = json.loads(Path(manifest or manifest_path("brats2018_cv5")).read_text())["training"]
    data_root = Path(data_dir) if data_dir is not None else default_brats_dir()
    roi_size = tuple(seg.parser.get_parsed_content("roi_size"))
    if keep_subsets is None:
        keep_subsets = seg.parser.get("_meta_", {}).get("training", {}).get("int8_keep_subsets", [])
    cache: dict[str, list] = {}

    def windows_of(case: dict) -> list:
        if case["case_id"] not in cache:
            images = [data_root / p for p in case["image"]]
            for image in images:
                if not image.is_file():
                    raise FileNotFoundError(f"calibration case '{case['case_id']}': '{image}' not found (--data-dir?)")
            volume = seg.preprocessing({"image": [str(p) for p in images]})["image"].numpy()
            seed = sum(map(ord, case["case_id"]))
            cache[case["case_id"]] = calibration_windows([volume], roi_size, per_case, seed=seed, keep_subsets=keep_subsets)
        return cache[case["case_id"]]

    written = []
    for ckpt in ckpts:
        if not force and find_int8_ir(ckpt) is not None:
            logger.info("%s: int8 model up to date", ckpt)
            continue
        match = FOLD_PATTERN.match(ckpt.name)
        chosen = [c for c in cases if match is None or int(c["fold"]) != int(match.group(1))]
        windows = [w for c in chosen for w in windows_of(c)]
        info = {"cases": [c["case_id"] for c in chosen], "per_case": per_case, "roi_size": list(roi_size)}
        if keep_subsets:
            info["keep_subsets"] = [[int(c) for c in subset] for subset in keep_subsets]
        written.append(quantize_checkpoint(seg.network, ckpt, windows, seg.in_channels, info, fast_bias_correction, float_layers,
                                           overflow_fix))
        logger.info("%s: wrote %s (%d windows of %d cases)", ckpt, written[-1], len(windows), len(chosen))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    from app.inference.int8 import OVERFLOW_FIXES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", help="bundle name or folder")
    parser.add_argument("--weights", type=Path, help="folder of fold<k>.pt / model.pt (default: the bundle's models/)")
    parser.add_argument("--manifest", type=Path, help="cross-validation datalist (default: brats2018_cv5.json)")
    parser.add_argument("--data-dir", type=Path, help="data root of the manifest's paths")
    parser.add_argument("--per-case", type=int, default=3, help="calibration windows per case")
    parser.add_argument("--force", action="store_true", help="remake int8 models that are up to date")
    parser.add_argument("--full-bias-correction", action="store_true", help="NNCF's full bias correction instead of the fast one")
    parser.add_argument("--keep-subsets", nargs="+", default=None, metavar="C,C",
                        help="also calibrate on each window with only these input channels kept (the rest zeroed, as a "
                             "missing sequence is fed), e.g. 1,3 0,1,3 for BraTS T1ce + FLAIR and no T2 "
                             "(default: the bundle's training#int8_keep_subsets in configs/metadata.json)")
    parser.add_argument("--float-layers", nargs="+", default=[], metavar="REGEX",
                        help="OpenVINO layer names (regular expressions) to keep in float32")
    parser.add_argument("--overflow-fix", choices=OVERFLOW_FIXES, default="enable",
                        help="NNCF overflow fix: 7-bit weights in every layer (enable, the default: int8 models then give "
                             "the same results on CPUs without VNNI, whose 8-bit dot products saturate), the first "
                             "layer only (NNCF's default) or none")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    keep = None if args.keep_subsets is None else [[int(c) for c in s.split(",")] for s in args.keep_subsets]
    written = quantize_bundle(args.bundle, args.weights, args.manifest, args.data_dir, args.per_case, args.force, not args.full_bias_correction, keep,
                              args.float_layers, args.overflow_fix)
    sys.stdout.write("".join(f"written: {p}\n" for p in written) or "all int8 models up to date\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
