"""5-fold cross-validation Dice when some sequences come as 2D acquisitions of thick slices and
``volseg segment --resample`` puts them back on the 1 mm grid. Measures only; asserts nothing.

Clinical protocols often acquire FLAIR and T2 as 2D stacks of 4-6 mm slices beside a 1 mm 3D T1
and T1ce. For each shared BraTS case this writes such a case: each sequence of ``--thick`` is
averaged over ``--slice-mm`` along the axial axis (a thick slice's partial volume) and sampled
every ``--slice-mm``, then resampled onto the case's 1 mm grid with
:func:`app.io.resample.resample_onto`, the function ``--resample`` runs. Every case is then
segmented by the fold model that never saw it (:func:`app.api.cross_validate`), and the table
gives the mean Dice per region beside the same models on the cases as given (paired differences
with their standard error).

    python benchmarks/thick_slices.py --out runs/thick --thick flair t2 --slice-mm 5 --int8 on
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

REGIONS = ("WT", "TC", "ET")


def thick_copy(src: Path, dest: Path, slice_mm: int, tmp: Path) -> None:
    """``src`` as a 2D acquisition of ``slice_mm`` slices (slab mean, then every ``slice_mm``),
    resampled back onto ``src``'s grid by the ``--resample`` path."""
    import SimpleITK as sitk

    from app.io.resample import resample_onto

    image = sitk.ReadImage(str(src), sitk.sitkFloat32)
    k = image.GetSize()[2] // slice_mm
    slab = sitk.BoxMean(image, [0, 0, slice_mm // 2])
    origin = image.TransformContinuousIndexToPhysicalPoint((0.0, 0.0, (slice_mm - 1) / 2))
    spacing = (*image.GetSpacing()[:2], image.GetSpacing()[2] * slice_mm)
    thick = sitk.Resample(slab, [*image.GetSize()[:2], k], sitk.Transform(), sitk.sitkLinear, origin, spacing, image.GetDirection(), 0.0, sitk.sitkInt16)
    acquired = tmp / f"thick_{src.name}"
    sitk.WriteImage(thick, str(acquired), True)
    resample_onto(acquired, src, dest)
    acquired.unlink()


def build(manifest: Path, data_dir: Path, out: Path, thick: list[str], slice_mm: int) -> Path:
    """Write the thick-slice cases under ``out/data`` and their datalist; returns the datalist."""
    import shutil

    datalist = json.loads(manifest.read_text())
    root = out / "data"
    for entry in datalist["training"]:
        for rel in [*entry["image"], entry["label"]]:
            src, dest = data_dir / rel, root / rel
            if dest.is_file():
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            if any(rel.endswith(f"_{s}.nii.gz") for s in thick):
                thick_copy(src, dest, slice_mm, dest.parent)
            else:
                shutil.copyfile(src, dest)
    return root


def per_case(folder: Path) -> dict[str, dict[str, float]]:
    rows = {}
    for path in sorted(folder.glob("fold*/cv_cases.csv")):
        for row in csv.DictReader(path.open()):
            rows[row["case"]] = {r: float(row[f"{r}_dice"]) for r in REGIONS}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--thick", nargs="+", default=["flair", "t2"], help="sequences acquired as thick 2D slices")
    parser.add_argument("--slice-mm", type=int, default=5)
    parser.add_argument("--weights", type=Path, default=None, help="fold models (default: the bundle's models/)")
    parser.add_argument("--data-dir", type=Path, default=None, help="the BraTS cases (default: ../shared/data/brats2018)")
    parser.add_argument("--int8", choices=["on", "off"], default=None)
    args = parser.parse_args()

    from app.api import cross_validate
    from app.data.cases import default_brats_dir
    from app.resources import manifest_path

    manifest, data_dir = manifest_path("brats2018_cv5"), args.data_dir or default_brats_dir()
    overrides = {} if args.int8 is None else {"openvino_int8": args.int8 == "on"}
    root = build(Path(manifest), Path(data_dir), args.out, args.thick, args.slice_mm)
    scores = {}
    for name, folder in (("as given", data_dir), (f"{'+'.join(args.thick)} at {args.slice_mm} mm, resampled", root)):
        for fold in range(5):
            out = args.out / name.split()[0].replace("+", "_") / f"fold{fold}"
            if not (out / "cv_cases.csv").is_file():
                cross_validate("brats_unet3d", weights=args.weights, out_dir=out, data_dir=folder, folds=[fold], overrides=overrides or None)
        scores[name] = per_case(args.out / name.split()[0].replace("+", "_"))
    (base_name, base), (name, cand) = scores.items()
    cases = sorted(base)
    print(f"| input | {' | '.join(REGIONS)} |\n| --- | --- | --- | --- |")
    print(f"| {base_name} | " + " | ".join(f"{np.mean([base[c][r] for c in cases]):.3f}" for r in REGIONS) + " |")
    diffs = {r: np.array([cand[c][r] - base[c][r] for c in cases]) for r in REGIONS}
    print(f"| {name} | " + " | ".join(f"{np.mean([cand[c][r] for c in cases]):.3f} ({diffs[r].mean():+.3f}, SE {diffs[r].std(ddof=1) / np.sqrt(len(cases)):.3f})"
                                     for r in REGIONS) + " |")
    print(f"{len(cases)} cases; per case (WT / TC / ET, as given -> resampled):")
    for c in cases:
        print(f"  {c}: " + " / ".join(f"{base[c][r]:.3f} -> {cand[c][r]:.3f}" for r in REGIONS))


if __name__ == "__main__":
    main()
