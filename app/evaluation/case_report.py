"""A self-contained HTML report of a ``volseg segment`` batch: one section per case.

Each section shows the label map over the input (FLAIR where the case has it) on three planes
through the tumour centre (axial, coronal, sagittal; PNG images embedded as base64 ``data:``
URIs, so the single file opens anywhere), the volumes of ``volseg_run.json`` (mL), the missing
sequences, the quality score where the run computed one, and the case's other recorded facts.
The page header names the bundle and its cross-validation figures (``eval_metrics`` of its
``configs/metadata.json``). Slices are shown in the radiological convention: the image is
reoriented to LPS, so the patient's left is on the viewer's right and anterior is up in axial
views; pixel aspect follows the voxel spacing.

Example:
    >>> write_report("out")  # doctest: +SKIP
    PosixPath('out/report.html')
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from app.io.atomic import atomic_write_text

logger = logging.getLogger(__name__)

REPORT_HTML = "report.html"
PLANES = ("axial", "coronal", "sagittal")
#: Keys of a run-record case shown in their own rows (the rest go under "other").
_SHOWN = ("case_id", "output", "error", "note", "seconds", "volumes_ml", "missing_sequences", "quality", "inputs",
          "missing_sequences_cv_dice", "missing_sequences_cv_source")


def _oriented(path: str | Path, reference: Any | None = None) -> Any:
    """Read a volume with SimpleITK, resampled onto ``reference`` where given and not already on
    its grid, and reoriented to LPS (index i -> patient left, j -> posterior, k -> superior)."""
    import SimpleITK as sitk

    from app.io.readers import read_volume

    image = read_volume(path, check_finite=False, refuse_all_zero=False)
    if reference is not None and (image.GetSize() != reference.GetSize() or not np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-3)
                                  or not np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-4)):
        image = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return image


def _lps(image: Any) -> Any:
    import SimpleITK as sitk

    return sitk.DICOMOrient(image, "LPS")


def tumour_centre(label: np.ndarray) -> tuple[int, ...]:
    """Voxel index of the centre of mass of the non-zero voxels of ``label``, rounded; the grid
    centre where the label is empty."""
    idx = np.argwhere(label > 0)
    return tuple(int(round(v)) for v in idx.mean(0)) if idx.size else tuple(n // 2 for n in label.shape)


def _colours(values: Sequence[int]) -> dict[int, tuple[float, float, float]]:
    """Colour of each label value, by ascending value from the palette of
    :mod:`app.evaluation.overlay` (BraTS: 1 red, 2 green, 4 yellow), as in ``volseg evaluate --png``."""
    from app.evaluation.overlay import _PALETTE

    return {v: _PALETTE[i % len(_PALETTE)] for i, v in enumerate(sorted(values))}


def plane_slices(array: np.ndarray, spacing: Sequence[float], centre: Sequence[int]) -> dict[str, tuple[np.ndarray, float]]:
    """The three planes through ``centre`` of an LPS-oriented SimpleITK array ``(k, j, i)``.

    Returns:
        Plane name -> ``(2D slice ready for imshow with origin upper, pixel aspect)``:
        axial ``(j, i)`` anterior up; coronal ``(k, i)`` and sagittal ``(k, j)`` superior up.
    """
    k, j, i = centre
    si, sj, sk = spacing
    return {"axial": (array[k], sj / si), "coronal": (array[::-1, j, :], sk / si), "sagittal": (array[::-1, :, i], sk / sj)}


def overlay_pngs(image_path: str | Path | None, label_path: str | Path, names: Mapping[int, str], title: str = "") -> dict[str, bytes]:
    """PNG images of the label over the image on the three planes through the tumour centre.

    Args:
        image_path: background volume (co-registered with the label), or None for a black one.
        label_path: the written label map.
        names: label value -> name, for the legend.
        title: text before the plane name in each image's title.

    Returns:
        Plane name -> PNG bytes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk
    from matplotlib.patches import Patch

    label_img = _oriented(label_path)
    label_lps = _lps(label_img)
    label = sitk.GetArrayFromImage(label_lps).astype(np.int64)
    background = sitk.GetArrayFromImage(_lps(_oriented(image_path, label_img))).astype(np.float32) if image_path else np.zeros(label.shape, np.float32)
    nonzero = background[background != 0]
    lo, hi = (np.percentile(nonzero, [1, 99]) if nonzero.size else (0.0, 1.0))
    values = sorted(set(int(v) for v in np.unique(label) if v != 0) | set(names))
    colours = _colours(values)
    centre = tumour_centre(label)
    label_planes = plane_slices(label, label_lps.GetSpacing(), centre)
    image_planes = plane_slices(background, label_lps.GetSpacing(), centre)
    pngs = {}
    for plane in PLANES:
        lab, aspect = label_planes[plane]
        rgba = np.zeros((*lab.shape, 4))
        for value, rgb in colours.items():
            rgba[lab == value] = (*rgb, 0.45)
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.imshow(image_planes[plane][0], cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, aspect=aspect, interpolation="nearest")
        ax.imshow(rgba, aspect=aspect, interpolation="nearest")
        ax.set_title(f"{title} {plane}".strip(), fontsize=9)
        ax.axis("off")
        if plane == "axial":
            ax.legend(handles=[Patch(color=colours[v], label=names.get(v, f"label {v}")) for v in values], loc="lower right", fontsize=7, framealpha=0.6)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=72, bbox_inches="tight")
        plt.close(fig)
        pngs[plane] = buf.getvalue()
    return pngs


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value) or "none"
    return str(value)


def _table(rows: Sequence[tuple[str, str]], cls: str, head: tuple[str, str] | None = None) -> str:
    th = f"<thead><tr><th>{html.escape(head[0])}</th><th>{html.escape(head[1])}</th></tr></thead>" if head else ""
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="{cls}">{th}<tbody>{body}</tbody></table>'


def run_figures(metrics: Mapping[str, Any], mode: str = "fast", n4: bool = False, int8: bool = False) -> tuple[list[tuple[str, str]], str]:
    """The cross-validation figures of the path a batch ran, from a bundle's ``eval_metrics``
    (keys ``cv5_fast[_n4][_int8]_dice_<region>[_std]`` and ``..._hd95_<region>_mm``): one row per
    region, ``("WT", "Dice 0.863 +- 0.081, HD95 7.7 mm")`` (a plus-minus sign), and which figures they are. Where the
    bundle has none for that path, the nearest (without int8, then without N4), said so; accurate
    mode has none of its own (each fold model trained on most of the cases), so fast mode's."""
    prefixes = [f"cv5_fast{'_n4' if a else ''}{'_int8' if b else ''}" for a, b in ((n4, int8), (n4, False), (False, int8), (False, False))]
    for prefix in dict.fromkeys(prefixes):
        regions = [k.removeprefix(f"{prefix}_dice_") for k in metrics if k.startswith(f"{prefix}_dice_") and not k.endswith("_std")
                   and "_" not in k.removeprefix(f"{prefix}_dice_")]
        if regions:
            break
    else:
        return [], "no cross-validation figures for this path"
    rows = []
    for region in regions:
        dice, std, hd95 = (metrics.get(f"{prefix}_dice_{region}"), metrics.get(f"{prefix}_dice_{region}_std"), metrics.get(f"{prefix}_hd95_{region}_mm"))
        text = f"Dice {float(dice):.3f}" + (f" \u00b1 {float(std):.3f}" if std is not None else "") + (f", HD95 {float(hd95):.1f} mm" if hd95 is not None else "")
        rows.append((region, text))
    path = "--mode fast" + (", N4" if "_n4" in prefix else ", no N4") + (", int8" if "_int8" in prefix else ", float32")
    which = f"5-fold cross-validation, all sequences, {path}"
    if prefix != prefixes[0]:
        which += " (the nearest figures the bundle has for this run's path)"
    if mode == "accurate":
        which += "; --mode accurate averages the fold models, so it has no figures of its own on these cases"
    return rows, which


def bundle_section(bundle: str, mode: str = "fast", n4: bool = False, int8: bool = False) -> str:
    """The bundle's name, version, description and the cross-validation figures of the path the
    batch ran (:func:`run_figures`), with every ``eval_metrics`` figure in a folded table."""
    from app.bundles import bundle_path

    try:
        meta = json.loads((bundle_path(bundle) / "configs" / "metadata.json").read_text())
    except (OSError, ValueError) as err:
        return f'<section id="bundle"><h2>Bundle {html.escape(str(bundle))}</h2><p>metadata not readable: {html.escape(str(err))}</p></section>'
    metrics = meta.get("eval_metrics") or {}
    if metrics:
        rows, which = run_figures(metrics, mode, n4, int8)
        every = _table([(k, repr(v) if isinstance(v, (int, float)) else _fmt(v)) for k, v in metrics.items()], "cv-all", ("figure", "value"))
        figures = ((_table(rows, "cv", ("region", "mean over cases")) if rows else "") + f"<p>{html.escape(which)}</p>"
                   + f"<details><summary>every figure of the bundle (eval_metrics)</summary>{every}</details>")
    else:
        figures = "<p>no cross-validation figures in the bundle</p>"
    return (f'<section id="bundle"><h2>Bundle {html.escape(str(meta.get("name", bundle)))} {html.escape(str(meta.get("version", "")))}</h2>'
            f'<p>{html.escape(str(meta.get("description", "")))}</p><h3>Cross-validation figures</h3>{figures}</section>')


def _background(images: Sequence[str | Path | None]) -> str | Path | None:
    """The volume drawn under the labels: the file named FLAIR (``_flair``, ``-t2f``), else the
    last one given (FLAIR in T1, T1ce, T2, FLAIR order); None where there is none."""
    from app.io.integrity import sequence_of
    from app.io.readers import strip_volume_suffix

    present = [p for p in images if p is not None]
    named = [p for p in present if (sequence_of(p) or ("", ""))[1] == "flair" or strip_volume_suffix(Path(p).name).lower().endswith("-t2f")]
    return (named or present or [None])[-1]


def _subset_cv(bundle: str, missing: Sequence[str], n4: bool = False, int8: bool = False, mode: str | None = "fast") -> str:
    """The bundle's cross-validation Dice per region for cases lacking ``missing`` sequences, for
    the path that ran (``n4``: ``--n4``; ``int8``: its int8 models) where it has figures for it
    (:func:`app.bundles.run_subset_cv`)."""
    from app.bundles import run_subset_cv

    cv, source = run_subset_cv(bundle, missing, n4, int8, mode)
    return ("  ".join(f"{region} {dice:.3f}" for region, dice in cv.items()) + (f" ({source})" if source else "")) if cv else "no CV figure for this subset"


def _written_names(names: Mapping[int, str], bundle: str, label_codes: str | None) -> Mapping[int, str]:
    """Value -> name of a label map written in ``label_codes`` (``"2023"``: BraTS 2023+, ET 3;
    :meth:`app.labels.LabelManager.with_codes`); ``names`` for the bundle's own codes."""
    if not label_codes or label_codes == "2018" or not bundle:
        return names
    from app.labels import labels_of

    try:
        return dict(labels_of(bundle).with_codes(label_codes).labels)
    except (ValueError, FileNotFoundError):
        return names


def case_section(entry: Mapping[str, Any], images: Sequence[str | Path | None] | None, names: Mapping[int, str], bundle: str = "",
                 n4: bool = False, int8: bool = False) -> str:
    """One case: overlays, volumes table, missing sequences (with the bundle's CV Dice for the
    sequences present; its ``--n4`` figures where the run used N4, ``n4``), quality score and other facts."""
    case_id = str(entry.get("case_id"))
    parts = [f'<section class="case" id="case-{html.escape(case_id)}"><h2>{html.escape(case_id)}</h2>']
    output = entry.get("output")
    if entry.get("error"):
        parts.append(f'<p class="error">failed: {html.escape(str(entry["error"]))}</p>')
    elif output and Path(output).is_file():
        background = _background(images or [])
        try:
            pngs = overlay_pngs(background, output, _written_names(names, bundle, (entry.get("settings") or {}).get("label_codes")), case_id)
            parts.append('<div class="overlays">' + "".join(
                f'<figure><img class="overlay" alt="{p}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}"><figcaption>{p}</figcaption></figure>'
                for p, png in pngs.items()) + "</div>")
            if background is None:
                parts.append("<p>input images unknown: labels drawn on black</p>")
        except Exception as err:  # a report must not fail on one unreadable input
            logger.warning("case '%s': no overlay (%s)", case_id, err)
            parts.append(f"<p>no overlay: {html.escape(str(err))}</p>")
    volumes = entry.get("volumes_ml") or {}
    parts.append("<h3>Volumes</h3>" + (_table([(k, _fmt(float(v))) for k, v in volumes.items()], "volumes", ("region", "mL")) if volumes else "<p>none recorded</p>"))
    quality = entry.get("quality")
    facts = [("missing sequences", _fmt(entry.get("missing_sequences") or [])),
             ("inputs", _inputs(entry.get("inputs"), names_of_channels(bundle))),
             ("quality score", _fmt(quality) if quality is not None else
              "none: the case failed" if entry.get("error") else "not computed (volseg segment --uncertainty)"),
             ("label map", str(output) if output else "none written"), ("seconds", _fmt(entry.get("seconds")))]
    if entry.get("missing_sequences") and bundle:
        facts.insert(1, ("CV Dice with these sequences", _subset_cv(bundle, entry["missing_sequences"], n4, int8, (entry.get("settings") or {}).get("mode"))))
    facts += [(k, _fmt(v)) for k, v in entry.items() if k not in _SHOWN and v is not None]
    if entry.get("note"):
        facts.append(("note", str(entry["note"])))
    parts.append("<h3>Case</h3>" + _table(facts, "facts") + "</section>")
    return "".join(parts)


def _mixed_settings(cases: Sequence[Mapping[str, Any]]) -> str | None:
    """Where the segmented cases differ in mode, N4, label codes or bundle (an output folder that holds earlier
    batches): how many cases each combination made, e.g. ``"2 fast, 1 accurate + N4 (see each
    case's facts)"``; None where they agree."""
    from collections import Counter

    def label(settings: Mapping[str, Any]) -> str:
        text = f"{settings.get('mode') or 'fast'}{' + N4' if settings.get('n4_average') else ''}"
        text += f", label codes {settings.get('label_codes') or '2018'}" if len(codes) > 1 else ""
        return f"{settings.get('bundle')} {text}" if len(bundles) > 1 else text

    done = [c.get("settings") or {} for c in cases if c.get("output") and not c.get("error")]
    bundles = {str(s.get("bundle")) for s in done}
    codes = {str(s.get("label_codes") or "2018") for s in done}
    counts = Counter(label(s) for s in done)
    if len(counts) < 2:
        return None
    return ", ".join(f"{n} {text}" for text, n in counts.items()) + " (see each case's facts)"


def _codes_text(label_codes: str | None, bundle: str) -> str:
    """The values of the run's label maps, e.g. ``"1 NCR/NET, 2 ED, 3 ET (BraTS 2023+ codes)"``;
    a record that predates ``label_codes`` was written in the bundle's own codes."""
    from app.labels import labels_of

    codes = str(label_codes or "2018")
    try:
        manager = labels_of(bundle)
        names = dict(manager.with_codes(codes).labels)
    except (ValueError, FileNotFoundError):
        return codes
    listed = ", ".join(f"{v} {n}" for v, n in sorted(names.items()))
    try:
        manager.code_map("2023")  # a BraTS bundle: say which codes
    except ValueError:
        return listed
    return f"{listed} (BraTS {'2023+' if codes == '2023' else '2012-2021'} codes)"


def _n4_text(record: Mapping[str, Any]) -> str:
    """How the run used N4: off, or on with what it segmented (``n4_combine``) and which sequences."""
    if not record.get("n4_average"):
        return "off"
    combine = record.get("n4_combine")
    used = {"n4": "the corrected case is segmented", "average": "the case as given and corrected are segmented, probabilities averaged"}.get(str(combine), _fmt(combine))
    channels = (record.get("n4_params") or {}).get("channels")
    names = names_of_channels(str(record.get("bundle", "")))
    which = ", ".join(names[c] if c < len(names) else f"channel {c}" for c in channels) if channels else "every sequence"
    return f"on ({which}; {used})"


def names_of_channels(bundle: str) -> tuple[str, ...]:
    """The bundle's input channel names (BraTS: t1, t1ce, t2, flair); () where unknown."""
    from app.labels import labels_of

    try:
        return tuple(labels_of(bundle).channels) if bundle else ()
    except (ValueError, FileNotFoundError):
        return ()


def _inputs(inputs: Sequence[str | None] | None, channels: Sequence[str]) -> str:
    """``t1: missing, t1ce: /data/x_t1ce.nii.gz, ...`` (the channel names where their number matches)."""
    if not inputs:
        return "not recorded"
    names = channels if len(channels) == len(inputs) else [f"input {i + 1}" for i in range(len(inputs))]
    return ", ".join(f"{n}: {p if p is not None else 'missing'}" for n, p in zip(names, inputs))


_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:.5em 0}"
          "th,td{border:1px solid #ccc;padding:2px 8px;text-align:left}td{font-variant-numeric:tabular-nums}"
          ".overlays{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0}.error{color:#b00}section.case{border-top:2px solid #444;margin-top:1.5em}")


def write_report(run_dir: str | Path, images: Mapping[str, Sequence[str | Path | None]] | None = None, out: str | Path | None = None) -> Path:
    """Write the HTML report of the batch in ``run_dir`` (its ``volseg_run.json``).

    Args:
        run_dir: a ``volseg segment`` output folder.
        images: case ID -> the case's input volumes (T1, T1ce, T2, FLAIR order; None for a
            missing one); default: each case's ``inputs`` in the record where present, else
            the labels are drawn on black.
        out: the HTML file (default ``<run_dir>/report.html``), written atomically.

    Returns:
        The HTML path.

    Raises:
        FileNotFoundError: ``run_dir`` has no ``volseg_run.json``.
    """
    from app.labels import labels_of

    record_path = Path(run_dir) / "volseg_run.json"
    if not record_path.is_file():
        raise FileNotFoundError(f"no run record '{record_path}': run `volseg segment ... --output {run_dir}` first")
    record = json.loads(record_path.read_text())
    bundle = str(record.get("bundle", ""))
    try:
        names = dict(labels_of(bundle).labels)
    except (ValueError, FileNotFoundError):
        names = {}
    cases = record.get("cases", [])
    run = [("bundle", bundle), ("mode", _fmt(record.get("mode"))), ("device", _fmt(record.get("device"))), ("backend", _fmt(record.get("backend"))), ("N4 bias-field correction", _n4_text(record)),
           ("labels", _codes_text(record.get("label_codes"), bundle)), ("VolSeg", _fmt(record.get("volseg"))), ("cases", f"{sum(1 for c in cases if not c.get('error'))} segmented, {sum(1 for c in cases if c.get('error'))} failed")]
    mixed = _mixed_settings(cases)
    if mixed:  # an output folder that holds earlier batches made otherwise: the rows above are the last batch's
        run.append(("settings of the cases", mixed))
    n4 = bool(record.get("n4_average"))
    from app.bundles import ran_int8

    int8 = ran_int8(record.get("precision"))
    sections = [case_section(c, (images or {}).get(c.get("case_id")) or c.get("inputs"), names, bundle, n4, int8) for c in cases]
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>VolSeg report: {len(cases)} case(s)</title><style>{_STYLE}</style></head><body>'
            f'<h1>VolSeg segmentation report</h1><p>generated {datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")} from {html.escape(str(record_path))}; '
            f'not for clinical use without review</p>{_table(run, "run")}{bundle_section(bundle, str(record.get("mode") or "fast"), n4, int8)}'
            f'{"".join(sections)}</body></html>\n')
    return atomic_write_text(Path(out) if out is not None else Path(run_dir) / REPORT_HTML, page)
