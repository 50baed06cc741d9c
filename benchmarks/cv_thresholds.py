"""Choose the per-region probability thresholds on cross-validation. Measures only; asserts nothing.

Step 1 (``--weights``): every case is run by the fold model that never trained on it (as
``volseg cv evaluate --mode fast``), and the sigmoid probabilities of TC, WT and ET after
``Invertd`` (input geometry) are stored, quantised to uint8, in ``OUT/<subset>/<case>.npz``.
Step 2 (always): each candidate threshold of each region is applied to the stored
probabilities, followed by the bundle's own postprocessing (regions to labels, island removal,
component filter), and scored with Dice per region (mean over the cases).
Step 3: a threshold picked on the same 15 cases it is scored on flatters itself, so each region's
choice is also scored by nested CV: for each fold, the candidate with the best mean Dice over the
other folds' cases is applied to that fold's cases; the nested mean, against 0.5 (paired gain and
its standard error over cases), is the honest estimate of what choosing a threshold this way gains.

The regions are nested (ET in TC in WT) and ``RegionsToBratsLabels`` paints from the outside
in, so a region's threshold changes mostly its own Dice: each region is swept with the other
two at 0.5, then the chosen triple is scored per case.

    python benchmarks/cv_thresholds.py --weights bundles/brats_unet3d/models --out runs/cv_thr
    python benchmarks/cv_thresholds.py --out runs/cv_thr             # sweep again, no inference

With ``--mix OTHER``, step 2 instead scores, at the 0.5 thresholds, the weighted average of these
probabilities and those stored in ``OTHER`` (another network's fold models, e.g. brats_deeplab3d:
each case still seen only by models that never trained on it), for each of ``--mix-weights``
(the share of ``OTHER``; 0 is this network alone, 1 the other alone): a two-network ensemble
scored by cross-validation.

    python benchmarks/cv_thresholds.py --bundle brats_deeplab3d --weights runs/cv_dl/weights --out runs/cv_thr_dl --subsets t1+t1ce+t2+flair
    python benchmarks/cv_thresholds.py --out runs/cv_thr --mix runs/cv_thr_dl --subsets t1+t1ce+t2+flair
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Invertd

from app.constants import MODALITIES
from app.data import default_brats_dir, load_datalist
from app.evaluation.cv import fold_checkpoint, nested_choice
from app.inference import Segmenter

SUBSETS = {"t1+t1ce+t2+flair": MODALITIES, "t1ce+flair": ("t1ce", "flair"), "t1+t1ce+flair": ("t1", "t1ce", "flair"),
           "t1ce+t2+flair": ("t1ce", "t2", "flair")}
REGIONS = ("TC", "WT", "ET")  # channel order of the network
CANDIDATES = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


def save_probabilities(bundle: str, manifest: Path, weights: Path, out: Path, subsets: list[str], data_dir: Path, n4: bool = False) -> None:
    content = json.loads(manifest.read_text())
    items = load_datalist(manifest, "training", data_dir)
    fold_of = {it["case_id"]: it["fold"] for it in content["training"]}
    for fold in range(int(content["numFolds"])):
        seg = Segmenter(bundle, ckpt_path=fold_checkpoint(weights, fold), mode="fast", int8=False, n4=n4)
        for item in (it for it in items if fold_of[it["case_id"]] == fold):
            for subset in subsets:
                keep = SUBSETS[subset]
                dest = out / subset / f"{item['case_id']}.npz"
                if dest.is_file():
                    continue
                data = seg.load([p if m in keep else None for m, p in zip(MODALITIES, item["image"])])
                shape, affine = data.pop("shape"), data.pop("affine")
                data.pop("missing_sequences", None)
                with torch.no_grad():
                    data["pred"] = seg.inferer(data["image"].unsqueeze(0), seg.network)[0].float()
                for transform in seg.postprocessing.transforms:
                    data = transform(data)
                    if isinstance(transform, Invertd):
                        break
                prob = np.asarray(data["pred"].cpu().numpy())
                assert prob.shape[1:] == tuple(shape), (prob.shape, shape)
                dest.parent.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(dest, prob=np.round(prob * 255).astype(np.uint8), affine=np.asarray(affine), fold=fold)
                print(f"fold {fold} {item['case_id']} {subset}: saved", flush=True)


def dice(pred: np.ndarray, ref: np.ndarray, values: tuple[int, ...]) -> float:
    p, r = np.isin(pred, values), np.isin(ref, values)
    total = p.sum() + r.sum()
    return 1.0 if total == 0 else float(2 * (p & r).sum() / total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="brats_unet3d")
    parser.add_argument("--manifest", type=Path, default=Path("data_manifests/brats2018_cv5.json"))
    parser.add_argument("--weights", type=Path, default=None, help="fold models; omit to sweep stored probabilities")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--subsets", nargs="+", default=list(SUBSETS))
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--regions", nargs="+", default=["WT", "TC", "ET"], help="regions to sweep")
    parser.add_argument("--candidates", type=float, nargs="+", default=list(CANDIDATES), help="thresholds to try (0.5 is always added)")
    parser.add_argument("--n4", action="store_true", help="N4-correct the sequences first (volseg segment --n4)")
    parser.add_argument("--mix", type=Path, default=None, help="stored probabilities of another network's CV to average with")
    parser.add_argument("--mix-weights", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0], help="shares of --mix")
    args = parser.parse_args()
    data_dir = Path(args.data_dir or default_brats_dir())
    if args.weights is not None:
        save_probabilities(args.bundle, args.manifest, args.weights, args.out, args.subsets, data_dir, n4=args.n4)
    post = Segmenter(args.bundle, mode="fast").postprocessing.transforms
    after = post[[i for i, t in enumerate(post) if type(t).__name__ == "ChannelThresholdd"][0] + 1:]  # labels, island removal, filter
    regions = {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)}
    results = {}
    for subset in args.subsets:
        files = sorted((args.out / subset).glob("*.npz"))
        if not files:
            continue
        cases = []
        for f in files:
            z = np.load(f)
            ref = np.asarray(nib.load(data_dir / f.stem / f"{f.stem}_seg.nii.gz").dataobj)
            prob = z["prob"].astype(np.float32) / 255
            if args.mix is not None:
                other = np.load(args.mix / subset / f.name)
                assert int(other["fold"]) == int(z["fold"]), f"{f.stem}: fold {int(z['fold'])} here, {int(other['fold'])} in {args.mix}"
                prob = np.stack([prob, other["prob"].astype(np.float32) / 255])
            cases.append((f.stem, int(z["fold"]), prob, z["affine"], ref))

        def score(thr: dict[str, float], items: list | None = None) -> list[dict[str, float]]:
            rows = []
            for _, _, prob, affine, ref in items if items is not None else cases:
                t = torch.tensor([thr[r] for r in REGIONS]).view(3, 1, 1, 1)
                data = {"pred": MetaTensor((torch.from_numpy(prob) >= t - 1e-6).float(), affine=torch.as_tensor(affine))}
                for transform in after:
                    data = transform(data)
                label = np.asarray(data["pred"].cpu().numpy()[0])
                rows.append({r: dice(label, ref, v) for r, v in regions.items()})
            return rows

        table = {}
        if args.mix is not None:
            for w in args.mix_weights:
                mixed = [(c, k, (1 - w) * p[0] + w * p[1], a, r) for c, k, p, a, r in cases]
                rows = score({"TC": 0.5, "WT": 0.5, "ET": 0.5}, mixed)
                table[f"mix {w}"] = {r: round(float(np.mean([x[r] for x in rows])), 4) for r in regions}
                table[f"mix {w} cases"] = {c[0]: {r: round(x[r], 4) for r in regions} for c, x in zip(cases, rows)}
                print(f"| {subset} | share of {args.mix.name} {w} | " + " | ".join(f"{table[f'mix {w}'][r]:.3f}" for r in ("WT", "TC", "ET")) + " |",
                      flush=True)
            results[subset] = table
            continue
        folds = np.array([k for _, k, _, _, _ in cases])
        candidates = tuple(sorted(set(args.candidates) | {0.5}))
        for region in args.regions:
            own = []  # (candidates, cases): Dice of the swept region
            for c in candidates:
                thr = {"TC": 0.5, "WT": 0.5, "ET": 0.5, region: c}
                rows = score(thr)
                own.append([x[region] for x in rows])
                table[f"{region} {c}"] = {r: round(float(np.mean([x[r] for x in rows])), 4) for r in regions}
                print(f"| {subset} | {region} >= {c} | " + " | ".join(f"{table[f'{region} {c}'][r]:.3f}" for r in ("WT", "TC", "ET")) + " |", flush=True)
            own = np.array(own)
            picks, gain = nested_choice(own, folds, baseline=candidates.index(0.5))
            chosen = [candidates[j] for j in picks]
            nested = own[candidates.index(0.5)] + gain
            table[f"{region} nested"] = {"mean": round(float(nested.mean()), 4), "at_0.5": round(float(own[candidates.index(0.5)].mean()), 4),
                                         "chosen_per_fold": chosen, "paired_gain": round(float(gain.mean()), 4),
                                         "paired_se": round(float(gain.std(ddof=1) / np.sqrt(len(gain))), 4),
                                         "cases": {c[0]: {str(t): round(float(v), 4) for t, v in zip(candidates, own[:, i])} for i, c in enumerate(cases)}}
            print(f"{subset} {region}: 0.5 -> {own[candidates.index(0.5)].mean():.3f}; nested CV {nested.mean():.3f} "
                  f"(chosen per fold {chosen}; paired gain {gain.mean():+.3f}, SE {table[f'{region} nested']['paired_se']:.3f})", flush=True)
        results[subset] = table
    (args.out / ("mix.json" if args.mix is not None else "thresholds.json")).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
