"""Model ensembles with mirroring test-time augmentation, as one network for MONAI's inferers."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

#: Inference modes of the BraTS bundles: ``fast`` runs ``models/model.pt`` once; ``accurate``
#: averages the fold models of the cross-validation, each over every mirroring.
MODES: tuple[str, ...] = ("fast", "accurate")


def mirrorings(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of the spatial ``axes`` (0, 1, 2 = H, W, D), as tensor dims of ``(B, C, H, W, D)``.

    Example:
        >>> mirrorings([0, 1])
        [(), (2,), (3,), (2, 3)]
    """
    for axis in axes:
        if axis not in (0, 1, 2):
            raise ValueError(f"mirror axes are spatial axes 0, 1, 2 (H, W, D), got {axis}")
    dims = sorted({a + 2 for a in axes})
    return [combo for r in range(len(dims) + 1) for combo in itertools.combinations(dims, r)]


class MirrorEnsemble(torch.nn.Module):
    """Average the sigmoid probabilities of several networks over input mirrorings.

    Test-time mirroring as in nnU-Net (Isensee et al. 2021, Nat. Methods 18:203): each member
    sees the input and its flips along every subset of ``mirror_axes``; its outputs are flipped
    back and the sigmoid probabilities of all members and mirrorings are averaged. The mirrored
    copies of a batch of windows go through each member batched together, at most ``max_batch``
    windows per forward. The result is returned as logits (``logit`` of the mean probability), so the
    bundle's ``Activationsd(sigmoid=True)`` postprocessing is unchanged.

    Args:
        members: networks (torch modules or callables such as ``OpenVINONetwork``), each
            ``(B, C_in, H, W, D)`` -> ``(B, C_out, H, W, D)`` logits of independent regions.
        mirror_axes: spatial axes to mirror (0, 1, 2 = H, W, D); empty: no mirroring.
        max_batch: most windows per member forward (bounds memory; at least one mirroring of the
            whole input batch goes at once).

    Raises:
        ValueError: no members, or an axis outside 0..2.

    Example:
        >>> net = torch.nn.Conv3d(4, 3, 3, padding=1)
        >>> MirrorEnsemble([net], mirror_axes=(0, 1, 2))(torch.zeros(1, 4, 8, 8, 8)).shape
        torch.Size([1, 3, 8, 8, 8])
    """

    def __init__(self, members: Sequence[Callable[[torch.Tensor], torch.Tensor]], mirror_axes: Sequence[int] = (0, 1, 2), max_batch: int = 8) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member network")
        self.members = list(members)
        self._modules_list = torch.nn.ModuleList([m for m in members if isinstance(m, torch.nn.Module)])
        self.flips = mirrorings(mirror_axes)
        self.max_batch = max(1, int(max_batch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total: torch.Tensor | None = None
        per_forward = max(1, self.max_batch // x.shape[0])
        for member in self.members:
            for start in range(0, len(self.flips), per_forward):
                flips = self.flips[start : start + per_forward]
                out = member(torch.cat([x.flip(dims) if dims else x for dims in flips]))
                for index, dims in enumerate(flips):
                    part = out[index * x.shape[0] : (index + 1) * x.shape[0]].float()
                    prob = torch.sigmoid(part.flip(dims) if dims else part)
                    total = prob if total is None else total + prob
        mean = total / (len(self.members) * len(self.flips))
        return torch.logit(mean.clamp(1e-6, 1 - 1e-6))


def load_weights(network: torch.nn.Module, ckpt_path: str | Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Load a state dict (``model.pt``, a compact float16 ``fold*.pt``, or a ``last.pt`` training
    checkpoint) into ``network``, in float32, and put it in eval mode.

    Raises:
        FileNotFoundError: ``ckpt_path`` does not exist.
        ValueError: its tensors do not fit ``network`` (the weights of another network, e.g.
            ``--init-from brats_deeplab3d`` on brats_unet3d), naming how many differ and the first.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"VolSeg weights '{path}' not found; train the bundle (volseg train --bundle NAME --output-dir R: "
                                "R is then a bundle with its weights, for --bundle R) or pass another checkpoint")
    state = _state_dict(path, device)
    own = network.state_dict()
    missing, unexpected = [k for k in own if k not in state], [k for k in state if k not in own]
    reshaped = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or reshaped:
        first = (f"'{reshaped[0]}' is {tuple(state[reshaped[0]].shape)} there, {tuple(own[reshaped[0]].shape)} here" if reshaped
                 else f"'{(missing or unexpected)[0]}' is {'missing' if missing else 'unexpected'}")
        raise ValueError(f"weights '{path}' do not fit this network: {len(missing)} tensor(s) missing, {len(unexpected)} unexpected, "
                         f"{len(reshaped)} of another shape (first: {first}); they are the weights of another network_def or of other settings "
                         "(channels, classes)")
    network.load_state_dict({k: v.float() if torch.is_floating_point(v) else v for k, v in state.items()})
    return network.eval()


def _state_dict(path: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The network weights in ``path``: a state dict, or the ``model`` entry of a ``last.pt`` checkpoint."""
    state = torch.load(path, map_location=device, weights_only=True)
    return state["model"] if isinstance(state.get("model"), dict) else state


def ensemble_members(network: torch.nn.Module, ckpt_paths: Sequence[str | Path], device: torch.device | str = "cpu") -> list[torch.nn.Module]:
    """One copy of ``network`` per checkpoint, each with its weights loaded (:func:`load_weights`).

    Raises:
        FileNotFoundError: a checkpoint is missing (the message names it).
        ValueError: no checkpoints.
    """
    if not ckpt_paths:
        raise ValueError("an ensemble needs at least one checkpoint")
    check_ensemble_paths(ckpt_paths)
    return [load_weights(copy.deepcopy(network), p, device) for p in ckpt_paths]


def check_ensemble_paths(ckpt_paths: Sequence[str | Path]) -> None:
    """Fail before any network is built where fold models of ``--mode accurate`` are missing
    (brats_deeplab3d ships its fast model only).

    Raises:
        FileNotFoundError: naming every missing file, its folder, and the way out.
    """
    missing = [Path(p) for p in ckpt_paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"no fold models for --mode accurate in '{missing[0].parent}' (missing: {', '.join(p.name for p in missing)}); "
                                "use --mode fast, or train them: volseg cv train --bundle NAME --output-dir R, then put R/fold<k>/model.pt in models/ as fold<k>.pt")


def check_weights(ckpt_path: str | Path, bundle: str | Path, then: str = "segment with --bundle R") -> None:
    """Fail before any network is built where the weights of ``--mode fast`` (``ckpt_path``) are
    missing: a template bundle (ct_unet3d) ships none. ``then`` ends the message: what to do
    with the trained folder ``R``.

    Raises:
        FileNotFoundError: naming the file and how to get trained weights.
    """
    if not Path(ckpt_path).is_file():
        raise FileNotFoundError(f"bundle '{bundle}' has no trained weights: '{ckpt_path}' is missing (a template such as ct_unet3d ships none). "
                                f"Train it first: volseg train --bundle {bundle} --manifest DATALIST --data-dir DATA --output-dir R; "
                                f"then {then}")


def save_compact(ckpt_path: str | Path, out: str | Path) -> Path:
    """Write a state dict's floating-point tensors as float16 (half the bytes), atomically.

    :func:`load_weights` turns them back into float32; outputs then stay within 2e-2 of a logit
    of the float32 weights' and over 99.9 % of thresholded labels agree (tested).

    Returns:
        ``out``.
    """
    from app.io.atomic import atomic_save_torch

    compact = {k: v.half() if torch.is_floating_point(v) else v for k, v in _state_dict(Path(ckpt_path)).items()}
    atomic_save_torch(compact, Path(out))
    return Path(out)


def mode_network(mode: str, network: torch.nn.Module, ensemble_ckpt_paths: Sequence[str | Path], mirror_axes: Sequence[int] = (0, 1, 2),
                 device: torch.device | str = "cpu", max_batch: int = 8) -> torch.nn.Module:
    """The network of an inference ``mode``, for a bundle's ``inference.yaml``.

    Returns:
        ``network`` itself for ``"fast"`` (its weights are loaded by the workflow's
        ``CheckpointLoader``); for ``"accurate"``, a :class:`MirrorEnsemble` of copies of it
        loaded from ``ensemble_ckpt_paths``.

    Raises:
        ValueError: an unknown mode.
        FileNotFoundError: a fold checkpoint is missing.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got '{mode}'")
    if mode == "fast":
        return network
    return MirrorEnsemble(ensemble_members(network, ensemble_ckpt_paths, device), mirror_axes, max_batch)


def n4_position(transforms: Sequence[Any]) -> int:
    """Where N4 goes in a preprocessing list: before its first intensity normalisation (N4 models
    positive MRI intensities, so it must see them before a z-score), after the reader, RAS,
    spacing and the brain crop that come before it; the end of the list where nothing normalises.
    One rule for :class:`app.inference.Segmenter` and the bundles' ``inference.yaml``."""
    from monai.transforms import NormalizeIntensityd, ScaleIntensityRanged

    from app.transforms import NonzeroZScored

    for i, transform in enumerate(transforms):
        if isinstance(transform, (NonzeroZScored, NormalizeIntensityd, ScaleIntensityRanged)):
            return i
    return len(transforms)


def workflow_n4_transforms(mode: str, n4_average: bool, accurate_n4_average: bool, n4_combine: str, n4_params: dict | None = None) -> list:
    """The N4 step of a bundle's own inference workflow (``python -m monai.bundle run``), so that
    it corrects the bias field where ``volseg segment`` would: ``n4_average``, or in ``"accurate"``
    mode ``accurate_n4_average``; inserted where :func:`n4_position` says (before the z-score, after RAS,
    spacing and the brain crop) by ``inference.yaml``, where :class:`app.inference.Segmenter` runs it.

    Returns:
        ``[]`` without N4, else ``[N4BiasCorrectiond("image", **n4_params)]``
        (:class:`app.transforms.N4BiasCorrectiond`; Tustison et al. 2010, SimpleITK).

    Raises:
        ValueError: N4 asked for with ``n4_combine`` ``"average"``: the workflow segments each case
            once, so it cannot average the case as given with its corrected copy (``volseg segment``
            can), an unknown mode, an ``n4_average`` / ``accurate_n4_average`` that is neither a bool nor its text
            (:func:`app.bundle_config.flag`), or an N4 setting the transform does not take
            (:func:`app.transforms.mri.checked_n4_params`).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got '{mode}'")
    from app.bundle_config import flag

    n4_average, accurate_n4_average = flag(n4_average, "n4_average"), flag(accurate_n4_average, "accurate_n4_average")  # `--n4_average false`: text
    if not (accurate_n4_average if mode == "accurate" else n4_average):
        return []
    if n4_combine != "n4":
        raise ValueError(f"N4 in the bundle workflow needs n4_combine 'n4' (the corrected case alone), got '{n4_combine}': "
                         "averaging the case as given with its N4-corrected copy needs two passes; use volseg segment --n4, or set n4_average false")
    from app.transforms import N4BiasCorrectiond
    from app.transforms.mri import checked_n4_params

    return [N4BiasCorrectiond("image", **checked_n4_params(n4_params, "accurate_n4_params" if mode == "accurate" else "n4_params"))]

