"""The one owner of a bundle's label values, their names, its evaluation regions and its input
channels, like nnU-Net's ``LabelManager`` (``nnunetv2/utilities/label_handling/label_handling.py``).

A bundle's ``configs/metadata.json`` says what it reads and writes; :class:`LabelManager` reads it
and everything else asks it (evaluation, writers, the server, ``volseg segment``):

- ``labels``: value -> name of the label map the inference workflow writes (Decathlon
  ``dataset.json`` style, ``"0": "background"`` included), e.g. BraTS
  ``{"1": "NCR/NET", "2": "ED", "4": "ET"}``, CT ``{"1": "spleen"}``;
- ``evaluation_regions``: region name -> label values scored together, in report order, e.g.
  BraTS WT = {1, 2, 4}, TC = {1, 4}, ET = {4} (Menze et al. 2015, IEEE TMI 34(10)); default: one
  region per label (``{"spleen": [1]}``);
- ``hd95_missing_mm``: the HD95 given to a structure present in only one of prediction and
  reference (BraTS convention: 374 mm, about the diagonal of the 240 x 240 x 155 mm BraTS grid;
  absent: NaN, left out of means);
- input channels: ``network_data_format.inputs.image.channel_def`` (``T1, T1ce, T2, FLAIR`` or ``CT``).

No torch or MONAI import here.

Example:
    >>> from app.labels import BRATS
    >>> BRATS.regions["TC"], BRATS.channels
    ((1, 4), ('t1', 't1ce', 't2', 'flair'))
    >>> LabelManager.from_bundle("ct_unet3d").region_names  # doctest: +SKIP
    ('spleen',)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.constants import MODALITIES

__all__ = ["BRATS", "LABEL_CODES", "LabelManager", "labels_of"]

#: The label codes a BraTS label map can be written in: ``"2018"`` (BraTS 2012-2021: 1 NCR/NET,
#: 2 ED, 4 ET; what the BraTS bundles write) and ``"2023"`` (BraTS 2023+ challenges: 1 NCR,
#: 2 SNFH / edema, 3 ET). :meth:`LabelManager.with_codes` gives the labels of either.
LABEL_CODES = ("2018", "2023")


@dataclass(frozen=True)
class LabelManager:
    """Label values, names, evaluation regions and input channels of one bundle.

    Attributes:
        labels: foreground value -> name (0, the background, is never listed), sorted by value.
        regions: evaluation region -> label values, in report order.
        channels: input channel names in channel order, lower case (``("t1", "t1ce", "t2",
            "flair")`` or ``("ct",)``).
        hd95_missing_mm: HD95 (mm) of a structure present in only one of prediction and
            reference; NaN where the bundle sets none.

    Raises:
        ValueError: a region with no value, or with values that are not labels; a label value
            that is 0 or negative; no input channel.
    """

    labels: Mapping[int, str]
    regions: Mapping[str, tuple[int, ...]]
    channels: tuple[str, ...]
    hd95_missing_mm: float = math.nan
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        where = f" in {self.source}" if self.source else ""
        bad = [v for v in self.labels if int(v) <= 0]
        if bad:
            raise ValueError(f"label values must be > 0 (0 is the background){where}, got {bad}")
        for name, codes in self.regions.items():
            unknown = sorted(set(codes) - set(self.labels))
            if not codes or unknown:
                raise ValueError(f"evaluation region '{name}'{where}: values {list(codes)} must be non-empty labels of {sorted(self.labels)}"
                                 + (f"; unknown {unknown}" if unknown else ""))
        if not self.channels:
            raise ValueError(f"no input channel{where}: set network_data_format.inputs.image.channel_def")

    @property
    def values(self) -> tuple[int, ...]:
        """Foreground label values, ascending (``(1, 2, 4)`` for BraTS)."""
        return tuple(sorted(self.labels))

    @property
    def region_names(self) -> tuple[str, ...]:
        """Evaluation regions in report order (``("WT", "TC", "ET")`` for BraTS)."""
        return tuple(self.regions)

    @property
    def display_channel(self) -> int:
        """Index of the input channel shown under overlays: FLAIR where there is one, else the last."""
        return self.channels.index("flair") if "flair" in self.channels else len(self.channels) - 1

    def names_to_values(self) -> dict[str, int]:
        """``{"NCR/NET": 1, "ED": 2, "ET": 4}``: the MONAI Label ``label_names`` form."""
        return {name: value for value, name in sorted(self.labels.items())}

    def region_masks(self, label: np.ndarray) -> dict[str, np.ndarray]:
        """Label map ``(H, W, D)`` -> boolean mask ``(H, W, D)`` per evaluation region. Values that
        are no label of the bundle (e.g. the other organs of a multi-organ reference) belong to
        no region."""
        return {name: np.isin(label, codes) for name, codes in self.regions.items()}

    def code_map(self, label_codes: str | int) -> dict[int, int]:
        """Written value of each label value that ``label_codes`` changes: ``{4: 3}`` for
        ``"2023"`` (BraTS 2023+: enhancing tumour 3), ``{}`` for ``"2018"`` (the bundle's own codes);
        the year may be given as a number too.

        Raises:
            ValueError: ``label_codes`` is not one of :data:`LABEL_CODES`, or ``"2023"`` for a
                bundle whose labels are not BraTS 2018's (1, 2, 4 with 4 = ET).
        """
        if isinstance(label_codes, int) and not isinstance(label_codes, bool):
            label_codes = str(label_codes)
        if label_codes not in LABEL_CODES:
            raise ValueError(f"label codes must be one of {', '.join(LABEL_CODES)} (text or number), got {label_codes!r}")
        if label_codes == "2018":
            return {}
        if sorted(self.labels) != [BRATS_NCR, BRATS_ED, BRATS_ET] or self.labels[BRATS_ET] != "ET":
            where = f" ({self.source})" if self.source else ""
            raise ValueError(f"label codes '2023' (BraTS 2023+: ET 3) are for BraTS bundles, whose labels are 1 NCR/NET, 2 ED, 4 ET; "
                             f"this bundle's are {dict(self.labels)}{where}")
        return {BRATS_ET: BRATS2023_ET}

    def with_codes(self, label_codes: str | int) -> LabelManager:
        """This manager with its label values written in ``label_codes`` (:meth:`code_map`):
        for ``"2023"``, BraTS ``{1: "NCR/NET", 2: "ED", 3: "ET"}`` and regions WT (1, 2, 3),
        TC (1, 3), ET (3); itself for ``"2018"``.

        Raises:
            ValueError: see :meth:`code_map`.

        Example:
            >>> BRATS.with_codes("2023").regions["TC"]
            (1, 3)
        """
        mapping = self.code_map(label_codes)
        if not mapping:
            return self
        return LabelManager(labels={mapping.get(v, v): n for v, n in sorted(self.labels.items())},
                            regions={k: tuple(mapping.get(v, v) for v in codes) for k, codes in self.regions.items()},
                            channels=self.channels, hd95_missing_mm=self.hd95_missing_mm, source=self.source)

    def to_metadata(self) -> dict[str, Any]:
        """The ``metadata.json`` keys this manager is read from (``labels``, ``evaluation_regions``,
        ``hd95_missing_mm`` where set)."""
        out: dict[str, Any] = {"labels": {"0": "background", **{str(v): n for v, n in sorted(self.labels.items())}},
                               "evaluation_regions": {k: list(v) for k, v in self.regions.items()}}
        if not math.isnan(self.hd95_missing_mm):
            out["hd95_missing_mm"] = self.hd95_missing_mm
        return out

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any], source: str = "") -> LabelManager:
        """Build from a bundle's ``metadata.json`` content.

        Labels come from ``labels``; without it, from the output ``channel_def`` of a softmax
        bundle (channel 0 ``background``, channel i -> value i). Regions come from
        ``evaluation_regions``, else one per label.

        Raises:
            ValueError: no ``labels`` and an output ``channel_def`` that is not background-first
                (a region-output bundle must list its labels), or an inconsistent definition.
        """
        where = source or f"metadata of '{meta.get('name', '?')}'"
        formats = meta.get("network_data_format", {})
        if "labels" in meta:
            labels = {int(v): str(n) for v, n in meta["labels"].items() if int(v) != 0}
        else:
            out_def = _channel_def(formats.get("outputs", {}))
            if not out_def or out_def[0].lower() != "background":
                raise ValueError(f"{where} has no 'labels' (value -> name of the label map it writes), and its output "
                                 f"channel_def {out_def} does not start with background; add \"labels\" to metadata.json")
            labels = {i: name for i, name in enumerate(out_def) if i > 0}
        raw_regions = meta.get("evaluation_regions") or {name: [value] for value, name in sorted(labels.items())}
        regions = {str(k): tuple(int(c) for c in v) for k, v in raw_regions.items()}
        channels = tuple(c.lower() for c in _channel_def(formats.get("inputs", {})))
        if not channels:
            n = int(next(iter(formats.get("inputs", {}).values()), {}).get("num_channels", 0))
            channels = tuple(f"channel{i}" for i in range(n))
        hd95 = meta.get("hd95_missing_mm")
        return cls(dict(sorted(labels.items())), regions, channels, float(hd95) if hd95 is not None else math.nan, source=where)

    @classmethod
    def from_bundle(cls, bundle: str | Path) -> LabelManager:
        """Read ``<bundle>/configs/metadata.json`` of a bundle folder, or of an installed bundle
        by name (:func:`app.resources.bundles_root`; ``app.bundles`` is not imported here: it asks
        this module).

        Raises:
            ValueError: a name that is neither a folder nor an installed bundle, or metadata
                without labels (see :meth:`from_metadata`).
            FileNotFoundError: the folder has no ``configs/metadata.json``.
        """
        from app.resources import bundles_root

        folder = Path(bundle)
        if not folder.is_dir():
            folder = bundles_root() / str(bundle)
            if not folder.is_dir():
                have = sorted(p.name for p in bundles_root().glob("*") if (p / "configs" / "metadata.json").is_file())
                raise ValueError(f"unknown bundle '{bundle}': not a bundle folder nor an installed bundle ({', '.join(have)})")
        meta_file = folder / "configs" / "metadata.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"bundle '{bundle}' has no {meta_file}")
        return cls.from_metadata(json.loads(meta_file.read_text()), source=str(meta_file))


def _channel_def(formats: Mapping[str, Any]) -> list[str]:
    """Channel names of the first entry of ``network_data_format.inputs`` (or ``outputs``), by index."""
    entry = next(iter(formats.values()), {}) if formats else {}
    channel_def = entry.get("channel_def", {}) or {}
    return [str(channel_def[k]) for k in sorted(channel_def, key=int)]


def labels_of(bundle: str | Path | None) -> LabelManager:
    """The :class:`LabelManager` of ``bundle``, or :data:`BRATS` for None (VolSeg's default task).

    Raises:
        ValueError, FileNotFoundError: see :meth:`LabelManager.from_bundle`.
    """
    return BRATS if bundle is None else LabelManager.from_bundle(bundle)


#: BraTS (2018 label codes; no label 3): the default when no bundle is named (evaluation of BraTS
#: folders, ``volseg manifest brats``). The BraTS bundles' metadata.json say the same, which
#: ``tests/test_labels.py`` checks.
#: The BraTS 2018 label codes, named once here: necrotic / non-enhancing core, oedema, enhancing tumour.
BRATS_NCR, BRATS_ED, BRATS_ET = 1, 2, 4
#: The enhancing-tumour code of the BraTS 2023+ label maps (1 NCR, 2 SNFH / edema, 3 ET).
BRATS2023_ET = 3
BRATS = LabelManager(labels={BRATS_NCR: "NCR/NET", BRATS_ED: "ED", BRATS_ET: "ET"},
                     regions={"WT": (BRATS_NCR, BRATS_ED, BRATS_ET), "TC": (BRATS_NCR, BRATS_ET), "ET": (BRATS_ET,)},
                     channels=MODALITIES, hd95_missing_mm=374.0, source="app.labels.BRATS")
