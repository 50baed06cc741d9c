"""Writing a run's overrides into YAML configs: values read back exactly, comments and other lines kept."""

from __future__ import annotations

import pytest
import yaml

from app.engines.config_bake import bake_yaml_text, top_level_keys

CONFIG = """# header comment
imports:
  - $import torch
spacing_mm: [1.5, 1.5, 1.5]  # mm
network_def:
  _target_: app.networks.create_network
  channels: [16, 32, 64]

# comment of the next key
learning_rate: 0.001
validate:
  dataset:
    cache_rate: 1.0
"""


def test_top_level_blocks_end_before_the_next_keys_comment():
    spans = top_level_keys(CONFIG)
    assert list(spans) == ["imports", "spacing_mm", "network_def", "learning_rate", "validate"]
    lines = CONFIG.splitlines()
    assert lines[slice(*spans["network_def"])] == ["network_def:", "  _target_: app.networks.create_network", "  channels: [16, 32, 64]"]


def test_overrides_read_back_and_everything_else_is_kept():
    overrides = {"learning_rate": 1e-5, "network_def": {"_target_": "x", "channels": [8, 16]}, "spacing_mm": [3.0, 3.0, 7.5],
                 "validate#dataset#cache_rate": 0.0, "data_list_file": "$@bundle_root + '/configs/datalist.json'"}
    out = bake_yaml_text(CONFIG, overrides)
    content = yaml.safe_load(out)
    assert {k: content[k] for k in overrides} == overrides  # 1e-5 stays a float, not the string "1e-05"
    assert content["imports"] == ["$import torch"] and content["validate"] == {"dataset": {"cache_rate": 1.0}}
    assert "# header comment" in out and "# comment of the next key" in out and "# mm" not in out
    assert out.index("validate#dataset#cache_rate") > out.index("validate:")  # appended after its root


def test_an_override_that_cannot_be_written_is_refused():
    with pytest.raises(ValueError, match="unreadable"):
        bake_yaml_text("{a: 1, b: 2}\n", {"a": 3})  # a flow-style document has no key lines
