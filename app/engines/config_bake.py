"""Write a run's config overrides into copies of a bundle's YAML configs, comments kept.

``volseg train --set roi_size=[64,64,64]`` trains with a value the bundle's configs do not hold.
The bundle that the run writes must run inference the same way, so the override is written into
the copied configs: a top-level key is replaced where it is (one ``key: value`` line in place of
its old block, every other line and comment untouched); a key the file does not have at the top
level (``validate#dataset#cache_rate``, a new key) is appended, which MONAI's ``ConfigParser``
applies in order (``a#b#c`` keys address nested items). Values are written by PyYAML, so they
read back as they were given (``json.dumps(1e-5)`` would read back as the string ``"1e-05"``).

Example:
    >>> bake_yaml_text("roi_size: [96, 96, 96]  # window\\nsw_batch_size: 4\\n", {"roi_size": [32, 32, 32]})
    'roi_size: [32, 32, 32]\\nsw_batch_size: 4\\n'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

__all__ = ["bake_yaml_text", "top_level_keys"]

_TOP_KEY = re.compile(r"^([^\s#'\"-][^:]*?):(\s|$)")


def top_level_keys(text: str) -> dict[str, tuple[int, int]]:
    """Top-level key -> ``(first line, end line)`` of its block in a YAML mapping; the block ends
    before the next top-level key, less trailing blank and column-0 comment lines (which
    belong to the next key)."""
    lines = text.splitlines()
    starts = [(i, m.group(1).strip()) for i, line in enumerate(lines) if (m := _TOP_KEY.match(line))]
    spans: dict[str, tuple[int, int]] = {}
    for n, (start, key) in enumerate(starts):
        end = starts[n + 1][0] if n + 1 < len(starts) else len(lines)
        while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].startswith("#")):
            end -= 1
        spans[key] = (start, end)
    return spans


def _yaml_line(key: str, value: Any) -> str:
    """One ``key: value`` entry, flow style (a list of lists stays on one line)."""
    return yaml.safe_dump({key: value}, default_flow_style=True, sort_keys=False, width=1 << 20).strip()[1:-1] + "\n"


def bake_yaml_text(text: str, overrides: Mapping[str, Any]) -> str:
    """``text`` (a YAML config) with ``overrides`` written in: top-level keys replaced in place,
    the others appended under a comment.

    Raises:
        ValueError: the result is not YAML or does not read back with the overridden values (a
            config layout this line-based edit cannot handle, e.g. a flow-style document).
    """
    lines = text.splitlines(keepends=True)
    spans = top_level_keys(text)
    appended: list[str] = []
    for key, value in overrides.items():
        if key in spans:
            start, end = spans[key]
            lines[start:end] = [_yaml_line(key, value)] + [""] * (end - start - 1)  # keep the other spans' indices
        else:
            appended.append(_yaml_line(key, value))
    out = "".join(lines)
    if appended:
        out += ("" if out.endswith("\n") or not out else "\n") + "# overrides of the training run that wrote this bundle (volseg train --set ...)\n" + "".join(appended)
    try:
        content = yaml.safe_load(out) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"config overrides {sorted(overrides)} made the config unreadable ({err}); edit the copied config by hand") from err
    for key, value in overrides.items():
        if not isinstance(content, dict) or content.get(key) != value:
            raise ValueError(f"config override '{key}' = {value!r} did not read back ({content.get(key)!r}); edit the copied config by hand")
    return out
