"""The documentation shows only commands that work as written (issue 12: "README, bundle READMEs
and docs/ show only commands that work as written (a test runs the README's bundle commands)").

Two checks:

1. Every ``volseg ...`` command in a fenced ``bash`` block of ``README.md``,
   ``bundles/*/docs/README.md`` and ``docs/*.md`` parses with the real command line, without
   running: ``typer.main.get_command(app.cli.app)``, then click's ``make_context`` (strict,
   ``resilient_parsing=False``) down through nested groups (``volseg cv train``), so an unknown
   command or option, a missing required option or a bad option value fails with the file and
   line. ``\\`` continuations are joined and trailing ``# comments`` dropped; the README's optional
   parts (``[--device cpu|cuda]``, ``[--mode accurate]``) are checked both left out and given,
   with their first alternative. Placeholders (``DIR``, ``CASE``) are plain arguments and parse.
2. The README's MONAI bundle block (the ``bash`` block that starts with
   ``cd bundles/brats_unet3d``) runs command by command, as subprocesses, from a copy of the
   bundle at the same depth as in the repository (``<tmp>/repo/bundles/brats_unet3d``, with
   ``<tmp>/shared`` a link to ``../shared`` and ``bundles/meta_schema.json`` beside the copy), so
   the README's relative paths (``../../../shared/data/...``, ``../meta_schema.json``) resolve;
   ``python`` is this interpreter. Each command must exit 0; the inference one must write a
   label map per case with the input's shape and affine and values in {0, 1, 2, 4}. Two commands
   are shortened, not changed: training gets ``--max_epochs 1``, one training case
   (``train_datalist`` cut to ``[:1]``) and no validation cache (the validation at
   ``val_interval`` never comes in one epoch); evaluation scores one case of its split
   (``val_datalist`` cut to ``[:1]``; both splits' two cases took 30 s of CPU). The ``run``
   commands read ``../shared`` data (markers ``real_data``, ``slow``; skipped without it); the
   ``verify_*`` commands need no data (``slow``: a MONAI import each).

CPU time measured on 2 cores (``/usr/bin/time``, user + sys): the parse checks under 1 s each
(about 10 s for the file without ``slow``, mostly imports); the bundle block about 70 s: training
16 s (60 s and 3.7 GB RSS unshortened), evaluation 20 s, inference 19 s, ``verify_metadata`` 7 s,
``verify_net_in_out`` 8 s; each subprocess stays under 1.4 GB RSS.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import nibabel as nib
import numpy as np
import pytest
import typer

from app import cli
from tests.conftest import REPO_ROOT, SHARED_BRATS

#: Markdown files whose ``bash`` blocks are checked, relative to the repository root.
DOC_FILES = sorted([REPO_ROOT / "README.md", *REPO_ROOT.glob("bundles/*/docs/README.md"), *REPO_ROOT.glob("docs/*.md")])
#: ``[--opt value|other]``: the README's notation for an optional part (not ``"['a.yaml','b.yaml']"``).
OPTIONAL = re.compile(r"\[(--[^\[\]]+)\]")
#: Shell operators that separate commands on one line.
SEPARATORS = {"&&", "||", ";", "|"}
#: Label codes a BraTS bundle writes.
BRATS_LABELS = {0, 1, 2, 4}
#: Per-command limit: a run that hangs fails instead of stalling the suite.
TIMEOUT_S = 900
#: What a command line that does not parse raises: click's errors, or (typer 0.2x vendors its own
#: click) ``typer.TyperException``, the base of the vendored ``UsageError`` and ``BadParameter``.
CLI_ERRORS = (click.ClickException, *((typer.TyperException,) if hasattr(typer, "TyperException") else ()))
#: What a group given no subcommand raises after printing its help.
CLI_EXITS = (click.exceptions.Exit, typer.Exit)


def bash_blocks(path: Path) -> list[list[tuple[int, str]]]:
    """The fenced ``bash`` blocks of a markdown file, each a list of ``(line number, text)``."""
    blocks: list[list[tuple[int, str]]] = []
    lang: str | None = None  # None: outside a fence
    for no, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("```"):
            if lang is None:
                lang, block = stripped[3:].strip(), []
            else:
                if lang == "bash":
                    blocks.append(block)
                lang = None
            continue
        if lang == "bash":
            block.append((no, line))
    return blocks


def logical_lines(block: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Join ``\\`` continuations: ``(number of the first line, joined text)`` per command line."""
    out, buf, start = [], "", None
    for no, line in block:
        start = no if start is None else start
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        out.append((start, buf + line))
        buf, start = "", None
    return out


def variants(text: str) -> list[tuple[str, str]]:
    """``(tag, text)`` to check: the line as is, or, with ``[--opt a|b]`` parts, without them
    (``bare``) and with each given as its first alternative (``--opt a``, tag ``optional``)."""
    if not OPTIONAL.search(text):
        return [("", text)]
    first = lambda m: " ".join(tok.split("|")[0] for tok in m.group(1).split())  # noqa: E731
    return [("bare", OPTIONAL.sub("", text)), ("optional", OPTIONAL.sub(first, text))]


def commands(tokens: list[str]) -> list[list[str]]:
    """The commands of one tokenised line, split at ``&&``, ``||``, ``;`` and ``|``."""
    out: list[list[str]] = [[]]
    for tok in tokens:
        if tok in SEPARATORS:
            out.append([])
        else:
            out[-1].append(tok)
    return [c for c in out if c]


def volseg_commands() -> list[tuple[str, int, str, list[str]]]:
    """Every ``volseg`` command of the documentation: ``(file, line, text, argv after 'volseg')``;
    ``.venv/bin/volseg`` counts too."""
    found = []
    for path in DOC_FILES:
        rel = str(path.relative_to(REPO_ROOT))
        for block in bash_blocks(path):
            for no, text in logical_lines(block):
                if "volseg" not in text:
                    continue
                for tag, variant in variants(text):
                    for cmd in commands(shlex.split(variant, comments=True)):
                        if Path(cmd[0]).name == "volseg":
                            found.append((rel, no, f"{variant.strip()}" + (f"  [{tag}]" if tag else ""), cmd[1:]))
    return found


def check_cli(argv: list[str]):
    """Parse ``volseg <argv>`` with the real command line, strictly, without running it.

    Raises:
        CLI_ERRORS: unknown command or option, missing or bad value (``UsageError``,
            ``NoSuchOption``, ``BadParameter``, ``MissingParameter``).
    """
    cmd = typer.main.get_command(cli.app)
    name, ctx, args = "volseg", None, list(argv)
    while hasattr(cmd, "resolve_command"):  # a group (``volseg``, ``volseg cv``, ``volseg manifest``)
        ctx = cmd.make_context(name, list(args), parent=ctx, resilient_parsing=False)
        name, cmd, args = cmd.resolve_command(ctx, args)
    return cmd.make_context(name, list(args), parent=ctx, resilient_parsing=False)


DOC_COMMANDS = volseg_commands()


def test_extraction_joins_continuations_drops_comments_and_expands_optional_parts(tmp_path: Path):
    md = tmp_path / "x.md"
    md.write_text("text\n```bash\n# a comment\nvolseg segment A \\\n    B --output o/   # two inputs\n```\n"
                  "```python\nvolseg = 1\n```\n```bash\nvolseg segment A --output o [--device cpu|cuda] [--uncertainty]\n```\n")
    blocks = bash_blocks(md)
    assert len(blocks) == 2
    (no, text), = [line for line in logical_lines(blocks[0]) if "volseg" in line[1]]
    assert no == 4 and shlex.split(text, comments=True) == ["volseg", "segment", "A", "B", "--output", "o/"]
    (_, text), = logical_lines(blocks[1])
    assert [(t, shlex.split(v)[5:]) for t, v in variants(text)] == [("bare", []), ("optional", ["--device", "cpu", "--uncertainty"])]
    assert commands(shlex.split("python3 -m venv .venv && .venv/bin/volseg demo")) == [["python3", "-m", "venv", ".venv"], [".venv/bin/volseg", "demo"]]


def test_docs_have_volseg_commands_including_nested_groups():
    files = {f for f, *_ in DOC_COMMANDS}
    assert "README.md" in files and any(f.startswith("bundles/") for f in files) and any(f.startswith("docs/") for f in files)
    firsts = {tuple(argv[:2]) for *_, argv in DOC_COMMANDS}
    assert ("cv", "train") in firsts and ("manifest", "brats") in firsts and ("demo",) in {a[:1] for a in firsts}


@pytest.mark.parametrize("argv", [["segment", "CASE", "--output", "o", "--no-such-option"], ["cv", "no-such-command"],
                                  ["segment", "CASE", "--output", "o", "--nproc", "two"], ["segment", "CASE"], ["no-such-command"]],
                         ids=["unknown-option", "unknown-subcommand", "bad-value", "missing-required", "unknown-command"])
def test_check_cli_rejects_what_the_cli_rejects(argv: list[str]):
    with pytest.raises(CLI_ERRORS):
        check_cli(argv)


def _doc_id(doc: str, line: int, text: str, argv: list[str]) -> str:
    tag = re.search(r"\[(bare|optional)\]$", text)
    return f"{doc}:{line}:{argv[0] if argv else ''}" + (f":{tag.group(1)}" if tag else "")


@pytest.mark.parametrize(("doc", "line", "text", "argv"), DOC_COMMANDS, ids=[_doc_id(*c) for c in DOC_COMMANDS])
def test_documented_volseg_command_parses(doc: str, line: int, text: str, argv: list[str]):
    try:
        check_cli(argv)
    except CLI_ERRORS as err:
        why = err.format_message() or "no command given (the group prints its help)"
        pytest.fail(f"{doc}:{line}: `{text}` does not parse: {why}", pytrace=False)
    except CLI_EXITS as err:  # e.g. a group given no subcommand prints help and exits
        pytest.fail(f"{doc}:{line}: `{text}` does not run a command (exit {err.exit_code})", pytrace=False)


# ---- the README's MONAI bundle block, run as written ----

def readme_bundle_block() -> tuple[str, list[tuple[int, list[str]]]]:
    """The README's block that starts with ``cd bundles/<name>``: that folder (relative to the
    repository root) and its commands as ``(line, argv)``."""
    for block in bash_blocks(REPO_ROOT / "README.md"):
        lines = [(no, shlex.split(text, comments=True)) for no, text in logical_lines(block)]
        lines = [(no, argv) for no, argv in lines if argv]
        if lines and lines[0][1][0] == "cd" and lines[0][1][1].startswith("bundles/"):
            return lines[0][1][1], lines[1:]
    return "", []


BUNDLE_FOLDER, BUNDLE_COMMANDS = readme_bundle_block()


def needs_data(argv: list[str]) -> bool:
    """``monai.bundle run`` reads cases (../shared data); the ``verify_*`` commands do not."""
    return "run" in argv


def shortened(argv: list[str]) -> list[str]:
    """The README command with ``python`` as this interpreter, and training and evaluation cut
    short (see the module docstring): the same workflow, on fewer cases and one epoch."""
    argv = [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]
    configs = argv[argv.index("--config_file") + 1] if "--config_file" in argv else ""
    if "run" in argv and "train.yaml" in configs:
        argv += ["--max_epochs", "1", "--train_datalist", "$app.data.load_datalist(@data_list_file, 'training', @dataset_dir)[:1]",
                 "--validate#dataset#cache_rate", "0"]
    elif "run" in argv and "evaluate.yaml" in configs:
        argv += ["--val_datalist", "$app.data.load_datalist(@data_list_file, @val_split, @dataset_dir)[:1]"]
    return argv


def test_readme_has_the_bundle_block():
    assert BUNDLE_FOLDER == "bundles/brats_unet3d"
    subcommands = [argv[argv.index("monai.bundle") + 1] for _, argv in BUNDLE_COMMANDS if "monai.bundle" in argv]
    assert subcommands.count("run") >= 3 and "verify_metadata" in subcommands and "verify_net_in_out" in subcommands


@pytest.fixture(scope="module")
def bundle_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<tmp>/repo/<BUNDLE_FOLDER>``: the bundle at the README's depth, ``<tmp>/shared`` linked to
    the shared data folder (where there is one), ``meta_schema.json`` beside the bundle."""
    root = tmp_path_factory.mktemp("readme_bundle")
    dest = root / "repo" / BUNDLE_FOLDER
    shutil.copytree(REPO_ROOT / BUNDLE_FOLDER, dest, ignore=shutil.ignore_patterns("runs", "eval", "preds", "__pycache__"))
    shutil.copy2(REPO_ROOT / "bundles" / "meta_schema.json", dest.parent / "meta_schema.json")
    if SHARED_BRATS.parent.parent.is_dir():
        (root / "shared").symlink_to(SHARED_BRATS.parent.parent, target_is_directory=True)
    return dest


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def check_labels(cwd: Path, argv: list[str]) -> None:
    """The inference run wrote, per case of ``--dataset_dir``, a label map in the case's geometry
    with BraTS codes only."""
    data, out = cwd / _option(argv, "--dataset_dir"), cwd / _option(argv, "--output_dir")
    labels = sorted(out.rglob("*_seg.nii.gz"))
    assert labels, f"no label map under {out}: {sorted(p.name for p in out.rglob('*'))}"
    for path in labels:
        case = path.name[: -len("_seg.nii.gz")]
        ref = nib.load(data / f"{case}_t1.nii.gz" if data.name == case else data / case / f"{case}_t1.nii.gz")
        img = nib.load(path)
        values = set(np.unique(np.asarray(img.dataobj)).tolist())
        assert img.shape == ref.shape, f"{path.name}: shape {img.shape}, input {ref.shape}"
        assert np.allclose(img.affine, ref.affine, atol=1e-3), f"{path.name}: affine differs from the input's"
        assert values <= BRATS_LABELS and values - {0}, f"{path.name}: values {sorted(values)}"


def _bundle_param(line: int, argv: list[str]):
    marks = [pytest.mark.slow]
    if needs_data(argv):
        marks += [pytest.mark.real_data, pytest.mark.skipif(not SHARED_BRATS.is_dir(), reason=f"no BraTS data at {SHARED_BRATS}")]
    sub = argv[argv.index("monai.bundle") + 1] if "monai.bundle" in argv else argv[0]
    cfg = Path(_option(argv, "--config_file") or "").name.strip("'\"]").removesuffix(".yaml")
    return pytest.param(line, argv, marks=marks, id=f"README.md:{line}:{sub}" + (f":{cfg}" if cfg else ""))


@pytest.mark.parametrize(("line", "argv"), [_bundle_param(n, a) for n, a in BUNDLE_COMMANDS])
def test_readme_bundle_command_runs(line: int, argv: list[str], bundle_copy: Path):
    env = {**os.environ, "VOLSEG_COMPILE": "0", "VOLSEG_BACKEND": "torch"}
    done = subprocess.run(shortened(argv), cwd=bundle_copy, env=env, capture_output=True, encoding="utf-8", errors="replace", timeout=TIMEOUT_S)
    assert done.returncode == 0, f"README.md:{line}: `{shlex.join(argv)}` exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    if needs_data(argv) and "--dataset_dir" in argv and "--output_dir" in argv:
        check_labels(bundle_copy, argv)
    configs = _option(argv, "--config_file") or ""
    if "train.yaml" in configs:
        assert (bundle_copy / "runs" / "train" / "model.pt").is_file(), "training wrote no runs/train/model.pt"
    if "evaluate.yaml" in configs:
        assert (bundle_copy / "eval" / "metrics.csv").is_file(), "evaluation wrote no eval/metrics.csv"
