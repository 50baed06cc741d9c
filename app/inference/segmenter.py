"""Segment BraTS cases with a bundle's own inference config (one code path for CLI, API and bundle)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.constants import MODALITIES
from app.bundle_config import flag
from app.data.cases import case_id_from_path, find_case  # case_id_from_path: re-exported by app.inference
from app.data.verify import InputError, check_case_images
from app.inference.backends import OpenVINONetwork, resolve_backend
from app.inference.int8 import find_int8_ir, int8_may_saturate
from app.inference.ensemble import MODES, MirrorEnsemble, check_ensemble_paths, check_weights, ensemble_members
from app.io.readers import dicom_series_ids
from app.transforms import ChannelThresholdd, FillRegionHolesd, InForegroundBoxd, RegionsToBratsLabelsd

#: ``n4_combine`` values: segment the N4-corrected case only, or average it with the case as given.
N4_COMBINE = ("n4", "average")

logger = logging.getLogger(__name__)

#: postprocessing steps after ``Invertd`` that give the same labels before it where the inverse
#: only flips and zero-pads (voxel-wise thresholds and codes; connected-component filters; hole
#: filling in the slices of all three axes, which axis permutations, flips and zero padding keep).
_LABEL_STEPS = (ChannelThresholdd, RegionsToBratsLabelsd, InForegroundBoxd, FillRegionHolesd)


def _spacing_transform(preprocessing: Any) -> Any:
    """The ``Spacing`` array transform of a preprocessing ``Compose`` (its ``Spacingd``), or None."""
    from monai.transforms import Spacingd

    found = [t for t in getattr(preprocessing, "transforms", ()) if isinstance(t, Spacingd)]
    return found[0].spacing_transform if len(found) == 1 else None


def _inverse_is_exact_on_labels(image: Any, spacing: Any) -> bool:
    """Whether inverting the transforms applied to ``image`` (a MetaTensor) only flips, permutes
    axes and pads, with no interpolation: every applied operation is an ``Orientation``, a
    ``CropForeground`` that padded nothing, or a ``SpatialResample`` by ``spacing`` (the bundle's
    ``Spacing``) whose target direction and voxel size equal its source's (``AFFINE_TOL``) and
    whose output shape equals its input shape. Anything else, or no record, is False."""
    from monai.data.utils import AFFINE_TOL, zoom_affine

    ops = list(getattr(image, "applied_operations", None) or [])
    if not ops:
        return False
    for k, op in enumerate(ops):
        name, info = op.get("class"), op.get("extra_info") or {}
        if name == "Orientation":
            continue
        if name == "CropForeground":
            padded = ((info.get("pad_info") or {}).get("extra_info") or {}).get("padded", ())
            if any(int(p) for pair in padded for p in pair):
                return False
            continue
        if name == "SpatialResample" and spacing is not None and "src_affine" in info:
            src = np.asarray(info["src_affine"], dtype=np.float64)
            pixdim = np.asarray(spacing.pixdim, dtype=np.float64)[: src.shape[0] - 1]
            dst = zoom_affine(src, pixdim, diagonal=spacing.diagonal)  # the linear part; Spacing keeps the origin then
            shape_after = ops[k + 1]["orig_size"] if k + 1 < len(ops) else tuple(image.shape[1:])
            if np.allclose(src[:-1, :-1], dst[:-1, :-1], atol=AFFINE_TOL) and tuple(int(n) for n in shape_after) == tuple(int(n) for n in op["orig_size"]):
                continue
        return False
    return True


#: Data key of the input's brain mask (non-zero in any sequence) on the input grid, with ``uncertainty``.
BRAIN_KEY = "brain_mask"


def _brain_mask(loaded: dict) -> Any:
    """``(H, W, D)`` bool numpy mask of the voxels non-zero in any channel of the read ``image``
    (skull-stripped BraTS input: the brain), on the input grid."""
    image = loaded["image"]
    return np.asarray((image.as_tensor() if hasattr(image, "as_tensor") else image) != 0).any(axis=0)


def _is_dicom_folder(folder: Path) -> bool:
    return bool(dicom_series_ids(folder))


def expand_dataset_folders(paths: Sequence[Path]) -> list[Path]:
    """Replace each dataset folder among ``paths`` by its case folders, in name order.

    A dataset folder is laid out as BraTS and the Medical Segmentation Decathlon's raw data are,
    ``<dataset>/<case>/<case>_<sequence>.nii.gz``: it is not a case folder itself, holds no file
    named for an MRI sequence (label maps, ``<case>_seg``, may lie there: the outputs of a run into
    it), and has at least one case folder below it. Its subfolders that are not
    case folders (and hidden ones) are left out, with a log line naming them. Every other path is
    kept as it is, in order.

    Example:
        >>> expand_dataset_folders([Path("../shared/data/brats2018")])  # doctest: +SKIP
        [PosixPath('../shared/data/brats2018/Brats18_2013_11_1'), ...]
    """
    from app.data.cases import split_sequence_name

    out: list[Path] = []
    for path in paths:
        if path.is_dir() and not _is_case_folder(path):
            entries = sorted(path.iterdir())
            subfolders = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
            cases = [d for d in subfolders if _is_case_folder(d)]
            # a label map at the top (<case>_seg.nii.gz: the output of an earlier run into the dataset folder) keeps it a dataset folder
            if cases and not any(e.is_file() and (split_sequence_name(e) or (None, None))[1] in MODALITIES for e in entries):
                others = [d.name for d in subfolders if d not in cases]
                logger.info("%s: a dataset folder of %d case folders%s", path, len(cases),
                            f" (not case folders, left out: {', '.join(others)})" if others else "")
                out += cases
                continue
        out.append(path)
    return out


def resolve_inputs(inputs: Sequence[str | Path], channels: Sequence[str] = MODALITIES, sequences: Sequence[str] | None = None,
                   allow_missing: bool = True) -> list[tuple[str, list[Path | None]]]:
    """Turn CLI inputs into cases.

    For the four-sequence BraTS bundles, each input is a case folder, a dataset folder of case
    folders (:func:`expand_dataset_folders`), or a loose volume (NIfTI,
    NRRD, MetaImage file or DICOM series folder) matched to its sequence by name
    (``<case>_t1ce.nii.gz`` or BraTS 2023+ ``<case>-t1c.nii.gz``, :data:`app.data.cases.SEQUENCE_ALIASES`),
    never by position; loose files are grouped into cases by the case ID in their names. Files (or a
    folder of them) named as nnU-Net names input channels (``<case>_0000.nii.gz``) are matched
    through the ``channel_names`` of the ``dataset.json`` beside them
    (:func:`app.data.split_channels.nnunet_sequences`).
    ``sequences`` names the sequence of each loose file instead, in the order given (all of
    them then form one case). For a one-channel bundle (CT), every file or DICOM folder is a case.

    Args:
        inputs: case folders and/or volumes.
        channels: the bundle's input channel names, in channel order.
        sequences: with loose files, the sequence of each file (``["flair", "t1ce"]``).
        allow_missing: accept cases with a subset of the sequences (None in their place).

    Returns:
        ``[(case_id, [t1, t1ce, t2, flair]), ...]`` with None for a missing sequence; for a
        one-channel bundle ``[(case_id, [volume]), ...]``.

    Raises:
        InputError: a path that does not exist, a folder that is neither a case nor a DICOM
            series, a loose file whose name names no sequence (and no ``sequences``), two files
            for one sequence, ``sequences`` of the wrong length or with unknown names, or (without
            ``allow_missing``) a case that lacks a sequence, a 4D file of several channels (named with the
            command that splits it, :func:`app.data.split_channels.multichannel_hint`).
    """
    from app.data.split_channels import multichannel_folder_hint, nnunet_channel_files

    paths = [Path(p) for p in inputs]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise InputError(f"input not found: {', '.join(missing)}")
    if len(channels) == 1:  # CT: each volume, DICOM series, or volume of a dataset folder is a case
        from app.data.single_channel import single_channel_cases

        return single_channel_cases(paths)
    paths = expand_dataset_folders(paths)
    folders, files = [], []
    for p in paths:
        case_folder = p.is_dir() and _is_case_folder(p)
        nnunet = nnunet_channel_files(p) if p.is_dir() and not case_folder else []
        if nnunet:  # an nnU-Net imagesTs folder (<case>_0000.nii.gz, ...): its files, grouped into cases by name below
            files += nnunet
        elif p.is_dir() and (case_folder or not _is_dicom_folder(p)):
            folders.append(p)  # a case folder (find_case says what it lacks)
        else:  # a volume file or a DICOM series folder
            files.append(p)
    if sequences and folders:
        raise InputError(f"--sequences (sequences= in app.api) names the sequence of each loose file; a case folder ({folders[0]}) is read "
                         "by its files' names: leave --sequences out, or give the files themselves")
    cases: list[tuple[str, list[Path | None]]] = []
    for folder in folders:
        try:
            case = find_case(folder, allow_missing=allow_missing)
        except FileNotFoundError as err:  # a folder of 4D Task01_BrainTumour volumes (or the task folder): the command that splits them
            raise InputError(multichannel_folder_hint(folder, channels) or str(err)) from err
        cases.append((case.case_id, list(case.images)))
    if files:
        from app.io.formats import volume_format

        for f in files:
            volume_format(f)  # a file type VolSeg does not read (a PNG) is said first, before its name is parsed
        cases += _group_loose_files(files, channels, sequences, allow_missing)
    return cases


def _check_declared_sequences(files: Sequence[Path], keys: Sequence[str]) -> None:
    """``--sequences`` against the sequences the file names give.

    Raises:
        InputError: the names give every file a sequence, the same set as declared, in another
            order (``X_t1ce.nii.gz X_flair.nii.gz --sequences flair,t1ce`` fed FLAIR as T1ce, with
            no word: Dice 0.65 / 0.43 / 0.35 against 0.83 / 0.75 / 0.83).
    Other disagreements (a spinal-cord ``t2_t2.nii.gz`` given as FLAIR) are taken, with a warning.
    """
    from app.data.cases import split_sequence_name

    named = [split_sequence_name(f) for f in files]
    said = [p[1] if p is not None else None for p in named]
    clashes = [(f, s, k) for f, s, k in zip(files, said, keys) if s is not None and s != k]
    if not clashes:
        return
    listed = "; ".join(f"'{f.name}' is named {s}, given as {k}" for f, s, k in clashes)
    if None not in said and sorted(said) == sorted(keys):
        raise InputError(f"--sequences disagrees with the file names: {listed}; the names give each file a sequence, so leave --sequences "
                         f"out (or give it in the order of the files: {','.join(str(s) for s in said)})")
    logger.warning("--sequences disagrees with the file names (%s): reading them as --sequences says", listed)


def _is_case_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a volume named for its case (``<folder>_<key>``), a bare sequence
    file (``FLAIR.nii.gz``), or DICOM series sub-folders (a study), as
    :func:`app.data.cases.find_case` reads them."""
    from app.data.cases import is_dicom_study, split_sequence_name

    for f in folder.iterdir():
        case_id, key = split_sequence_name(f) or (None, None)
        if case_id == folder.name or (key in MODALITIES and not case_id and f.is_file()):
            return True
    return is_dicom_study(folder)


def _refuse_multichannel(files: list[Path], channels: Sequence[str]) -> None:
    """Before a naming error: raise the clearer one where a file is a 4D multi-channel volume (a Decathlon
    Task01_BrainTumour case), naming the command that splits it (:func:`app.data.split_channels.multichannel_hint`).
    Reads NIfTI headers, so only on the way to an error."""
    from app.data.split_channels import multichannel_hint

    hint = next((h for h in (multichannel_hint(f, channels) for f in files) if h), None)
    if hint:
        raise InputError(hint)


def _group_loose_files(files: list[Path], channels: Sequence[str], sequences: Sequence[str] | None,
                       allow_missing: bool) -> list[tuple[str, list[Path | None]]]:
    """Loose volumes -> cases, each file put in the channel its name (or ``sequences``) gives."""
    from app.data.cases import SEQUENCE_ALIASES, split_sequence_name
    from app.io.formats import strip_volume_suffix

    if isinstance(sequences, str):  # "t1ce,flair", as the CLI's --sequences takes it
        sequences = [s for s in sequences.split(",") if s.strip()]
    if sequences is not None:
        aliases = {a: k for k, names in SEQUENCE_ALIASES.items() for a in names}
        keys = [aliases.get(str(s).strip().lower()) for s in sequences]
        if len(keys) != len(files) or any(k not in channels for k in keys):
            _refuse_multichannel(files, channels)
            raise InputError(f"--sequences (sequences= in app.api) must name one of {', '.join(channels)} for each of the {len(files)} input file(s), "
                             f"got {', '.join(map(str, sequences))}")
        first = split_sequence_name(files[0])
        # the name's sequence key is dropped from the case ID only where it is the sequence declared
        # (t2_t2.nii.gz given as flair is case 't2_t2', not 't2')
        case_id = case_id_from_path(files[0]) if first is None or first[1] == keys[0] else strip_volume_suffix(files[0].name)
        if all(f.is_dir() for f in files) and len({f.resolve().parent for f in files}) == 1:
            case_id = files[0].resolve().parent.name  # the series folders of one study (01_T1/, 02_T1_post/): the study is the case
        named = [(case_id, k, f) for k, f in zip(keys, files)]
        _check_declared_sequences(files, keys)
        parsed_ids = list(dict.fromkeys(p[0] for p in map(split_sequence_name, files) if p is not None and p[0]))
        if len(parsed_ids) > 1:
            logger.warning("--sequences makes one case '%s' of %d files whose names name %d cases (%s): check that they are one "
                           "patient's session", named[0][0], len(files), len(parsed_ids), ", ".join(parsed_ids))
    else:
        from app.data.split_channels import nnunet_sequences

        parsed = [(split_sequence_name(f), f) for f in files]
        unnamed = [str(f) for p, f in parsed if p is None or p[1] not in channels]
        nnunet = nnunet_sequences(files, channels) if unnamed else None  # <case>_0000.nii.gz, channels named by dataset.json
        if unnamed and nnunet is None:
            from app.io.readers import describe_series, dicom_series

            for f in (f for f in files if str(f) in unnamed and f.is_dir()):  # a DICOM export with every series in one folder?
                try:
                    series = dicom_series(f)
                except InputError:  # no DICOM series: the message below
                    continue
                if len(series) < 2:
                    continue
                raise InputError(f"'{f}' holds {len(series)} DICOM series ({describe_series(series)}): "
                                 f"volseg segment reads one series a folder; `volseg dicom-sort {f} --output DIR` copies each series into "
                                 "a folder of its own, one study folder a study, and `volseg segment DIR --output OUT` then matches the series "
                                 "to sequences by SeriesDescription")
            _refuse_multichannel(files, channels)
            raise InputError(f"cannot tell which sequence {', '.join(repr(u) for u in unnamed)} is: name each file <case>_<{'|'.join(channels)}>"
                             ".nii.gz (BraTS 2023+: <case>-<t1n|t1c|t2w|t2f>), or pass --sequences (sequences= in app.api) with one name "
                             "per file in order (nnU-Net's <case>_0000.nii.gz names are read through the channel_names of a dataset.json "
                             "in their folder or the one above)")
        named = nnunet if nnunet is not None else [(p[0] or f.parent.name, p[1], f) for p, f in parsed]
    cases: dict[str, dict[str, Path]] = {}
    for case_id, key, path in named:
        if key in cases.setdefault(case_id, {}):
            raise InputError(f"case '{case_id}': two files for {key}: '{cases[case_id][key]}' and '{path}'")
        cases[case_id][key] = path
    out = []
    for case_id, found in cases.items():
        absent = [k for k in channels if k not in found]
        if absent and not allow_missing:
            raise InputError(f"case '{case_id}': expected {len(channels)} sequences ({', '.join(channels)}), missing {', '.join(absent)}")
        out.append((case_id, [found.get(k) for k in channels]))
    return out


@dataclass
class CaseResult:
    """Outcome of one case: ``label`` is ``(H, W, D)`` uint8 in the input geometry, in the codes it
    was written in (BraTS 0/1/2/4, or 0/1/2/3 with ``label_codes="2023"``)."""

    case_id: str
    label: np.ndarray | None = None
    affine: np.ndarray | None = None
    output: Path | None = None
    seconds: float = 0.0
    error: str | None = None
    extra: dict = field(default_factory=dict)
    note: str | None = None  # why the case was not segmented though not failed (its output exists)

    @property
    def reason(self) -> str | None:
        """``error`` without its leading ``case '<case_id>': ``, for lines that name the case already."""
        prefix = f"case '{self.case_id}': "
        return self.error[len(prefix):] if self.error and self.error.startswith(prefix) else self.error


class Segmenter:
    """Load a bundle's inference workflow once and segment many cases with it.

    The bundle's ``[common.yaml, inference.yaml]`` configs give the network, ``preprocessing``
    (load, RAS, 1 mm, brain crop, z-score), ``inferer`` (sliding window) and ``postprocessing``
    (sigmoid, ``Invertd`` back to the input grid, threshold, regions to labels 0/1/2/4).

    Args:
        bundle: a shipped bundle name or a bundle folder.
        device: ``"cpu"``, ``"cuda"`` or None for CUDA where available.
        ckpt_path: weights to load instead of ``models/model.pt``.
        overrides: further config overrides, e.g. ``{"overlap": 0.25}`` or ``{"infer_mode": "sliding_window"}``.
        backend: ``"auto"``, ``"torch"`` or ``"openvino"`` (see :func:`app.inference.backends.resolve_backend`);
            None takes the bundle's ``inference_backend``.
        mode: ``"fast"`` (one model, ``ckpt_path``) or ``"accurate"`` (the bundle's
            ``ensemble_ckpt_paths``, the cross-validation fold models, each over every mirroring
            of ``mirror_axes``, with the ``accurate_*`` inference settings); None takes the
            bundle's ``mode``.
        uncertainty: also compute the whole-tumour uncertainty map and case quality score
            (:mod:`app.inference.uncertainty`); in fast mode the model then runs over the
            mirrorings of the bundle's ``uncertainty_mirror_axes``.
        int8: on the OpenVINO backend, run each checkpoint's int8 model where the bundle has one
            made from exactly those weights (:mod:`app.inference.int8`; others run in float32);
            None takes the bundle's ``openvino_int8`` (false where it has none). ``self.precision``
            says what ran: ``"int8"``, ``"f32"``, ``"bf16"`` or ``"int8+f32"`` (a mix).
        n4: N4 bias-field correction of the sequences ``n4_params`` names (``accurate_n4_params``
            in accurate mode; all where it names none) (Tustison et al. 2010;
            :class:`app.transforms.N4BiasCorrection`, SimpleITK) before the model (``n4_average``
            in the bundle's inference config, ``accurate_n4_average`` in accurate mode; None takes
            it, false where absent: brats_unet3d >= 0.9.1 runs it in accurate mode, >= 0.11.0 in fast mode too). The bundle's
            ``n4_combine`` says how: ``"n4"`` segments the corrected case only (for weights
            trained on cases as given and N4-corrected, brats_unet3d >= 0.9.0); ``"average"``
            (the default where absent) segments the case as given and corrected and averages the
            two sigmoid probabilities. Raises 5-fold CV Dice of brats_unet3d (bundle docs) at the
            cost of the N4 fits (the sequences fitted in parallel; brats_unet3d on 2 CPU cores: about
            0.2 s a case in fast mode, T1ce and FLAIR at shrink 10 (0.10.10); about 1.2 s in accurate mode, all four).

    Raises:
        FileNotFoundError: the bundle or its weights are missing.
        ValueError, ImportError: an unknown backend, mode or ``n4_combine``, a bundle without an
            ensemble for ``accurate``, or OpenVINO asked for but not installed.
    """

    def __init__(self, bundle: str | Path = "brats_unet3d", device: str | None = None, ckpt_path: str | Path | None = None, overrides: dict | None = None,
                 backend: str | None = None, mode: str | None = None, uncertainty: bool = False, int8: bool | None = None,
                 n4: bool | None = None) -> None:
        from app.bundle_config import bundle_parser

        # the metadata is `_meta_`: BraTS bundles take name, network_def and training recipe from it
        parser = bundle_parser(bundle, "inference")
        if device is not None:
            from app.devices import check_device

            check_device(device)  # one-line ValueError for cuda without CUDA, before the network is built
            parser["device"] = f"$torch.device('{device}')"
        for key, value in (overrides or {}).items():
            parser[key] = value
        if ckpt_path is not None:
            parser["ckpt_path"] = str(ckpt_path)
        self.mode = mode or parser.get("mode", "fast")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got '{self.mode}'")
        if self.mode == "accurate" and "ensemble_ckpt_paths" not in parser:
            raise ValueError(f"bundle '{bundle}' has no ensemble (ensemble_ckpt_paths) for --mode accurate; use --mode fast")
        if self.mode == "accurate":
            check_ensemble_paths(parser.get_parsed_content("ensemble_ckpt_paths"))  # either backend, before anything is built
        else:
            check_weights(parser.get_parsed_content("ckpt_path"), bundle)
        if n4 and "n4_params" not in parser:
            raise ValueError(f"bundle '{bundle}' has no N4 settings (n4_params): --n4 corrects the bias field of MRI, and this bundle's "
                             "input is not MRI it was trained to correct; leave out --n4")
        if self.mode == "accurate":
            for key in ("infer_mode", "overlap", "sw_batch_size", "n4_average", "n4_params"):
                if f"accurate_{key}" in parser:
                    parser[key] = parser.get_parsed_content(f"accurate_{key}")  # a value or a metadata reference
        if "workflow_n4" in parser:
            parser["workflow_n4"] = False  # the N4 branch below replaces the bundle workflow's own N4 step
        self.uncertainty = uncertainty
        self.parser = parser
        self.device = parser.get_parsed_content("device")
        inputs = parser.get("_meta_", {}).get("network_data_format", {}).get("inputs", {})
        self.in_channels = int(next(iter(inputs.values()))["num_channels"]) if inputs else len(MODALITIES)
        self.channels = tuple(MODALITIES) if self.in_channels == len(MODALITIES) else tuple(f"channel{i}" for i in range(self.in_channels))
        self.regions = tuple(parser.get("regions", ()))
        if uncertainty and "WT" not in self.regions:
            raise ValueError(f"bundle '{bundle}' has no whole-tumour region (WT): --uncertainty gives the whole-tumour uncertainty map and "
                             "quality score of the BraTS bundles only; leave it out")
        self.backend = resolve_backend(backend or parser.get("inference_backend", "torch"), self.device)
        self.int8 = flag(parser.get("openvino_int8", False), "openvino_int8") if int8 is None else bool(int8)
        self.network = self._build_network(parser)
        self.preprocessing = parser.get_parsed_content("preprocessing")
        self.n4 = flag(parser.get_parsed_content("n4_average", default=False), "n4_average") if n4 is None else bool(n4)
        self.n4_combine = str(parser.get_parsed_content("n4_combine")) if "n4_combine" in parser else "average"
        if self.n4_combine not in N4_COMBINE:
            raise ValueError(f"n4_combine must be one of {', '.join(N4_COMBINE)}, got '{self.n4_combine}'")
        self._split = self._split_reader() if self.n4 or uncertainty else None  # (reader, the rest): N4 and the brain mask see the volumes as read
        self._n4_branch = self._n4_pipeline() if self.n4 else None
        self.inferer = parser.get_parsed_content("inferer")
        self.postprocessing = parser.get_parsed_content("postprocessing")
        self._spacing = _spacing_transform(self.preprocessing)
        self.amp = bool(parser.get_parsed_content("amp"))

    def _build_network(self, parser) -> Any:
        """``fast``: the network with ``ckpt_path``; ``accurate``: a :class:`MirrorEnsemble` of
        ``ensemble_ckpt_paths`` over the mirrorings of ``mirror_axes``. On the OpenVINO backend
        each member runs through OpenVINO (its int8 model where ``self.int8`` and one exists)."""
        network = parser.get_parsed_content("network")
        paths = parser.get_parsed_content("ensemble_ckpt_paths") if self.mode == "accurate" else [parser.get_parsed_content("ckpt_path")]
        if self.backend == "openvino":
            shape = self._window_shape(parser)
            members = [self._openvino_member(network, path, shape) for path in paths]
        else:
            members = ensemble_members(network, paths, self.device)
        self.precision = "+".join(dict.fromkeys(m.precision for m in members)) if self.backend == "openvino" else "f32"
        # the files that run: an int8 model's .xml where one ran (model.pt finds fold2_int8.xml), else the checkpoint
        self.model_files = [str(m.xml) if self.backend == "openvino" and m.precision == "int8" else str(path) for m, path in zip(members, paths)]
        if self.mode == "fast":
            axes = parser.get_parsed_content("uncertainty_mirror_axes") if self.uncertainty and "uncertainty_mirror_axes" in parser else []
            return MirrorEnsemble(members, axes, int(parser.get("ensemble_max_batch", 8))) if axes else members[0]
        return MirrorEnsemble(members, parser.get_parsed_content("mirror_axes"), int(parser.get("ensemble_max_batch", 8)))

    def _n4_pipeline(self) -> tuple[Any, Any, Any]:
        """(geometry, N4, normalisation): the preprocessing after the reader split before its
        intensity normalisation (:func:`app.inference.n4_position`, the rule ``inference.yaml`` uses too), so that N4 corrects the brain crop on the
        model's grid (since brats_unet3d 0.10.10; before, the whole volume as read: about 0.02 s
        more a BraTS case, docs/performance.md) and both branches of ``n4_combine`` ``"average"``
        share one read, crop and resampling."""
        from monai.transforms import Compose

        from app.inference.ensemble import n4_position
        from app.transforms import N4BiasCorrectiond
        from app.transforms.mri import checked_n4_params

        _, rest = self._split
        key = "accurate_n4_params" if self.mode == "accurate" and "accurate_n4_params" in self.parser else "n4_params"
        params = checked_n4_params(self.parser.get("n4_params", {}), key)  # the mode's N4 settings (app.transforms.N4BiasCorrection's arguments)
        at = n4_position(rest.transforms)
        return Compose(rest.transforms[:at]), N4BiasCorrectiond("image", **params), Compose(rest.transforms[at:])

    def _preprocess(self, data: dict) -> dict:
        """The bundle's preprocessing; with ``n4``, of the N4-corrected sequences (``n4_combine``
        ``"n4"``) or also ``"image_n4"``, the same after N4 (``"average"``; same geometry: N4 runs
        after the crop and keeps zero voxels zero)."""
        if self._n4_branch is None and not self.uncertainty:
            return self.preprocessing(data)
        load, rest = self._split
        loaded = load(data)
        brain = _brain_mask(loaded) if self.uncertainty else None  # on the input grid, before any step changes the image
        if self._n4_branch is None:
            out = rest(loaded)
        else:
            geometry, n4, normalise = self._n4_branch
            cropped = geometry(loaded)
            if self.n4_combine == "n4":
                out = normalise(n4(cropped))
            else:
                corrected = normalise(n4(dict(cropped)))  # N4 makes a new image first: the in-place z-score of the other branch does not reach it
                out = normalise(dict(cropped))
                if corrected["image"].shape != out["image"].shape:
                    raise RuntimeError(f"internal error: N4 branch shape {tuple(corrected['image'].shape)} != {tuple(out['image'].shape)}")
                out["image_n4"] = corrected["image"]
        if brain is not None:
            out[BRAIN_KEY] = brain
        return out

    def _split_reader(self) -> tuple[Any, Any]:
        """(the reader, the rest of the preprocessing): the bundle's preprocessing split after its
        first transform, so that N4 and the brain mask (``uncertainty``) see the volumes as read.

        Raises:
            ValueError: the preprocessing does not start with a reader (``LoadImaged``).
        """
        from monai.transforms import Compose, LoadImaged

        transforms = list(self.preprocessing.transforms)
        if not transforms or not isinstance(transforms[0], LoadImaged):
            raise ValueError(f"n4_average and uncertainty need a preprocessing that starts with a reader (LoadImaged); it starts with "
                             f"{type(transforms[0]).__name__ if transforms else 'nothing'}")
        return transforms[0], Compose(transforms[1:])

    def _window_shape(self, parser) -> tuple[int, ...] | None:
        """The input shape of every full batch of sliding windows that each model receives when no
        mirrorings are batched with them, ``(sw_batch_size, C, *roi_size)``, for which OpenVINO
        compiles a static model (fast mode, and accurate mode without ``mirror_axes``); None where the
        shapes vary (whole-volume forwards, mirrored batches) or the bundle's ``openvino_static_shapes``
        is false."""
        if self.mode == "accurate":
            mirrored = parser.get_parsed_content("mirror_axes", default=[])
        else:
            mirrored = self.uncertainty and parser.get_parsed_content("uncertainty_mirror_axes", default=[])
        if not flag(parser.get("openvino_static_shapes", True), "openvino_static_shapes") or mirrored or parser.get_parsed_content("infer_mode", default="sliding_window") != "sliding_window":
            return None
        roi_size = parser.get_parsed_content("roi_size")
        return (int(parser.get_parsed_content("sw_batch_size")), self.in_channels, *(int(n) for n in roi_size))

    def _openvino_member(self, network: Any, path: str | Path, input_shape: tuple[int, ...] | None = None) -> OpenVINONetwork:
        """One checkpoint on OpenVINO: its int8 model where ``self.int8`` and one was made from
        exactly these weights and it compiles; else the float32 conversion of the weights. With
        ``input_shape``, compiled for that shape first (:class:`OpenVINONetwork`)."""
        ir = find_int8_ir(path) if self.int8 else None
        if ir is not None:
            if int8_may_saturate(ir):
                logger.warning("int8 model %s was made without NNCF's overflow fix and this CPU has no VNNI: its int8 sums can "
                               "saturate and its labels differ from float32 (remake it with python -m app.bundle_tools.quantize "
                               "BUNDLE --force, or run with --no-int8)", ir)
            try:
                return OpenVINONetwork(None, self.in_channels, ir=ir, input_shape=input_shape)
            except RuntimeError as err:  # e.g. an IR this OpenVINO version cannot read
                logger.warning("cannot run the int8 model %s (%s): running %s in float32", ir, err, path)
        elif self.int8:
            logger.info("no int8 model made from %s: running it in float32", path)
        return OpenVINONetwork(ensemble_members(network, [path], self.device)[0], self.in_channels, input_shape=input_shape)

    def load(self, images: Sequence[str | Path]) -> dict:
        """Check and preprocess one case (reading, RAS, spacing, crop, z-score): the CPU-side half
        of :meth:`predict`, safe to run in a background thread while another case computes.

        Returns:
            The preprocessed data dict, with ``"shape"`` and ``"affine"`` of the input added.

        A sequence given as None (missing) is fed as a zero channel (see
        :class:`app.io.LoadVolumed`); ``"missing_sequences"`` in the result names them, and
        ``"input_warnings"`` holds the warnings of the bundle's input checks (such as a sequence
        that does not look skull-stripped).

        Raises:
            InputError: unreadable, non-3D or non-co-registered files, NaN/infinite voxels, or
                no volume at all.
        """
        import torch

        present = [p for p in images if p is not None]
        if not present:
            raise InputError("a case needs at least one input volume; every sequence is missing")
        shape, affine = check_case_images(present)
        data = self._preprocess({"image": [str(p) if p is not None else None for p in images]})
        # a NaN or infinite voxel makes the sum non-finite (one pass, no mask); a non-finite sum
        # from overflow alone is told apart by the voxel-wise check
        if not torch.isfinite(data["image"].sum()) and not torch.isfinite(data["image"]).all():
            raise InputError(f"case '{case_id_from_path(present[0])}': NaN or infinite voxel values in {', '.join(str(p) for p in present)}")
        data["shape"], data["affine"] = shape, affine
        data["missing_sequences"] = [name for name, p in zip(self.channels, images) if p is None]
        data["input_warnings"] = list(getattr(data["image"], "meta", {}).get("input_warnings", []))  # e.g. not skull-stripped
        return data

    def run(self, data: dict) -> tuple[np.ndarray, np.ndarray]:
        """Sliding-window inference and postprocessing of a case prepared by :meth:`load`."""
        out = self.run_case(data)
        return out["label"], out["affine"]

    def run_case(self, data: dict) -> dict[str, Any]:
        """Like :meth:`run`, with everything the case gave.

        Returns:
            ``label`` ``(H, W, D)`` uint8 and ``affine`` (4x4) of the input; ``missing_sequences``
            (names); ``input_warnings`` (what the bundle's input checks said of the case, e.g.
            :class:`app.transforms.CheckSkullStrippedd`; also logged); with ``uncertainty``: ``uncertainty`` ``(H, W, D)`` float32 entropy in bits of
            the whole-tumour probability, on the input grid, and ``quality`` (expected Dice of
            the whole tumour, :func:`app.inference.uncertainty.expected_dice`).
        """
        import torch
        from monai.transforms import Invertd

        shape, affine = data.pop("shape"), data.pop("affine")
        missing = data.pop("missing_sequences", [])
        warnings = data.pop("input_warnings", [])
        image = data["image"].unsqueeze(0).to(self.device)
        corrected = data.pop("image_n4", None)
        brain = data.pop(BRAIN_KEY, None)
        with torch.no_grad(), torch.autocast(self.device.type, enabled=self.amp and self.device.type == "cuda"):
            data["pred"] = self.inferer(image, self.network)[0].float()
            if corrected is not None:  # n4: mean sigmoid probability of the case and its N4-corrected copy, as logits
                other = self.inferer(corrected.unsqueeze(0).to(self.device), self.network)[0].float()
                mean = (torch.sigmoid(data["pred"]) + torch.sigmoid(other)) / 2
                data["pred"] = torch.logit(mean.clamp(1e-6, 1 - 1e-6))
        result: dict[str, Any] = {"affine": affine, "missing_sequences": missing, "input_warnings": warnings}
        out = data
        for transform in self._postprocessing_order(data["image"]):
            out = transform(out)
            if self.uncertainty and isinstance(transform, Invertd) and "WT" in self.regions:
                from app.inference.uncertainty import binary_entropy, expected_dice

                wt = out["pred"][self.regions.index("WT")]
                entropy = binary_entropy(wt)
                if brain is not None and brain.shape == tuple(entropy.shape):
                    entropy = entropy * brain  # 0 outside the brain: the model's small p in the air of the brain crop is no doubt to review
                result["uncertainty"] = entropy
                result["quality"] = round(expected_dice(wt), 4)
        label = np.asarray(out["pred"].cpu().numpy()[0], dtype=np.uint8)
        if label.shape != shape:
            raise RuntimeError(f"internal error: output shape {label.shape} != input shape {shape}")
        result["label"] = label
        return result

    def _postprocessing_order(self, image: Any) -> list:
        """The bundle's postprocessing transforms in the order to run them on this case.

        As configured (sigmoid, ``Invertd`` back to the input grid, then the label steps) where
        inverting the preprocessing interpolates, or with ``uncertainty`` (its map is the inverted
        probability). Otherwise the label steps run on the brain crop first and ``Invertd`` then
        pads and flips the uint8 label map (``nearest_interp``): the same labels, since thresholds
        and region codes act voxel by voxel and the component filters see the same components
        with zero voxels around them, from 3 float channels on the 240 x 240 x 155 grid to one
        label channel, about 0.15-0.2 s less a BraTS case on 2 CPU cores (docs/performance.md).
        That holds when the inverse only flips, permutes axes and pads: ``Orientation``,
        ``CropForeground`` with nothing padded, and ``SpatialResample`` that kept the affine and
        shape (MONAI resamples nothing there: the input already had the bundle's ``spacing_mm``).
        """
        from monai.transforms import Invertd

        transforms = list(self.postprocessing.transforms)
        at = next((i for i, t in enumerate(transforms) if isinstance(t, Invertd)), None)
        if at is None or self.uncertainty or not all(isinstance(t, _LABEL_STEPS) for t in transforms[at + 1:]):
            return transforms
        if not _inverse_is_exact_on_labels(image, self._spacing):
            return transforms
        invert = copy.copy(transforms[at])
        invert.nearest_interp = (True,) * len(invert.keys)  # Invertd keeps one flag a key
        return transforms[:at] + transforms[at + 1:] + [invert]

    def predict(self, images: Sequence[str | Path]) -> tuple[np.ndarray, np.ndarray]:
        """Segment one case.

        Args:
            images: T1, T1ce, T2 and FLAIR files of one case, co-registered.

        Returns:
            ``(label, affine)``: ``(H, W, D)`` uint8 with codes {0, 1, 2, 4}, exactly the shape
            of the input, and the input's 4x4 affine.

        Raises:
            InputError: unreadable, non-3D or non-co-registered files (see ``check_case_images``).
        """
        return self.run(self.load(images))
