"""Knowledge distillation for missing sequences (app.engines.distillation): teacher on the full
input, student on dropped sequences, soft-target loss; and the bundle training path with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app import api
from app.engines import DistillationInferer, DistillationLoss, load_teacher


class _Recorder(torch.nn.Module):
    """1x1x1 convolution that remembers the last input it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(4, 3, 1)
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().clone()
        return self.conv(x)


def test_teacher_sees_full_input_student_the_dropped_subset():
    torch.manual_seed(0)
    teacher, student = _Recorder(), _Recorder()
    inferer = DistillationInferer(teacher, prob=1.0, allowed=[(1, 3)])  # FLAIR + T1ce only
    x = torch.rand(2, 4, 5, 5, 5) + 0.1
    out = inferer(x, student)
    assert out.shape == (2, 6, 5, 5, 5)
    assert torch.equal(teacher.seen, x)
    assert torch.equal(student.seen[:, [1, 3]], x[:, [1, 3]])
    assert student.seen[:, [0, 2]].abs().sum() == 0
    assert torch.allclose(out[:, 3:], teacher.conv(x))  # teacher channels follow the student's
    assert not any(p.requires_grad for p in teacher.parameters())
    out[:, :3].sum().backward()
    assert student.conv.weight.grad is not None and teacher.conv.weight.grad is None
    x_copy = x.clone()
    DistillationInferer(teacher, prob=0.0)(x, student)
    assert torch.equal(student.seen, x) and torch.equal(x, x_copy)  # prob 0: nothing dropped, input untouched
    cl = x.contiguous(memory_format=torch.channels_last_3d)
    assert inferer.drop(cl).is_contiguous(memory_format=torch.channels_last_3d)
    with pytest.raises(ValueError, match="prob"):
        DistillationInferer(teacher, prob=1.5)


def test_loss_adds_soft_target_term_and_handles_student_only_input():
    seg = torch.nn.MSELoss()
    target = torch.randint(0, 2, (1, 3, 4, 4, 4)).float()
    student = torch.randn(1, 3, 4, 4, 4)
    loss = DistillationLoss(seg, weight=0.5)
    same = torch.cat([student, student], 1)
    far = torch.cat([student, -10 * student.sign()], 1)  # a teacher confident of the opposite
    base = seg(student, target)
    kd_same = torch.nn.functional.binary_cross_entropy_with_logits(student, torch.sigmoid(student))
    assert torch.allclose(loss(same, target), base + 0.5 * kd_same)
    assert loss(far, target) > loss(same, target) + 0.1
    assert torch.allclose(loss(student, target), base)  # validation: no teacher channels
    assert torch.allclose(DistillationLoss(seg, weight=0.0)(far, target), base)
    with pytest.raises(ValueError, match="channels"):
        loss(torch.randn(1, 5, 4, 4, 4), target)


def test_load_teacher_is_a_copy_the_inferer_freezes(tmp_path: Path):
    net = torch.nn.Conv3d(4, 3, 1)
    other = torch.nn.Conv3d(4, 3, 1)
    torch.save(other.state_dict(), tmp_path / "t.pt")
    teacher = load_teacher(net, tmp_path / "t.pt")
    assert teacher is not net and torch.equal(teacher.weight, other.weight) and not torch.equal(net.weight, other.weight)
    assert not teacher.training and net.weight.requires_grad
    DistillationInferer(teacher)
    assert not teacher.weight.requires_grad and net.weight.requires_grad  # the inferer freezes the copy only
    with pytest.raises(FileNotFoundError, match="distill_teacher"):
        load_teacher(net, tmp_path / "missing.pt")


def test_bundle_training_with_teacher(phantom_root: Path, phantom_manifest: Path, tmp_path: Path):
    small = {"network_def#channels": [8, 16, 32], "roi_size": [32, 32, 32], "batch_size": 1, "num_samples": 1,
             "max_epochs": 1, "val_interval": 10, "compile": False}
    first = api.train("brats_unet3d", phantom_manifest, phantom_root, tmp_path / "teacher", small, progress=False)
    teacher = first / "model.pt"
    out = api.train("brats_unet3d", phantom_manifest, phantom_root, tmp_path / "student",
                    {**small, "distill_teacher": str(teacher), "modality_dropout_prob": 1.0}, progress=False, init_from=teacher)
    before, after = torch.load(teacher, weights_only=True), torch.load(out / "model.pt", weights_only=True)
    assert set(before) == set(after)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the student trained
    with pytest.raises(FileNotFoundError, match="distill_teacher"):
        api.train("brats_unet3d", phantom_manifest, phantom_root, tmp_path / "bad", {**small, "distill_teacher": str(tmp_path / "no.pt")}, progress=False)
