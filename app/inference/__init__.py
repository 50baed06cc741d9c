"""Bundle-driven segmentation of whole volumes."""

from app.inference.backends import BACKENDS, EXPORT_FORMATS, OpenVINONetwork, export_network, resolve_backend
from app.inference.ensemble import MODES, MirrorEnsemble, ensemble_members, load_weights, mirrorings, mode_network, n4_position, save_compact, workflow_n4_transforms
from app.inference.segmenter import CaseResult, Segmenter, case_id_from_path, resolve_inputs

__all__ = ["MODES", "MirrorEnsemble", "ensemble_members", "load_weights", "mirrorings", "mode_network", "n4_position", "save_compact", "workflow_n4_transforms", "BACKENDS", "EXPORT_FORMATS", "OpenVINONetwork", "export_network", "resolve_backend", "CaseResult", "Segmenter", "case_id_from_path", "resolve_inputs"]
