"""Pairwise judging of two replies (MiLP's win rate), each pair asked in both orders to cancel the
judge's position bias. Two rules turn the two answers into a win, tie or loss:

  strict      a method wins when the judge prefers it in both orders, loses when it prefers the other
              reply in both, and ties when the orders disagree. How often they agree says what the
              judge is worth (a judge that always answers "A" agrees with itself never).
  calibrated  the sign of the two preferences summed (balanced position calibration, Wang et al. 2023,
              "Large Language Models are not Fair Evaluators"): a constant lean towards one position
              cancels, what is left is the judge's view of the replies. For an endpoint's +1/-1 answers
              it is the strict rule; a local judge's log-odds give it a margin either way.

What either is worth is measured, not assumed: `judge_check` asks the judge to pick each gold reply
against another episode's gold reply, where the right answer is known.

The judge is an OpenAI-compatible endpoint when one is given, else a local model: the largest packaged
one that fits (qwen2.5-0.5b here), read as the log-odds of "A" against "B" at its answer.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import httpx
import torch

from paramem.errors import InputError
from paramem.model.loading import decoder_and_head
from paramem.model.scoring import first_token_ids, head_rows, last_hidden_states

JUDGE_PROMPT = """Here is a conversation, then two candidate next replies by the assistant.

{context}

Reply A: {a}
Reply B: {b}

Which reply is the better next turn: natural, consistent with the conversation, and specific to
these people? Answer with one letter, A or B."""


def render_context(context: list) -> str:
    return "\n".join(f"{m.name or m.role}: {m.content}" for m in context[-6:])


class LocalJudge:
    """A local causal LM's preference: log P("A") - log P("B") at the start of its answer, computed in
    float32 from the last hidden state (bfloat16 logits are coarse enough that the two orders' log-odds
    often cancel exactly, a tie the replies did not earn) and only for the two letters."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.a, self.b = first_token_ids(tokenizer, ["A"])[0], first_token_ids(tokenizer, ["B"])[0]
        self._decoder, _ = decoder_and_head(model)
        self._weight, self._bias = head_rows(model, [self.a, self.b])
        self.name = "local"

    @torch.inference_mode()
    def prefers_a(self, context: list, a: str, b: str) -> float:
        prompt = JUDGE_PROMPT.format(context=render_context(context), a=a, b=b)
        ids = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_dict=True
        )["input_ids"]
        last = last_hidden_states(self._decoder, [ids], self.tokenizer.pad_token_id)[0]
        log_a, log_b = self._weight @ last + self._bias
        return float(log_a - log_b)


class EndpointJudge:
    """An OpenAI-compatible chat endpoint, asked for one token at temperature 0; +1 for A, -1 for B,
    0 when it answers neither."""

    def __init__(self, url: str, model: str = "default", api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60):
        self.url, self.model, self.timeout_s = url.rstrip("/"), model, timeout_s
        self.key = os.environ.get(api_key_env)
        self.name = f"{url} {model}"

    def prefers_a(self, context: list, a: str, b: str) -> float:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": JUDGE_PROMPT.format(context=render_context(context), a=a, b=b)}],
            "max_tokens": 2,
            "temperature": 0,
        }
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        try:
            response = httpx.post(f"{self.url}/chat/completions", json=body, headers=headers, timeout=self.timeout_s)
            response.raise_for_status()
            answer = response.json()["choices"][0]["message"]["content"].strip().upper()
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as error:
            raise InputError(f"the judge at {self.url} failed: {error}") from None
        return 1.0 if answer.startswith("A") else -1.0 if answer.startswith("B") else 0.0


@dataclass
class Verdict:
    wins: int = 0
    ties: int = 0
    losses: int = 0

    @property
    def pairs(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def win_rate(self) -> float | None:
        """Wins over pairs, ties counting half (MiLP's win rate against the text-prompt baseline)."""
        return (self.wins + 0.5 * self.ties) / self.pairs if self.pairs else None

    @property
    def agreement(self) -> float | None:
        """Share of pairs the judge decided the same way in both orders."""
        return (self.wins + self.losses) / self.pairs if self.pairs else None

    def as_dict(self) -> dict:
        return {**asdict(self), "win_rate": self.win_rate, "agreement": self.agreement}


def both_orders(judge, context: list, reply: str, other: str) -> tuple[float, float]:
    """The judge's preference for `reply` over `other`, asked with `reply` first, then second
    (each > 0 when `reply` is preferred)."""
    return judge.prefers_a(context, reply, other), -judge.prefers_a(context, other, reply)


def strict(first: float, second: float) -> str:
    """ "win" or "loss" when both orders agree, else "tie"."""
    if first > 0 and second > 0:
        return "win"
    if first < 0 and second < 0:
        return "loss"
    return "tie"


def calibrated(first: float, second: float) -> str:
    """The sign of the summed preferences: a position bias common to both orders cancels."""
    total = first + second
    return "win" if total > 0 else "loss" if total < 0 else "tie"


def tally(outcomes: list[str]) -> Verdict:
    return Verdict(outcomes.count("win"), outcomes.count("tie"), outcomes.count("loss"))


def judge_check(judge, cases: list[tuple[list, str, str]]) -> dict:
    """What the judge is worth: each case is (context, gold reply, another episode's gold reply);
    a "win" is the gold reply picked. The verdicts under both rules."""
    pairs = [both_orders(judge, context, gold, other) for context, gold, other in cases]
    return {
        "cases": len(cases),
        "strict": tally([strict(*p) for p in pairs]).as_dict(),
        "calibrated": tally([calibrated(*p) for p in pairs]).as_dict(),
    }
