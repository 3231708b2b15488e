"""Nested dicts to flat dotted keys, as MLflow params and metrics and the HTML report's tables want."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def flatten(
    tree: Mapping[str, Any], prefix: str = "", *, index_lists: bool = False
) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``. Other values, lists included, are leaves, except
    that with ``index_lists`` a list holding dicts is flattened too, its items as ``key[i]``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + ".", index_lists=index_lists))
        elif index_lists and isinstance(value, list) and any(isinstance(v, Mapping) for v in value):
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    flat.update(flatten(item, f"{name}[{i}].", index_lists=True))
                else:
                    flat[f"{name}[{i}]"] = item
        else:
            flat[name] = value
    return flat


def numbers(flat: Mapping[str, Any]) -> dict[str, float]:
    """The numeric values only (bools are not numbers here), as floats: what MLflow charts."""
    return {
        key: float(value)
        for key, value in flat.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }
