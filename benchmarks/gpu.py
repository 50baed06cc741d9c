"""The CUDA paths on one GPU: training steps (float32 against AMP) and seconds per case.

Training rows: one optimiser step of the bundle's network, loss (DiceCE) and AdamW on a batch of
``batch_size`` random crops of ``roi_size`` (random input, a random 3-region target), in float32
and with AMP as MONAI's ``SupervisedTrainer(amp=True)`` runs it (``torch.autocast`` float16 and a
``GradScaler``); milliseconds per step (CUDA-synchronised, after --warmup steps) and peak GPU
memory. Inference rows, on one labelled case, load -> segment -> save: the MONAI tutorial recipe
(UNet 16..256, random weights, 96^3 windows at overlap 0.5, sw_batch_size 4, gaussian) moved to the
GPU, and the bundle's ``--mode fast`` and ``--mode accurate`` on ``--device cuda``, with Dice.
Prints one table per part. Measures only; asserts nothing. Needs a CUDA GPU.

    python benchmarks/gpu.py --case-dir ../shared/data/brats2018/Brats18_CBICA_AME_1 --bundle brats_unet3d
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch


def train_steps(bundle: str, roi: int, batch: int, amp: bool, steps: int, warmup: int) -> tuple[list[float], float]:
    """Milliseconds per training step and peak GPU memory (MiB) of the bundle's network and loss."""
    from monai.bundle import ConfigParser

    from app.bundles import bundle_dir, config_files

    root = Path(bundle) if Path(bundle).is_dir() else bundle_dir(bundle)
    config = ConfigParser()
    config.read_config(config_files(root if Path(bundle).is_dir() else bundle, "train"))
    config.read_meta(str(root / "configs" / "metadata.json"))
    config["bundle_root"] = str(root)
    torch.manual_seed(0)
    net = config.get_parsed_content("network_def", instantiate=True, lazy=False).cuda().to(memory_format=torch.channels_last_3d)
    loss_fn = config.get_parsed_content("loss", lazy=False)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    x = torch.randn(batch, 4, roi, roi, roi, device="cuda").contiguous(memory_format=torch.channels_last_3d)
    y = (torch.rand(batch, 3, roi, roi, roi, device="cuda") > 0.9).float()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(warmup + steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            loss = loss_fn(net(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        torch.cuda.synchronize()
        if step >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return times, torch.cuda.max_memory_allocated() / 2**20


def tutorial_recipe_cuda():
    """The MONAI BraTS tutorial's inference recipe (random weights) with network and windows on the GPU."""
    from monai.inferers import SlidingWindowInferer
    from monai.networks.nets import UNet
    from monai.transforms import Compose, EnsureTyped, LoadImaged, NormalizeIntensityd, Orientationd

    net = UNet(3, 4, 3, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2).eval().cuda()
    pre = Compose([LoadImaged("image", ensure_channel_first=True), EnsureTyped("image", dtype=torch.float32),
                   Orientationd("image", axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
                   NormalizeIntensityd("image", nonzero=True, channel_wise=True)])
    inferer = SlidingWindowInferer((96, 96, 96), sw_batch_size=4, overlap=0.5, mode="gaussian")

    def run(images: list[Path], out: Path) -> np.ndarray:
        from app.io.save import save_label_map

        data = pre({"image": [str(p) for p in images]})
        with torch.no_grad():
            pred = (torch.sigmoid(inferer(data["image"][None].cuda(), net))[0] > 0.5).cpu()
        label = np.zeros(pred.shape[1:], dtype=np.uint8)
        label[pred[1].numpy()], label[pred[0].numpy()], label[pred[2].numpy()] = 2, 1, 4
        save_label_map(label[::-1, ::-1], images[0], out)
        return label[::-1, ::-1]

    return run


def volseg_cuda(bundle: str, mode: str):
    from app.inference import Segmenter
    from app.io.save import save_label_map

    segmenter = Segmenter(bundle, device="cuda", mode=mode)

    def run(images: list[Path], out: Path) -> np.ndarray:
        label, _ = segmenter.predict(images)
        save_label_map(label, images[0], out)
        return label

    return run


def main() -> None:
    from app.data import find_case
    from app.evaluation import case_metrics

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case-dir", type=Path, required=True, help="a labelled BraTS case folder")
    parser.add_argument("--bundle", default="brats_unet3d", help="bundle name or folder")
    parser.add_argument("--rois", type=int, nargs="+", default=[96, 128])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA GPU; torch sees none")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    print(f"{'training step':<40} {'min ms':>7} {'median ms':>9} {'max ms':>7} {'x fp32':>6} {'peak MiB':>8}")
    for roi in args.rois:
        base = None
        for amp in (False, True):
            t, peak = train_steps(args.bundle, roi, args.batch, amp, args.steps, args.warmup)
            med = statistics.median(t)
            base = base or med
            print(f"{f'batch {args.batch} x {roi}^3, ' + ('AMP float16' if amp else 'float32'):<40} {min(t):>7.1f} {med:>9.1f} {max(t):>7.1f} {base / med:>5.2f}x {peak:>8.0f}")
    case = find_case(args.case_dir, require_label=True)
    images = list(case.images)
    ref = np.asarray(nib.load(case.label).dataobj).astype(np.uint8)
    rows = {"MONAI tutorial recipe on cuda (random weights)": tutorial_recipe_cuda()}
    for mode in ("fast", "accurate"):
        rows[f"VolSeg --mode {mode} --device cuda"] = volseg_cuda(args.bundle, mode)
    times: dict[str, list[float]] = {name: [] for name in rows}
    peaks, dice = dict.fromkeys(rows, 0.0), {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.warmup + args.runs):
            for name, fn in rows.items():
                torch.cuda.reset_peak_memory_stats()
                start = time.perf_counter()
                label = fn(images, Path(tmp) / "seg.nii.gz")
                torch.cuda.synchronize()
                elapsed = time.perf_counter() - start
                peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated() / 2**20)
                if run >= args.warmup:
                    times[name].append(elapsed)
                if name.startswith("VolSeg") and name not in dice:
                    dice[name] = case_metrics(label, ref)
    print(f"\ncase {case.case_id}, {args.runs} runs after {args.warmup} warm-up, load -> segment -> save")
    print(f"{'configuration':<48} {'min s':>6} {'median s':>8} {'max s':>6} {'x tutorial':>10} {'GPU MiB':>8} {'WT':>6} {'TC':>6} {'ET':>6}")
    base = statistics.median(times[next(iter(rows))])
    for name in rows:
        t, d = times[name], dice.get(name)
        scores = " ".join(f"{d[f'{r}_dice']:>6.3f}" for r in ("WT", "TC", "ET")) if d else f"{'n/a':>6} {'n/a':>6} {'n/a':>6}"
        med = statistics.median(t)
        print(f"{name:<48} {min(t):>6.2f} {med:>8.2f} {max(t):>6.2f} {base / med:>9.1f}x {peaks[name]:>8.0f} {scores}")


if __name__ == "__main__":
    main()
