"""The MONAI Label export reads the way MONAI Label 0.8.5's bundle tasks read a bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from app.serve.monailabel_export import export_for_monailabel
from tests.conftest import case_files


def test_export_has_single_file_configs_with_monailabel_keys(phantom_root: Path, tmp_path: Path):
    dest = export_for_monailabel("brats_unet3d", tmp_path / "model" / "brats_unet3d")
    meta = json.loads((dest / "configs" / "metadata.json").read_text())
    key_image, _ = next(iter(meta["network_data_format"]["inputs"].items()))
    key_pred, pred = next(iter(meta["network_data_format"]["outputs"].items()))
    assert (key_image, key_pred) == ("image", "pred")
    labels = {v.lower(): int(k) for k, v in pred["channel_def"].items() if v.lower() != "background"}  # as MONAI Label derives them
    assert labels == {"ncr/net": 1, "ed": 2, "et": 4}
    assert (dest / "models" / "model.pt").is_file()

    infer = ConfigParser()
    infer.read_config(str(dest / "configs" / "inference.json"))  # MONAI Label reads this one file
    infer.config.update({"bundle_root": str(dest)})
    infer["device"] = "$torch.device('cpu')"
    for key in ("bundle_root", "device", "network_def", "preprocessing", "inferer", "postprocessing"):
        assert key in infer.config
    network = infer.get_parsed_content("network_def", instantiate=True)
    network.load_state_dict(torch.load(dest / "models" / "model.pt", map_location="cpu", weights_only=True))
    data = infer.get_parsed_content("preprocessing")({"image": [str(p) for p in case_files(phantom_root / "Phantom_000")]})
    with torch.no_grad():
        data["pred"] = infer.get_parsed_content("inferer")(data["image"][None].contiguous(), network.eval())[0]
    out = infer.get_parsed_content("postprocessing")(data)["pred"]
    assert tuple(out.shape[1:]) == (40, 48, 36) and set(np.unique(np.asarray(out))) <= {0, 1, 2, 4}

    train = ConfigParser()
    train.read_config(str(dest / "configs" / "train.json"))
    for key in ("train#trainer#max_epochs", "train#dataset#data", "train#handlers", "validate#dataset#data"):
        assert train.get(key) is not None, key
    with pytest.raises(FileExistsError):
        export_for_monailabel("brats_unet3d", dest)
