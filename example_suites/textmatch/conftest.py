"""Two domain optimizers for ``rules.yaml``, written with pytest-autopilot's hooks.

Both read only what the loop gives every optimizer: the failure messages of the train cases
(``context.feedback``) and the current ``rules.yaml``. They never see a val or test case.

- ``keywords`` generalises: for each intent, it adds words of the failing train messages of
  that intent that are more frequent there than in those of the other intents, most frequent
  first: one per intent for the first candidate, all of them for the second. Single words
  carry over to messages the optimizer never saw.
- ``memorize`` overfits on purpose: it adds every failing train message, whole, as a phrase
  keyword of its intent. The train pass rate goes to 100%, the val pass rate does not move,
  and the ``intents.val.pass_rate`` gate says so.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import yaml
from classifier import words

from pytest_autopilot.proposals import FeedbackItem, OptimizerContext, Proposal

RULES = "rules.yaml"
OPTIMIZERS = ("keywords", "memorize")

FAILURE = re.compile(
    r"message (?P<text>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"): "
    r"expected intent '(?P<expected>[^']+)', got '(?P<got>[^']+)'"
)

_STOPWORDS = (
    "a about after all am an and any anyone are at be but can cannot do does for from get "
    "got has have how i in is it its me my no not of on or please should so than that the "
    "there this to up was we what when where which who why will with you your"
)
STOPWORDS = frozenset(_STOPWORDS.split())

Failure = tuple[str, str, str]
"""(message, expected intent, predicted intent) of a failing train case."""


def parse_failures(feedback: Sequence[FeedbackItem]) -> list[Failure]:
    """The failing cases named in the feedback, read back from the test's assertion message."""
    failures = []
    for item in feedback:
        match = FAILURE.search(item.text)
        if match is not None:
            text = ast.literal_eval(match["text"])
            failures.append((text, match["expected"], match["got"]))
    return failures


def render(original: str, data: dict[str, Any]) -> str:
    """``rules.yaml`` in its own layout: the leading comment, then one line per intent."""
    comment = "".join(line + "\n" for line in original.splitlines() if line.startswith("#"))
    lines = [f"fallback: {data['fallback']}", "intents:"]
    for intent, spec in data["intents"].items():
        keywords = ", ".join(json.dumps(k) for k in spec.get("keywords", []))
        lines.append(f"  {intent}: {{keywords: [{keywords}]}}")
    return comment + "\n".join(lines) + "\n"


def add_keywords(text: str, failures: Sequence[Failure], per_intent: int | None) -> tuple[str, str]:
    """Add up to ``per_intent`` (``None``: all) distinctive words per intent.

    Returns the new text and the rationale.
    """
    data = yaml.safe_load(text)
    intents = data["intents"]
    known = {" ".join(words(k)) for spec in intents.values() for k in spec.get("keywords", [])}
    by_intent: dict[str, Counter[str]] = {}
    for message, expected, _ in failures:
        fresh = {w for w in words(message) if w not in STOPWORDS and w not in known and len(w) > 2}
        by_intent.setdefault(expected, Counter()).update(fresh)
    added: list[str] = []
    for intent, counts in sorted(by_intent.items()):
        if intent not in intents:
            continue  # the fallback has no keywords to add
        others: Counter[str] = Counter()
        for other, other_counts in by_intent.items():
            if other != intent:
                others.update(other_counts)
        ranked = sorted(
            (w for w in counts if counts[w] > others[w]),
            key=lambda w: (-(counts[w] - others[w]), -counts[w], w),
        )
        chosen = ranked[:per_intent]
        intents[intent].setdefault("keywords", []).extend(chosen)
        added.extend(f"{intent} += {w!r} ({counts[w]} failing)" for w in chosen)
    if not added:
        return text, "no recurring word left to add"
    return render(text, data), "add keywords: " + "; ".join(added)


def memorize(text: str, failures: Sequence[Failure]) -> tuple[str, str]:
    """Add each failing message, whole, as a keyword of its intent."""
    data = yaml.safe_load(text)
    intents = data["intents"]
    count = 0
    for message, expected, _ in failures:
        phrase = " ".join(words(message))
        if expected in intents and phrase:
            intents[expected].setdefault("keywords", []).append(phrase)
            count += 1
    return render(text, data), f"memorize {count} failing train messages as phrases"


def pytest_autopilot_optimizer_names(config: Any) -> Sequence[str]:
    return OPTIMIZERS


def pytest_autopilot_propose(context: OptimizerContext) -> Sequence[Proposal] | None:
    if context.optimizer not in OPTIMIZERS:
        return None
    current = next(p.text for p in context.parameters if p.path == RULES)
    failures = parse_failures(context.feedback)
    if not failures:
        return []
    if context.optimizer == "memorize":
        candidates = [memorize(current, failures)]
    else:
        candidates = [add_keywords(current, failures, n) for n in (1, None)]
    proposals, seen = [], {current}
    for new_text, rationale in candidates[: context.max_candidates]:
        if new_text not in seen:
            seen.add(new_text)
            proposals.append(Proposal(rationale=rationale, edits={RULES: new_text}))
    return proposals
