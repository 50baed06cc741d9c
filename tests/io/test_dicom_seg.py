from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from app.io import read_volume
from tests.io.dicom_util import write_dicom_series

hd = pytest.importorskip("highdicom", reason="DICOM SEG output needs the optional extra volseg[dicom]")


def test_dicom_seg_round_trip(tmp_path: Path):
    from app.io.dicom_seg import write_dicom_seg

    array = np.zeros((12, 20, 16), dtype=np.int16)  # (z, y, x)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.9, 3.0))
    image.SetOrigin((-10.0, 5.0, 20.0))
    write_dicom_series(image, tmp_path / "ct", intercept=-1024.0)
    size = read_volume(tmp_path / "ct").GetSize()
    label = np.zeros(size, dtype=np.uint8)  # (i, j, k)
    label[2:8, 3:9, 1:5] = 1
    label[4:6, 5:7, 2:4] = 4
    out = write_dicom_seg(label, tmp_path / "ct", tmp_path / "seg.dcm", {1: "NCR/NET", 2: "ED", 4: "ET"})
    seg = hd.seg.segread(out)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["NCR/NET", "ED", "ET"]
    # viewers name segments by their SNOMED CT property type: necrosis, edema, neoplasm (not "connective tissue")
    assert [s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in seg.SegmentSequence] == ["6574001", "79654002", "108369006"]
    assert {s.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning for s in seg.SegmentSequence} == {"Morphologically Abnormal Structure"}
    assert seg.SeriesInstanceUID != "" and len(seg.ReferencedSeriesSequence) == 1
    import pydicom

    from app.io import dicom_series

    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in next(iter(dicom_series(tmp_path / "ct").values()))]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1, 2, 3])  # (slice, row, column, segment)
    np.testing.assert_array_equal(pixels[..., 0].transpose(2, 1, 0), label == 1)
    np.testing.assert_array_equal(pixels[..., 1], 0)
    np.testing.assert_array_equal(pixels[..., 2].transpose(2, 1, 0), label == 4)
    with pytest.raises(ValueError, match="no segment name"):
        write_dicom_seg(label, tmp_path / "ct", tmp_path / "bad.dcm", {1: "core"})
    with pytest.raises(ValueError, match="does not match the series"):
        write_dicom_seg(label[:-1], tmp_path / "ct", tmp_path / "bad.dcm", {1: "a", 4: "b"})


def test_segment_names_get_snomed_codes():
    from app.io.dicom_seg import segment_property

    assert [c.value for c in segment_property("spleen")] == ["91723000", "78961009"]  # Anatomical Structure / Spleen
    assert [c.meaning for c in segment_property("Peritumoral edema")] == ["Morphologically Abnormal Structure", "Edema"]
    assert [c.meaning for c in segment_property("my region")] == ["Tissue", "Tissue"]


def test_a_research_export_gets_a_seg_or_a_message_naming_what_it_lacks(tmp_path: Path):
    """A series written by a research tool: without PatientID or SliceThickness highdicom raised
    AttributeError ('FileDataset' object has no attribute ...); without FrameOfReferenceUID a
    message that did not say which file or what to do."""
    import pydicom

    from app.io.dicom_seg import write_dicom_seg

    image = sitk.GetImageFromArray(np.zeros((6, 20, 16), dtype=np.int16))
    image.SetSpacing((0.8, 0.9, 2.5))
    write_dicom_series(image, tmp_path / "ct")
    label = np.zeros(read_volume(tmp_path / "ct").GetSize(), dtype=np.uint8)
    label[2:8, 3:9, 1:4] = 1

    def without(*keywords: str) -> None:
        for f in (tmp_path / "ct").iterdir():
            ds = pydicom.dcmread(f)
            for keyword in keywords:
                delattr(ds, keyword)
            ds.save_as(f)

    without("PatientID", "StudyDate", "SliceThickness")
    seg = pydicom.dcmread(write_dicom_seg(label, tmp_path / "ct", tmp_path / "seg.dcm", {1: "spleen"}))
    assert seg.PatientID == "" and float(seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SliceThickness) == pytest.approx(2.5)
    without("FrameOfReferenceUID")
    with pytest.raises(ValueError, match=r"the DICOM SEG needs FrameOfReferenceUID \(0020,0052\) of every source image, which '.*\.dcm' lacks"):
        write_dicom_seg(label, tmp_path / "ct", tmp_path / "seg2.dcm", {1: "spleen"})
    assert not (tmp_path / "seg2.dcm").exists()
