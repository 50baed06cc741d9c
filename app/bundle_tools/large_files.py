"""A bundle's ``large_files.yml``: its weight files with their SHA-256, in the MONAI Model Zoo format.

The Model Zoo lists each bundle's large files as ``large_files: [{path, url, hash_val,
hash_type}]`` (e.g. model-zoo ``models/spleen_ct_segmentation/large_files.yml``), and MONAI's
``python -m monai.bundle download_large_files --bundle_path DIR`` fetches the missing ones and
checks the hash of those present. VolSeg's weights ship inside the bundle folder (and the wheel),
so ``url`` is empty: the command only verifies them.

Usage (after replacing a weight file)::

    python -m app.bundle_tools.large_files bundles/brats_unet3d          # rewrite large_files.yml
    python -m app.bundle_tools.large_files --check bundles/brats_unet3d  # exit 1 where it is stale

Example:
    >>> from app.bundle_tools.large_files import stale_entries
    >>> stale_entries("bundles/brats_unet3d")  # doctest: +SKIP
    []
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from app.io.atomic import atomic_write_text

__all__ = ["FILE_NAME", "HASH_TYPE", "large_files_text", "sha256", "stale_entries", "weight_files", "write_large_files"]

FILE_NAME = "large_files.yml"
HASH_TYPE = "sha256"
#: Files of ``models/`` that are listed: the weights (``model.pt``, the folds' ``fold<k>.pt``) and
#: their int8 OpenVINO models (``<name>_int8.xml``/``.bin``, :mod:`app.inference.int8`). Other
#: exports made from them (``model.ts``, ``.onnx``, float32 OpenVINO) are generated and not shipped.
WEIGHT_PATTERNS = ("models/*.pt", "models/*_int8.xml", "models/*_int8.bin")


def sha256(path: str | Path, chunk_bytes: int = 2**20) -> str:
    """Hex SHA-256 of a file, read in ``chunk_bytes`` pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weight_files(bundle_dir: str | Path) -> list[Path]:
    """The weight files of a bundle (:data:`WEIGHT_PATTERNS`, hidden temporaries excluded), sorted."""
    found = {p for pattern in WEIGHT_PATTERNS for p in Path(bundle_dir).glob(pattern)}
    return sorted(p for p in found if p.is_file() and not p.name.startswith("."))


def large_files_text(bundle_dir: str | Path) -> str:
    """The ``large_files.yml`` a bundle folder should hold: one entry per :func:`weight_files`."""
    root = Path(bundle_dir)
    lines = [f"# Weights of this bundle with their {HASH_TYPE} (MONAI Model Zoo format). They ship in this folder",
             "# and in VolSeg's wheel, so `url` is empty: nothing is downloaded, and",
             "# `python -m monai.bundle download_large_files --bundle_path .` checks the hashes.",
             f"# Written by `python -m app.bundle_tools.large_files bundles/{root.resolve().name}`: run it again after replacing a weight file.",
             "large_files:" if weight_files(root) else "large_files: []  # no trained weights ship with this bundle"]
    for path in weight_files(root):
        rel = path.relative_to(root).as_posix()
        lines += [f'  - path: "{rel}"', '    url: ""', f'    hash_val: "{sha256(path)}"', f'    hash_type: "{HASH_TYPE}"']
    return "\n".join(lines) + "\n"


def write_large_files(bundle_dir: str | Path) -> Path:
    """Write ``<bundle_dir>/large_files.yml`` (atomically) and return its path."""
    return atomic_write_text(Path(bundle_dir) / FILE_NAME, large_files_text(bundle_dir))


def stale_entries(bundle_dir: str | Path) -> list[str]:
    """What is wrong with a bundle's ``large_files.yml``, one line per problem (empty: up to date).

    Checks that the file exists, lists every weight file and nothing else, and that each
    ``hash_val`` is the file's SHA-256.
    """
    root = Path(bundle_dir)
    listing = root / FILE_NAME
    if not listing.is_file():
        return [f"'{listing}' is missing"]
    entries = (yaml.safe_load(listing.read_text()) or {}).get("large_files") or []
    listed = {e.get("path"): e for e in entries}
    problems = [f"'{rel}' is not in {FILE_NAME}" for rel in (p.relative_to(root).as_posix() for p in weight_files(root)) if rel not in listed]
    for rel, entry in listed.items():
        path = root / str(rel)
        if not path.is_file():
            problems.append(f"'{rel}' is listed but missing")
        elif entry.get("hash_type") != HASH_TYPE or entry.get("hash_val") != sha256(path):
            problems.append(f"'{rel}': listed {entry.get('hash_type')} {entry.get('hash_val')}, the file's {HASH_TYPE} is {sha256(path)}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m app.bundle_tools.large_files [--check] BUNDLE_DIR...``; 1 when ``--check`` finds a stale file."""
    parser = argparse.ArgumentParser(prog="python -m app.bundle_tools.large_files", description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle_dirs", nargs="+", type=Path, help="bundle folders (holding models/ and configs/)")
    parser.add_argument("--check", action="store_true", help="only report stale entries; exit 1 if any")
    args = parser.parse_args(argv)
    stale = False
    for folder in args.bundle_dirs:
        if not (folder / "configs").is_dir():
            sys.stderr.write(f"error: '{folder}' is not a bundle folder (no configs/)\n")
            return 2
        if args.check:
            problems = stale_entries(folder)
            stale = stale or bool(problems)
            sys.stdout.write("".join(f"{folder}: {p}\n" for p in problems) or f"{folder / FILE_NAME}: up to date\n")
        else:
            sys.stdout.write(f"written: {write_large_files(folder)} ({len(weight_files(folder))} weight files)\n")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
