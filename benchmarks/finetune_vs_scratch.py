"""Fine-tuning from a shipped bundle vs training from scratch on 3 labelled BraTS cases.
Measures only; asserts nothing.

The question a user with a few labelled cases of their own asks: what does starting from
``brats_unet3d``'s weights (``volseg train --init-from brats_unet3d``, optionally
``--freeze-encoder``) buy over training from scratch on the same cases, for the same number of
epochs? Scored on the 3 cases of cross-validation fold ``--fold`` (default 2) of
``data_manifests/brats2018_cv5.json``, the fold that the shipped ``models/model.pt`` (= fold 2's
CV model) never trained on, so every row is scored on cases none of its weights saw. The 3
training cases are the first case of each of three other folds; note that the shipped model did
train on them (with 9 more), so the fine-tuned rows measure adaptation with a warm start, not
transfer to a new site.

Every run trains ``--epochs`` epochs without validation (``val_interval`` past the end), so
``model.pt`` holds the final weights and nothing is selected on the scored cases. Prints one
Markdown table: Dice per region (mean over the 3 cases), training minutes, and the per-case rows.

    python benchmarks/finetune_vs_scratch.py --out runs/finetune --epochs 40
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.transforms import KeepLargestConnectedComponent

from app import api
from app.data import default_brats_dir
from app.evaluation.metrics import case_metrics
from app.resources import manifest_path

REGIONS = ("WT", "TC", "ET")


def split(fold: int) -> tuple[list[dict], list[dict]]:
    """(3 training cases: the first case of three other folds, the fold's own cases)."""
    cases = json.loads(manifest_path("brats2018_cv5").read_text())["training"]
    test = [c for c in cases if c["fold"] == fold]
    others = sorted({c["fold"] for c in cases} - {fold})[:3]
    train = [next(c for c in cases if c["fold"] == f) for f in others]
    return train, test


def score(bundle: str | Path, test: list[dict], data_dir: Path, out: Path) -> dict[str, dict[str, float]]:
    """Segment the test cases with ``bundle`` (``--mode fast``; cases already segmented in ``out``
    are read back) and score them against ``_seg``.

    Every label map goes through the shipped postprocessing's largest-component filter once more
    (idempotent), so a bundle trained before ``keep_largest_component`` existed scores alike.
    """
    missing = [c for c in test if not (out / f"{c['case_id']}_seg.nii.gz").is_file()]
    for case, result in zip(missing, api.segment_cases([data_dir / c["case_id"] for c in missing], out, bundle=str(bundle), device="cpu")):
        if result.error:
            raise RuntimeError(f"{case['case_id']}: {result.error}")
    largest = KeepLargestConnectedComponent(applied_labels=[1, 2, 4], independent=False, connectivity=3)
    rows = {}
    for case in test:
        label = np.asarray(largest(np.asarray(nib.load(out / f"{case['case_id']}_seg.nii.gz").dataobj)[None]))[0]
        ref = nib.load(data_dir / case["label"])
        rows[case["case_id"]] = case_metrics(label, np.asarray(ref.dataobj), ref.header.get_zooms()[:3])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/finetune"))
    parser.add_argument("--fold", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    data_dir = Path(args.data_dir or default_brats_dir())
    train, test = split(args.fold)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = args.out / "datalist.json"
    manifest.write_text(json.dumps({"training": train, "validation": []}, indent=1))
    no_val = {"val_interval": args.epochs + 1, "max_epochs": args.epochs}
    runs = {
        "from scratch (lr 1e-2)": dict(overrides=no_val),
        "fine-tune --init-from brats_unet3d (lr 3e-3)": dict(overrides={**no_val, "learning_rate": 0.003}, init_from="brats_unet3d"),
        "fine-tune + --freeze-encoder (lr 3e-3)": dict(overrides={**no_val, "learning_rate": 0.003}, init_from="brats_unet3d", freeze_encoder=True),
    }
    table: dict[str, tuple[dict, float]] = {"shipped model, no training": (score("brats_unet3d", test, data_dir, args.out / "pred_shipped"), 0.0)}
    for i, (name, kwargs) in enumerate(runs.items()):
        run_dir = args.out / f"run{i}"
        start = time.perf_counter()
        if not (run_dir / "models" / "model.pt").is_file():  # resumable: a finished run is scored again, not retrained
            api.train("brats_unet3d", manifest=manifest, data_dir=data_dir, output_dir=run_dir, progress=False, **kwargs)
        minutes = json.loads((run_dir / "configs" / "metadata.json").read_text())["training_run"]["seconds"] / 60
        table[name] = (score(run_dir, test, data_dir, args.out / f"pred{i}"), minutes)
    (args.out / "results.json").write_text(json.dumps({k: {"cases": v[0], "train_min": v[1]} for k, v in table.items()}, indent=1))
    print(f"train: {', '.join(c['case_id'] for c in train)}; scored: {', '.join(c['case_id'] for c in test)}; {args.epochs} epochs\n")
    print("| start | WT | TC | ET | train min |\n| --- | --- | --- | --- | --- |")
    for name, (rows, minutes) in table.items():
        means = [np.mean([r[f"{region}_dice"] for r in rows.values()]) for region in REGIONS]
        print(f"| {name} | " + " | ".join(f"{m:.3f}" for m in means) + f" | {minutes:.1f} |")
    print("\n| start | case | WT | TC | ET |\n| --- | --- | --- | --- | --- |")
    for name, (rows, _) in table.items():
        for case, r in rows.items():
            print(f"| {name} | {case} | " + " | ".join(f"{r[f'{region}_dice']:.3f}" for region in REGIONS) + " |")


if __name__ == "__main__":
    main()
