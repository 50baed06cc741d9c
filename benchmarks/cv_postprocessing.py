"""Choose BraTS postprocessing on cross-validation: component filters applied to the CV label maps.
Measures only; asserts nothing.

Reads the label maps that a CV run wrote (``volseg cv evaluate`` / ``benchmarks/cv_missing_sequences.py``
with the bundle's component filter off: ``min_component_fraction`` 0), one folder per sequence
subset, and scores each candidate rule on the same maps, with the transforms the bundle ships:

- ``none``: as written (island removal under ``min_component_mm3`` only);
- ``largest``: MONAI ``KeepLargestConnectedComponent`` (26-connected, all labels together:
  nnU-Net's postprocessing option);
- ``frac F``: :class:`app.transforms.RemoveRelativelySmallComponents` (drop components under F
  times the largest one's size);
- ``ET frac F`` (``--et-fractions``): :class:`app.transforms.RelabelRelativelySmallComponents` on
  the enhancing tumour alone (ET components under F times the largest ET component become NCR;
  TC and WT unchanged), applied to the maps as written (the bundle's all-label filter on). Its
  fraction is also chosen by nested CV: for each fold, the F (0 = off) with the best mean ET
  Dice over the other folds' cases is applied to that fold's cases, and the paired gain over
  ``none`` is printed with its standard error.
- ``NCR near ET D`` (``--ncr-et-distances``): necrotic core (label 1) farther than D voxels (mm at
  BraTS's 1 mm grid) from predicted ET becomes edema (label 2); WT unchanged. Cases without
  predicted ET are left as they are.
- ``TC without ET F`` (``--tc-et-fractions``, ``inf``: every such component): each TC component
  (labels 1 and 4, face-connected) that holds no predicted ET and is smaller than F times the
  largest TC component becomes edema, in cases with predicted ET; chosen by nested CV on TC Dice
  as the ET rule is on ET Dice. Both target the core that a network without T2 calls in edema.

Prints, per subset, the mean Dice per region of each rule and the number of cases it changes by
more than 0.05 WT Dice either way, then (``--rows RULE``) the per-case rows (Dice and HD95 in mm,
:func:`app.evaluation.case_metrics`) of one rule for the first subset. A filter is idempotent, so
applying it here to maps written without it gives what the workflow writes with it.

    python benchmarks/cv_postprocessing.py --preds runs/cv_md2/eval --rows "frac 0.3"
    python benchmarks/cv_postprocessing.py --preds runs/n4sf8/eval --fractions --et-fractions 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 1
    python benchmarks/cv_postprocessing.py --preds runs/s38/base_n4 --subsets t1+t1ce+t2+flair t1ce+flair t1+t1ce+flair \
        --fractions --ncr-et-distances 3 20 --tc-et-fractions 0.05 0.1 0.25 0.5 1 inf
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.transforms import KeepLargestConnectedComponent

from scipy import ndimage

from app.data import default_brats_dir
from app.evaluation.cv import nested_choice
from app.evaluation.metrics import case_metrics
from app.labels import BRATS
from app.transforms import RelabelRelativelySmallComponents, RemoveRelativelySmallComponents

REGIONS = ("WT", "TC", "ET")
SUBSETS = ("t1+t1ce+t2+flair", "t1ce+flair", "t1+t1ce+flair", "t1ce+t2+flair", "flair")


def dice_only(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """``{"WT_dice": ...}`` per BraTS region (Dice 1 where both are empty), as ``case_metrics`` scores it."""
    out = {}
    for region, values in BRATS.regions.items():
        p, r = np.isin(pred, values), np.isin(ref, values)
        total = p.sum() + r.sum()
        out[f"{region}_dice"] = 1.0 if total == 0 else float(2 * (p & r).sum() / total)
    return out


def ncr_near_et(distance: float):
    """NCR farther than ``distance`` voxels from ET -> edema, on a ``(1, H, W, D)`` BraTS label map."""
    def rule(x: np.ndarray) -> np.ndarray:
        label = np.array(x[0])
        et = label == 4
        if et.any():
            label[(label == 1) & (ndimage.distance_transform_edt(~et) > distance)] = 2
        return label[None]
    return rule


def tc_without_et(fraction: float):
    """TC components without ET and under ``fraction`` x the largest TC component -> edema."""
    def rule(x: np.ndarray) -> np.ndarray:
        label = np.array(x[0])
        et = label == 4
        if not et.any():
            return label[None]
        components, n = ndimage.label((label == 1) | et)
        sizes = np.bincount(components.ravel(), minlength=n + 1)
        sizes[0] = 0
        drop = np.ones(n + 1, bool)
        drop[np.unique(components[et])] = False
        drop &= sizes < fraction * sizes.max()
        drop[0] = False
        label[drop[components]] = 2
        return label[None]
    return rule


def rules(fractions: list[float], et_fractions: list[float] = (), ncr_et_distances: list[float] = (), tc_et_fractions: list[float] = ()) -> dict:
    out = {"none": lambda x: x, "largest": KeepLargestConnectedComponent(applied_labels=[1, 2, 4], independent=False, connectivity=3)}
    out.update({f"frac {f:g}": RemoveRelativelySmallComponents(f) for f in fractions})
    out.update({f"ET frac {f:g}": RelabelRelativelySmallComponents([4], to_label=1, min_fraction=f) for f in et_fractions})
    out.update({f"NCR near ET {d:g}": ncr_near_et(d) for d in ncr_et_distances})
    out.update({f"TC without ET {f:g}": tc_without_et(f) for f in tc_et_fractions})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preds", type=Path, required=True, help="folder of <subset>/fold<k>/preds/*_seg.nii.gz")
    parser.add_argument("--subsets", nargs="+", default=list(SUBSETS))
    parser.add_argument("--fractions", type=float, nargs="*", default=[0.1, 0.2, 0.3, 0.5])
    parser.add_argument("--et-fractions", type=float, nargs="*", default=[], help="ET-only rules to score (and choose by nested CV)")
    parser.add_argument("--ncr-et-distances", type=float, nargs="*", default=[], help="NCR-near-ET rules to score (voxels)")
    parser.add_argument("--tc-et-fractions", type=float, nargs="*", default=[],
                        help="TC-without-ET rules to score (and choose by nested CV on TC); inf: every ET-free component")
    parser.add_argument("--rows", default=None, help="print per-case rows of this rule (first subset)")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    data_dir = Path(args.data_dir or default_brats_dir())
    candidates = rules(args.fractions, args.et_fractions, args.ncr_et_distances, args.tc_et_fractions)
    summary = {}
    print("| sequences | rule | cases | WT | TC | ET | cases changed > 0.05 WT (up / down) |\n| --- | --- | --- | --- | --- | --- | --- |")
    per_case: dict[str, dict[str, dict[str, float]]] = {}
    for subset in args.subsets:
        files = sorted((args.preds / subset).glob("fold*/preds/*_seg.nii.gz"))
        if not files:
            continue
        scores: dict[str, dict[str, dict[str, float]]] = {name: {} for name in candidates}
        for path in files:
            case = path.name.removesuffix("_seg.nii.gz")
            pred = np.asarray(nib.load(path).dataobj)
            ref_img = nib.load(data_dir / case / f"{case}_seg.nii.gz")
            ref, spacing = np.asarray(ref_img.dataobj), ref_img.header.get_zooms()[:3]
            for name, rule in candidates.items():
                label = np.asarray(rule(pred[None]))[0]
                # HD95 (slow) only for the rule whose rows are printed; Dice for every rule
                metrics = case_metrics(label, ref, spacing) if name == args.rows else dice_only(label, ref)
                scores[name][case] = {**metrics, "fold": path.parent.parent.name.removeprefix("fold")}
        summary[subset] = {}
        for name, rows in scores.items():
            means = [float(np.mean([r[f"{region}_dice"] for r in rows.values()])) for region in REGIONS]
            delta = [rows[c]["WT_dice"] - scores["none"][c]["WT_dice"] for c in rows]
            up, down = sum(d > 0.05 for d in delta), sum(d < -0.05 for d in delta)
            summary[subset][name] = dict(zip(REGIONS, [round(m, 4) for m in means]))
            print(f"| {subset.replace('+', ' + ')} | {name} | {len(rows)} | " + " | ".join(f"{m:.3f}" for m in means) + f" | {up} / {down} |")
        for family, region in (("ET frac", "ET"), ("TC without ET", "TC")):
            names = ["none", *(n for n in candidates if n.startswith(family))]
            if len(names) < 2:
                continue
            cases = list(scores["none"])
            picks, gains = nested_choice(np.array([[scores[n][c][f"{region}_dice"] for c in cases] for n in names]),
                                         [scores["none"][c]["fold"] for c in cases])
            chosen = [names[j] for j in picks]
            se = gains.std(ddof=1) / np.sqrt(len(gains)) if len(gains) > 1 else float("nan")
            summary[subset][f"{region} nested"] = {"chosen": chosen, "gain": round(float(gains.mean()), 4), "se": round(float(se), 4)}
            cells = ["", "", ""]
            cells[REGIONS.index(region)] = (f"{np.mean([scores['none'][c][f'{region}_dice'] for c in cases]) + gains.mean():.3f} "
                                            f"(paired {gains.mean():+.3f}, SE {se:.3f})")
            print(f"| {subset.replace('+', ' + ')} | {region} rule by nested CV ({', '.join(chosen)}) | {len(gains)} | " + " | ".join(cells) + " | |")
        if args.rows and not per_case:
            per_case = scores[args.rows]
    (args.preds / "postprocessing.json").write_text(json.dumps(summary, indent=1) + "\n")
    if per_case:
        with open(args.preds / "postprocessing_cases.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["case", "fold", *(f"{r}_{m}" for r in REGIONS for m in ("dice", "hd95"))])
            for case, r in per_case.items():
                writer.writerow([case, r["fold"], *(round(r[f"{reg}_{m}"], 4) for reg in REGIONS for m in ("dice", "hd95"))])
        print(f"\nper case, {args.rows}, {args.subsets[0]}:\n| case | fold | WT | TC | ET | HD95 WT / TC / ET mm |\n| --- | --- | --- | --- | --- | --- |")
        for case, r in sorted(per_case.items(), key=lambda kv: (kv[1]["fold"], kv[0])):
            print(f"| {case} | {r['fold']} | " + " | ".join(f"{r[f'{reg}_dice']:.3f}" for reg in REGIONS)
                  + " | " + " / ".join(f"{r[f'{reg}_hd95']:.1f}" for reg in REGIONS) + " |")
        for stat, fn in (("mean", np.mean), ("std", lambda v: np.std(v, ddof=1))):
            print(f"| **{stat}** | | " + " | ".join(f"{fn([r[f'{reg}_dice'] for r in per_case.values()]):.3f}" for reg in REGIONS) + " | |")


if __name__ == "__main__":
    main()
