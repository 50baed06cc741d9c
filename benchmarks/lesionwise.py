"""Seconds per case of the BraTS 2023+ lesion-wise metrics (`volseg evaluate --lesion-wise`).

For each shared BraTS case, the prediction is the reference shifted by ``--shift`` voxels along
the first axis (so no inference is needed and every lesion is matched imperfectly). Measured per
case, after the evaluator is loaded once: VolSeg's :func:`app.evaluation.lesionwise.lesion_metrics`
(WT, TC, ET on the foreground box) and, with ``--package-too``, the package's own
``brats_evaluation.evaluate_single_exam`` on the whole grid with all six groups of its glioma
config (what its ``brats-evaluate`` command runs per case). Prints a Markdown table. Measures only.

    python benchmarks/lesionwise.py [--cases 5] [--package-too]
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    import nibabel as nib
    import numpy as np

    from app.data import default_brats_dir, scan_brats
    from app.evaluation.lesionwise import evaluator, lesion_metrics, package_version, to_brats2023

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=0, help="number of cases (0: all)")
    parser.add_argument("--shift", type=int, default=3, help="voxels the reference is shifted by to make the prediction")
    parser.add_argument("--package-too", action="store_true", help="also time the package's evaluate_single_exam on the whole grid")
    args = parser.parse_args()

    cases = scan_brats(default_brats_dir())[: args.cases or None]
    start = time.perf_counter()
    ev = evaluator()
    print(f"{package_version()}; evaluator loaded in {time.perf_counter() - start:.1f} s\n")
    print("| case | ours s | package s | WT lesion Dice | ET lesion Dice |\n| --- | --- | --- | --- | --- |")
    ours, theirs = [], []
    for case in cases:
        image = nib.load(str(case.label))
        ref = np.asarray(image.dataobj).astype(np.uint8)
        pred = np.roll(ref, args.shift, axis=0)
        start = time.perf_counter()
        m = lesion_metrics(pred, ref, image.header.get_zooms()[:3])
        ours.append(time.perf_counter() - start)
        package = ""
        if args.package_too:
            from brats_evaluation import evaluate_single_exam

            start = time.perf_counter()
            evaluate_single_exam(to_brats2023(pred), to_brats2023(ref), case.case_id, ev)
            theirs.append(time.perf_counter() - start)
            package = f"{theirs[-1]:.1f}"
        print(f"| {case.case_id} | {ours[-1]:.1f} | {package} | {m['WT_dice_lesionwise']:.3f} | {m['ET_dice_lesionwise']:.3f} |")
    print(f"| **mean** | **{statistics.mean(ours):.1f}** | {statistics.mean(theirs):.1f} |  |  |" if theirs else f"| **mean** | **{statistics.mean(ours):.1f}** | | | |")


if __name__ == "__main__":
    main()
