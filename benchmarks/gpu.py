"""The CUDA paths on one GPU: training steps (float32 against AMP) and seconds per case.

Training rows: one optimiser step of the bundle's network, trainer loss (DiceCE in float32,
``app.engines.Float32Loss``, as the bundles train) and AdamW on a batch of
``batch_size`` random crops of ``roi_size`` (random input, a random 3-region target), in float32
and with AMP as MONAI's ``SupervisedTrainer(amp=True)`` runs it (``torch.autocast`` float16 and a
``GradScaler``); milliseconds per step (CUDA-synchronised, after --warmup steps) and peak GPU
memory. Inference rows, on one labelled case, load -> segment -> save: the MONAI tutorial recipe
(UNet 16..256, random weights, 96^3 windows at overlap 0.5, sw_batch_size 4, gaussian) moved to the
GPU, and the bundle's ``--mode fast`` and ``--mode accurate`` on ``--device cuda``, with Dice
(skipped without ``--case-dir``). AMP rows (``--engine-steps``): MONAI's ``SupervisedTrainer``
as the bundle's train config builds it on CUDA (AMP, channels-last network), eager and compiled, with
its trainer ``loss_function`` (float32 loss, ``app.engines.Float32Loss``) against the bare ``loss``
under autocast (what the bundles ran before that fix), trained on a synthetic 4-channel phantom (three nested balls: WT, TC, ET); per row the non-finite losses,
the first and last loss and the phantom Dice after training. Prints one table per part. Measures
only; asserts nothing. Needs a CUDA GPU.

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


def train_config(bundle: str):
    """The bundle's parsed train config (``ConfigParser``), ``bundle`` a name or a folder."""
    from app.bundle_config import bundle_parser

    return bundle_parser(bundle, "train")


def train_steps(bundle: str, roi: int, batch: int, amp: bool, steps: int, warmup: int) -> tuple[list[float], float]:
    """Milliseconds per training step and peak GPU memory (MiB) of the bundle's network and loss."""
    from app.engines import Float32Loss

    config = train_config(bundle)
    torch.manual_seed(0)
    net = config.get_parsed_content("network_def", instantiate=True, lazy=False).cuda().to(memory_format=torch.channels_last_3d)
    loss_fn = Float32Loss(config.get_parsed_content("loss", lazy=False))
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


def phantom(roi: int, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(batch, 4, roi, roi, roi)`` images and ``(batch, 3, roi, roi, roi)`` WT/TC/ET targets: nested balls
    (radii 0.30 / 0.18 / 0.09 of ``roi``, random centres) brighter by region per channel, plus noise."""
    g = torch.Generator().manual_seed(seed)
    axes = torch.meshgrid(*(torch.arange(roi, dtype=torch.float32),) * 3, indexing="ij")
    images, targets = [], []
    for _ in range(batch):
        centre = roi / 2 + (torch.rand(3, generator=g) - 0.5) * roi * 0.2
        dist = sum((a - c) ** 2 for a, c in zip(axes, centre)).sqrt() / roi
        regions = torch.stack([dist < r for r in (0.30, 0.18, 0.09)]).float()
        gain = torch.tensor([[0.5, 0.2, 1.0], [0.3, 1.0, 1.5], [1.5, 0.5, 0.2], [2.0, 0.2, 0.1]])
        image = gain @ regions.flatten(1)
        images.append(image.view(4, roi, roi, roi) + 0.3 * torch.randn(4, roi, roi, roi, generator=g))
        targets.append(regions)
    return torch.stack(images), torch.stack(targets)


def engine_check(bundle: str, roi: int, batch: int, wrapped: bool, compile: bool, steps: int) -> dict:
    """Train the bundle's network ``steps`` iterations on a phantom with MONAI ``SupervisedTrainer`` built
    from the bundle's train config on CUDA (its ``network`` (channels-last), ``prepare_batch``,
    ``train#inferer``, ``amp`` and ``compile_kwargs``); the loss is the trainer's ``loss_function``
    (``wrapped``) or the bare ``loss``, ``compile`` as given. Returns the losses' counts and ends, the
    largest weight and the Dice (WT, TC, ET) of the trained network on the phantom."""
    from ignite.engine import Events
    from monai.engines import SupervisedTrainer
    from monai.metrics import DiceMetric

    config = train_config(bundle)
    config["device"] = "$torch.device('cuda')"
    config["compile"] = compile
    torch.manual_seed(0)
    net = config.get_parsed_content("network", lazy=False)
    loss = config.get_parsed_content("train#trainer#loss_function" if wrapped else "loss", lazy=False)
    x, y = phantom(roi, batch)
    loader = [{"image": x, "label": y}] * steps
    trainer = SupervisedTrainer(
        device=torch.device("cuda"), max_epochs=1, train_data_loader=loader, network=net,
        optimizer=torch.optim.AdamW(net.parameters(), lr=1e-3), loss_function=loss,
        inferer=config.get_parsed_content("train#inferer", lazy=False),
        prepare_batch=config.get_parsed_content("train#trainer#prepare_batch", lazy=False),
        amp=bool(config.get_parsed_content("amp", lazy=False)), compile=compile,
        compile_kwargs=config.get_parsed_content("train#trainer#compile_kwargs", lazy=False), decollate=False,
    )
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: losses.append(engine.state.output["loss"].item()))
    start = time.perf_counter()
    trainer.run()
    seconds = time.perf_counter() - start
    net.eval()
    with torch.no_grad():
        pred = (torch.sigmoid(net(x.cuda()).float()) > 0.5).float()
    dice = DiceMetric(reduction="none")(pred, y.cuda()).mean(0).cpu().tolist()
    finite = [v for v in losses if np.isfinite(v)]
    return {"nonfinite": len(losses) - len(finite), "steps": len(losses), "first": losses[0], "last": losses[-1],
            "dice": dice, "max_w": max(float(p.detach().abs().max()) for p in net.parameters()), "seconds": seconds}


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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case-dir", type=Path, help="a labelled BraTS case folder (inference rows; skipped without)")
    parser.add_argument("--engine-steps", type=int, default=200, help="SupervisedTrainer AMP steps on a phantom (0: skip)")
    parser.add_argument("--engine-roi", type=int, default=128)
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
    if args.engine_steps:
        print(f"\nSupervisedTrainer(amp=True), {args.engine_steps} steps, batch {args.batch} x {args.engine_roi}^3 phantom")
        print(f"{'loss under AMP':<48} {'non-finite':>10} {'first':>7} {'last':>7} {'max |w|':>8} {'WT':>6} {'TC':>6} {'ET':>6} {'s':>6}")
        for compile in (False, True):
            for wrapped in (True, False):
                r = engine_check(args.bundle, args.engine_roi, args.batch, wrapped, compile, args.engine_steps)
                name = ("trainer loss_function (Float32Loss)" if wrapped else "bare loss (before the fix)") + (", compiled" if compile else "")
                dice = " ".join(f"{d:>6.3f}" for d in r["dice"])
                print(f"{name:<48} {r['nonfinite']:>4}/{r['steps']:<5} {r['first']:>7.3f} {r['last']:>7.3f} {r['max_w']:>8.3f} {dice} {r['seconds']:>6.1f}", flush=True)
    if args.case_dir is None:
        return
    from app.data import find_case
    from app.evaluation import case_metrics

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
