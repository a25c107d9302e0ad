"""Direct-answer prompts (no chain of thought) for math word problems.

The model is asked for the final number only, so the first number of its reply is the answer
(see :func:`polar_vllm.data.answers.extract_answer`). This module does not import
``transformers``: any object with an ``apply_chat_template`` method works as a tokenizer.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SYSTEM_PROMPT", "build_messages", "build_prompt"]

SYSTEM_PROMPT = (
    "You are a careful math solver. Solve the problem and reply with only the final answer "
    "as a single number: no words, no units, no explanation."
)
"""The default system instruction: answer with the final number only."""


def build_messages(
    question: str, *, system_prompt: str = SYSTEM_PROMPT, merge_system: bool = False
) -> list[dict[str, str]]:
    """Chat messages for ``question``: a system message and a user message.

    With ``merge_system=True`` (for chat templates that reject a system role) there is a single
    user message holding the instruction, a blank line and the question. An empty
    ``system_prompt`` gives just the user message.
    """
    question = question.strip()
    if not system_prompt:
        return [{"role": "user", "content": question}]
    if merge_system:
        return [{"role": "user", "content": f"{system_prompt}\n\n{question}"}]
    return [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": question},
    ]


def build_prompt(
    question: str,
    tokenizer: Any | None = None,
    *,
    system_prompt: str = SYSTEM_PROMPT,
    merge_system: bool = False,
) -> str:
    """The prompt text for ``question``.

    With a ``tokenizer``, the result of ``tokenizer.apply_chat_template(messages,
    tokenize=False, add_generation_prompt=True)`` on :func:`build_messages`. Without one, a
    plain completion prompt: the instruction (if any), a blank line, then
    ``"Question: ...\\nAnswer:"``.
    """
    if tokenizer is not None:
        messages = build_messages(question, system_prompt=system_prompt, merge_system=merge_system)
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if not isinstance(prompt, str):
            raise TypeError(
                f"apply_chat_template(tokenize=False) returned {type(prompt).__name__}, not str"
            )
        return prompt
    head = f"{system_prompt}\n\n" if system_prompt else ""
    return f"{head}Question: {question.strip()}\nAnswer:"
