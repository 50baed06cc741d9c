"""Where the seconds of one BraTS case go: each step of the bundle's inference timed on its own.

Builds the bundle's ``Segmenter`` once, then per run times the input check, the preprocessing
(read, RAS, spacing, brain crop, z-score; where the bundle's --mode fast runs N4, as brats_unet3d
does since 0.11.0, read, geometry, N4 and z-score each on its own), the inferer (network windows
and stitching), each postprocessing transform in the order ``Segmenter.predict`` runs them, and
the write. Prints the median and minimum of --runs after one
warm-up. Measures only; asserts nothing.

    python benchmarks/phases.py --bundle brats_unet3d --backend openvino
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def main() -> None:
    import torch

    from app.bundles import REPO_ROOT
    from app.data import default_brats_dir, find_case
    from app.data.verify import check_case_images
    from app.inference import Segmenter
    from app.io.save import save_label_map

    manifest = json.loads((REPO_ROOT / "data_manifests" / "brats2018_shared.json").read_text())
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="brats_unet3d")
    parser.add_argument("--backend", default="openvino", choices=["torch", "openvino"])
    parser.add_argument("--case", default=manifest["test"][0]["case_id"])
    parser.add_argument("--data-dir", type=Path, default=default_brats_dir())
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-n4", action="store_true", help="without N4 (the path before brats_unet3d 0.11.0; --no-n4 of volseg segment)")
    args = parser.parse_args()

    seg = Segmenter(args.bundle, device="cpu", backend=args.backend, n4=False if args.no_n4 else None)
    images = list(find_case(args.data_dir / args.case).images)
    times: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        out = fn()
        times.setdefault(name, []).append(time.perf_counter() - start)
        return out

    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.runs + 1):
            timed("check inputs", lambda: check_case_images(images))
            files = {"image": [str(p) for p in images]}
            if seg._n4_branch is None:
                data = timed("read and preprocess", lambda: seg.preprocessing(files))
            else:  # the shipped --mode fast of brats_unet3d: N4 between the brain crop and the z-score
                load, _ = seg._split
                geometry, n4, normalise = seg._n4_branch
                data = timed("read", lambda: load(files))
                data = timed("RAS, spacing, brain crop", lambda: geometry(data))
                data = timed("N4 (SimpleITK)", lambda: n4(data if seg.n4_combine == "n4" else dict(data)))
                data = timed("z-score", lambda: normalise(data))
            with torch.no_grad():
                data["pred"] = timed("inferer (network and stitching)", lambda: seg.inferer(data["image"][None], seg.network)[0].float())
            for transform in seg._postprocessing_order(data["image"]):  # the order predict() runs them in
                data = timed(f"post: {type(transform).__name__}", lambda: transform(data))
            label = data["pred"].numpy()[0].astype("uint8")
            timed("write", lambda: save_label_map(label, images[0], Path(tmp) / "seg.nii.gz"))
    print(f"{args.bundle}, backend {seg.backend}, case {args.case}, crop {tuple(data['image'].shape)}, {args.runs} runs after 1 warm-up")
    print(f"{'step':<40} {'median s':>9} {'min s':>7}")
    for name, t in times.items():
        print(f"{name:<40} {statistics.median(t[1:]):>9.3f} {min(t[1:]):>7.3f}")
    print(f"{'total (sum of medians)':<40} {sum(statistics.median(t[1:]) for t in times.values()):>9.3f}")


if __name__ == "__main__":
    main()
