"""The HTML batch report: parsed with the standard library's html.parser, images decoded as PNG."""

from __future__ import annotations

import base64
import io
import json
import logging
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from app.bundles import bundle_dir
from app.evaluation.case_report import _background, tumour_centre, write_report
from app.inference.volumes import add_case_volumes
from tests.conftest import REPO_ROOT

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ReportParser(HTMLParser):
    """Sections (by id) with their images (alt, decoded bytes) and table rows (th text, td text)."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.title = ""
        self._current: dict | None = None
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._row: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self._current = self.sections.setdefault(a["id"], {"images": [], "tables": {}, "text": []})
        elif tag == "img" and self._current is not None:
            src = a["src"]
            assert src.startswith("data:image/png;base64,")
            self._current["images"].append((a["alt"], base64.b64decode(src.split(",", 1)[1], validate=True)))
        elif tag == "table" and self._current is not None:
            self._table = a.get("class", "")
            self._current["tables"].setdefault(self._table, [])
        elif tag == "tr":
            self._row = []
        elif tag in ("th", "td"):
            self._cell = []
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._table and self._current is not None and self._row:
            self._current["tables"][self._table].append(self._row)
        elif tag == "table":
            self._table = None
        elif tag == "section":
            self._current = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._current is not None:
            self._current["text"].append(data)
        if self._in_title:
            self.title += data


def _parse(path: Path) -> ReportParser:
    parser = ReportParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def _facts(section: dict) -> dict[str, str]:
    return {row[0]: row[1] for row in section["tables"]["facts"]}


def _check_overlays(section: dict) -> None:
    assert [alt for alt, _ in section["images"]] == ["axial", "coronal", "sagittal"]
    for _, png in section["images"]:
        assert png.startswith(PNG_SIGNATURE)
        image = Image.open(io.BytesIO(png))
        image.verify()
        assert image.format == "PNG" and min(image.size) > 50


def _check_volumes(section: dict, volumes_ml: dict[str, float]) -> None:
    shown = {row[0]: float(row[1]) for row in section["tables"]["volumes"] if row[0] != "region"}
    assert list(shown) == list(volumes_ml)
    for name, ml in volumes_ml.items():
        assert shown[name] == pytest.approx(ml, abs=5e-4), name


def test_report_of_a_phantom_run(phantom_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """`segment_cases(report=True)`: one section per case with three PNG planes, the record's
    volumes, "none" for missing sequences, and the bundle's CV figures."""
    from app import api

    out = tmp_path / "run"
    api.segment_cases([phantom_root / "Phantom_001"], out, device="cpu", backend="torch", report=True)
    record = json.loads((out / "volseg_run.json").read_text())
    report = _parse(out / "report.html")
    assert report.title == "VolSeg report: 1 case(s)"
    section = report.sections["case-Phantom_001"]
    _check_overlays(section)
    _check_volumes(section, record["cases"][0]["volumes_ml"])
    assert record["cases"][0]["volumes_ml"]["WT"] > 0
    facts = _facts(section)
    assert facts["missing sequences"] == "none" and facts["quality score"].startswith("not computed")
    assert facts["inputs"].startswith("t1: ") and facts["inputs"].endswith("Phantom_001_flair.nii.gz")
    meta = json.loads((bundle_dir("brats_unet3d") / "configs" / "metadata.json").read_text())["eval_metrics"]
    every = {row[0]: row[1] for row in report.sections["bundle"]["tables"]["cv-all"]}
    assert every.pop("figure") == "value" and every == {k: repr(v) for k, v in meta.items()}  # folded, all of them
    cv = {row[0]: row[1] for row in report.sections["bundle"]["tables"]["cv"]}  # the path that ran: fast, float32 torch, N4 (the default since 0.11.0)
    assert record["n4_average"] is True
    assert cv.pop("region") == "mean over cases" and list(cv) == ["WT", "TC", "ET"]
    assert cv["WT"] == f"Dice {meta['cv5_fast_n4_dice_WT']:.3f} \u00b1 {meta['cv5_fast_n4_dice_WT_std']:.3f}, HD95 {meta['cv5_fast_n4_hd95_WT_mm']:.1f} mm"
    assert "5-fold cross-validation, all sequences, --mode fast, N4, float32" in "".join(report.sections["bundle"]["text"])
    assert "brats_unet3d" in "".join(report.sections["bundle"]["text"])
    # `volseg report` writes it again from the run record (there was no command for it), and names inputs not in the run
    from app.cli import app as cli

    with caplog.at_level(logging.WARNING):
        again = CliRunner().invoke(cli, ["report", str(out), "--out", str(tmp_path / "again.html"), "--inputs", str(phantom_root / "Phantom_002")])
    assert again.exit_code == 0 and f"report: {tmp_path / 'again.html'}" in again.output, again.output
    assert "1 of the inputs name cases that" in caplog.text and "Phantom_002" in caplog.text
    rebuilt = _parse(tmp_path / "again.html")
    assert set(rebuilt.sections) == set(report.sections) and rebuilt.sections["case-Phantom_001"]["images"]
    missing = CliRunner().invoke(cli, ["report", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "volseg_run.json" in missing.output and "Traceback" not in missing.output


def test_report_renders_missing_sequences_quality_and_failures(phantom_root: Path, tmp_path: Path):
    """A record from the lead's missing-sequence and uncertainty work, a failed case, and the
    report API that finds the input images from the case folders."""
    from app import api

    out = tmp_path / "run"
    out.mkdir()
    case = phantom_root / "Phantom_002"
    shutil.copy(case / "Phantom_002_seg.nii.gz", out / "Phantom_002_seg.nii.gz")
    entries = [{"case_id": "Phantom_002", "output": str(out / "Phantom_002_seg.nii.gz"), "seconds": 2.5, "error": None,
                "missing_sequences": ["t2"], "quality": 0.87, "uncertainty": str(out / "Phantom_002_uncertainty.nii.gz")},
               {"case_id": "Broken_<1>", "output": None, "seconds": 0.1, "error": "case 'Broken': FLAIR file is truncated"}]
    add_case_volumes(entries, "brats_unet3d", out)
    (out / "volseg_run.json").write_text(json.dumps({"bundle": "brats_unet3d", "mode": "fast", "cases": entries}))
    path = api.report(out, [case])
    report = _parse(path)
    assert set(report.sections) == {"bundle", "case-Phantom_002", "case-Broken_<1>"}
    section = report.sections["case-Phantom_002"]
    _check_overlays(section)
    _check_volumes(section, entries[0]["volumes_ml"])
    facts = _facts(section)
    assert facts["missing sequences"] == "t2" and facts["quality score"] == "0.870"
    from app.bundles import missing_sequence_cv

    cv = missing_sequence_cv("brats_unet3d", ["t2"])
    assert facts["CV Dice with these sequences"] == ("  ".join(f"{r} {d:.3f}" for r, d in cv.items()) or "no CV figure for this subset")
    assert facts["uncertainty"].endswith("Phantom_002_uncertainty.nii.gz")
    broken = report.sections["case-Broken_<1>"]
    assert not broken["images"] and "failed: case 'Broken': FLAIR file is truncated" in "".join(broken["text"])
    broken_facts = _facts(broken)  # not "label map None", nor advice to add a flag that would not help
    assert broken_facts["label map"] == "none written" and broken_facts["quality score"] == "none: the case failed"
    # Without the inputs the labels are drawn on black, and said so.
    bare = _parse(write_report(out, out=tmp_path / "bare.html"))
    assert "labels drawn on black" in "".join(bare.sections["case-Phantom_002"]["text"])
    # A --n4 run quotes the bundle's --n4 figures for the subset, and says so.
    (out / "volseg_run.json").write_text(json.dumps({"bundle": "brats_unet3d", "mode": "fast", "n4_average": True, "n4_combine": "n4", "cases": entries}))
    n4_facts = _facts(_parse(write_report(out, out=tmp_path / "n4.html")).sections["case-Phantom_002"])
    cv_n4 = missing_sequence_cv("brats_unet3d", ["t2"], n4=True)
    (out / "volseg_run.json").write_text(json.dumps({"bundle": "brats_unet3d", "mode": "fast", "n4_average": True, "n4_combine": "n4",
                                                      "n4_params": {"channels": [1, 3]}, "cases": entries}))
    page = write_report(out, out=tmp_path / "n4c.html").read_text(encoding="utf-8")  # the run table precedes the sections
    assert "<th>N4 bias-field correction</th><td>on (t1ce, flair; the corrected case is segmented)</td>" in page  # was "N4 (--n4) n4"
    assert cv_n4 and n4_facts["CV Dice with these sequences"] == "  ".join(f"{r} {d:.3f}" for r, d in cv_n4.items()) + " (with N4)"


def test_tumour_centre():
    label = np.zeros((24, 32, 40), dtype=np.uint8)
    label[4:8, 10:12, 30:34] = 2
    assert tumour_centre(label) == (6, 10, 32)  # (5.5, 10.5, 31.5) rounded half to even
    assert tumour_centre(np.zeros((24, 32, 40))) == (12, 16, 20)


def test_background_is_flair_where_named():
    assert _background(["a/X_t1ce.nii.gz", "a/X_FLAIR.nii.gz", "a/X_t2.nii.gz"]) == "a/X_FLAIR.nii.gz"
    assert _background(["a/BraTS-GLI-00000-000-t2f.nii.gz", "a/BraTS-GLI-00000-000-t1c.nii.gz"]) == "a/BraTS-GLI-00000-000-t2f.nii.gz"
    assert _background(["x.nrrd", None]) == "x.nrrd" and _background([None]) is None


def test_report_without_run_record(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="volseg_run.json"):
        write_report(tmp_path)


def test_cli_report_flag_keeps_matplotlib(phantom_root: Path, tmp_path: Path, monkeypatch):
    """`volseg segment --report` passes the flag on, and the import trimming of `segment`
    leaves matplotlib importable when --report is given."""
    calls = {}

    def fake_segment_cases(inputs, output, **kwargs):
        calls.update(kwargs)
        return []

    import app.api

    monkeypatch.setattr(app.api, "segment_cases", fake_segment_cases)
    from app.cli import app as cli

    result = CliRunner().invoke(cli, ["segment", str(phantom_root / "Phantom_000"), "-o", str(tmp_path), "--report", "--quiet"])
    assert result.exit_code == 0, result.output
    assert calls["report"] is True
    probe = subprocess.run([sys.executable, "-c", "from app.cli import skip_unused_imports as s; print('matplotlib' in s(['segment', 'x', '--report']))"],
                           cwd=REPO_ROOT, capture_output=True, encoding="utf-8", errors="replace", timeout=120)
    assert probe.stdout.strip() == "False", probe.stderr
    probe = subprocess.run([sys.executable, "-c", "from app.cli import skip_unused_imports as s; print('matplotlib' in s(['segment', 'x']))"],
                           cwd=REPO_ROOT, capture_output=True, encoding="utf-8", errors="replace", timeout=120)
    assert probe.stdout.strip() == "True", probe.stderr


def test_run_figures_are_those_of_the_path_that_ran():
    """The report listed all 34 eval_metrics keys; it shows the figures of the run's own path first."""
    from app.evaluation.case_report import run_figures

    meta = json.loads((bundle_dir("brats_unet3d") / "configs" / "metadata.json").read_text())["eval_metrics"]
    rows, which = run_figures(meta, "fast", n4=True, int8=True)
    assert dict(rows)["ET"] == f"Dice {meta['cv5_fast_n4_int8_dice_ET']:.3f}, HD95 {meta['cv5_fast_n4_int8_hd95_ET_mm']:.1f} mm"
    assert which == "5-fold cross-validation, all sequences, --mode fast, N4, int8"
    rows, which = run_figures(meta, "fast", n4=False, int8=False)  # --no-n4: its own figures, said so
    assert dict(rows)["WT"].startswith(f"Dice {meta['cv5_fast_dice_WT']:.3f}") and which.endswith("--mode fast, no N4, float32")
    rows, which = run_figures({"cv5_fast_dice_WT": 0.8, "cv5_fast_n4_dice_WT": 0.85}, "accurate", n4=True, int8=True)
    assert rows == [("WT", "Dice 0.850")] and "(the nearest figures" in which and "no figures of its own" in which
    assert run_figures({"other": 1.0}) == ([], "no cross-validation figures for this path")


def test_a_folder_of_batches_made_otherwise_says_so_in_the_header(tmp_path: Path):
    """Two fast cases, then one in accurate mode into the same folder: the header said "mode
    accurate, 3 segmented" and nothing else."""
    fast, accurate = {"bundle": "brats_unet3d", "mode": "fast", "n4_average": False}, {"bundle": "brats_unet3d", "mode": "accurate", "n4_average": True}
    cases = [{"case_id": f"C{i}", "output": str(tmp_path / f"C{i}_seg.nii.gz"), "error": None, "settings": s}
             for i, s in enumerate([fast, fast, accurate])]
    (tmp_path / "volseg_run.json").write_text(json.dumps({"bundle": "brats_unet3d", "mode": "accurate", "n4_average": True, "cases": cases}))
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert "<th>settings of the cases</th><td>2 fast, 1 accurate + N4 (see each case&#x27;s facts)</td>" in page
    (tmp_path / "volseg_run.json").write_text(json.dumps({"bundle": "brats_unet3d", "mode": "fast", "cases": cases[:2]}))
    assert "settings of the cases" not in write_report(tmp_path).read_text(encoding="utf-8")


def test_a_run_without_report_says_that_the_report_there_is_an_earlier_runs(phantom_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """report.html of an earlier --report run stayed as it was beside a later run's labels, without a word."""
    import app.api
    from app.cli import app as cli
    from app.inference.segmenter import CaseResult

    monkeypatch.setattr(app.api, "segment_cases", lambda inputs, output, **kwargs: [CaseResult("Phantom_000", output=tmp_path / "Phantom_000_seg.nii.gz")])
    result = CliRunner().invoke(cli, ["segment", str(phantom_root / "Phantom_000"), "-o", str(tmp_path), "--quiet"])
    assert result.exit_code == 0 and "is an earlier run's" not in result.output  # no report there: nothing to say
    (tmp_path / "report.html").write_text("<html></html>")
    result = CliRunner().invoke(cli, ["segment", str(phantom_root / "Phantom_000"), "-o", str(tmp_path), "--quiet"])
    assert result.exit_code == 0 and f"note: {tmp_path / 'report.html'} is an earlier run's and does not show this one; `volseg report {tmp_path}`" in result.output
