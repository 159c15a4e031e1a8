"""paramem ask and chat: answering from what a user's store holds, through the one answer path
(read/respond.py), or from the memory alone (--memory-alone, research)."""

from __future__ import annotations

from pathlib import Path

import typer

from paramem.cli.app import app, exits_cleanly
from paramem.cli.options import (
    DtypeOption,
    HomeOption,
    MemoryAloneOption,
    PassagesOption,
    ReadoutOption,
    chosen_dtype,
    chosen_readout,
)
from paramem.cli.progress import console
from paramem.errors import InputError

SHOWN_PASSAGES = 3  # the evidence printed under an answer; the reader read all k


def answer_config(k: int | None):
    from paramem.read.respond import AnswerConfig

    return AnswerConfig() if k is None else AnswerConfig(k=k)  # checks k


@app.command("ask", rich_help_panel="Answer")
@exits_cleanly
def ask_command(
    question: str = typer.Argument(..., help="the question"),
    user: str = typer.Option(..., "--user", "-u"),
    k: int | None = PassagesOption,
    memory_alone: bool = MemoryAloneOption,
    readout: str = ReadoutOption,
    decision: str | None = typer.Option(
        None,
        help="with --memory-alone, the yes/no rule: prior (content-free question), heldout (threshold "
        "fitted on the held-out reworded pairs), balanced (their median score) or raw; default: balanced "
        "for recall and for cartridges, prior for a sequential memory read by log-odds",
    ),
    dtype: str | None = DtypeOption,
    home: Path | None = HomeOption,
):
    """Answer a question from USER's store: the turns retrieved from their conversations (and their
    memory where the text is gone); yes/no questions by log-odds, others in words or "I don't know".
    Each answer names its evidence: the conversations and dates it read."""
    if not question.strip():
        raise InputError("the question is empty")
    if memory_alone:
        return _ask_memory_alone(question, user, readout, decision, dtype, home)
    if readout is not None or decision is not None:
        raise InputError("--readout and --decision read the memory alone; add --memory-alone")
    from paramem.read.respond import Responder

    config = answer_config(k)
    [response] = Responder.for_user(user, home, chosen_dtype(dtype), config).respond([question])
    if response.yes_no:
        margin = "" if response.margin is None else f"; log-odds {response.margin:+.2f} from the threshold"
        console.print(
            f"{response.answer.capitalize()}  ({response.supported_by}{margin})", markup=False, highlight=False
        )
    else:
        console.print(response.answer, markup=False, highlight=False)
        if response.margin is not None:
            detail = f"({response.supported_by}; support {response.margin:+.2f} from the threshold)"
            console.print(detail, markup=False, highlight=False)
    for line in evidence_lines(response):
        console.print(line, markup=False, highlight=False, style="dim")


def evidence_lines(response) -> list[str]:
    """The evidence of an answer as a few lines: the passages read first, then what the memory carried."""
    text = [e for e in response.evidence if e.source == "text"][:SHOWN_PASSAGES]
    lines = [f"  {e.conversation} ({e.date or 'undated'}): {e.text}" for e in text]
    carried = [e.conversation for e in response.evidence if e.source == "memory" and e.conversation]
    if carried:
        lines.append(f"  the memory carries {', '.join(carried)} (their text is not kept)")
    return lines


def _ask_memory_alone(question: str, user: str, readout, decision, dtype, home) -> None:
    from paramem.model.generate import generate
    from paramem.model.scoring import is_yes_no_question
    from paramem.read.loading import load_memory
    from paramem.read.readers import DECISION_RULES, ask

    chosen_readout(readout)
    if decision is not None and decision not in DECISION_RULES:
        raise InputError(f"unknown decision rule {decision!r} ({', '.join(DECISION_RULES)})")
    model, tokenizer, memory = load_memory(user, home, chosen_dtype(dtype))
    if not is_yes_no_question(question):
        console.print(generate(model, tokenizer, [{"role": "user", "content": question}]), markup=False)
        return
    readout = chosen_readout(readout, memory)
    [answer] = ask(model, tokenizer, memory, [question], readout, decision)
    if readout == "recall":
        detail = f"similarity {answer.margin:+.2f} from the threshold; closest recalled: {answer.evidence!r}"
    else:
        detail = f"log-odds {answer.margin:+.2f} from the threshold"
    console.print(f"{answer.answer.capitalize()}  (memory alone; {detail})", markup=False, highlight=False)


@app.command("chat", rich_help_panel="Answer")
@exits_cleanly
def chat_command(
    user: str = typer.Option(..., "--user", "-u"),
    memory: str = typer.Option(
        "plum", "--memory", help="plum: the memory `remember` learned; milp: the one `search` chose and learned"
    ),
    k: int | None = PassagesOption,
    home: Path | None = HomeOption,
    max_new_tokens: int = typer.Option(200, help="longest reply in tokens"),
    dtype: str | None = DtypeOption,
):
    """Chat with the model that knows USER (empty line or Ctrl-D ends): each reply reads the stored
    turns most like the last message, and the memory where their text is gone (as `ask` does); with
    --memory milp, the MiLP memory personalises the replies."""
    from contextlib import nullcontext

    from paramem.model.generate import generate

    if max_new_tokens < 1:
        raise InputError(f"--max-new-tokens must be at least 1, not {max_new_tokens}")
    if memory not in ("plum", "milp"):
        raise InputError(f"--memory must be plum or milp, not {memory!r}")
    config = answer_config(k)
    if memory == "milp":
        from paramem.lifecycle.personalise import load_milp_memory
        from paramem.memory.milp.model import REPLY_SYSTEM

        model, tokenizer, _ = load_milp_memory(user, home, chosen_dtype(dtype))
        system_for, reading = (lambda message: REPLY_SYSTEM), nullcontext  # the prompt its replies were tuned under
    else:
        from paramem.read.respond import Responder

        responder = Responder.for_user(user, home, chosen_dtype(dtype), config)
        if responder.model is None:
            raise InputError(f"user {user!r} has nothing stored yet (run `paramem remember`)")
        model, tokenizer = responder.model, responder.tokenizer
        system_for, reading = responder.system_for, responder.reading
    history: list[dict[str, str]] = []
    console.print(f"chatting with {user!r}'s {memory} memory; an empty line ends the chat")
    while True:
        try:
            line = console.input("[bold]you> [/bold]").strip()
        except EOFError:
            break
        if not line:
            break
        history.append({"role": "user", "content": line})
        with reading():
            reply = generate(model, tokenizer, history, max_new_tokens, system_for(line))
        history.append({"role": "assistant", "content": reply})
        console.print(f"[bold]memory>[/bold] {reply}")
