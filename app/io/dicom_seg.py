"""DICOM SEG output for DICOM input, with highdicom (optional extra ``volseg[dicom]``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from app.io.atomic import atomic_write
from app.io.readers import dicom_series


def segment_property(name: str) -> tuple[Any, Any]:
    """SNOMED CT segmented property category and type (DICOM CID 7150 / 7151) of a segment name,
    for viewers that show what a segment is: BraTS NCR/NET -> Morphologically Abnormal Structure /
    Necrosis, ED -> Edema, ET -> Neoplasm; a name that is a SNOMED CT keyword of pydicom's
    code dictionary (``"Spleen"``, ``"liver"``) -> Anatomical Structure / that structure; anything
    else -> Tissue / Tissue.

    Raises:
        ImportError: pydicom is not installed.
    """
    from pydicom.sr.codedict import codes

    key = name.strip().lower()
    abnormal = codes.SCT.MorphologicallyAbnormalStructure
    if key.startswith("ncr") or "necro" in key:
        return abnormal, codes.SCT.Necrosis
    if key in ("ed", "snfh") or "edema" in key or "oedema" in key:
        return abnormal, codes.SCT.Edema
    if key in ("et", "tc", "wt") or "tumo" in key or "enhanc" in key:
        return abnormal, codes.SCT.Neoplasm
    try:
        return codes.SCT.AnatomicalStructure, getattr(codes.SCT, "".join(part.capitalize() for part in key.replace("_", " ").split()))
    except AttributeError:
        return codes.SCT.Tissue, codes.SCT.Tissue


#: Attributes a DICOM SEG copies or derives from its source images that no default can stand in
#: for (highdicom raised AttributeError or an unrelated-sounding ValueError without them).
SEG_REQUIRED = ("SOPClassUID", "StudyInstanceUID", "Modality", "FrameOfReferenceUID", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
#: Type 2 attributes (present, may be empty) of the patient and study modules that the SEG copies:
#: filled empty in memory where a research export left them out.
SEG_EMPTY_ALLOWED = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
                     "ReferringPhysicianName")


def _complete_sources(sources: list, files: list) -> None:
    """Make source datasets (in memory) usable for a SEG, or say which attributes they lack.

    Empty type 2 patient / study attributes are added where absent; a missing ``SliceThickness``
    is taken as the spacing between the first two slices (mm). Anything else in
    :data:`SEG_REQUIRED` that is absent stops the SEG with a message naming the file and the
    attributes (DICOM keyword and tag).

    Raises:
        ValueError: a required attribute is missing.
    """
    from pydicom.datadict import tag_for_keyword

    for ds, path in zip(sources, files):
        missing = [k for k in SEG_REQUIRED if k not in ds or ds.data_element(k).value in (None, "")]
        if missing:
            named = ", ".join(f"{k} ({tag_for_keyword(k) >> 16:04X},{tag_for_keyword(k) & 0xFFFF:04X})" for k in missing)
            raise ValueError(f"the DICOM SEG needs {named} of every source image, which '{path}' lacks; the series was probably written by a "
                             "research tool rather than a scanner or PACS: export it again with them, or add them (e.g. with pydicom), "
                             "or leave out --dicom-seg (the label map itself is written)")
        for keyword in SEG_EMPTY_ALLOWED:
            if keyword not in ds:
                setattr(ds, keyword, "")
    thickness = None
    if len(sources) > 1:
        import numpy as np

        normal = np.cross(*np.asarray(sources[0].ImageOrientationPatient, dtype=float).reshape(2, 3))
        thickness = abs(float(np.dot(np.asarray(sources[1].ImagePositionPatient, dtype=float) - np.asarray(sources[0].ImagePositionPatient, dtype=float), normal)))
    for ds in sources:
        if "SliceThickness" not in ds or ds.SliceThickness in (None, ""):
            if thickness is None:
                raise ValueError("the DICOM SEG needs SliceThickness (0018,0050) of a one-slice series, which it lacks")
            ds.SliceThickness = f"{thickness:.6g}"


def write_dicom_seg(label: np.ndarray, dicom_folder: str | Path, path: str | Path, segment_names: Mapping[int, str],
                    series_uid: str | None = None, model_name: str = "VolSeg") -> Path:
    """Write a label map as a DICOM Segmentation (binary, one segment per label value) that
    references the source series (highdicom ``Segmentation``; Herrmann et al. 2018, J Digit Imaging).

    Args:
        label: ``(H, W, D)`` label map in the voxel order of :func:`app.io.read_volume` on the
            same folder (``(i, j, k)``: columns, rows, slices sorted by position).
        dicom_folder: the source series folder.
        path: output ``.dcm`` file (written atomically).
        segment_names: label value -> segment name, e.g. ``{1: "NCR/NET", 2: "ED", 4: "ET"}``;
            values are numbered 1..N in the SEG in ascending order.
        series_uid: which series of the folder (default: its only series).
        model_name: recorded as the algorithm and manufacturer model name.

    Raises:
        ImportError: highdicom is not installed (``pip install volseg[dicom]``).
        ValueError: the label's shape does not match the series, or it holds a value with no name,
            or the source images lack an attribute the SEG needs (:data:`SEG_REQUIRED`; named
            with its file). Empty patient / study attributes and a missing slice thickness are
            filled in the SEG instead (:func:`_complete_sources`).
    """
    try:
        import highdicom as hd
        import pydicom
        from pydicom.sr.codedict import codes
    except ImportError as err:
        raise ImportError("DICOM SEG output needs highdicom: pip install 'volseg[dicom]'") from err
    import app

    series = dicom_series(dicom_folder)
    files = series[series_uid] if series_uid else next(iter(series.values()))
    sources = [pydicom.dcmread(f) for f in files]
    _complete_sources(sources, files)
    frames = np.ascontiguousarray(np.asarray(label).transpose(2, 1, 0))  # (slices, rows, columns)
    expected = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    if frames.shape != expected:
        raise ValueError(f"label shape {tuple(label.shape)} does not match the series in '{dicom_folder}' ({expected[2]}, {expected[1]}, {expected[0]})")
    values = sorted(int(v) for v in np.unique(frames) if v != 0)
    unnamed = [v for v in values if v not in segment_names]
    if unnamed:
        raise ValueError(f"label values {unnamed} have no segment name; named: {dict(segment_names)}")
    numbered = np.zeros(frames.shape, dtype=np.uint8)
    ordered = sorted(segment_names)
    for number, value in enumerate(ordered, start=1):
        numbered[frames == value] = number
    algorithm = hd.AlgorithmIdentificationSequence(name=model_name, family=codes.cid7162.ArtificialIntelligence, version=app.__version__)
    descriptions = [hd.seg.SegmentDescription(segment_number=n, segment_label=segment_names[v], algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                                              algorithm_identification=algorithm, **dict(zip(("segmented_property_category", "segmented_property_type"),
                                                                                              segment_property(segment_names[v]))))
                    for n, v in enumerate(ordered, start=1)]
    logging.getLogger("highdicom").setLevel(max(logging.WARNING, logging.getLogger("highdicom").getEffectiveLevel()))  # its INFO lines per frame
    seg = hd.seg.Segmentation(source_images=sources, pixel_array=numbered, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                              segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=900, sop_instance_uid=hd.UID(),
                              instance_number=1, manufacturer="VolSeg", manufacturer_model_name=model_name, software_versions=app.__version__,
                              device_serial_number="0", omit_empty_frames=False)
    return atomic_write(path, lambda tmp: seg.save_as(tmp), suffix=".dcm")
