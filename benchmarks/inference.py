"""Seconds per BraTS case, load -> segment -> save, in one process and interleaved.

Rows: the MONAI tutorial recipe (UNet 16..256, whole volume, roi 96^3, overlap 0.5, sw_batch 4,
gaussian; random weights, so no Dice) and VolSeg's brats_unet3d with its shipped weights at the
bundle's settings and at lighter sliding-window overlaps. Prints one table: min/median/max
seconds over --runs after --warmup, peak resident memory sampled during the row's runs, and Dice
per region against the case's label. Measures only; asserts nothing.

    python benchmarks/inference.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from app.bundles import REPO_ROOT
from app.data import default_brats_dir, find_case
from app.evaluation import case_metrics
from app.inference import Segmenter
from app.io.save import save_label_map


class PeakRSS:
    """Peak resident set size (MiB) of this process while the block runs, sampled every 10 ms."""

    def __enter__(self) -> PeakRSS:
        self.peak, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.peak = max(self.peak, int(line.split()[1]) / 1024)
            time.sleep(0.01)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def tutorial_recipe() -> Callable[[list[Path], Path], np.ndarray]:
    """The MONAI BraTS tutorial's inference recipe (random weights)."""
    from monai.inferers import SlidingWindowInferer
    from monai.networks.nets import UNet
    from monai.transforms import Compose, EnsureTyped, LoadImaged, NormalizeIntensityd, Orientationd

    net = UNet(3, 4, 3, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2).eval()
    pre = Compose([LoadImaged("image", ensure_channel_first=True), EnsureTyped("image", dtype=torch.float32),
                   Orientationd("image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
                   NormalizeIntensityd("image", nonzero=True, channel_wise=True)])
    inferer = SlidingWindowInferer((96, 96, 96), sw_batch_size=4, overlap=0.5, mode="gaussian")

    def run(images: list[Path], out: Path) -> np.ndarray:
        data = pre({"image": [str(p) for p in images]})
        with torch.no_grad():
            pred = torch.sigmoid(inferer(data["image"][None], net))[0] > 0.5
        label = np.zeros(pred.shape[1:], dtype=np.uint8)
        label[pred[1].numpy()], label[pred[0].numpy()], label[pred[2].numpy()] = 2, 1, 4
        save_label_map(label[::-1, ::-1], images[0], out)  # RAS back to the files' L, P, S grid
        return label[::-1, ::-1]

    return run


def volseg(overrides: dict) -> Callable[[list[Path], Path], np.ndarray]:
    segmenter = Segmenter("brats_unet3d", device="cpu", overrides=overrides)

    def run(images: list[Path], out: Path) -> np.ndarray:
        label, _ = segmenter.predict(images)
        save_label_map(label, images[0], out)
        return label

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    manifest = json.loads((REPO_ROOT / "data_manifests" / "brats2018_shared.json").read_text())
    parser.add_argument("--case", default=manifest["test"][0]["case_id"], help="case ID in the data folder (default: first test case)")
    parser.add_argument("--data-dir", type=Path, default=default_brats_dir())
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    case = find_case(args.data_dir / args.case, require_label=True)
    ref = np.asarray(nib.load(case.label).dataobj).astype(np.uint8)
    rows = {
        "MONAI tutorial recipe (random weights, no crop, overlap 0.5)": (tutorial_recipe(), False),
        "VolSeg brats_unet3d (crop, overlap 0.5, bundle default)": (volseg({}), True),
        "VolSeg brats_unet3d (crop, overlap 0.25)": (volseg({"overlap": 0.25}), True),
        "VolSeg brats_unet3d (crop, overlap 0.0)": (volseg({"overlap": 0.0}), True),
    }
    times: dict[str, list[float]] = {name: [] for name in rows}
    peaks: dict[str, float] = dict.fromkeys(rows, 0.0)
    dice: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.warmup + args.runs):
            for name, (fn, trained) in rows.items():
                with PeakRSS() as rss:
                    start = time.perf_counter()
                    label = fn(list(case.images), Path(tmp) / "seg.nii.gz")
                    elapsed = time.perf_counter() - start
                peaks[name] = max(peaks[name], rss.peak)
                if run >= args.warmup:
                    times[name].append(elapsed)
                if trained and name not in dice:
                    dice[name] = case_metrics(label, ref)
    print(f"case {args.case}, torch {torch.__version__}, {torch.get_num_threads()} threads, {args.runs} runs after {args.warmup} warm-up")
    print(f"{'configuration':<62} {'min s':>7} {'median s':>9} {'max s':>7} {'peak RSS MiB':>13} {'WT':>6} {'TC':>6} {'ET':>6}")
    for name in rows:
        t = times[name]
        d = dice.get(name)
        scores = " ".join(f"{d[f'{r}_dice']:>6.3f}" for r in ("WT", "TC", "ET")) if d else f"{'n/a':>6} {'n/a':>6} {'n/a':>6}"
        print(f"{name:<62} {min(t):>7.2f} {statistics.median(t):>9.2f} {max(t):>7.2f} {peaks[name]:>13.0f} {scores}")


if __name__ == "__main__":
    main()
