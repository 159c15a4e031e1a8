"""Teachers turn a conversation into `Notes`: topics, atomic facts, paraphrases and near misses.

Three real teachers share one interface, `Teacher.notes(conversation)`:
  extractive  no model: key phrases, the user's own sentences as facts, near misses from a topic bank
  local       any Hugging Face model, prompted few-shot (the larger preset included)
  openai      any OpenAI-compatible endpoint (vLLM, llama.cpp server, Ollama), concurrent, with retries
Negatives from every teacher are checked absent from the conversation before they are used.
"""

from __future__ import annotations

from paramem.augment.teachers.base import Teacher
from paramem.augment.teachers.endpoint import OpenAITeacher
from paramem.augment.teachers.extractive import ExtractiveTeacher
from paramem.augment.teachers.local import LocalTeacher
from paramem.errors import InputError


def make_teacher(
    kind: str, model: str | None = None, url: str | None = None, api_key_env: str = "OPENAI_API_KEY"
) -> Teacher:
    if kind == "extractive":
        return ExtractiveTeacher()
    if kind == "local":
        return LocalTeacher(model or "qwen2.5-0.5b")
    if kind == "openai":
        if not url:
            raise InputError("the openai teacher needs --teacher-url")
        return OpenAITeacher(url, model or "default", api_key_env=api_key_env)
    raise InputError(f"unknown teacher {kind!r} (extractive, local, openai)")
