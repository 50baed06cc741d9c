"""Modality dropout: whole channels zeroed, at least one kept, every subset reachable, seeded."""

from __future__ import annotations

import pytest
import torch

from app.transforms import RandModalityDropoutd, channel_subsets


def _image() -> torch.Tensor:
    return torch.arange(1, 5, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 3, 3).clone()


def test_channel_subsets_are_the_14_proper_non_empty_subsets():
    subsets = channel_subsets(4)
    assert len(subsets) == 14 and len(set(subsets)) == 14
    assert all(0 < len(s) < 4 for s in subsets)


def test_prob_one_zeroes_whole_channels_and_keeps_at_least_one():
    t = RandModalityDropoutd("image", prob=1.0)
    t.set_random_state(0)
    seen = set()
    for _ in range(300):
        out = t({"image": _image(), "label": torch.ones(3, 3, 3, 3)})["image"]
        kept = tuple(c for c in range(4) if out[c].abs().sum() > 0)
        dropped = [c for c in range(4) if c not in kept]
        assert 0 < len(kept) < 4
        assert all(torch.equal(out[c], _image()[c]) for c in kept)
        assert all(out[c].abs().sum() == 0 for c in dropped)
        seen.add(kept)
    assert seen == set(channel_subsets(4))  # every subset drawn


def test_prob_zero_and_label_untouched_and_input_not_modified():
    image, label = _image(), torch.ones(3, 3, 3, 3)
    out = RandModalityDropoutd("image", prob=0.0)({"image": image, "label": label})
    assert torch.equal(out["image"], _image())
    out = RandModalityDropoutd("image", prob=1.0)({"image": image, "label": label})
    assert torch.equal(image, _image()), "the input tensor must not be modified in place"
    assert torch.equal(out["label"], label)


def test_seeded_draws_repeat():
    def draws(seed: int) -> list[tuple[int, ...]]:
        t = RandModalityDropoutd("image", prob=0.5)
        t.set_random_state(seed)
        return [tuple(int(t({"image": _image()})["image"][c].abs().sum() > 0) for c in range(4)) for _ in range(20)]

    assert draws(3) == draws(3)
    full = sum(d == (1, 1, 1, 1) for d in draws(3) + draws(4) + draws(5))
    assert 10 < full < 50  # about half of 60 samples keep all four


def test_allowed_subsets_and_bad_arguments():
    t = RandModalityDropoutd("image", prob=1.0, allowed=[(1, 3)])
    out = t({"image": _image()})["image"]
    assert [bool(out[c].abs().sum() > 0) for c in range(4)] == [False, True, False, True]
    with pytest.raises(ValueError, match="prob"):
        RandModalityDropoutd("image", prob=1.5)
    with pytest.raises(ValueError, match="at least 2 channels"):
        RandModalityDropoutd("image", prob=1.0)({"image": torch.ones(1, 2, 2, 2)})


def test_repeated_subsets_are_drawn_more_often():
    """train.yaml's weighting: FLAIR + T1ce listed 5 times and no T2 6 times in 25 entries are drawn about 5/25 and 6/25 of drops."""
    from app.bundle_config import bundle_settings

    subsets = [tuple(s) for s in bundle_settings("brats_unet3d", ["modality_dropout_subsets"], overlay="train")["modality_dropout_subsets"]]
    assert len(subsets) == 25 and subsets.count((1, 3)) == 5 and subsets.count((0, 1, 3)) == 6 and set(subsets) == set(channel_subsets(4))
    t = RandModalityDropoutd("image", prob=1.0, allowed=subsets)
    t.set_random_state(0)
    kept = [tuple(int(c) for c in torch.nonzero(t({"image": _image()})["image"].flatten(1).abs().sum(1)).flatten()) for _ in range(500)]
    assert 60 < kept.count((1, 3)) < 140  # expected 100; uniform over 14 would give about 36
    assert 80 < kept.count((0, 1, 3)) < 160  # expected 120
