"""Seconds per BraTS case, load -> segment -> save, in one process and interleaved.

Each run times every row once, in an order shuffled anew for each run (seeded, ``--seed``), so that
no row always follows the same one: a row that always ran right after the tutorial recipe paid for
the pages that the recipe's 4.7 GiB had given back (on a 2-core EPYC, 2.11 s against 1.76 s for
the same settings in another row of the same run).

Rows: the MONAI tutorial recipe (UNet 16..256, whole volume, roi 96^3, overlap 0.5, sw_batch 4,
gaussian), the Model Zoo brats_mri_segmentation recipe (SegResNet 16 filters, one 240x240x160
window) - both with random weights, so no Dice - and VolSeg's BraTS bundles with their shipped
weights: the unoptimised configuration (torch, sliding windows at overlap 0.5) and the faster
ones (whole-crop forward, OpenVINO); each --mode as shipped (OpenVINO int8 where the bundle has
int8 models) and, beside it, the same in float32 OpenVINO (--no-int8). Prints one table: min/median/max seconds over --runs after
--warmup, GFLOP of the network per case (torch's FlopCounterMode) and GFLOP/s over the whole
median time, peak resident memory sampled during the row's runs, and Dice per region against the
case's label. With --dice-split, also the mean Dice per region of each VolSeg row over that split
of the shared manifest. With --n4, also each --mode with --n4 and with --no-n4 (N4 bias-field correction
before the model, as the bundle's ``n4_combine`` says), and with --n4-params, --n4 with other
N4 settings (``n4_params`` in fast mode, ``accurate_n4_params`` in accurate mode); with --fast-set / --accurate-set, each bundle's --mode fast / accurate with other config overrides. Measures only; asserts nothing.

    python benchmarks/inference.py --runs 5 --dice-split test
"""

from __future__ import annotations

import argparse
import json
import random
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
from app.inference.backends import openvino_available
from app.inference.int8 import cpu_lacks_vnni
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


def recipe_runner(net: torch.nn.Module, pre: Callable, inferer: Callable) -> Callable[[list[Path], Path], np.ndarray]:
    """load -> infer -> sigmoid > 0.5 -> BraTS codes -> save, as the MONAI recipes do (RAS grid)."""

    def run(images: list[Path], out: Path) -> np.ndarray:
        data = pre({"image": [str(p) for p in images]})
        with torch.no_grad():
            pred = torch.sigmoid(inferer(data["image"][None], net))[0] > 0.5
        label = np.zeros(pred.shape[1:], dtype=np.uint8)
        label[pred[1].numpy()], label[pred[0].numpy()], label[pred[2].numpy()] = 2, 1, 4
        save_label_map(label[::-1, ::-1], images[0], out)  # RAS back to the files' L, P, S grid
        return label[::-1, ::-1]

    run.net, run.inferer, run.pre = net, inferer, pre
    return run


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
    return recipe_runner(net, pre, inferer)


def model_zoo_recipe() -> Callable[[list[Path], Path], np.ndarray]:
    """The Model Zoo brats_mri_segmentation bundle's inference recipe (SegResNet, random weights):
    RAS, 1 mm, z-score, one 240x240x160 window."""
    from monai.inferers import SlidingWindowInferer
    from monai.networks.nets import SegResNet
    from monai.transforms import Compose, EnsureTyped, LoadImaged, NormalizeIntensityd, Orientationd, Spacingd

    net = SegResNet(blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), init_filters=16, in_channels=4, out_channels=3, dropout_prob=0.2).eval()
    pre = Compose([LoadImaged("image", ensure_channel_first=True), EnsureTyped("image", dtype=torch.float32),
                   Orientationd("image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
                   Spacingd("image", pixdim=(1.0, 1.0, 1.0), mode="bilinear"),
                   NormalizeIntensityd("image", nonzero=True, channel_wise=True)])
    inferer = SlidingWindowInferer((240, 240, 160), sw_batch_size=1, overlap=0.5)
    return recipe_runner(net, pre, inferer)


def volseg(bundle: str, overrides: dict, backend: str | None, mode: str = "fast", int8: bool | None = None,
           n4: bool | None = None) -> Callable[[list[Path], Path], np.ndarray]:
    segmenter = Segmenter(bundle, device="cpu", overrides=overrides, backend=backend, mode=mode, int8=int8, n4=n4)

    def run(images: list[Path], out: Path) -> np.ndarray:
        label, _ = segmenter.predict(images)
        save_label_map(label, images[0], out)
        return label

    run.segmenter = segmenter
    return run


def network_gflop(fn: Callable, images: list[Path]) -> float:
    """GFLOP of the network forward passes for one case (torch FlopCounterMode; torch rows only)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    if hasattr(fn, "segmenter"):
        data = fn.segmenter.load(images)
        data.pop("shape"), data.pop("affine")
        with counter, torch.no_grad():
            fn.segmenter.inferer(data["image"][None], fn.segmenter.network)
    else:
        data = fn.pre({"image": [str(p) for p in images]})
        with counter, torch.no_grad():
            fn.inferer(data["image"][None], fn.net)
    return counter.get_total_flops() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    manifest = json.loads((REPO_ROOT / "data_manifests" / "brats2018_shared.json").read_text())
    parser.add_argument("--case", default=manifest["test"][0]["case_id"], help="case ID in the data folder (default: first test case)")
    parser.add_argument("--data-dir", type=Path, default=default_brats_dir())
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--bundles", nargs="+", default=["brats_unet3d", "brats_deeplab3d"])
    parser.add_argument("--dice-split", choices=["validation", "test"], help="also score every VolSeg row on this manifest split")
    parser.add_argument("--modes-only", action="store_true", help="only the tutorial row and each bundle's --mode fast / --mode accurate as shipped")
    parser.add_argument("--modes", nargs="+", choices=["fast", "accurate"], default=["fast", "accurate"], help="the modes of each bundle's rows (default both)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the row order of each run (shuffled anew per run)")
    parser.add_argument("--n4", action="store_true", help="also each bundle's --mode fast and --mode accurate with --n4 and with --no-n4")
    parser.add_argument("--n4-params", action="append", default=[], type=json.loads, metavar="JSON",
                        help="with --n4, also each mode's --n4 row with these n4_params (repeat), e.g. '{\"shrink_factor\": 6, \"iterations\": [25, 25], \"crop_foreground\": true, \"num_threads\": 1}'")
    parser.add_argument("--fast-set", action="append", default=[], type=json.loads, metavar="JSON",
                        help="also each bundle's --mode fast with these config overrides (repeat), e.g. '{\"roi_size\": [96, 96, 96]}'")
    parser.add_argument("--accurate-set", action="append", default=[], type=json.loads, metavar="JSON",
                        help="also each bundle's --mode accurate with these config overrides (repeat), e.g. '{\"openvino_static_shapes\": false}'")
    args = parser.parse_args()
    case = find_case(args.data_dir / args.case, require_label=True)
    ref = np.asarray(nib.load(case.label).dataobj).astype(np.uint8)
    rows = {"MONAI tutorial recipe (random weights, no crop, overlap 0.5)": tutorial_recipe(),
            "Model Zoo brats_mri_segmentation recipe (SegResNet, random weights)": model_zoo_recipe()}
    if args.modes_only:
        rows = {k: v for k, v in rows.items() if k.startswith("MONAI tutorial")}
    for bundle in args.bundles:
        short = bundle.replace("brats_", "")
        for mode in args.modes:  # the shipped settings of each mode, default backend
            try:
                rows[f"VolSeg {short} --mode {mode} (as shipped)"] = shipped = volseg(bundle, {}, None, mode)
                if "int8" in shipped.segmenter.precision:  # the same settings in float32, for the int8 speed-up
                    rows[f"VolSeg {short} --mode {mode} --no-int8 (float32 OpenVINO)"] = volseg(bundle, {}, None, mode, int8=False)
                if args.n4:
                    rows[f"VolSeg {short} --mode {mode} --n4"] = volseg(bundle, {}, None, mode, n4=True)
                    rows[f"VolSeg {short} --mode {mode} --no-n4"] = volseg(bundle, {}, None, mode, n4=False)
                    for params in args.n4_params:
                        key = "accurate_n4_params" if mode == "accurate" else "n4_params"  # each mode's own N4 settings
                        rows[f"VolSeg {short} --mode {mode} --n4, {key} {json.dumps(params)}"] = volseg(bundle, {key: params}, None, mode, n4=True)
            except FileNotFoundError as err:
                print(f"skipping {bundle} --mode {mode}: {err}")
        for overrides in args.fast_set:
            rows[f"VolSeg {short} --mode fast, {json.dumps(overrides)}"] = volseg(bundle, overrides, None, "fast")
        for overrides in args.accurate_set:
            rows[f"VolSeg {short} --mode accurate, {json.dumps(overrides)}"] = volseg(bundle, overrides, None, "accurate")
        if args.modes_only:
            continue
        rows[f"VolSeg {short} sliding window overlap 0.5, torch (unoptimised)"] = volseg(bundle, {"infer_mode": "sliding_window", "overlap": 0.5}, "torch")
        rows[f"VolSeg {short} whole crop, torch"] = volseg(bundle, {"infer_mode": "whole_volume"}, "torch")
        if openvino_available():
            rows[f"VolSeg {short} sliding window overlap 0.5, openvino"] = volseg(bundle, {"infer_mode": "sliding_window", "overlap": 0.5}, "openvino", int8=False)
            rows[f"VolSeg {short} whole crop, openvino"] = volseg(bundle, {"infer_mode": "whole_volume"}, "openvino", int8=False)
    images = list(case.images)
    gflop = {name: network_gflop(fn, images) if not (hasattr(fn, "segmenter") and fn.segmenter.backend == "openvino") else float("nan")
             for name, fn in rows.items() if not name.endswith(", openvino")}
    for name in rows:  # an OpenVINO row runs the same network as its torch twin
        if name.endswith(", openvino"):
            twin = name.replace(", openvino", ", torch (unoptimised)" if "sliding" in name else ", torch")
            gflop[name] = gflop[twin]
    times: dict[str, list[float]] = {name: [] for name in rows}
    peaks: dict[str, float] = dict.fromkeys(rows, 0.0)
    dice: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        order = random.Random(args.seed)
        for run in range(args.warmup + args.runs):
            names = list(rows)
            order.shuffle(names)  # no row always follows the same one
            for name in names:
                fn = rows[name]
                with PeakRSS() as rss:
                    start = time.perf_counter()
                    label = fn(images, Path(tmp) / "seg.nii.gz")
                    elapsed = time.perf_counter() - start
                peaks[name] = max(peaks[name], rss.peak)
                if run >= args.warmup:
                    times[name].append(elapsed)
                if name.startswith("VolSeg") and name not in dice:
                    dice[name] = case_metrics(label, ref)
        split_dice = {}
        if args.dice_split:
            cases = [find_case(args.data_dir / item["case_id"], require_label=True) for item in manifest[args.dice_split]]
            for name, fn in rows.items():
                if name.startswith("VolSeg"):
                    scores = [case_metrics(fn(list(c.images), Path(tmp) / "seg.nii.gz"), np.asarray(nib.load(c.label).dataobj).astype(np.uint8)) for c in cases]
                    split_dice[name] = {r: float(np.mean([m[f"{r}_dice"] for m in scores])) for r in ("WT", "TC", "ET")}
    vnni = {True: "no VNNI: int8 models need 7-bit weights", False: "VNNI", None: "VNNI unknown"}[cpu_lacks_vnni()]
    print(f"case {args.case}, torch {torch.__version__}, {torch.get_num_threads()} threads, {args.runs} runs after {args.warmup} warm-up, "
          f"CPU {torch.backends.cpu.get_cpu_capability()} ({vnni})")
    print(f"{'configuration':<66} {'min s':>6} {'median s':>8} {'max s':>6} {'x tutorial':>10} {'GFLOP':>6} {'GFLOP/s':>7} {'peak MiB':>8} {'WT':>6} {'TC':>6} {'ET':>6}")
    base = statistics.median(times[next(iter(rows))])
    for name in rows:
        t, d = times[name], dice.get(name)
        scores = " ".join(f"{d[f'{r}_dice']:>6.3f}" for r in ("WT", "TC", "ET")) if d else f"{'n/a':>6} {'n/a':>6} {'n/a':>6}"
        med = statistics.median(t)
        print(f"{name:<66} {min(t):>6.2f} {med:>8.2f} {max(t):>6.2f} {base / med:>9.1f}x {gflop[name]:>6.0f} {gflop[name] / med:>7.1f} {peaks[name]:>8.0f} {scores}")
    fastest = min((n for n in rows if n.startswith("VolSeg")), key=lambda n: statistics.median(times[n]))
    print(f"fastest VolSeg row: {fastest}, {base / statistics.median(times[fastest]):.1f}x the tutorial recipe")
    if split_dice:
        print(f"mean Dice over the {args.dice_split} split ({len(manifest[args.dice_split])} cases)")
        for name, d in split_dice.items():
            print(f"{name:<66} " + " ".join(f"{r} {d[r]:.3f}" for r in ("WT", "TC", "ET")))

if __name__ == "__main__":
    main()
