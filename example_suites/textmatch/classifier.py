"""A rule-based intent classifier: keyword rules from ``rules.yaml``, no model.

A message is split into lowercase words. Each intent scores one point per keyword (a word,
or a phrase matched as consecutive words) found in the message; the best score wins, the
first intent in the file on a tie, and the fallback intent when nothing matches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


@dataclass(frozen=True)
class Rules:
    fallback: str
    keywords: dict[str, tuple[tuple[str, ...], ...]]
    """Intent -> its keywords, each as a tuple of words, in file order."""

    @classmethod
    def load(cls, path: Path) -> Rules:
        data = yaml.safe_load(path.read_text())
        intents = data["intents"]
        return cls(
            fallback=str(data["fallback"]),
            keywords={
                str(intent): tuple(tuple(words(str(k))) for k in (spec or {}).get("keywords", []))
                for intent, spec in intents.items()
            },
        )


def matches(message: list[str], keyword: tuple[str, ...]) -> bool:
    n = len(keyword)
    return n > 0 and any(tuple(message[i : i + n]) == keyword for i in range(len(message) - n + 1))


def classify(text: str, rules: Rules) -> tuple[str, list[str]]:
    """The intent of ``text`` and the keywords that decided it."""
    message = words(text)
    best, best_hits = rules.fallback, list[str]()
    for intent, keywords in rules.keywords.items():
        hits = [" ".join(k) for k in keywords if matches(message, k)]
        if len(hits) > len(best_hits):
            best, best_hits = intent, hits
    return best, best_hits
