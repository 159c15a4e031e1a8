"""The settings of one `paramem serve`, each checked when the config is made (before any model loads)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from paramem.config import KeepText, setting
from paramem.errors import check_option


@dataclass
class ServeConfig:
    base_model: str = setting(..., "the base model every memory was learned on")
    home: Path | None = setting(None, "the store ($PARAMEM_HOME by default)")
    cache_size: int = setting(8, "memories kept loaded (least recently used goes first)")
    max_new_tokens: int = setting(256, "the longest reply a request may ask for")
    dtype: str | None = setting(None, "the base model's dtype (default: the fastest exact one on this CPU)")
    max_upload_bytes: int = setting(10_000_000, "an uploaded conversation file, at most")
    teacher: str = setting("extractive", "the teacher of uploaded conversations")
    keep_text: str = setting(
        KeepText.ALWAYS,
        "how long uploaded conversations stay as text: always, until-consolidated or never (the upload "
        "file goes either way)",
    )
    max_batch: int = setting(8, "replies decoded together, each step one batched forward pass (1: one at a time)")
    prefill_wait: float = setting(
        1.0,
        "seconds a reply may wait while others decode, so that replies arriving close together read "
        "their prompts in one pass (0: each starts at the next step)",
    )
    max_waiting: int = setting(64, "replies waiting for the model; one more is refused with 503 and Retry-After")
    max_prompt_tokens: int = setting(4096, "the longest chat a request may send, in the model's tokens")
    max_request_bytes: int = setting(1_000_000, "a chat request's body, at most")
    job_workers: int = setting(1, "learning and forgetting jobs run at once (each loads its own base model)")
    job_niceness: int = setting(10, "how far below serving the jobs' CPU priority is (nice): replies come first")
    max_jobs: int = setting(16, "jobs waiting or running, all users together; one more is refused with 429")
    job_history: int = setting(20, "ended job records kept per user (older ones are deleted)")

    def __post_init__(self):
        for name, least in (
            ("cache_size", 1),
            ("max_new_tokens", 1),
            ("max_upload_bytes", 1),
            ("max_batch", 1),
            ("max_waiting", 1),
            ("max_prompt_tokens", 1),
            ("max_request_bytes", 1),
            ("job_workers", 1),
            ("max_jobs", 1),
            ("job_history", 0),
        ):
            value = getattr(self, name)
            check_option(isinstance(value, int) and value >= least, name, f"an integer of at least {least}", value)
        check_option(self.keep_text in set(KeepText), "keep_text", " or ".join(KeepText), self.keep_text)
        check_option(0 <= self.prefill_wait <= 30, "prefill_wait", "from 0 to 30 seconds", self.prefill_wait)
        check_option(0 <= self.job_niceness <= 19, "job_niceness", "from 0 to 19", self.job_niceness)
        check_option(
            isinstance(self.base_model, str) and self.base_model != "", "base_model", "a model name", self.base_model
        )
        if self.home is not None:
            self.home = Path(self.home)
