"""Per-region validation metrics for the Ignite evaluator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.constants import REGIONS


class RegionOutput:
    """Ignite ``output_transform`` picking one region channel from decollated outputs.

    Args:
        index: channel index in ``REGIONS`` order (TC=0, WT=1, ET=2).

    Input: a list of dicts with ``"pred"`` and ``"label"`` of shape ``(C, H, W, D)``.
    Returns: ``(preds, labels)``, lists of ``(1, H, W, D)`` tensors.
    """

    def __init__(self, index: int) -> None:
        self.index = index

    def __call__(self, output: Sequence[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
        i = self.index
        return [d["pred"][i : i + 1] for d in output], [d["label"][i : i + 1] for d in output]


def region_dice_metrics(regions: Sequence[str] = REGIONS, prefix: str = "val_dice_") -> dict[str, Any]:
    """MONAI ``MeanDice`` handlers, one per region, keyed ``val_dice_TC`` and so on."""
    from monai.handlers import MeanDice

    return {f"{prefix}{name}": MeanDice(include_background=True, output_transform=RegionOutput(i)) for i, name in enumerate(regions)}
