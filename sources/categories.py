"""Product categories: the canonical codes and the Chinese labels store and marketplace use."""

from __future__ import annotations

import pandas as pd

from sources.sdk import relabel

CHINESE_LABELS = {"服饰": "apparel", "美妆": "beauty", "食品": "food", "家居": "home", "数码": "digital"}


def canonical_category(raw: pd.Series) -> pd.Series:
    """Map Chinese labels to codes; unknown labels pass through unchanged (kept, not lost)."""
    return relabel(raw.astype("string").str.strip(), CHINESE_LABELS)
