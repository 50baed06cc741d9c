"""Generate the bundle files that are copies, so every bundle folder stands alone.

A bundle folder must run MONAI's tools by itself (Model Zoo layout: no symbolic links, no path
that leaves the folder, ``configs/inference.yaml`` complete on its own). Two kinds of copies
keep that true without hand-kept duplicates; both are committed and checked by
``tests/bundles/test_sync.py``:

1. **inference.yaml holds its bundle's common.yaml.** Between the marker lines
   ``# >>> copy of configs/common.yaml`` and ``# <<< copy of configs/common.yaml`` each
   bundle's ``configs/inference.yaml`` carries its ``configs/common.yaml`` verbatim, so that
   ``python -m monai.bundle run --config_file configs/inference.yaml`` and
   ``verify_net_in_out network_def --config_file configs/inference.yaml`` need no other config
   (train and evaluate still run as ``[common.yaml, <overlay>.yaml]``). Edit
   ``common.yaml`` and the part of ``inference.yaml`` below the copy, never the copy.
2. **Derived bundles copy a template bundle** (:data:`TEMPLATES`): ``brats_deeplab3d`` takes
   every file of :data:`COPIED` from ``brats_unet3d``, except the block between
   ``# >>> network_def`` and ``# <<< network_def`` in its ``common.yaml``, which stays its own
   (its network), and its own ``configs/metadata.json`` and ``docs/``.

Usage, from a source checkout (after editing a template or a ``common.yaml``)::

    python -m app.bundle_tools.sync          # rewrite every stale copy, list them
    python -m app.bundle_tools.sync --check  # list stale copies, exit 1 if any

Example:
    >>> from app.bundle_tools.sync import stale_files
    >>> stale_files()  # doctest: +SKIP
    []
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from app.io.atomic import atomic_write_text
from app.resources import source_root

__all__ = ["COMMON_BEGIN", "COMMON_END", "COPIED", "OWN_BEGIN", "OWN_END", "TEMPLATES", "expected_files", "stale_files", "sync"]

#: Derived bundle -> the bundle whose files (:data:`COPIED`) it copies.
TEMPLATES: dict[str, str] = {"brats_deeplab3d": "brats_unet3d"}

#: Files, relative to a bundle folder, that a derived bundle copies from its template.
COPIED: tuple[str, ...] = ("configs/common.yaml", "configs/train.yaml", "configs/evaluate.yaml", "configs/inference.yaml",
                           "configs/multi_gpu_train.yaml", "configs/multi_gpu_inference.yaml", "configs/logging.conf", "LICENSE")

#: Marker lines (their beginnings) around the copy of ``common.yaml`` inside ``inference.yaml``.
COMMON_BEGIN, COMMON_END = "# >>> copy of configs/common.yaml", "# <<< copy of configs/common.yaml"

#: Marker lines (their beginnings) around a derived bundle's own part of ``common.yaml``.
OWN_BEGIN, OWN_END = "# >>> network_def", "# <<< network_def"


def _block(text: str, begin: str, end: str, where: str) -> tuple[int, int]:
    """Character span of the lines from the one starting with ``begin`` to the one starting
    with ``end``, both included.

    Raises:
        ValueError: not exactly one such block; the message names the file and the markers.
    """
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith(begin)]
    ends = [i for i, line in enumerate(lines) if line.startswith(end)]
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ValueError(f"{where}: expected one block from a line starting '{begin}' to a line starting '{end}'; "
                         f"found {len(starts)} start and {len(ends)} end line(s)")
    return sum(map(len, lines[: starts[0]])), sum(map(len, lines[: ends[0] + 1]))


def embed_common(common: str, inference: str, where: str = "configs/inference.yaml") -> str:
    """``inference`` with the text between its ``common.yaml`` marker lines replaced by ``common``."""
    start, stop = _block(inference, COMMON_BEGIN, COMMON_END, where)
    lines = inference[start:stop].splitlines(keepends=True)
    body = common if common.endswith("\n") else common + "\n"
    return inference[:start] + lines[0] + body + lines[-1] + inference[stop:]


def own_block(common: str, where: str = "configs/common.yaml") -> str:
    """The ``network_def`` block (marker lines included) of a bundle's ``common.yaml``."""
    start, stop = _block(common, OWN_BEGIN, OWN_END, where)
    return common[start:stop]


def _with_own_block(text: str, block: str, where: str) -> str:
    start, stop = _block(text, OWN_BEGIN, OWN_END, where)
    return text[:start] + block + text[stop:]


def _header(template: str, rel: str) -> str:
    """First line of a derived bundle's copy of ``<template>/<rel>``."""
    own = " This bundle's own part is the network_def block of configs/common.yaml." if rel.endswith(".yaml") else ""
    return f"# Generated from {template}/{rel} by `python -m app.bundle_tools.sync`: edit that file and run it again.{own}\n"


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def default_bundles_dir() -> Path:
    """``bundles/`` of the source checkout.

    Raises:
        FileNotFoundError: VolSeg runs from an installed wheel, whose bundle copies are final.
    """
    root = source_root()
    if root is None:
        raise FileNotFoundError("the bundle copies are generated in a VolSeg source checkout (bundles/ beside app/); "
                                "this VolSeg is installed from a wheel")
    return root / "bundles"


def expected_files(bundles_dir: str | Path | None = None) -> dict[Path, str]:
    """Every generated file and the text it must hold.

    Args:
        bundles_dir: folder of the bundle folders; default :func:`default_bundles_dir`.

    Returns:
        Path -> expected text: each non-derived bundle's ``configs/inference.yaml``, and every
        :data:`COPIED` file of each derived bundle.

    Raises:
        ValueError: missing or duplicated marker lines, or a derived bundle whose
            ``common.yaml`` is still a link (it must hold its own ``network_def`` block).
    """
    root = Path(bundles_dir) if bundles_dir is not None else default_bundles_dir()
    out: dict[Path, str] = {}
    for folder in sorted(p for p in root.iterdir() if (p / "configs" / "metadata.json").is_file() and p.name not in TEMPLATES):
        inference, common = folder / "configs" / "inference.yaml", folder / "configs" / "common.yaml"
        if inference.is_file() and common.is_file():
            out[inference] = embed_common(_read(common), _read(inference), str(inference))
    for derived, template in sorted(TEMPLATES.items()):
        src, dst = root / template, root / derived
        own_common = dst / "configs" / "common.yaml"
        if own_common.is_symlink() or not own_common.is_file():
            raise ValueError(f"'{own_common}' must be a file holding {derived}'s own network_def block "
                             f"('{OWN_BEGIN} ...' to '{OWN_END} ...'), not a link or nothing")
        block = own_block(_read(own_common), str(own_common))
        for rel in COPIED:
            text = out.get(src / rel, None) or _read(src / rel)
            if rel in ("configs/common.yaml", "configs/inference.yaml"):
                text = _with_own_block(text, block, str(src / rel))
            out[dst / rel] = text if rel == "LICENSE" else _header(template, rel) + text
    return out


def stale_files(bundles_dir: str | Path | None = None) -> list[Path]:
    """Generated files that are missing, links, or not what :func:`expected_files` says."""
    return [path for path, text in expected_files(bundles_dir).items()
            if path.is_symlink() or not path.is_file() or _read(path) != text]


def sync(bundles_dir: str | Path | None = None) -> list[Path]:
    """Rewrite every stale generated file (atomically; a link is replaced by a real file).

    Returns:
        The files written.
    """
    written = []
    for path, text in expected_files(bundles_dir).items():
        if path.is_symlink():
            path.unlink()  # writing through it would overwrite the template's own file
        elif path.is_file() and _read(path) == text:
            continue
        atomic_write_text(path, text)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m app.bundle_tools.sync [--check] [--bundles-dir DIR]``; 1 when ``--check`` finds stale files."""
    parser = argparse.ArgumentParser(prog="python -m app.bundle_tools.sync", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only list stale copies; exit 1 if any")
    parser.add_argument("--bundles-dir", type=Path, default=None, help="folder of the bundle folders (default: the checkout's bundles/)")
    args = parser.parse_args(argv)
    try:
        paths = stale_files(args.bundles_dir) if args.check else sync(args.bundles_dir)
    except (FileNotFoundError, ValueError) as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    verb = "stale" if args.check else "written"
    sys.stdout.write("".join(f"{verb}: {p}\n" for p in paths) or "every generated bundle file is up to date\n")
    return 1 if args.check and paths else 0


if __name__ == "__main__":
    sys.exit(main())
