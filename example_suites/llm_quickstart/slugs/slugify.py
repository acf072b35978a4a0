"""Turn titles into URL slugs. The optimizer may rewrite this file (it is the parameter)."""

from __future__ import annotations


def slugify(title: str) -> str:
    """A first attempt: lowercase and join the words with dashes."""
    return "-".join(title.lower().split())
