"""Chat rendering shared by train and predict: Gemma turns, `<reasoning>`/`<answer>` targets.

Gemma has no system role, so the instruction opens the user turn (as Gemma's
own chat template does). Prompt and completion are rendered separately so the
loss can be masked to the model's turn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

BOS = "<bos>"
START_OF_TURN = "<start_of_turn>"
END_OF_TURN = "<end_of_turn>"
REASONING_OPEN, REASONING_CLOSE = "<reasoning>", "</reasoning>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

SYSTEM_INSTRUCTION = (
    "Think step by step inside <reasoning></reasoning>, then give only the final answer inside <answer></answer>."
)


def render_prompt(prompt: str) -> str:
    """Everything the model is given, up to and including the opening of its turn."""
    return f"{BOS}{START_OF_TURN}user\n{SYSTEM_INSTRUCTION}\n\n{prompt}{END_OF_TURN}\n{START_OF_TURN}model\n"


def render_reasoning(steps: Sequence[Mapping]) -> str:
    return "\n".join(step["content"] for step in sorted(steps, key=lambda s: s["i"]))


def render_completion(steps: Sequence[Mapping], final_answer: str) -> str:
    """The model's turn for a trace record: the target of supervised fine-tuning."""
    return (
        f"{REASONING_OPEN}{render_reasoning(steps)}{REASONING_CLOSE}"
        f"{ANSWER_OPEN}{final_answer}{ANSWER_CLOSE}{END_OF_TURN}"
    )
