"""Knowledge distillation from a full-sequence teacher to a student that sees missing sequences.

Hu et al., "Knowledge distillation from multi-modal to mono-modal segmentation networks",
MICCAI 2020 (arXiv:2106.09564): a teacher network that sees every MRI sequence supervises a
student that sees fewer, through the teacher's soft predictions, beside the ground truth. Here
teacher and student share one architecture and the student is the one model that serves every
subset (modality dropout): in each training step the teacher (frozen) sees the full crop, the
student sees the same crop with sequences dropped (the dropout moves from the transform chain
into the inferer, so that both views of one crop exist), and the loss adds a soft-target binary
cross-entropy between the student's and the teacher's sigmoid outputs to the segmentation loss.

Used through the training config (``distill_teacher`` in the BraTS bundles' ``train.yaml``):
:class:`DistillationInferer` as ``train#inferer`` and :class:`DistillationLoss` around the loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.inferers import SimpleInferer


class DistillationInferer:
    """Training inferer: frozen teacher on the full input, student on the input with sequences dropped.

    Args:
        teacher: the full-sequence network, same input and output channels as the student; it is
            put in eval mode and its parameters are frozen.
        prob: probability, per sample, of dropping sequences from the student's input (the
            modality dropout of the transform chain, which must then be off: the teacher needs
            the full crop).
        allowed: kept-channel subsets to draw from, uniformly by entry
            (:class:`app.transforms.RandModalityDropoutd`'s ``allowed``); None: every non-empty
            proper subset.
        inferer: runs each network (e.g. :class:`app.engines.AutocastInferer`); default a
            ``SimpleInferer``.
        seed: seed of the dropout draws.

    Returns (call):
        ``(B, 2C, H, W, D)``: the student's ``C`` logit channels, then the teacher's (detached),
        for :class:`DistillationLoss`.

    Raises:
        ValueError: ``prob`` outside [0, 1], or an input with fewer than 2 channels (from
            :class:`app.transforms.RandModalityDropoutd`).
    """

    def __init__(self, teacher: torch.nn.Module, prob: float = 0.4, allowed: Sequence[Sequence[int]] | None = None,
                 inferer: Callable[..., Any] | None = None, seed: int = 0) -> None:
        from app.transforms import RandModalityDropoutd

        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.dropout = RandModalityDropoutd("image", prob=prob, allowed=allowed)  # the transform chain's own dropout, per sample
        self.dropout.set_random_state(seed)
        self.inferer = inferer if inferer is not None else SimpleInferer()

    def drop(self, inputs: torch.Tensor) -> torch.Tensor:
        """``inputs`` (B, C, ...) with each sample passed through the modality dropout
        (:class:`app.transforms.RandModalityDropoutd`); ``inputs`` itself is not changed."""
        out = torch.stack([self.dropout({"image": sample})["image"] for sample in inputs])
        if inputs.ndim == 5 and inputs.is_contiguous(memory_format=torch.channels_last_3d):
            out = out.contiguous(memory_format=torch.channels_last_3d)  # keep the layout the network runs fastest in
        return out

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.no_grad():
            target = self.inferer(inputs, self.teacher, *args, **kwargs)
        student = self.inferer(self.drop(inputs), network, *args, **kwargs)
        return torch.cat([student, target.detach().to(student.dtype)], dim=1)


class DistillationLoss(torch.nn.Module):
    """Segmentation loss on the student's channels plus ``weight`` x soft-target BCE to the teacher's.

    Args:
        loss: the segmentation loss, ``(B, C, ...)`` logits and targets (e.g. MONAI ``DiceCELoss``
            with sigmoid).
        weight: weight of the distillation term; 0 leaves the segmentation loss alone.
        temperature: logits of both networks are divided by it before the sigmoid (Hinton et al.
            2015); 1 compares the probabilities as they are. The term is multiplied by
            ``temperature ** 2`` so its gradient keeps its scale.

    Input ``(B, 2C, ...)`` from :class:`DistillationInferer` (student, then teacher); a ``(B, C, ...)``
    input (validation, where no teacher runs) gets the segmentation loss only.
    """

    def __init__(self, loss: torch.nn.Module, weight: float = 1.0, temperature: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"distillation temperature must be positive, got {temperature}")
        self.loss = loss
        self.weight = float(weight)
        self.temperature = float(temperature)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        c = target.shape[1]
        if input.shape[1] == c:
            return self.loss(input, target)
        if input.shape[1] != 2 * c:
            raise ValueError(f"distillation input has {input.shape[1]} channels; expected {c} (student) or {2 * c} (student, teacher)")
        student, teacher = input[:, :c], input[:, c:]
        seg = self.loss(student, target)
        if self.weight == 0:
            return seg
        t = self.temperature
        soft = torch.sigmoid(teacher / t)
        kd = torch.nn.functional.binary_cross_entropy_with_logits(student / t, soft) * t * t
        return seg + self.weight * kd


def load_teacher(network: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """A copy of ``network`` (same device and memory format, eval mode) with the weights at ``path``
    (a ``model.pt``, float16 ``fold*.pt`` or ``last.pt``; :func:`app.inference.ensemble.load_weights`);
    :class:`DistillationInferer` freezes it.

    Raises:
        FileNotFoundError: no file at ``path``.
    """
    import copy

    from app.inference.ensemble import load_weights

    if not Path(path).is_file():
        raise FileNotFoundError(f"distillation teacher: no weights at '{path}' (distill_teacher)")
    return load_weights(copy.deepcopy(network), Path(path))
