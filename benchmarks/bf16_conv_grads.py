"""How often a training step's gradients hold NaN or inf under CPU bfloat16 autocast, by input size.

Backward passes of a finite loss (mean square of the output) through brats_unet3d's network and
through a single ``torch.nn.Conv3d(128, 128, 3, padding=1)``, forward under
``torch.autocast("cpu", dtype=torch.bfloat16)`` (as the bundles train on CPUs with native bf16,
``app.engines.AutocastInferer``), with float32 as the control; counts the passes with any
non-finite weight gradient. Found while chasing a rare NaN in
``tests/bundles/test_multi_process.py``: the network's bottom at ``roi_size`` 32 is 128 channels
of 2 x 2 x 2 voxels. The count varies from process to process (3 of 300 in one, 0 in the next:
it looks like a read of memory that was never written), so compare rows of several runs.
``app.engines.NonFiniteGradientSkip`` skips such a step. Measures only; asserts nothing.

    python benchmarks/bf16_conv_grads.py --passes 200
"""

from __future__ import annotations

import argparse


def count(module, shape: tuple[int, ...], passes: int, bf16: bool) -> int:
    import torch

    bad = 0
    for _ in range(passes):
        module.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = module(torch.randn(*shape))
        out.float().square().mean().backward()
        bad += int(any(p.grad is not None and not bool(torch.isfinite(p.grad).all()) for p in module.parameters()))
    return bad


def main() -> None:
    import torch

    from app.bundle_config import bundle_parser

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passes", type=int, default=200)
    parser.add_argument("--bundle", default="brats_unet3d")
    args = parser.parse_args()
    torch.manual_seed(0)
    network = bundle_parser(args.bundle, "train").get_parsed_content("network_def")
    rows = [(f"{args.bundle} network, 1 x 4 x 32^3", network, (1, 4, 32, 32, 32)),
            (f"{args.bundle} network, 1 x 4 x 64^3", network, (1, 4, 64, 64, 64)),
            ("Conv3d(128, 128, 3), 1 x 128 x 2^3", torch.nn.Conv3d(128, 128, 3, padding=1), (1, 128, 2, 2, 2)),
            ("Conv3d(128, 128, 3), 1 x 128 x 4^3", torch.nn.Conv3d(128, 128, 3, padding=1), (1, 128, 4, 4, 4))]
    print(f"torch {torch.__version__}, {args.passes} backward passes per cell: passes with a non-finite weight gradient")
    print(f"{'module and input':<40} {'bf16 autocast':>14} {'float32':>8}")
    for name, module, shape in rows:
        print(f"{name:<40} {count(module, shape, args.passes, True):>14} {count(module, shape, args.passes, False):>8}", flush=True)


if __name__ == "__main__":
    main()
