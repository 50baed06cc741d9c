"""Bundle-driven segmentation of whole volumes."""

from app.inference.segmenter import CaseResult, Segmenter, case_id_from_path, resolve_inputs

__all__ = ["CaseResult", "Segmenter", "case_id_from_path", "resolve_inputs"]
