"""BraTS postprocessing chosen by cross-validation: drop tumour components under a fraction of
the largest one (app.transforms.RemoveRelativelySmallComponentsd)."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor

from app.inference import Segmenter
from app.transforms import RelabelRelativelySmallComponents, RemoveRelativelySmallComponents


def _two_tumours(small_side: int) -> torch.Tensor:
    """(1, 40, 40, 40): a 15^3 three-label tumour at the origin corner, and a second lesion of
    ``small_side``^3 voxels (ED with an ET centre) at the far corner."""
    label = torch.zeros(1, 40, 40, 40)
    label[0, 5:20, 5:20, 5:20] = 2
    label[0, 9:16, 9:16, 9:16] = 1
    label[0, 16:18, 9:16, 9:16] = 4  # enhancing rim touching the core: one component, 3 labels
    label[0, 36 - small_side:36, 36 - small_side:36, 36 - small_side:36] = 2
    label[0, 33:35, 33:35, 33:35] = 4
    return label


def test_relatively_small_component_is_dropped_with_all_its_labels():
    label = _two_tumours(8)  # 512 voxels against 3,375: 15 %
    out = RemoveRelativelySmallComponents(0.3)(MetaTensor(label.clone()))
    assert isinstance(out, MetaTensor) and out.dtype == label.dtype
    assert torch.equal(out[0, :22, :22, :22], label[0, :22, :22, :22])  # the tumour, labels unchanged
    assert out[0, 25:, 25:, 25:].abs().sum() == 0  # the island is gone, ET and ED alike


def test_two_similar_components_are_both_kept():
    """Where a false positive rivals the tumour, keep-largest-only can keep the wrong one; a
    fraction keeps both (the failure that made the CV choose this rule)."""
    label = _two_tumours(14)  # 2,744 voxels against 3,375: 81 %
    assert torch.equal(RemoveRelativelySmallComponents(0.3)(label), label)
    assert torch.equal(RemoveRelativelySmallComponents(0.0)(_two_tumours(4)), _two_tumours(4))
    with pytest.raises(ValueError, match="min_fraction"):
        RemoveRelativelySmallComponents(1.5)
    with pytest.raises(ValueError, match="connectivity"):
        RemoveRelativelySmallComponents(0.3, connectivity=4)


def _component_box(seg: Segmenter):
    """The InForegroundBoxd that runs the two component rules (a Compose of both), or None."""
    found = [t for t in seg.postprocessing.transforms if type(getattr(t, "transform", None)).__name__ == "Compose"
             and any(type(r).__name__ == "RemoveRelativelySmallComponentsd" for r in t.transform.transforms)]
    return found[0] if found else None


def _component_filter(seg: Segmenter):
    """(box, the all-label filter) or None where the bundle turns it off."""
    box = _component_box(seg)
    rule = box and next(r for r in box.transform.transforms if type(r).__name__ == "RemoveRelativelySmallComponentsd")
    return (box, rule) if rule and rule.filter.min_fraction > 0 else None


def test_component_filter_follows_the_bundle_metadata():
    box, rule = _component_filter(Segmenter("brats_unet3d", device="cpu", backend="torch", overrides={"min_component_fraction": 0.3}))
    assert rule.filter.min_fraction == 0.3
    out = box({"pred": MetaTensor(_two_tumours(8))})["pred"]  # through InForegroundBoxd, as the workflow runs it
    assert out[0, 25:, 25:, 25:].abs().sum() == 0 and out[0, 10, 10, 10] == 1
    assert _component_filter(Segmenter("brats_unet3d", device="cpu", backend="torch", overrides={"min_component_fraction": 0})) is None
    none = Segmenter("brats_unet3d", device="cpu", backend="torch", overrides={"min_component_fraction": 0, "et_min_component_fraction": 0})
    assert _component_box(none) is None  # both rules off: no box at all
    _, deeplab = _component_filter(Segmenter("brats_deeplab3d", device="cpu", backend="torch"))
    assert deeplab.filter.min_fraction == 0.3  # the U-Net's rule, confirmed on DeepLab's CV label maps (0.2.0)


def _et_specks() -> torch.Tensor:
    """(1, 40, 40, 40): one tumour (ED, NCR, a 2x7x7 ET rim of 98 voxels touching the core) with two
    ET islands inside its edema, of 8 (2^3) and 27 (3^3) voxels."""
    label = _two_tumours(0)
    label[0, 25:, 25:, 25:] = 0  # one tumour only
    label[0, 6:8, 6:8, 6:8] = 4
    label[0, 16:19, 16:19, 5:8] = 2
    label[0, 16:19, 16:19, 5:8] = 4
    return label


def test_small_et_islands_become_necrotic_core_and_tc_wt_stay():
    label = _et_specks()
    out = RelabelRelativelySmallComponents([4], to_label=1, min_fraction=0.5)(MetaTensor(label.clone()))
    assert isinstance(out, MetaTensor) and out.dtype == label.dtype
    assert int((out == 4).sum()) == 98 and int((label == 4).sum()) == 98 + 8 + 27  # only the rim stays ET
    assert out[0, 6, 6, 6] == 1 and out[0, 17, 17, 6] == 1 and out[0, 17, 12, 12] == 4
    for region in ((1, 2, 4), (1, 4)):  # WT and TC unchanged
        assert torch.equal(torch.isin(out, torch.tensor(region, dtype=out.dtype)), torch.isin(label, torch.tensor(region, dtype=label.dtype)))
    assert torch.equal(out[label != 4], label[label != 4])
    # 27 voxels are 28 % of the rim: kept at 0.2, relabelled at 0.3; 0 keeps everything
    kept = RelabelRelativelySmallComponents([4], to_label=1, min_fraction=0.2)(label)
    assert kept[0, 17, 17, 6] == 4 and kept[0, 6, 6, 6] == 1
    assert torch.equal(RelabelRelativelySmallComponents([4], 1, 0.0)(label), label)
    assert int((RelabelRelativelySmallComponents([4], 0, 1.0)(label) == 0).sum()) == int((label == 0).sum()) + 35
    with pytest.raises(ValueError, match="min_fraction"):
        RelabelRelativelySmallComponents([4], 1, -0.1)
    with pytest.raises(ValueError, match="labels"):
        RelabelRelativelySmallComponents([], 1, 0.5)


def test_et_rule_follows_the_bundle_metadata():
    import json

    from app.bundles import bundle_path

    def rule(seg: Segmenter):
        box = _component_box(seg)
        return box and next(r for r in box.transform.transforms if type(r).__name__ == "RelabelRelativelySmallComponentsd").filter.min_fraction

    meta = json.loads((bundle_path("brats_unet3d") / "configs" / "metadata.json").read_text())
    assert rule(Segmenter("brats_unet3d", device="cpu", backend="torch")) == meta["inference"]["et_min_component_fraction"] == 0.5
    on = _component_box(Segmenter("brats_unet3d", device="cpu", backend="torch", overrides={"et_min_component_fraction": 0.5}))
    out = on({"pred": MetaTensor(_et_specks())})["pred"]  # through InForegroundBoxd, after the all-label filter, as the workflow runs it
    assert int((out == 4).sum()) == 98 and out[0, 6, 6, 6] == 1 and out[0, 17, 12, 12] == 4
    assert rule(Segmenter("brats_unet3d", device="cpu", backend="torch", overrides={"et_min_component_fraction": 0})) == 0
    off = _component_box(Segmenter("brats_unet3d", device="cpu", backend="torch", overrides={"et_min_component_fraction": 0}))
    assert torch.equal(off({"pred": MetaTensor(_et_specks())})["pred"], _et_specks())  # 0: no ET relabelled
    assert rule(Segmenter("brats_deeplab3d", device="cpu", backend="torch")) == 0  # no gain on DeepLab's CV label maps


def test_channel_threshold_per_region():
    from app.transforms import ChannelThreshold, ChannelThresholdd

    prob = MetaTensor(torch.tensor([0.49, 0.5, 0.69, 0.7, 0.9]).repeat(3, 1).reshape(3, 5, 1, 1))
    out = ChannelThreshold([0.7, 0.5, 0.5])(prob)
    assert isinstance(out, MetaTensor) and out.shape == prob.shape
    assert out[0].flatten().tolist() == [0, 0, 0, 1, 1]  # TC at 0.7, >= like MONAI AsDiscrete
    assert out[1].flatten().tolist() == out[2].flatten().tolist() == [0, 1, 1, 1, 1]
    assert (ChannelThresholdd("pred", [0.7, 0.5, 0.5])({"pred": prob.numpy()})["pred"] == out.numpy()).all()
    with pytest.raises(ValueError, match="2 thresholds"):
        ChannelThreshold([0.5, 0.5])(prob)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ChannelThreshold([0.5, 1.5, 0.5])


def _thresholds(seg: Segmenter, missing: bool = False):
    return [(t.threshold_missing if missing else t.threshold).thresholds for t in seg.postprocessing.transforms if type(t).__name__ == "ChannelThresholdd"]


def test_cases_with_a_missing_sequence_get_their_own_thresholds():
    from app.transforms import ChannelThresholdd

    prob = MetaTensor(torch.full((3, 2, 2, 2), 0.6))
    full = MetaTensor(torch.zeros(4, 2, 2, 2))
    lacking = MetaTensor(torch.zeros(4, 2, 2, 2), meta={"missing_channels": [2]})
    t = ChannelThresholdd("pred", [0.7, 0.5, 0.5], thresholds_missing=[0.5, 0.5, 0.5])
    assert t({"pred": prob, "image": full})["pred"][:, 0, 0, 0].tolist() == [0, 1, 1]
    assert t({"pred": prob, "image": lacking})["pred"][:, 0, 0, 0].tolist() == [1, 1, 1]
    same = ChannelThresholdd("pred", [0.7, 0.5, 0.5])  # no thresholds_missing: one set for all
    assert same({"pred": prob, "image": lacking})["pred"][:, 0, 0, 0].tolist() == [0, 1, 1]


def test_missing_sequences_reach_the_threshold_through_the_bundle_preprocessing(phantom_root):
    """LoadVolumed's ``missing_channels`` survives orientation, spacing, crop and z-score, so the
    workflow picks ``region_thresholds_missing`` for a case without T2, and not for a full case."""
    from tests.conftest import case_files

    seg = Segmenter("brats_unet3d", device="cpu", backend="torch", overrides={"region_thresholds": [0.7, 0.5, 0.5], "region_thresholds_missing": [0.5, 0.5, 0.5]})
    step = [t for t in seg.postprocessing.transforms if type(t).__name__ == "ChannelThresholdd"][0]
    files = case_files(phantom_root / "Phantom_000")
    prob = MetaTensor(torch.full((3, 2, 2, 2), 0.6))
    for images, tc in ((files, 0), ([f if i != 2 else None for i, f in enumerate(files)], 1)):
        data = seg.load(images)
        assert data["missing_sequences"] == ([] if tc == 0 else ["t2"])
        assert step({"pred": prob, "image": data["image"]})["pred"][0, 0, 0, 0] == tc


def test_region_thresholds_follow_the_bundle_metadata():
    import json

    from app.bundles import bundle_path

    meta = json.loads((bundle_path("brats_unet3d") / "configs" / "metadata.json").read_text())
    shipped = Segmenter("brats_unet3d", device="cpu", backend="torch")
    assert _thresholds(shipped) == [tuple(meta["inference"]["region_thresholds"])]
    assert _thresholds(shipped, missing=True) == [tuple(meta["inference"]["region_thresholds_missing"])]
    assert _thresholds(Segmenter("brats_unet3d", device="cpu", backend="torch", overrides={"region_thresholds": [0.5, 0.5, 0.5]})) == [(0.5, 0.5, 0.5)]
    assert _thresholds(Segmenter("brats_deeplab3d", device="cpu", backend="torch")) == [(0.5, 0.5, 0.5)]  # not measured on CV for DeepLab


def _blob_logits(image: torch.Tensor, seed: int) -> MetaTensor:
    """Region logits on the preprocessed crop ``image`` ``(C, h, w, d)``: a large blob per region
    channel plus scattered specks (small components for the filters), noisy around 0."""
    gen = torch.Generator().manual_seed(seed)
    shape = image.shape[1:]
    grid = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in shape], indexing="ij"))
    centre = torch.tensor(shape, dtype=torch.float32).view(3, 1, 1, 1) * 0.45
    dist = ((grid - centre) ** 2).sum(0).sqrt()
    logits = torch.stack([6.0 - dist, 9.0 - dist, 4.0 - dist]) + torch.randn(3, *shape, generator=gen)
    specks = torch.rand(3, *shape, generator=gen) > 0.995
    logits = torch.where(specks, torch.full_like(logits, 3.0), logits)
    return MetaTensor(logits, affine=image.affine, meta=dict(image.meta))


def _labels(seg: Segmenter, data: dict, transforms) -> torch.Tensor:
    out = {key: value.clone() if hasattr(value, "clone") else value for key, value in data.items()}
    for transform in transforms:
        out = transform(out)
    return torch.as_tensor(out["pred"]).to(torch.uint8)


def test_label_steps_on_the_crop_give_the_labels_of_the_configured_order(tmp_path):
    """At the bundle's 1 mm the inverse only flips and pads, so the Segmenter thresholds, codes and
    filters on the brain crop and inverts the uint8 labels last: the same labels (codes 0/1/2/4,
    components dropped and relabelled) as inverting the probabilities first. A case that needs
    resampling, or a run with uncertainty, keeps the configured order."""
    from monai.transforms import Invertd

    from app.data.phantom import make_brats_phantom
    from tests.conftest import case_files

    make_brats_phantom(tmp_path, "Iso", shape=(44, 52, 40), spacing_mm=(1.0, 1.0, 1.0), seed=3)
    make_brats_phantom(tmp_path, "Aniso", shape=(40, 48, 36), spacing_mm=(1.0, 0.9, 1.5), seed=3)
    seg = Segmenter("brats_unet3d", device="cpu", backend="torch")
    configured = list(seg.postprocessing.transforms)
    data = seg.load(case_files(tmp_path / "Iso"))
    shape = data.pop("shape")
    del data["affine"], data["missing_sequences"]
    assert tuple(data["image"].shape[1:]) != shape  # cropped, so the inverse pads
    reordered = seg._postprocessing_order(data["image"])
    assert isinstance(reordered[-1], Invertd) and reordered[-1].nearest_interp == (True,)
    assert [type(t) for t in reordered[:-1]] == [type(t) for t in configured if not isinstance(t, Invertd)]
    assert not configured[1].nearest_interp[0]  # the bundle's own Invertd is left as it was
    for seed in range(3):
        data["pred"] = _blob_logits(data["image"], seed)
        expected = _labels(seg, data, configured)
        got = _labels(seg, data, reordered)
        assert tuple(got.shape[1:]) == shape
        assert set(expected.unique().tolist()) == {0, 1, 2, 4}
        assert torch.equal(got, expected)

    aniso = seg.load(case_files(tmp_path / "Aniso"))
    assert seg._postprocessing_order(aniso["image"]) == configured  # 0.9 x 1.5 mm -> 1 mm interpolates
    with_map = Segmenter("brats_unet3d", device="cpu", backend="torch", uncertainty=True)
    assert with_map._postprocessing_order(with_map.load(case_files(tmp_path / "Iso"))["image"]) == list(with_map.postprocessing.transforms)


def test_tc_hole_filling_follows_the_bundle_metadata():
    """brats_unet3d fills what its tumour core encloses in a slice (chosen by nested CV); the
    DeepLab bundle, whose CV label maps were not scored with it, does not; an override turns it off."""
    import json

    from app.bundles import bundle_path
    from app.transforms import FillRegionHolesd

    def fillers(seg: Segmenter) -> list:
        return [t for t in seg.postprocessing.transforms if isinstance(t, FillRegionHolesd)]

    meta = json.loads((bundle_path("brats_unet3d") / "configs" / "metadata.json").read_text())
    assert meta["inference"]["fill_tc_holes"] is True
    (on,) = fillers(Segmenter("brats_unet3d", device="cpu", backend="torch"))
    assert on.filler.labels == [1, 4] and on.filler.fill_label == 1 and on.filler.axes == (0, 1, 2)
    label = torch.zeros(1, 12, 12, 12)
    label[0, 2:10, 2:10, 2:10] = 4
    label[0, 4:8, 4:8, 4:8] = 2  # edema inside the enhancing shell
    out = on({"pred": MetaTensor(label.clone())})["pred"]
    assert torch.all(out[0, 4:8, 4:8, 4:8] == 1) and int((out != label).sum()) == 64
    assert fillers(Segmenter("brats_unet3d", device="cpu", backend="torch", overrides={"fill_tc_holes": False})) == []
    assert fillers(Segmenter("brats_deeplab3d", device="cpu", backend="torch")) == []
