"""Training throughput (samples per second) of the bundle's pipeline against the naive one.

Both rows train the same network with the same transforms, loss and optimizer taken from the
bundle's train config (``[common.yaml, train.yaml]``) on the first --cases training cases of the
shared manifest; one sample is one 96^3 crop (batch_size x num_samples crops per step):
- naive: MONAI ``Dataset`` (every case read and preprocessed again each time) + torch
  ``DataLoader``, contiguous tensors;
- VolSeg: ``CacheDataset(copy_cache=False)`` (deterministic preprocessing cached once; its build
  time is reported separately) + ``ThreadDataLoader``, channels-last network and batches, and
  (the bundles' default where TorchInductor works) the network ``torch.compile``'d as MONAI's
  ``SupervisedTrainer(compile=True)`` does; the compile, in the first step, is reported as setup.
Steps are timed after --warmup steps, data loading included. Measures only; asserts nothing.

    python benchmarks/train.py --bundle brats_unet3d --steps 10
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    from monai.data import CacheDataset, DataLoader, Dataset, ThreadDataLoader

    from app.bundle_config import bundle_parser
    from app.engines import channels_last_prepare_batch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="brats_unet3d")
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the naive row")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile row (it compiles for about a minute)")
    args = parser.parse_args()

    config = bundle_parser(args.bundle, "train")
    config["device"] = "$torch.device('cpu')"
    data = config.get_parsed_content("train_datalist")[: args.cases]
    transform = config.get_parsed_content("train#preprocessing")
    batch = config.get_parsed_content("batch_size")
    crops = batch * config.get_parsed_content("num_samples")

    def measure(loader, channels_last: bool, compiled: bool = False) -> tuple[list[float], list[float], float]:
        torch.manual_seed(0)
        net = config.get_parsed_content("network_def", instantiate=True, lazy=False)
        net = net.to(memory_format=torch.channels_last_3d) if channels_last else net
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        net = torch.compile(net, dynamic=False) if compiled else net
        loss_fn = config.get_parsed_content("loss", lazy=False)
        times, waits, it, first = [], [], iter(loader), 0.0
        for step in range(args.warmup + args.steps):
            start = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                it = iter(loader)
                item = next(it)
            fetched = time.perf_counter()
            if channels_last:
                image, label = channels_last_prepare_batch(item, torch.device("cpu"))
            else:
                image, label = item["image"], item["label"]
            if compiled:  # as MONAI's SupervisedTrainer(compile=True) does: plain tensors into the compiled network
                image, label = image.as_tensor(), label.as_tensor()
            opt.zero_grad(set_to_none=True)
            loss_fn(net(image), label).backward()
            opt.step()
            if step == 0:
                first = time.perf_counter() - start
            if step >= args.warmup:
                times.append(time.perf_counter() - start)
                waits.append(fetched - start)
        return times, waits, first

    rows = {}
    naive = DataLoader(Dataset(data, transform), batch_size=batch, shuffle=True, num_workers=args.workers)
    rows[f"naive: Dataset + DataLoader (workers {args.workers}), contiguous"] = (*measure(naive, False)[:2], 0.0)
    start = time.perf_counter()
    cached = CacheDataset(data, transform, cache_rate=1.0, copy_cache=False, num_workers=2, progress=False)
    build = time.perf_counter() - start
    threaded = ThreadDataLoader(cached, batch_size=batch, shuffle=True, num_workers=0)
    rows["VolSeg: CacheDataset(copy_cache=False) + ThreadDataLoader, contiguous"] = (*measure(threaded, False)[:2], build)
    rows["VolSeg: CacheDataset(copy_cache=False) + ThreadDataLoader, channels-last"] = (*measure(threaded, True)[:2], build)
    if not args.no_compile:
        times, waits, first = measure(threaded, True, compiled=True)
        rows["VolSeg: ... channels-last + torch.compile (bundle default)"] = (times, waits, build + first)

    base = crops / statistics.median(next(iter(rows.values()))[0])
    print(f"bundle {args.bundle}, {args.cases} cases, {crops} crops of {config['roi_size']} per step, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.steps} steps after {args.warmup} warm-up")
    print(f"{'pipeline':<72} {'median s/step':>13} {'of it data':>10} {'samples/s':>10} {'speed-up':>9} {'setup s':>14}")
    for name, (times, waits, build_s) in rows.items():
        rate = crops / statistics.median(times)
        print(f"{name:<72} {statistics.median(times):>13.2f} {statistics.median(waits):>10.2f} {rate:>10.2f} {rate / base:>8.2f}x {build_s:>14.1f}")


if __name__ == "__main__":
    main()
