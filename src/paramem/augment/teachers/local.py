"""The local teacher: any Hugging Face model (the larger preset included), prompted few-shot."""

from __future__ import annotations

import re

import torch

from paramem.augment.teachers.base import human_date, overlaps
from paramem.augment.teachers.extractive import ExtractiveTeacher, second_person
from paramem.data.conversations import Conversation
from paramem.data.notes import Fact, Notes, Topic, content_words, is_absent
from paramem.model.loading import load_model

TEACHER_SYSTEM = "You write short, precise notes about conversations. Answer with a list, one item per line."
EXAMPLE_MESSAGE = "I'm flying to Kyoto in April and want to see the cherry blossoms."


# (instruction, example input, example answer) for each kind of request.
TOPICS_PROMPT = (
    "List the topics of this message as short noun phrases, one per line.",
    EXAMPLE_MESSAGE,
    "- a trip to Kyoto\n- cherry blossoms",
)
FACTS_PROMPT = (
    "List the facts about the user in this message, one short sentence each, each starting with 'The user'.",
    EXAMPLE_MESSAGE,
    "- The user is flying to Kyoto in April.\n- The user wants to see the cherry blossoms.",
)
PARAPHRASE_PROMPT = (
    "Give 3 other ways to say this topic.",
    "learning to play the piano",
    "- piano lessons\n- practising the piano\n- studying music on the piano",
)
NEAR_MISS_PROMPT = (
    "Name 3 topics that are similar to this one but clearly different.",
    "learning to play the piano",
    "- learning to play the violin\n- singing lessons\n- learning to paint",
)
_EXAMPLE_WORDS = content_words(
    " ".join(" ".join(p[1:]) for p in (TOPICS_PROMPT, FACTS_PROMPT, PARAPHRASE_PROMPT, NEAR_MISS_PROMPT))
)


def few_shot(prompt: tuple[str, str, str], text: str) -> list[dict[str, str]]:
    instruction, example, answer = prompt
    return [
        {"role": "system", "content": TEACHER_SYSTEM},
        {"role": "user", "content": f"{instruction}\n\n{example}"},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": f"{instruction}\n\n{text}"},
    ]


def list_items(
    text: str, limit: int, exclude: set[str] = frozenset(), allowed_words: set[str] | None = None, max_words: int = 12
) -> list[str]:
    """The distinct items of a model's list, cleaned; small teachers repeat themselves and copy the
    few-shot example, so repeats, excluded items and copied example words are dropped."""
    items: list[str] = []
    seen = {e.lower() for e in exclude}
    for line in text.splitlines():
        item = re.sub(r"^\s*(?:[-*\u2022]|\d+[.)])\s*", "", line).strip().strip('"').rstrip(".")
        if not item or len(item.split()) > max_words or item.lower() in seen:
            continue
        leaked = content_words(item) & _EXAMPLE_WORDS
        if allowed_words is not None and leaked - allowed_words:
            continue
        seen.add(item.lower())
        items.append(item)
        if len(items) == limit:
            break
    return items


def model_notes(complete, conversation: Conversation, topics: int = 6, max_chars: int = 2000) -> Notes:
    """Notes from any `complete(messages) -> str`, asked one user message and one topic at a time:
    topics grounded in the conversation, 3 paraphrases and near misses for each (near misses checked
    absent from the conversation and unlike every positive wording), facts; gaps filled extractively."""
    words = content_words(conversation.text)
    backup = ExtractiveTeacher().notes(conversation)
    # Ask about each user message on its own: a small teacher summarising a whole conversation
    # names only its last lines.
    messages = [m.content[:max_chars] for m in conversation.messages if m.role == "user" and content_words(m.content)]
    names, fact_texts = [], []
    for message in messages:
        for name in list_items(complete(few_shot(TOPICS_PROMPT, message)), 3, set(names), allowed_words=words):
            if content_words(name) & words and not overlaps(name, names, 0.99):
                names.append(name)
        fact_texts += [
            f
            for f in list_items(
                complete(few_shot(FACTS_PROMPT, message)), 4, set(fact_texts), allowed_words=words, max_words=30
            )
            if f.lower().startswith("the user") and len(content_words(f) & words) >= 2
        ]
    names = names[:topics]
    chosen_topics = []
    for name in names:
        paraphrases = list_items(complete(few_shot(PARAPHRASE_PROMPT, name)), 3, {name}, words | content_words(name))
        chosen_topics.append(Topic(name, paraphrases))
    chosen_topics = chosen_topics or backup.topics
    positives = [w for t in chosen_topics for w in t.wordings]
    negatives = []
    for topic in chosen_topics:
        near = [
            n
            for n in list_items(
                complete(few_shot(NEAR_MISS_PROMPT, topic.name)), 3, set(positives), words | content_words(topic.name)
            )
            if is_absent(n, words) and not overlaps(n, positives)
        ]
        if near:
            negatives.append(Topic(near[0], near[1:]))
    facts = [Fact(f, [second_person(f)]) for f in fact_texts]
    # Too few facts from the model: add the user's own sentences.
    facts += [f for f in backup.facts if not overlaps(f.statement, [g.statement for g in facts], 0.7)][
        : max(0, 3 - len(facts))
    ]
    # At least one negative per topic keeps 1:1 balance possible; the topic bank tops them up.
    taken = {n.name.lower() for n in negatives}
    negatives += [n for n in backup.negatives if n.name.lower() not in taken][
        : max(0, len(chosen_topics) - len(negatives))
    ]
    return Notes(conversation.id, human_date(conversation.timestamp), chosen_topics, facts, negatives)


class LocalTeacher:
    """Any Hugging Face causal LM (a preset name, folder, id or GGUF), prompted few-shot as in PLUM."""

    def __init__(self, model: str = "qwen2.5-0.5b", max_new_tokens: int = 80):
        self.model_name = model
        self.name = f"local:{model}"
        self.max_new_tokens = max_new_tokens
        self._loaded = None

    def complete(self, messages: list[dict[str, str]]) -> str:
        if self._loaded is None:
            self._loaded = load_model(self.model_name)
        model, tokenizer = self._loaded
        prompt = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.inference_mode():
            output = model.generate(
                **prompt,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                repetition_penalty=1.1,
                pad_token_id=tokenizer.pad_token_id,
            )
        return tokenizer.decode(output[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)

    def notes(self, conversation: Conversation) -> Notes:
        return model_notes(self.complete, conversation)
