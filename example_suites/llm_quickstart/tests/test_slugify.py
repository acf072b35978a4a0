"""The slug dataset: one test item per case, pass rates per split become metrics."""

from __future__ import annotations

from typing import Any

import pytest
from slugs.slugify import slugify


@pytest.mark.dataset("data/titles.yaml")
def test_slug(case: dict[str, Any]) -> None:
    got = slugify(case["title"])
    assert got == case["slug"], (
        f"slugify({case['title']!r}) gave {got!r}, expected {case['slug']!r}"
    )
