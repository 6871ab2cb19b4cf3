"""Parse a model completion of the form `<reasoning>…</reasoning><answer>…</answer>`.

Used by predict (to fill the prediction record) and by evaluate (which re-parses
the raw completion, so scores depend only on completions and this code).
"""

from __future__ import annotations

import re

# The last complete block: an opening tag, then content holding no further
# opening tag of the same kind, then the closing tag. This way
# "<answer>x<answer>y</answer>" yields "y", and an unclosed block is ignored.
_BLOCK = {tag: re.compile(rf"<{tag}>((?:(?!<{tag}>).)*?)</{tag}>", re.DOTALL) for tag in ("reasoning", "answer")}
_WHOLE = re.compile(r"\s*<reasoning>(.*?)</reasoning>\s*<answer>(.*?)</answer>\s*", re.DOTALL)
_TAGS = ("<reasoning>", "</reasoning>", "<answer>", "</answer>")


def _last_block(tag: str, text: str) -> str | None:
    matches = _BLOCK[tag].findall(text)
    if not matches:
        return None
    content = matches[-1].strip()
    return content or None  # an empty block carries no answer


def parse_completion(text: str | None) -> dict:
    """`{reasoning, answer, format_ok}` for one completion.

    reasoning / answer: stripped content of the last complete block of that
    kind, None when there is none (or it is empty).
    format_ok: the whole text is exactly one non-empty reasoning block followed
    by one non-empty answer block, with only whitespace around them.
    """
    text = text or ""
    # Exactly one of each tag, checked first: it is what the conditions below come to, and on a text of
    # many blocks the lazy groups of _WHOLE would otherwise try every pair of them (quadratic).
    whole = _WHOLE.fullmatch(text) if all(text.count(tag) == 1 for tag in _TAGS) else None
    format_ok = bool(
        whole
        and all(part.strip() for part in whole.groups())
        # the lazy groups could swallow extra tags (two answers, nested blocks)
        and not any(tag in part for part in whole.groups() for tag in _TAGS)
    )
    return {
        "reasoning": _last_block("reasoning", text),
        "answer": _last_block("answer", text),
        "format_ok": format_ok,
    }
