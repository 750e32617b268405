"""Chat rendering shared by samples, training and scoring: one place decides which tokens are
the assistant's answer, so the loss that training minimises and the loss that the gate
compares are computed over exactly the same tokens.

    ids = tokenize_conversation(tokenizer, messages, max_length=512)
    ids["input_ids"], ids["completion_mask"]   # 1 on the answer tokens (and its end-of-turn)
"""
from __future__ import annotations

from typing import Any

Message = dict[str, str]


class ChatTemplateError(ValueError):
    """The tokenizer's chat template cannot render a conversation the way training needs."""


def render_prompt(tokenizer: Any, messages: list[Message]) -> str:
    """The conversation up to the assistant's turn, with the generation prompt, as text."""
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(f"tokenizer {tokenizer.name_or_path!r} has no chat template")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def render_conversation(tokenizer: Any, messages: list[Message]) -> str:
    """The whole conversation, answer included, as the model sees it in training."""
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(f"tokenizer {tokenizer.name_or_path!r} has no chat template")
    return tokenizer.apply_chat_template(messages, tokenize=False)


def tokenize_conversation(tokenizer: Any, messages: list[Message], max_length: int) -> dict[str, list[int]]:
    """Token ids of a (system, user, assistant) conversation and a mask that is 1 exactly on
    the assistant's answer tokens (including the template's end-of-turn token, so the model
    learns to stop). Truncates from the right to `max_length`."""
    return tokenize_conversations(tokenizer, [messages], max_length)[0]


def tokenize_conversations(tokenizer: Any, conversations: list[list[Message]],
                           max_length: int) -> list[dict[str, list[int]]]:
    """`tokenize_conversation` for many conversations, with the tokenizer called once on all of
    them (a fast tokenizer then encodes them in parallel)."""
    prompts, answers = [], []
    for messages in conversations:
        if not messages or messages[-1]["role"] != "assistant":
            raise ChatTemplateError("a training conversation must end with the assistant's answer")
        prompt = render_prompt(tokenizer, messages[:-1])
        full = render_conversation(tokenizer, messages)
        if not full.startswith(prompt):
            # Some templates render the history differently once an answer follows; the mask
            # would then be wrong, so refuse rather than train on the prompt.
            raise ChatTemplateError("the chat template does not render the prompt as a prefix of the conversation")
        prompts.append(prompt)
        answers.append(full[len(prompt):])
    if not conversations:
        return []
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answers, add_special_tokens=False)["input_ids"]
    return [{"input_ids": (p + a)[:max_length], "completion_mask": ([0] * len(p) + [1] * len(a))[:max_length]}
            for p, a in zip(prompt_ids, answer_ids)]
