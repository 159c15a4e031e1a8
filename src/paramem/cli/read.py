"""paramem ask and chat: answering from a user's memory."""

from __future__ import annotations

from pathlib import Path

import typer

from paramem.cli.app import app, exits_cleanly
from paramem.cli.options import (
    DtypeOption,
    HomeOption,
    PassagesOption,
    ReadoutOption,
    RetrieveOption,
    chosen_dtype,
    chosen_readout,
)
from paramem.cli.progress import console
from paramem.errors import InputError


def retrieving(file: Path | None, k: int):
    """The conversations to retrieve from (loaded and checked before any model is), and how."""
    from paramem.data.formats import load_conversations
    from paramem.read.retrieval import RetrievalConfig

    retrieval = RetrievalConfig(k=k)  # checks k
    return (load_conversations(file) if file is not None else None), retrieval


@app.command("ask", rich_help_panel="Answer")
@exits_cleanly
def ask_command(
    question: str = typer.Argument(..., help="the question"),
    user: str = typer.Option(..., "--user", "-u"),
    readout: str = ReadoutOption,
    decision: str | None = typer.Option(
        None,
        help="yes/no rule: prior (content-free question), heldout "
        "(threshold fitted on the held-out reworded pairs), balanced "
        "(their median score) or raw; default: balanced for recall and for "
        "cartridges, prior for a sequential memory read by log-odds and with --retrieve",
    ),
    retrieve: Path | None = RetrieveOption,
    k: int = PassagesOption,
    dtype: str | None = DtypeOption,
    home: Path | None = HomeOption,
):
    """Answer a question from USER's memory (yes/no questions by recall or by P(yes) vs P(no)), alone
    or beside the turns retrieved from USER's conversations (--retrieve)."""
    from paramem.model.generate import generate
    from paramem.model.prompts import SYSTEM_PROMPT
    from paramem.model.scoring import is_yes_no_question
    from paramem.read.loading import load_memory
    from paramem.read.readers import DECISION_RULES, ask
    from paramem.read.retrieval import hybrid_retriever, retrieval_prompt

    if not question.strip():
        raise InputError("the question is empty")
    chosen_readout(readout)
    if decision is not None and decision not in DECISION_RULES:
        raise InputError(f"unknown decision rule {decision!r} ({', '.join(DECISION_RULES)})")
    if retrieve is not None and readout not in (None, "log-odds"):
        raise InputError("--retrieve reads the memory by log-odds; drop --readout recall")
    conversations, retrieval = retrieving(retrieve, k)
    model, tokenizer, memory = load_memory(user, home, chosen_dtype(dtype))
    if not is_yes_no_question(question):
        system = SYSTEM_PROMPT
        if conversations is not None:
            found = hybrid_retriever(conversations, retrieval).search([question], retrieval.k)[0]
            system = retrieval_prompt(found)
        console.print(generate(model, tokenizer, [{"role": "user", "content": question}], system=system))
        return
    if conversations is None:
        readout = chosen_readout(readout, memory)
    [answer] = ask(model, tokenizer, memory, [question], readout, decision, conversations, retrieval)
    if readout == "recall":
        detail = f"similarity {answer.margin:+.2f} from the threshold; closest recalled: {answer.evidence!r}"
    elif conversations is not None:
        detail = f"log-odds {answer.margin:+.2f} from the threshold; best retrieved turn: {answer.evidence!r}"
    else:
        detail = f"log-odds {answer.margin:+.2f} from the threshold"
    console.print(f"{answer.answer.capitalize()}  ({detail})", markup=False, highlight=False)


@app.command("chat", rich_help_panel="Answer")
@exits_cleanly
def chat_command(
    user: str = typer.Option(..., "--user", "-u"),
    memory: str = typer.Option(
        "plum", "--memory", help="plum: the memory `remember` learned; milp: the one `search` chose and learned"
    ),
    retrieve: Path | None = RetrieveOption,
    k: int = PassagesOption,
    home: Path | None = HomeOption,
    max_new_tokens: int = typer.Option(200, help="longest reply in tokens"),
    dtype: str | None = DtypeOption,
):
    """Chat with the model personalised by USER's memory (empty line or Ctrl-D ends); with --retrieve,
    each reply also reads the turns of USER's conversations most like the last message."""
    from paramem.model.generate import generate
    from paramem.read.loading import load_memory
    from paramem.read.retrieval import hybrid_retriever, retrieval_prompt

    if max_new_tokens < 1:
        raise InputError(f"--max-new-tokens must be at least 1, not {max_new_tokens}")
    if memory not in ("plum", "milp"):
        raise InputError(f"--memory must be plum or milp, not {memory!r}")
    conversations, retrieval = retrieving(retrieve, k)
    if memory == "milp":
        from paramem.lifecycle.personalise import load_milp_memory
        from paramem.memory.milp.model import REPLY_SYSTEM

        model, tokenizer, _ = load_milp_memory(user, home, chosen_dtype(dtype))
        system = REPLY_SYSTEM  # the prompt its replies were tuned under
    else:
        from paramem.model.prompts import SYSTEM_PROMPT

        model, tokenizer, _ = load_memory(user, home, chosen_dtype(dtype))
        system = SYSTEM_PROMPT
    retriever = None if conversations is None else hybrid_retriever(conversations, retrieval)
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
        turn_system = system if retriever is None else retrieval_prompt(retriever.search([line], k)[0], system)
        reply = generate(model, tokenizer, history, max_new_tokens, turn_system)
        history.append({"role": "assistant", "content": reply})
        console.print(f"[bold]memory>[/bold] {reply}")
