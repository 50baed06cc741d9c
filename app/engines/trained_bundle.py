"""A training run's output folder as a complete bundle (Model Zoo layout), so that
``--bundle <output_dir>`` works in ``volseg segment``, ``evaluate``, ``serve`` and MONAI's own tools.

After ``volseg train --bundle SRC --output-dir R``, R holds, beside the run's ``last.pt``,
``progress.json`` (epoch reached, best validation metric), ``model.pt`` and TensorBoard logs:

- ``configs/``: SRC's configs (copied, links followed), with the run's overrides written into
  ``common.yaml`` and ``train.yaml`` (:mod:`app.engines.config_bake`) and into the copy of
  ``common.yaml`` that ``inference.yaml`` holds, ``data_list_file`` pointing at ``configs/datalist.json``
  (a copy of the run's datalist) and ``dataset_dir`` at the run's data folder;
- ``configs/metadata.json``: SRC's metadata (labels, channels, network) with the run's figures
  under ``training_run`` (epochs, best and final validation metric, datalist, case counts,
  date, initial weights), ``eval_metrics`` replaced by this run's validation figures, and the
  source weights' per-subset CV tables (``missing_sequences_cv*``) left out;
- ``models/model.pt``: the run's weights (best validated, else the final ones:
  ``AtomicCheckpointer.save_final_if_missing``);
- ``large_files.yml`` (``models/model.pt`` with its SHA-256), ``docs/README.md`` (generated)
  and SRC's ``LICENSE``.

Example:
    >>> from app import api
    >>> out = api.train("ct_unet3d", "spleen.json", "msd_spleen", "runs/ct", {"max_epochs": 1})  # doctest: +SKIP
    >>> sorted(p.name for p in (out / "configs").iterdir())  # doctest: +SKIP
    ['common.yaml', 'datalist.json', 'evaluate.yaml', 'inference.yaml', 'logging.conf', 'metadata.json', ...]
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from app.io.atomic import atomic_write, atomic_write_text

logger = logging.getLogger(__name__)

__all__ = ["RUN_ONLY_KEYS", "checkpoint_figures", "run_figures", "write_trained_bundle"]

#: Overrides that describe one run, not the model: never written into the bundle's configs.
RUN_ONLY_KEYS = frozenset({"bundle_root", "output_dir", "ckpt_dir", "device", "resume", "dataset_dir", "data_list_file"})
#: Configs the training run read, in reading order: the ones its overrides are written into.
TRAIN_CONFIGS = ("common.yaml", "train.yaml")
#: Keys of the source's ``training`` metadata that describe the source's own weights.
SOURCE_WEIGHT_KEYS = ("fast_model_fold", "cv_manifest")
#: metadata ``inference`` settings chosen for the source bundle's weights that a new run's weights
#: do not inherit: ``accurate_n4`` (N4 by default in accurate mode, for weights trained on
#: N4-corrected copies) goes back to off; ``--n4`` still turns N4 on.
SOURCE_WEIGHT_INFERENCE = {"accurate_n4": False}
DATALIST = "datalist.json"


def _copy_configs(src: Path, dst: Path) -> None:
    """Copy every file of ``src/configs`` into ``dst/configs`` (symbolic links followed)."""
    (dst / "configs").mkdir(parents=True, exist_ok=True)
    for f in sorted((src / "configs").iterdir()):
        target = dst / "configs" / f.name
        if f.is_file() and f.resolve() != target.resolve():
            atomic_write(target, lambda tmp, f=f: shutil.copyfile(f, tmp))


def _bake(configs: Path, overrides: Mapping[str, Any]) -> None:
    """Write ``overrides`` into the training configs: where each top-level key is, else the
    last training config that has the key's root (``validate`` of ``validate#x``), else train.yaml."""
    from app.engines.config_bake import bake_yaml_text, top_level_keys

    texts = {name: (configs / name).read_text() for name in TRAIN_CONFIGS if (configs / name).is_file()}
    spans = {name: top_level_keys(text) for name, text in texts.items()}
    per_file: dict[str, dict[str, Any]] = {name: {} for name in texts}
    for key, value in overrides.items():
        holders = [name for name in texts if key in spans[name]]
        roots = [name for name in texts if key.split("#")[0] in spans[name]]
        for name in holders or roots[-1:] or list(texts)[-1:]:
            per_file[name][key] = value
    for name, values in per_file.items():
        if values:
            atomic_write_text(configs / name, bake_yaml_text(texts[name], values))
    _embed_common(configs)


def _embed_common(configs: Path) -> None:
    """Refresh the copy of ``common.yaml`` that a stand-alone ``inference.yaml`` holds between the
    marker lines of :mod:`app.bundle_tools.sync`, so inference sees the written overrides."""
    from app.bundle_tools.sync import COMMON_BEGIN, embed_common

    inference = configs / "inference.yaml"
    if inference.is_file() and any(line.startswith(COMMON_BEGIN) for line in inference.read_text().splitlines()):
        atomic_write_text(inference, embed_common((configs / "common.yaml").read_text(), inference.read_text(), str(inference)))


def _set_meta(meta: dict[str, Any], path: str, value: Any) -> None:
    """``meta["a"]["b"] = value`` for an override ``_meta_#a#b``."""
    keys = path.split("#")
    node = meta
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def _metadata(src_meta: dict[str, Any], src: Path, figures: Mapping[str, Any], meta_overrides: Mapping[str, Any],
              baked: Mapping[str, Any] | None = None) -> dict[str, Any]:
    meta = json.loads(json.dumps(src_meta))
    for key, value in SOURCE_WEIGHT_INFERENCE.items():
        if key in meta.get("inference", {}):
            meta["inference"][key] = value
    for key, value in meta_overrides.items():
        _set_meta(meta, key, value)
    training = {k: v for k, v in meta.get("training", {}).items() if k not in SOURCE_WEIGHT_KEYS}
    if "max_epochs" in training and "max_epochs" in figures:
        training["max_epochs"] = figures["max_epochs"]
    if training or "training" in meta:
        meta["training"] = training
    meta["training_run"] = {"source_bundle": src_meta.get("name", src.name), "source_version": src_meta.get("version"), "source_folder": str(src), **figures}
    key = figures.get("key_metric", "val_mean_dice")
    meta["eval_metrics"] = {f"{figures.get('validation_split', 'validation')}_{kind}_{key}": figures[f"{kind}_metric"]
                            for kind in ("best", "final") if figures.get(f"{kind}_metric") is not None}
    for table in [k for k in meta if k.startswith("missing_sequences_cv")]:  # the source weights' CV per subset, not this run's
        del meta[table]
    settings = "; ".join(f"{k} {json.dumps(v) if not isinstance(v, str) else v}" for k, v in (baked or {}).items() if k in DESCRIBED_SETTINGS)
    meta["description"] = (f"{src_meta.get('name', src.name)} trained by `volseg train` on {figures.get('num_training_cases', '?')} case(s) "
                           f"for {figures.get('epochs', '?')} epoch(s) ({figures.get('date', '')})"
                           + (f", with {settings} (these replace the settings of the source bundle's description below)" if settings else "")
                           + f". Source bundle {src_meta.get('name', src.name)} {src_meta.get('version', '')}: " + _without_no_weights(str(src_meta.get("description", ""))))
    if "intended_use" in meta:
        meta["intended_use"] = _without_no_weights(str(meta["intended_use"]))
    return meta


#: Settings of a run's overrides that the trained bundle's description names (the source bundle's
#: description states its own, such as "1.5 mm spacing").
DESCRIBED_SETTINGS = ("spacing_mm", "roi_size", "hu_window", "num_classes", "channels")


def _without_no_weights(text: str) -> str:
    """``text`` without the sentence or clause of a template saying it "ships no trained weights",
    which a trained bundle does not say of itself."""
    return " ".join(part for part in re.split(r"(?<=[.;])\s+", text.strip()) if "ships no trained weights" not in part)


def _readme(out: Path, meta: Mapping[str, Any]) -> str:
    run = meta["training_run"]
    rows = "\n".join(f"| {k} | {v} |" for k, v in run.items())
    return f"""# {meta.get('name', out.name)}: weights from a `volseg train` run

Written by `volseg train` into its output folder; a complete bundle (Model Zoo layout). The
network, preprocessing and labels are those of `{run['source_bundle']}` {run.get('source_version') or ''}
(see its README), with the run's config overrides written into `configs/`. Not validated beyond
the figures below; research use only.

## Training run

| item | value |
| --- | --- |
{rows}

## Use

```bash
volseg segment INPUT --bundle {out} --output OUT
volseg evaluate --pred OUT --bundle {out}
volseg serve --bundle {out}
```

`evaluate` defaults to this bundle's datalist (`configs/{DATALIST}`, every split; choose with
`--split`) and data folder (`dataset_dir`).
"""


def write_trained_bundle(src: str | Path, out: str | Path, overrides: Mapping[str, Any], figures: Mapping[str, Any],
                         data_list_file: str | Path | None = None, dataset_dir: str | Path | None = None) -> Path:
    """Make the training output folder ``out`` a complete bundle (see the module docstring).

    Args:
        src: the bundle folder the run trained (its configs and metadata are copied).
        out: the run's output folder, holding ``model.pt``.
        overrides: the run's config overrides (``--set``, ``--max-epochs`` ...); run-only keys
            (:data:`RUN_ONLY_KEYS`) are left out, ``_meta_#...`` keys go into the metadata.
        figures: the run's figures for ``training_run`` (see :func:`run_figures`).
        data_list_file: the run's datalist, copied to ``configs/datalist.json``.
        dataset_dir: the run's data folder (absolute), the bundle's ``dataset_dir``.

    Returns:
        ``out``.

    Raises:
        FileNotFoundError: ``out/model.pt`` is missing (the run did not finish).
        ValueError: an override that cannot be written into the configs.
    """
    src, out = Path(src).resolve(), Path(out).resolve()
    weights = out / "model.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"'{weights}' is missing: the training run did not finish, so '{out}' cannot be made a bundle")
    src_meta = json.loads((src / "configs" / "metadata.json").read_text())
    _copy_configs(src, out)
    baked = {k: v for k, v in overrides.items() if k not in RUN_ONLY_KEYS and not k.startswith("_meta_#")}
    if data_list_file is not None:
        target = out / "configs" / DATALIST
        if Path(data_list_file).resolve() != target:
            atomic_write(target, lambda tmp: shutil.copyfile(data_list_file, tmp))
        baked["data_list_file"] = f"$@bundle_root + '/configs/{DATALIST}'"
    if dataset_dir is not None:
        baked["dataset_dir"] = str(Path(dataset_dir).resolve())
    _bake(out / "configs", baked)
    meta_overrides = {k[len("_meta_#"):]: v for k, v in overrides.items() if k.startswith("_meta_#")}
    if isinstance(baked.get("roi_size"), (list, tuple)) and "roi_size" in src_meta.get("training", {}):
        # the BraTS configs read roi_size from training#roi_size: the metadata states the patch trained on
        meta_overrides.setdefault("training#roi_size", [int(v) for v in baked["roi_size"]])
    meta = _metadata(src_meta, src, figures, meta_overrides, baked)
    atomic_write_text(out / "configs" / "metadata.json", json.dumps(meta, indent=2, default=str) + "\n")
    atomic_write(out / "models" / "model.pt", lambda tmp: shutil.copyfile(weights, tmp))
    from app.bundle_tools.large_files import write_large_files

    write_large_files(out)  # models/model.pt with its sha256 (Model Zoo large_files.yml)
    atomic_write_text(out / "docs" / "README.md", _readme(out, meta))
    if (src / "LICENSE").is_file() and src != out:
        atomic_write(out / "LICENSE", lambda tmp: shutil.copyfile(src / "LICENSE", tmp))
    logger.info(f"wrote the bundle {out} (configs, metadata, models/model.pt, docs)")
    return out


def run_figures(parser: Any, seconds: float, datalist: str | Path | None, init_from: str | Path | None = None) -> dict[str, Any]:
    """The figures of a finished in-process run, from its config's trainer, checkpointer and evaluator.

    Returns:
        ``epochs``, ``max_epochs``, ``iterations``, ``final_loss``, ``key_metric``,
        ``best_metric`` / ``best_epoch`` (None where no validation ran), ``final_metric`` (the
        last validation's), ``validation_split``, ``num_training_cases``,
        ``num_validation_cases``, ``datalist``, ``init_from``, ``seconds``, ``date`` (UTC, ISO 8601).
    """
    trainer = parser.get_parsed_content("train#trainer")
    checkpointer = parser.get_parsed_content("checkpointer") if "checkpointer" in parser else None
    key = getattr(checkpointer, "key_metric", "val_mean_dice")
    best = getattr(checkpointer, "best_metric", -math.inf)
    evaluator = parser.get_parsed_content("validate#evaluator") if "validate#evaluator" in parser else None
    final = evaluator.state.metrics.get(key) if evaluator is not None and evaluator.state.epoch else None
    output = trainer.state.output
    loss = output[0]["loss"] if isinstance(output, list) and output and isinstance(output[0], dict) and "loss" in output[0] else None
    return {"epochs": int(trainer.state.epoch), "max_epochs": int(trainer.state.max_epochs), "iterations": int(trainer.state.iteration),
            "final_loss": round(float(loss), 5) if loss is not None else None, "key_metric": key,
            "best_metric": round(float(best), 5) if math.isfinite(best) else None,
            "best_epoch": int(checkpointer.best_epoch) if math.isfinite(best) else None,
            "final_metric": round(float(final), 5) if final is not None else None,
            "validation_split": parser.get("val_split", "validation"),
            "num_training_cases": len(parser.get_parsed_content("train_datalist")) if "train_datalist" in parser else None,
            "num_validation_cases": len(parser.get_parsed_content("val_datalist")) if "val_datalist" in parser else None,
            "datalist": str(datalist) if datalist is not None else None, "init_from": str(init_from) if init_from is not None else None,
            "seconds": round(seconds, 1), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def checkpoint_figures(out: str | Path, seconds: float, datalist: str | Path | None) -> dict[str, Any]:
    """The figures of a finished run that ran in other processes (``torchrun``), from its
    ``last.pt``: epochs, iterations, best validation metric and epoch (see :func:`run_figures`;
    no final loss or final metric, which ``last.pt`` does not hold).

    Raises:
        FileNotFoundError: no ``last.pt`` in ``out``.
    """
    import torch

    state = torch.load(Path(out) / "last.pt", map_location="cpu", weights_only=False)
    trainer, best = state.get("trainer", {}), state.get("checkpointer", {})
    metric = float(best.get("best_metric", -math.inf))
    epochs = trainer.get("epoch", trainer.get("iteration", 0) // max(1, int(trainer.get("epoch_length") or 1)))  # Ignite keeps one of the two
    return {"epochs": int(epochs), "max_epochs": int(trainer.get("max_epochs", 0)), "iterations": int(trainer.get("iteration", 0)),
            "best_metric": round(metric, 5) if math.isfinite(metric) else None,
            "best_epoch": int(best["best_epoch"]) if math.isfinite(metric) else None, "datalist": str(datalist) if datalist is not None else None,
            "seconds": round(seconds, 1), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}

