"""Registry of the bundles VolSeg ships, and where they live on disk."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from app.resources import bundles_root, manifest_path, resource_root

__all__ = ["BUNDLES", "DEFAULT_BUNDLE", "REPO_ROOT", "BundleInfo", "bundle_dir", "bundle_path", "bundles_root",
           "config_files", "default_root", "installed_bundles", "label_names", "manifest_path"]

#: The folder holding ``bundles/`` and ``data_manifests/``: the repository root in a source
#: checkout, ``app/_shipped`` when installed from a wheel (see :mod:`app.resources`). Kept for
#: callers written before the wheel carried bundles; new code calls :func:`bundles_root`,
#: :func:`bundle_dir` or :func:`manifest_path`.
REPO_ROOT = resource_root()

@dataclass(frozen=True)
class BundleInfo:
    """What a shipped bundle is: a one-line description, the kind of data it reads
    (``"brats"``: 4 MRI modalities -> TC/WT/ET; ``"ct"``: one CT volume -> organ labels), and
    whether it ships trained weights in ``models/model.pt``. Label values, names and evaluation
    regions are in each bundle's ``configs/metadata.json`` (read by :class:`app.labels.LabelManager`)."""

    description: str
    data_kind: str
    ships_weights: bool


#: Bundles shipped with VolSeg: the single table that the CLI, API and tests read.
BUNDLES: dict[str, BundleInfo] = {
    "brats_unet3d": BundleInfo("3D residual U-Net, BraTS MRI (T1, T1ce, T2, FLAIR) -> TC, WT, ET", "brats", True),
    "brats_deeplab3d": BundleInfo("DeepLabV3+-style 3D network (atrous encoder, ASPP), BraTS MRI (T1, T1ce, T2, FLAIR) -> TC, WT, ET; shares brats_unet3d's configs", "brats", True),
    "ct_unet3d": BundleInfo("3D residual U-Net template for single-organ CT (Decathlon format), HU window, 1.5 mm", "ct", False),
}

DEFAULT_BUNDLE = "brats_unet3d"


def label_names(bundle: str | Path) -> dict[int, str]:
    """Label value -> name of the label map a bundle writes (shipped name or bundle folder), from
    its metadata (:class:`app.labels.LabelManager`); ``{}`` for an unknown bundle or metadata
    without labels (names are not invented).

    Example:
        >>> label_names("ct_unet3d")
        {1: 'spleen'}
    """
    from app.labels import LabelManager

    try:
        return dict(LabelManager.from_bundle(bundle).labels)
    except (ValueError, FileNotFoundError):
        return {}


def missing_sequence_cv(bundle: str | Path, missing: Sequence[str], n4: bool = False, int8: bool = False) -> dict[str, float]:
    """Cross-validation Dice per region of a bundle for cases that lack ``missing`` sequences.

    Read from ``missing_sequences_cv`` in the bundle's ``configs/metadata.json``: with ``n4``
    ``missing_sequences_cv_n4`` (the figures with N4, the default of brats_unet3d >= 0.11.0), with ``int8`` the same
    key with ``_int8`` appended (the bundle's int8 OpenVINO models), keyed by the sequences present
    joined with ``+`` in channel order (``"t1ce+flair"``).

    Returns:
        ``{"WT": ..., "TC": ..., "ET": ...}``, or ``{}`` where the bundle has no figure for it.
    """
    from app.constants import MODALITIES

    try:
        meta = json.loads((bundle_path(bundle) / "configs" / "metadata.json").read_text())
    except (OSError, ValueError):
        return {}
    key = "+".join(m for m in MODALITIES if m not in set(missing))
    table = "missing_sequences_cv" + ("_n4" if n4 else "") + ("_int8" if int8 else "")
    return dict(meta.get(table, {}).get(key, {}))


def run_subset_cv(bundle: str | Path, missing: Sequence[str], n4: bool = False, int8: bool = False, mode: str | None = "fast") -> tuple[dict[str, float], str]:
    """The CV Dice to quote for a run that lacked ``missing`` sequences: the bundle's figures for
    the same path (``n4``: with ``--n4``; ``int8``: its int8 models) where it has them. Where it
    does not, int8 falls back to the float32 figures and ``n4`` to those without N4, and the
    source says so. The figures are fast mode's (one fold model a case); for a ``mode``
    "accurate" run the source says so, since the fold ensemble cannot be scored on the cases its
    members trained on.

    Returns:
        ``(figures, source)``: :func:`missing_sequence_cv`'s dict, and where the figures come from:
        ``"with N4"``, ``"without N4"`` (an ``n4`` run quoted the figures without N4), ``"int8"``,
        ``"float32"`` (an ``int8`` run quoted the float32 figures), joined with ``", "``; ``""`` for
        a float32 run without ``n4``; ``"of --mode fast ..."`` added for an accurate-mode run.

    Example:
        >>> run_subset_cv("brats_unet3d", ["t2"], n4=True, int8=True)[1]
        'with N4, int8'
    """
    for use_n4 in dict.fromkeys((n4, False)):
        for use_int8 in dict.fromkeys((int8, False)):
            figures = missing_sequence_cv(bundle, missing, n4=use_n4, int8=use_int8)
            if figures:
                source = [("with N4" if use_n4 else "without N4") if n4 else "", ("int8" if use_int8 else "float32") if int8 else "",
                          "of --mode fast (accurate mode has no CV figures of its own)" if mode == "accurate" else ""]
                return figures, ", ".join(s for s in source if s)
    return {}, ""


def ran_int8(precision: str | None) -> bool:
    """Whether a run's ``precision`` (``Segmenter.precision``, in ``volseg_run.json``: ``"int8"``,
    ``"f32"``, ``"bf16"``, or several joined with ``+`` for an ensemble) says every model ran as int8."""
    return str(precision or "").split("+") == ["int8"]


def bundle_dir(name: str) -> Path:
    """Folder of a shipped bundle, in the installed package or the source checkout
    (:func:`app.resources.bundles_root`).

    Raises:
        ValueError: unknown bundle name; the message lists the shipped ones.
        FileNotFoundError: a registered bundle whose folder is missing (a wheel built without
            ``setup.py``'s copy step); the message says where it looked.

    Example:
        >>> (bundle_dir("brats_unet3d") / "configs" / "common.yaml").is_file()
        True
    """
    if name not in BUNDLES:
        raise ValueError(f"unknown bundle '{name}'; shipped bundles: {', '.join(sorted(BUNDLES))}")
    folder = bundles_root() / name
    if not (folder / "configs").is_dir():
        raise FileNotFoundError(f"bundle '{name}' is registered but '{folder / 'configs'}' is missing; "
                                "reinstall VolSeg from a wheel built with `pip wheel .`, or run from a source checkout")
    return folder


def installed_bundles() -> dict[str, Path]:
    """Name -> folder of every bundle present on disk (a folder of :func:`bundles_root` with
    ``configs/metadata.json``), sorted by name; registered or not (see :data:`BUNDLES`).

    Example:
        >>> "brats_unet3d" in installed_bundles()
        True
    """
    root = bundles_root()
    found = sorted(p for p in root.iterdir() if (p / "configs" / "metadata.json").is_file()) if root.is_dir() else []
    return {p.name: p for p in found}


#: Bundle folders of the working folder that :func:`bundle_path` has said it uses instead of a shipped bundle.
_ANNOUNCED: set[Path] = set()


def bundle_path(name_or_dir: str | Path) -> Path:
    """Folder of a bundle given by shipped name or by folder; a folder of the given path wins over
    the shipped bundle of that name (a copy in the working folder), said in the log.

    Raises:
        ValueError: neither a folder nor a shipped bundle name.
    """
    path = Path(name_or_dir)
    if path.is_dir():
        if (str(name_or_dir) in BUNDLES and not path.is_absolute() and path.resolve() != bundle_dir(str(name_or_dir)).resolve()
                and path.resolve() not in _ANNOUNCED):
            import logging

            _ANNOUNCED.add(path.resolve())  # once a process: a batch asks several times
            logging.getLogger(__name__).warning(f"bundle '{name_or_dir}': the folder {path.resolve()} (a folder of that name here), "
                                                "not the shipped bundle of that name; rename the folder, or run elsewhere, for the shipped one")
        return path
    return bundle_dir(str(name_or_dir))


def default_root(name: str) -> str:
    """``bundle_root`` for a config that did not get one on the command line.

    In order: the bundle folder that holds the config file named on MONAI's command line
    (``python -m monai.bundle run --config_file <bundle>/configs/inference.yaml`` from any folder:
    a copied or trained bundle runs with its own weights and writes its own outputs); the current
    folder when it is this bundle (Model Zoo habit: run from the bundle folder); else the installed
    copy, with a warning, since its outputs then go inside the installed package.
    """
    import logging

    for folder in _command_line_bundles() or []:
        if _bundle_name(folder) == name:
            _warn_unknown_overrides([c for c in _command_line_configs() if c.suffix in (".yaml", ".yml", ".json") and c.parent.parent == folder
                                     and c.name != "metadata.json"])
            return str(folder)
    if _bundle_name(Path(os.getcwd())) == name:
        return os.getcwd()
    shipped = str(bundle_dir(name))
    if _command_line_bundles() is not None:  # a MONAI command line that named no config of a bundle folder
        logging.getLogger("volseg").warning(
            "bundle_root not given and no config file of bundle '%s' on the command line: using the installed copy %s (its weights; "
            "outputs go under it); pass --bundle_root <bundle folder>", name, shipped)
    return shipped


def _bundle_name(folder: Path) -> str | None:
    """The ``name`` in ``<folder>/configs/metadata.json``, or None."""
    try:
        return json.loads((folder / "configs" / "metadata.json").read_text()).get("name")
    except (OSError, ValueError, AttributeError):
        return None


#: Arguments of MONAI's ``run`` itself (not config keys), and keys every bundle config takes.
_RUN_ARGUMENTS = frozenset({"run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file",
                            "workflow_type", "workflow_name", "properties_path", "bundle_root"})
_warned_overrides: list[bool] = []


def _warn_unknown_overrides(configs: list[Path]) -> None:
    """Warn (once a process) about ``--key VALUE`` arguments of a MONAI command line whose key,
    or the top-level part of ``a#b``, is in none of ``configs``: MONAI adds such a key and
    nothing reads it (``--overlpa 0.25`` runs with the default overlap). ``a#b`` under an
    existing ``a`` passes (a new argument of a component, e.g. ``--network_def#dropout 0.1``)."""
    import difflib
    import logging
    import sys

    if _warned_overrides or not configs:
        return
    _warned_overrides.append(True)
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    try:
        parser.read_config([str(c) for c in configs])
    except Exception:  # noqa: BLE001 - MONAI reports an unreadable config itself
        return
    keys = [a[2:].split("=", 1)[0] for a in sys.argv[1:] if a.startswith("--") and len(a) > 2]
    top = [k for k in parser.get() if isinstance(k, str)]
    for key in keys:
        if key in _RUN_ARGUMENTS or key.split("#")[0] in parser:
            continue
        near = difflib.get_close_matches(key.split("#")[0], top, n=3, cutoff=0.6)
        logging.getLogger("volseg").warning(
            "--%s is no key of %s: MONAI adds it and nothing reads it, so the run goes on without it%s", key,
            ", ".join(c.name for c in configs), f" (did you mean {', '.join('--' + n for n in near)}?)" if near else "")


def _command_line_configs() -> list[Path]:
    """The files of the ``--config_file`` / ``--meta_file`` values on a ``python -m monai.bundle``
    command line (a path, or a list as MONAI's CLI takes it: ``"['a.yaml','b.yaml']"`` or
    ``a.yaml,b.yaml``), as absolute paths; [] where there are none."""
    import ast
    import sys

    argv = list(sys.argv)
    values = []
    for i, arg in enumerate(argv):
        for flag in ("--config_file", "--meta_file"):
            if arg == flag and i + 1 < len(argv):
                values.append(argv[i + 1])
            elif arg.startswith(flag + "="):
                values.append(arg.split("=", 1)[1])
    files: list[Path] = []
    for value in values:
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value.split(",")
        files += [Path(os.path.abspath(str(path).strip())) for path in ([parsed] if isinstance(parsed, str) else list(parsed))]
    return files


def _command_line_bundles() -> list[Path] | None:
    """Bundle folders (``<folder>/configs/<file>``) of the ``--config_file`` / ``--meta_file``
    values on a ``python -m monai.bundle`` command line (:func:`_command_line_configs`); None where
    this process was not started so."""
    import sys

    if not any(a in ("--config_file", "--meta_file") or a.startswith(("--config_file=", "--meta_file=")) for a in sys.argv):
        return None
    return list(dict.fromkeys(c.parent.parent for c in _command_line_configs() if c.parent.name == "configs"))


def config_files(name_or_dir: str | Path, *overlays: str) -> list[str]:
    """``[common.yaml, <overlay>.yaml ...]`` of a bundle, for ``ConfigWorkflow(config_file=...)``.

    Raises:
        FileNotFoundError: an overlay is missing; the message lists the bundle's configs.
    """
    root = bundle_path(name_or_dir)
    files = [root / "configs" / "common.yaml"] + [root / "configs" / f"{o}.yaml" for o in overlays]
    for f in files:
        if not f.is_file():
            have = sorted(p.stem for p in (root / "configs").glob("*.yaml"))
            if not have:
                run = (root / "last.pt").is_file() or (root / "run_config.json").is_file()  # what volseg train writes first
                why = (f"it looks like a training run that has not finished: `volseg train` writes the configs when it ends; run the same "
                       f"`volseg train` command again to go on, or use a finished run" if run else
                       f"it has no configs/*.yaml at all; is '{root}' a bundle folder?")
                raise FileNotFoundError(f"bundle '{root.name}' has no config '{f.name}': {why}")
            raise FileNotFoundError(f"bundle '{root.name}' has no config '{f.name}'; it has {', '.join(have)}")
    return [str(f) for f in files]
