"""The openai teacher: any OpenAI-compatible endpoint (vLLM, llama.cpp server, Ollama), asked
concurrently, with retries."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx

from paramem.augment.teachers.local import model_notes
from paramem.data.conversations import Conversation
from paramem.data.notes import Notes
from paramem.errors import InputError


class TeacherError(InputError):
    """The teacher endpoint refused a request or stayed unreachable: one line, and the notes already
    written stay cached."""


def retry_after(header: str | None, default: float, cap: float = 60.0) -> float:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), else `default`; at most `cap`."""
    if not header:
        return min(default, cap)
    try:
        seconds = float(header)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(header).timestamp() - time.time()
        except (TypeError, ValueError):
            return min(default, cap)
    return min(max(seconds, 0.0), cap)


@dataclass
class OpenAITeacher:
    """An OpenAI-compatible chat endpoint (`--teacher-url`), called with bounded concurrency.

    The API key is read from the environment (`api_key_env`, default OPENAI_API_KEY), never from a
    command-line flag, which any user of the machine can read in `ps`."""

    url: str  # base URL, e.g. http://localhost:8000/v1
    model: str = "default"
    api_key_env: str = "OPENAI_API_KEY"  # the environment variable holding the key (unset: no key sent)
    concurrency: int = 4  # conversations in flight at once
    retries: int = 3  # further tries after a server error, a rate limit or a timeout
    timeout_s: float = 120.0
    backoff_s: float = 1.0  # first wait between tries, doubled each time (a Retry-After header wins)

    @property
    def name(self) -> str:
        return f"openai:{self.url}:{self.model}"

    def complete(self, messages: list[dict[str, str]]) -> str:
        key = os.environ.get(self.api_key_env, "").strip()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        body = {"model": self.model, "messages": messages, "temperature": 0.0, "max_tokens": 300}
        endpoint = self.url.rstrip("/") + "/chat/completions"
        last_error = ""
        for attempt in range(self.retries + 1):
            wait = self.backoff_s * 2**attempt
            try:
                response = httpx.post(endpoint, json=body, headers=headers, timeout=self.timeout_s)
            except httpx.TransportError as error:
                last_error = f"{type(error).__name__}: {error}"
            else:
                if response.status_code == 429 or response.status_code >= 500:
                    last_error = f"HTTP {response.status_code}"
                    wait = retry_after(response.headers.get("retry-after"), wait)
                elif response.status_code >= 400:  # a request error: trying again cannot help
                    detail = " ".join(response.text.split())[:200]
                    hint = f" (is {self.api_key_env} set?)" if response.status_code in (401, 403) else ""
                    raise TeacherError(
                        f"teacher endpoint {endpoint} answered HTTP {response.status_code}{hint}: {detail}"
                    )
                else:
                    try:
                        return response.json()["choices"][0]["message"]["content"]
                    except (ValueError, KeyError, IndexError, TypeError):
                        last_error = "a reply that is not a chat completion"
            if attempt < self.retries:  # no sleep after the last try
                time.sleep(wait)
        raise TeacherError(
            f"teacher endpoint {endpoint} failed {self.retries + 1} times, last with {last_error}; "
            "the notes already written are cached, so running again resumes"
        )

    def notes(self, conversation: Conversation) -> Notes:
        return model_notes(self.complete, conversation)

    def notes_many(self, conversations: list[Conversation], on_notes: Callable[[Conversation, Notes], None]) -> None:
        """Every conversation's notes, `concurrency` conversations at a time, each handed to `on_notes`
        as soon as it exists; after a failure the others still finish, then the first error is raised."""
        first_error: BaseException | None = None
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = {pool.submit(self.notes, c): c for c in conversations}
            for future in as_completed(futures):
                try:
                    on_notes(futures[future], future.result())
                except Exception as error:  # kept, raised once the others are done
                    first_error = first_error or error
        if first_error is not None:
            raise first_error
