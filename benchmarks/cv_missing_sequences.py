"""5-fold cross-validation Dice per region for cases with missing MRI sequences, and how well the
uncertainty map and case quality score find errors. Measures only; asserts nothing.

For each subset of sequences (the others zero-filled, as ``volseg segment`` feeds a case that
lacks them) every shared BraTS case is segmented by the fold model that never saw it
(``app.api.cross_validate(..., sequences=..., uncertainty=True)``). Resumable: a (subset, fold)
whose ``cv_cases.csv`` exists is not run again, so folds can be scored as their training ends.
Prints one Markdown table (mean +- std over cases per region, per subset) and the uncertainty
figures: the AUROC of the whole-tumour entropy for wrong vs right voxels inside the brain
(pooled over all cases) and Spearman's correlation of the case quality score with WT Dice.

    python benchmarks/cv_missing_sequences.py --weights runs/cv_md/brats_unet3d --out runs/cv_md/eval
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

SUBSETS = ("t1,t1ce,t2,flair", "t1ce,flair", "t1,t1ce,flair", "t1ce,t2,flair", "t1,t2,flair", "t1,t1ce,t2", "flair")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="brats_unet3d")
    parser.add_argument("--weights", type=Path, required=True, help="folder of fold<k>.pt or fold<k>/model.pt")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--subsets", nargs="+", default=list(SUBSETS), help="comma-separated sequence lists to keep")
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--backend", default=None)
    parser.add_argument("--int8", choices=["on", "off"], default=None,
                        help="run the fold models' int8 OpenVINO models (app.inference.int8) or not; default: the bundle's openvino_int8")
    parser.add_argument("--set", dest="set_", action="append", default=[], metavar="KEY=VALUE",
                        help="bundle config override, VALUE as JSON where it parses (repeat), e.g. --set 'roi_size=[128,128,128]'")
    parser.add_argument("--report-only", action="store_true", help="print the table of what is there; run nothing")
    args = parser.parse_args()

    from app.api import cross_validate
    from app.cli import _parse_overrides
    from app.evaluation.uncertainty import auroc, spearman

    overrides = _parse_overrides(args.set_)
    if args.int8 is not None:
        overrides["openvino_int8"] = args.int8 == "on"
    for subset in args.subsets if not args.report_only else []:
        for fold in args.folds:
            out = args.out / subset.replace(",", "+") / f"fold{fold}"
            if (out / "cv_cases.csv").is_file():
                continue
            weights = args.weights
            if not ((weights / f"fold{fold}.pt").is_file() or (weights / f"fold{fold}" / "model.pt").is_file()):
                print(f"skip {subset} fold {fold}: no weights yet")
                continue
            cross_validate(args.bundle, weights=weights, out_dir=out, folds=[fold], sequences=subset.split(","), uncertainty=True,
                           backend=args.backend, overrides=overrides or None)
            print(f"done {subset} fold {fold}", flush=True)

    print("| sequences | cases | WT Dice | TC Dice | ET Dice | WT AUROC (pooled) | quality vs WT Dice (Spearman) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    summary = {}
    for subset in args.subsets:
        rows, hist = [], np.zeros((2, 1000), np.int64)
        for fold_dir in sorted((args.out / subset.replace(",", "+")).glob("fold*")):
            if (fold_dir / "cv_cases.csv").is_file():
                with open(fold_dir / "cv_cases.csv") as f:
                    rows += list(csv.DictReader(f))
                if (fold_dir / "uncertainty_histograms.npy").is_file():
                    hist += np.load(fold_dir / "uncertainty_histograms.npy")
        if not rows:
            continue
        stats = {r: (float(np.mean([float(x[f"{r}_dice"]) for x in rows])), float(np.std([float(x[f"{r}_dice"]) for x in rows], ddof=1)))
                 for r in ("WT", "TC", "ET")}
        rho = spearman([float(x["quality"]) for x in rows], [float(x["WT_dice"]) for x in rows])
        summary[subset.replace(",", "+")] = {**{r: round(m, 3) for r, (m, _) in stats.items()}, "cases": len(rows),
                                             "WT_auroc": round(auroc(hist), 3), "quality_spearman": round(rho, 3)}
        print(f"| {subset.replace(',', ' + ')} | {len(rows)} | " + " | ".join(f"{m:.3f} ± {s:.3f}" for m, s in stats.values())
              + f" | {auroc(hist):.3f} | {rho:.3f} |")
    if not summary:
        print("no scored folds yet")
        return
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
