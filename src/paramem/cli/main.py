"""The `paramem` command. Bad input prints one line, `FILE:LINE: reason`, and exits with code 2."""

from __future__ import annotations

import sys
import warnings
from functools import wraps
from pathlib import Path

import typer
from rich.console import Console

from paramem.cli.progress import StepLog, console, learn_with_progress, print_results
from paramem.config import PairConfig, RememberConfig, TrainConfig, option_default, option_help
from paramem.errors import InputError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="paramem: a parametric memory of a user's past conversations, in a LoRA adapter.",
)
errors = Console(stderr=True)
# transformers warns about its own deprecated internals on every PEFT load; users cannot act on it.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def _exits_cleanly(command):
    """Bad input -> one line on stderr and exit 2; Ctrl-C -> what was committed stays, exit 130."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except InputError as error:
            errors.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            errors.print("interrupted: every conversation learned so far is stored; run again to resume")
            raise typer.Exit(130) from None
        except OSError as error:  # a full disk, a folder that cannot be written: not bad input, still one line
            where = f"{error.filename}: " if error.filename else ""
            errors.print(f"error: {where}{error.strerror or error}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


HomeOption = typer.Option(None, "--home", help="memory home (default: $PARAMEM_HOME or ~/.local/share/paramem)")
ReadoutOption = typer.Option(
    None,
    "--readout",
    help="how yes/no questions are read from a model: recall "
    "(the memory recalls each conversation from its date; the question is matched to it) "
    "or log-odds (P(yes) vs P(no) of the answer token); default: recall for a sequential memory, "
    "log-odds for cartridges",
)
RetrieveOption = typer.Option(
    None,
    "--retrieve",
    help="the user's conversation file (any format remember reads): read the memory beside the turns "
    "the dense retriever finds in it for each question (the hybrid method; yes/no by log-odds)",
)
PassagesOption = typer.Option(5, "--k", help="turns retrieved per question (with --retrieve)")


def _setting(config: type, name: str, *flags: str, default=None):
    """A CLI option whose default and help are the config field's own, written once in config.py."""
    return typer.Option(
        option_default(config, name) if default is None else default, *flags, help=option_help(config, name)
    )


DtypeOption = _setting(RememberConfig, "dtype", "--dtype")
# The learning options `remember` and `remember-many` share.
BaseModelOption = typer.Option(
    None,
    "--base-model",
    help=option_help(RememberConfig, "base_model")
    + " (default: what the memory was started on, else the embedded default)",
)
TeacherOption = typer.Option("extractive", "--teacher", help="extractive, local or openai")
TeacherModelOption = typer.Option(None, "--teacher-model", help="model of the local/openai teacher")
TeacherUrlOption = typer.Option(None, "--teacher-url", help="OpenAI-compatible base URL")
TeacherKeyEnvOption = typer.Option(
    "OPENAI_API_KEY",
    "--teacher-key-env",
    help="environment variable holding the openai teacher's API key (a key is never "
    "given as a flag: flags show in `ps`)",
)
EpochsOption = _setting(TrainConfig, "epochs", "--epochs")
LearningRateOption = typer.Option(
    str(option_default(TrainConfig, "learning_rate")),
    "--lr",
    help="learning rate; several, comma-separated (2e-4,5e-4,1e-3): " + option_help(TrainConfig, "learning_rates"),
)
LambdaOption = _setting(TrainConfig, "qa_weight", "--lambda")
ReplayOption = _setting(TrainConfig, "replay_share", "--replay")
ReplayedCuesOption = _setting(TrainConfig, "replayed_cues", "--replayed-cues")
DistillQueriesOption = _setting(TrainConfig, "distill_queries", "--distill-queries")
SelfStudyQueriesOption = _setting(TrainConfig, "self_study_queries", "--self-study-queries")
DistillChecksOption = _setting(TrainConfig, "distill_checks", "--distill-checks")
DistillHiddenWeightOption = _setting(TrainConfig, "distill_hidden_weight", "--distill-hidden-weight")
NegativeRatioOption = _setting(PairConfig, "negative_ratio", "--negative-ratio")
ObjectiveOption = _setting(TrainConfig, "objective", "--objective")
FormOption = _setting(TrainConfig, "form", "--form")
KeepConversationsOption = _setting(RememberConfig, "keep_conversations", "--keep-conversations")
RegenerateNotesOption = _setting(RememberConfig, "regenerate_notes", "--regenerate-notes")
NotesCacheOption = _setting(RememberConfig, "notes_cache", "--notes-cache/--no-notes-cache")


def _teacher(kind: str, model: str | None, url: str | None, key_env: str):
    """The chosen teacher; a bad choice is bad input (InputError)."""
    from paramem.augment.teachers import make_teacher

    return make_teacher(kind, model, url, key_env)


def _dtype(text: str | None) -> str | None:
    from paramem.model.compute import dtype_name

    return None if text is None else dtype_name(text)


def _readout(text: str | None, memory=None) -> str | None:
    """A readout checked by name; None is the memory's own default (`readers.default_readout`)."""
    from paramem.read.readers import READOUTS, default_readout

    if text is None:
        return default_readout(memory) if memory is not None else None
    if text not in READOUTS:
        raise InputError(f"unknown readout {text!r} (available: {', '.join(READOUTS)})")
    return text


def _comma_list(text: str) -> list[str]:
    """The non-empty items of a comma-separated option, stripped."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _methods(text: str) -> list[str]:
    """A comma-separated list of evaluation methods, each one known."""
    from paramem.evaluate.run import METHODS

    chosen = _comma_list(text)
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        raise InputError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; available: {', '.join(METHODS)}")
    return chosen


def _learning_rates(text: str) -> list[float]:
    """Parsed here; checked (above 0) by TrainConfig, like every other option."""
    try:
        rates = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        rates = []
    if not rates:
        raise InputError(f"--lr {text!r}: give one or more numbers, comma-separated")
    return rates


def _train_config(
    epochs: int,
    lr: str,
    qa_weight: float,
    replay: float,
    replayed_cues: int,
    negative_ratio: float,
    objective: str,
    form: str,
    distill_queries: int,
    distill_checks: int,
    distill_hidden_weight: float,
) -> TrainConfig:
    """The learning options `remember` and `remember-many` share, as a TrainConfig."""
    rates = _learning_rates(lr)
    return TrainConfig(
        epochs=epochs,
        learning_rate=rates[0],
        learning_rates=rates if len(rates) > 1 else None,
        qa_weight=qa_weight,
        replay_share=replay,
        replayed_cues=replayed_cues,
        objective=objective,
        form=form,
        distill_queries=distill_queries,
        distill_checks=distill_checks,
        distill_hidden_weight=distill_hidden_weight,
        pairs=PairConfig(negative_ratio=negative_ratio),
    )


@app.command("remember")
@_exits_cleanly
def remember_command(
    file: Path = typer.Argument(..., help="conversation file (JSONL, ShareGPT, ChatGPT export, LoCoMo, MSC, MaLP)"),
    user: str = typer.Option(..., "--user", "-u", help="whose memory to add to"),
    format: str | None = typer.Option(None, "--format", help="file format (default: detected)"),
    base_model: str | None = BaseModelOption,
    teacher: str = TeacherOption,
    teacher_model: str | None = TeacherModelOption,
    teacher_url: str | None = TeacherUrlOption,
    teacher_key_env: str = TeacherKeyEnvOption,
    epochs: int = EpochsOption,
    lr: str = LearningRateOption,
    qa_weight: float = LambdaOption,
    replay: float = ReplayOption,
    replayed_cues: int = ReplayedCuesOption,
    negative_ratio: float = NegativeRatioOption,
    objective: str = ObjectiveOption,
    form: str = FormOption,
    distill_queries: int = DistillQueriesOption,
    distill_checks: int = DistillChecksOption,
    distill_hidden_weight: float = DistillHiddenWeightOption,
    keep_conversations: bool = KeepConversationsOption,
    regenerate_notes: bool = RegenerateNotesOption,
    notes_cache: bool = NotesCacheOption,
    dtype: str | None = DtypeOption,
    home: Path | None = HomeOption,
):
    """Learn conversations into USER's memory (skips the ones already learned)."""
    from paramem.data.conversations import load_conversations
    from paramem.lifecycle.remember import RememberConfig
    from paramem.model.loading import DEFAULT_MODEL
    from paramem.store.user import UserMemory

    conversations = load_conversations(file, format)  # validated before anything is touched
    stored_model = UserMemory(user, home).settings().get("base_model")
    config = RememberConfig(
        base_model=base_model or stored_model or DEFAULT_MODEL,
        keep_conversations=keep_conversations,
        regenerate_notes=regenerate_notes,
        notes_cache=notes_cache,
        dtype=_dtype(dtype),
        train=_train_config(
            epochs,
            lr,
            qa_weight,
            replay,
            replayed_cues,
            negative_ratio,
            objective,
            form,
            distill_queries,
            distill_checks,
            distill_hidden_weight,
        ),
    )
    learned = learn_with_progress(
        user, conversations, _teacher(teacher, teacher_model, teacher_url, teacher_key_env), config, home
    )
    skipped = len(conversations) - len(learned)
    console.print(
        f"learned {len(learned)} conversation(s) for {user!r}"
        + (f", skipped {skipped} already learned" if skipped else "")
    )
    for record in learned:
        accuracy = "-" if record.heldout_accuracy is None else f"{record.heldout_accuracy:.2f}"
        console.print(
            f"  {record.id}: {record.qa_pairs} pairs, {record.epochs} epochs at lr {record.learning_rate:g},"
            f" loss {record.final_loss:.3f}, held-out {accuracy}, {record.seconds:.0f}s"
        )


@app.command("remember-many")
@_exits_cleanly
def remember_many_command(
    source: Path = typer.Argument(
        ...,
        help="a folder of conversation files (one user each, named after the file) "
        'or a JSONL manifest of {"user", "file", "format"}',
    ),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address (default: a local Ray)"),
    cpus_per_user: int = typer.Option(1, "--cpus-per-user", help="CPUs (and torch threads) per user's task"),
    base_model: str | None = BaseModelOption,
    teacher: str = TeacherOption,
    teacher_model: str | None = TeacherModelOption,
    teacher_url: str | None = TeacherUrlOption,
    teacher_key_env: str = TeacherKeyEnvOption,
    epochs: int = EpochsOption,
    lr: str = LearningRateOption,
    qa_weight: float = LambdaOption,
    replay: float = ReplayOption,
    replayed_cues: int = ReplayedCuesOption,
    negative_ratio: float = NegativeRatioOption,
    objective: str = ObjectiveOption,
    form: str = FormOption,
    distill_queries: int = DistillQueriesOption,
    distill_checks: int = DistillChecksOption,
    distill_hidden_weight: float = DistillHiddenWeightOption,
    dtype: str | None = DtypeOption,
    home: Path | None = typer.Option(
        None, "--home", help="the shared store (default: $PARAMEM_HOME); on a cluster, a path every node sees"
    ),
):
    """Learn many users' conversations, one Ray task per user, into one shared store."""
    from rich.table import Table

    from paramem.lifecycle.distributed import TeacherSpec, read_jobs, remember_many
    from paramem.lifecycle.remember import RememberConfig
    from paramem.model.loading import DEFAULT_MODEL
    from paramem.store.user import paramem_home

    if cpus_per_user < 1:
        raise InputError(f"--cpus-per-user must be at least 1, not {cpus_per_user}")
    jobs = read_jobs(source)
    _teacher(teacher, teacher_model, teacher_url, teacher_key_env)  # fail here, not once per user
    config = RememberConfig(
        base_model=base_model or DEFAULT_MODEL,
        dtype=_dtype(dtype),
        train=_train_config(
            epochs,
            lr,
            qa_weight,
            replay,
            replayed_cues,
            negative_ratio,
            objective,
            form,
            distill_queries,
            distill_checks,
            distill_hidden_weight,
        ),
    )
    with StepLog("users") as log:
        log.status(f"{len(jobs)} to learn", total=len(jobs))

        def on_done(outcome) -> None:
            log.advance(f"{outcome.user}: {'done' if outcome.ok else 'FAILED'}")

        outcomes = remember_many(
            jobs,
            TeacherSpec(teacher, teacher_model, teacher_url, teacher_key_env),
            config,
            home or paramem_home(),
            address,
            cpus_per_user,
            on_done,
        )
    table = Table(title=f"{len(jobs)} users")
    for column in ("user", "status", "learned", "skipped", "seconds", "error"):
        table.add_column(column)
    for o in outcomes:
        table.add_row(
            o.user, "ok" if o.ok else "failed", str(o.learned), str(o.skipped), f"{o.seconds:.0f}", o.error or ""
        )
    console.print(table)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        for o in failed:
            errors.print(f"error: {o.user}: {o.error}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2)


def _retrieving(file: Path | None, k: int):
    """The conversations to retrieve from (loaded and checked before any model is), and how."""
    from paramem.data.conversations import load_conversations
    from paramem.read.retrieval import RetrievalConfig

    retrieval = RetrievalConfig(k=k)  # checks k
    return (load_conversations(file) if file is not None else None), retrieval


@app.command("ask")
@_exits_cleanly
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
    from paramem.model.prompts import SYSTEM_PROMPT
    from paramem.read.answer import generate, is_yes_no_question, load_memory
    from paramem.read.readers import DECISION_RULES, ask
    from paramem.read.retrieval import hybrid_retriever, retrieval_prompt

    if not question.strip():
        raise InputError("the question is empty")
    _readout(readout)
    if decision is not None and decision not in DECISION_RULES:
        raise InputError(f"unknown decision rule {decision!r} ({', '.join(DECISION_RULES)})")
    if retrieve is not None and readout not in (None, "log-odds"):
        raise InputError("--retrieve reads the memory by log-odds; drop --readout recall")
    conversations, retrieval = _retrieving(retrieve, k)
    model, tokenizer, memory = load_memory(user, home, _dtype(dtype))
    if not is_yes_no_question(question):
        system = SYSTEM_PROMPT
        if conversations is not None:
            found = hybrid_retriever(conversations, retrieval).search([question], retrieval.k)[0]
            system = retrieval_prompt(found)
        console.print(generate(model, tokenizer, [{"role": "user", "content": question}], system=system))
        return
    if conversations is None:
        readout = _readout(readout, memory)
    [answer] = ask(model, tokenizer, memory, [question], readout, decision, conversations, retrieval)
    if readout == "recall":
        detail = f"similarity {answer.margin:+.2f} from the threshold; closest recalled: {answer.evidence!r}"
    elif conversations is not None:
        detail = f"log-odds {answer.margin:+.2f} from the threshold; best retrieved turn: {answer.evidence!r}"
    else:
        detail = f"log-odds {answer.margin:+.2f} from the threshold"
    console.print(f"{answer.answer.capitalize()}  ({detail})", markup=False, highlight=False)


@app.command("chat")
@_exits_cleanly
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
    from paramem.read.answer import generate, load_memory
    from paramem.read.retrieval import hybrid_retriever, retrieval_prompt

    if max_new_tokens < 1:
        raise InputError(f"--max-new-tokens must be at least 1, not {max_new_tokens}")
    if memory not in ("plum", "milp"):
        raise InputError(f"--memory must be plum or milp, not {memory!r}")
    conversations, retrieval = _retrieving(retrieve, k)
    if memory == "milp":
        from paramem.memory.milp.model import REPLY_SYSTEM
        from paramem.memory.milp.search import load_milp_memory

        model, tokenizer, _ = load_milp_memory(user, home, _dtype(dtype))
        system = REPLY_SYSTEM  # the prompt its replies were tuned under
    else:
        from paramem.model.prompts import SYSTEM_PROMPT

        model, tokenizer, _ = load_memory(user, home, _dtype(dtype))
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


def _ints(text: str, name: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{name} must be whole numbers separated by commas, not {text!r}") from None


@app.command("search")
@_exits_cleanly
def search_command(
    file: Path = typer.Argument(..., help="USER's conversations (any supported format); at least 2"),
    user: str = typer.Option(..., "--user", "-u", help="whose MiLP memory to search for and store"),
    format: str | None = typer.Option(None, "--format", help="file format (default: detected)"),
    base_model: str | None = BaseModelOption,
    initial: int = typer.Option(8, "--initial", help="random configurations after the base model (paper: 100)"),
    bo: int = typer.Option(8, "--bo", help="configurations proposed by Bayesian optimisation after those"),
    factors: str = typer.Option("loras,layers,rank", "--factors", help="what is searched (the rest fixed)"),
    ranks: str = typer.Option("8,16,32,64,96", "--ranks", help="the ranks r to choose from"),
    layers: str | None = typer.Option(None, "--layers", help="the layers a mask may choose (default: all)"),
    block_size: int = typer.Option(4, "--block-size", help="consecutive layers switched on and off together"),
    max_loras: int | None = typer.Option(None, "--max-loras", help="the largest n (default: the model's depth)"),
    replies: int = typer.Option(3, "--replies", help="replies generated per trial for ROUGE-L"),
    restart: bool = typer.Option(False, "--restart", help="forget the saved trials and search again"),
    seed: int = typer.Option(0, "--seed"),
    dtype: str | None = DtypeOption,
    home: Path | None = HomeOption,
):
    """MiLP: search the LoRA configuration for USER by Bayesian optimisation, then learn and store it."""
    from rich.progress import Progress

    from paramem.config import MiLPTrainConfig
    from paramem.data.conversations import load_conversations
    from paramem.memory.milp.search import SearchConfig, search_user, trials_to_run
    from paramem.model.loading import DEFAULT_MODEL
    from paramem.store.user import UserMemory

    conversations = load_conversations(file, format)
    if replies < 1:
        raise InputError(f"--replies must be at least 1, not {replies}")
    config = SearchConfig(initial_trials=initial, bo_trials=bo, seed=seed)
    space_options = {
        "factors": _comma_list(factors),
        "ranks": _ints(ranks, "--ranks"),
        "candidate_layers": _ints(layers, "--layers") if layers is not None else None,
        "block_size": block_size,
        "max_loras": max_loras,
    }
    stored_model = UserMemory(user, home).settings().get("base_model")
    with Progress(console=console) as progress:
        task = progress.add_task("trials", total=trials_to_run(config))

        def on_trial(trial):
            progress.console.print(
                f"trial {trial.number} ({trial.kind}): n={trial.config['loras']} r={trial.config['rank']} "
                f"loss {trial.loss:.3f} ROUGE-L {trial.rouge_l:.3f} hypervolume {trial.hypervolume:.4f} "
                f"({trial.seconds:.0f}s)"
            )
            progress.update(task, completed=trial.number + 1)

        trials, record = search_user(
            user,
            conversations,
            base_model or stored_model or DEFAULT_MODEL,
            space_options,
            MiLPTrainConfig(seed=seed),
            config,
            replies,
            home,
            _dtype(dtype),
            restart,
            on_trial,
        )
    console.print(f"{len(trials)} trials; chosen: {record['described']}")
    console.print(f"stored in {UserMemory(user, home).milp_root} (chat with it: paramem chat --memory milp)")


@app.command("forget")
@_exits_cleanly
def forget_command(
    user: str = typer.Option(..., "--user", "-u"),
    conversation: str = typer.Option(..., "--conversation", "-c", help="the id of the conversation to forget"),
    home: Path | None = HomeOption,
):
    """Take one conversation out of USER's memory: a cartridge is dropped (exact); a sequential
    adapter learns the other conversations again (one learning run each)."""
    from paramem.lifecycle.forget import forget

    with StepLog("forget") as log:
        result = forget(user, conversation, home, lambda i, n, cid: log.status(f"learning {cid} again ({i}/{n})", n))
    exact = "exact" if result.exact else f"not exact: {result.note}"
    console.print(
        f"forgot {result.conversation_id!r} ({result.how}, {exact}); {result.relearned} conversations learned "
        f"again in {result.seconds:.0f} s",
        markup=False,
        highlight=False,
    )


@app.command("users")
@_exits_cleanly
def users_command(home: Path | None = HomeOption):
    """List the users with a memory, with how many conversations each holds."""
    from paramem.store.user import UserMemory, users

    for name in users(home):
        memory = UserMemory(name, home)
        line = f"{name}  {len(memory.learned())} conversations"
        if memory.exists:
            line += f"  {memory.settings().get('form', 'sequential')}"
        milp = memory.milp_record()
        if milp is not None:
            line += f"  milp: {milp.get('described', '')} ({len(milp.get('conversations', []))} conversations)"
        console.print(line, markup=False, highlight=False)


@app.command("delete")
@_exits_cleanly
def delete_command(
    user: str = typer.Option(..., "--user", "-u"),
    yes: bool = typer.Option(False, "--yes", help="do not ask for confirmation"),
    home: Path | None = HomeOption,
):
    """Remove every file of USER, their conversations' teacher-notes cache entries included."""
    from paramem.augment.teachers import NotesCache
    from paramem.model.loading import cache_home
    from paramem.store.user import UserMemory

    memory = UserMemory(user, home).require()
    if not yes and not typer.confirm(f"delete user {user!r} and everything learned for them?"):
        raise typer.Exit(1)
    with memory:
        cache = NotesCache(cache_home() / "teacher")
        for record in memory.learned():
            cache.remove(record.content_hash)
        memory.delete()
    console.print(f"deleted user {user!r}", markup=False, highlight=False)


@app.command("export")
@_exits_cleanly
def export_command(
    user: str = typer.Option(..., "--user", "-u"),
    out: Path = typer.Option(..., "--out", help="an empty or new folder"),
    format: str = typer.Option("peft", "--format", help="peft (the adapter folder) or merged (a full model)"),
    dtype: str | None = DtypeOption,
    home: Path | None = HomeOption,
):
    """Write USER's memory as a PEFT adapter folder or as a full model with the adapter merged."""
    from paramem.lifecycle.export import export

    folder = export(user, out, format, home, _dtype(dtype))
    console.print(f"wrote {folder}", markup=False, highlight=False)


@app.command("token")
@_exits_cleanly
def token_command(user: str = typer.Option(..., "--user", "-u"), home: Path | None = HomeOption):
    """Make USER's bearer token for `paramem serve` (replacing any earlier one) and print it once; the
    server keeps only its hash."""
    from paramem.store.user import UserMemory

    memory = UserMemory(user, home)  # a new user may get a token and upload their first conversations
    with memory:
        token = memory.new_token()
    console.print(token, markup=False, highlight=False)


@app.command("serve")
@_exits_cleanly
def serve_command(
    base_model: str | None = typer.Option(None, "--base-model", help="default: the embedded default model"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    cache: int = typer.Option(8, "--cache", help="memories kept loaded (least recently used goes first)"),
    max_tokens: int = typer.Option(256, "--max-tokens", help="the longest reply a request may ask for"),
    batch: int = typer.Option(8, "--batch", help="replies decoded together, several users' memories in one pass"),
    job_workers: int = typer.Option(1, "--job-workers", help="learning and forgetting jobs run at once"),
    keep_conversations: bool = typer.Option(
        False, "--keep-conversations", help="keep uploaded conversations' text in the manifest"
    ),
    dtype: str | None = DtypeOption,
    home: Path | None = HomeOption,
):
    """An OpenAI-compatible API: model paramem:<user> answers from that user's memory."""
    import socket

    import uvicorn

    from paramem.model.loading import DEFAULT_MODEL
    from paramem.serve import MemoryServer, ServeConfig, create_app

    config = ServeConfig(
        base_model or DEFAULT_MODEL,
        home,
        cache,
        max_tokens,
        _dtype(dtype),
        keep_conversations=keep_conversations,
        max_batch=batch,
        job_workers=job_workers,
    )
    # Every option is checked, and the port taken, before the model loads or any job resumes.
    listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as error:
        raise InputError(f"cannot listen on {host}:{port} ({error.strerror or error})") from None
    server = MemoryServer(config)
    for job in server.jobs.resume():  # jobs a stopped server left unended
        console.print(f"resuming job {job}", markup=False, highlight=False)
    # On SIGTERM, open streams get 5 s to end; then replies are cancelled and jobs left to resume.
    settings = uvicorn.Config(create_app(server), timeout_graceful_shutdown=5, log_level="info")
    uvicorn.Server(settings).run(sockets=[listening])


@app.command("eval")
@_exits_cleanly
def eval_command(
    user: str = typer.Option(..., "--user", "-u"),
    probes: Path = typer.Option(..., "--probes", help="yes/no probe file (JSONL)"),
    methods: str = typer.Option("memory,none", help="comma-separated: none, memory, context, bm25, dense, hybrid"),
    conversations: Path | None = typer.Option(
        None, "--conversations", help="the user's conversation file (context, bm25, dense and hybrid read it)"
    ),
    k: int = typer.Option(5, "--k", help="passages retrieved per question (bm25, dense, hybrid)"),
    unit: str = typer.Option("turn", "--unit", help="what retrieval searches: turn or session"),
    readout: str = ReadoutOption,
    json_out: Path | None = typer.Option(None, "--json", help="write results here"),
    dtype: str | None = DtypeOption,
    home: Path | None = HomeOption,
):
    """Score USER's memory, and other methods on the same base model, on yes/no probes."""
    from paramem.augment.pairs import heldout_pairs
    from paramem.data.conversations import load_conversations
    from paramem.evaluate.probes import load_probes
    from paramem.evaluate.run import TEXT_METHODS, RetrievalConfig, evaluate_yes_no, run_meta, write_json
    from paramem.model.loading import dtype_of
    from paramem.read.answer import load_memory
    from paramem.read.recall import recall_cues
    from paramem.store.user import UserMemory

    chosen, readout = _methods(methods), _readout(readout)
    needs_text = [m for m in chosen if m in TEXT_METHODS]
    if needs_text and conversations is None:
        raise InputError(f"the {', '.join(needs_text)} method(s) need --conversations FILE")
    retrieval = RetrievalConfig(unit, k)  # checks both
    texts = load_conversations(conversations) if conversations else None
    memory = UserMemory(user, home).require()
    learned = memory.learned()
    loaded = load_probes(probes, {c.id for c in learned})
    model, tokenizer, memory = load_memory(user, home, _dtype(dtype))
    readout = _readout(readout, memory)
    notes = memory.notes()
    try:
        results = evaluate_yes_no(
            model,
            tokenizer,
            loaded,
            chosen,
            texts,
            heldout_pairs(notes),
            retrieval,
            readout,
            recall_cues(notes),
        )
    except ValueError as error:  # a method the readout cannot read
        raise InputError(str(error)) from error
    print_results(f"{user}: {len(loaded)} probes, {readout} readout", results)
    if json_out:
        settings = memory.settings()
        meta = run_meta(sys.argv, settings["base_model"], {"probes": str(probes), "user": user}, dtype_of(model))
        write_json(results, json_out, meta)
        console.print(f"wrote {json_out}")


@app.command("locomo")
@_exits_cleanly
def locomo_command(
    out: Path = typer.Option(..., "--out", help="output folder (results.json, report.md, plots); rerun to resume"),
    data: Path = typer.Option(Path("../shared/data"), "--data", help="folder holding locomo/, mmlu/ and arc/"),
    base_model: str | None = typer.Option(None, "--base-model", help="default: the embedded default model"),
    teacher: str = typer.Option("extractive", "--teacher", help="extractive or local (openai needs --teacher-url)"),
    sample: int = typer.Option(0, help="LoCoMo sample (pair of speakers), 0-7"),
    sessions: int = typer.Option(6, help="its first N sessions in date order (0: all)"),
    probes_per_session: int = typer.Option(8, help="yes/no probes per session, half yes"),
    methods: str = typer.Option(
        ",".join(("none", "memory", "context", "bm25", "dense", "hybrid")), help="yes/no methods, comma-separated"
    ),
    open_questions: int = typer.Option(20, help="open questions answered per method (0: none; --full: all)"),
    k: int = typer.Option(5, "--k", help="passages retrieved per question"),
    unit: str = typer.Option("turn", "--unit", help="retrieval unit: turn or session"),
    epochs: int = typer.Option(3, help="most epochs per session (ablation: 1, 3, 5, 10, 15)"),
    qa_weight: float = typer.Option(10.0, "--lambda", help="question/answer loss weight (ablation: 1, 5, 10, 20)"),
    negative_ratio: float = typer.Option(1.0, help="negatives per positive (ablation: 0.75, 1.25)"),
    closed_questions_only: bool = typer.Option(
        False, "--closed-only", help="train on closed questions only (ablation)"
    ),
    statements: bool = typer.Option(
        True, "--statements/--no-statements", help="train on statements about each session too (ablation)"
    ),
    retention: bool = typer.Option(True, "--retention/--no-retention", help="MMLU and ARC with and without memory"),
    full: bool = typer.Option(False, "--full", help="all sessions, all open questions, full MMLU and ARC"),
    objective: str = ObjectiveOption,
    form: str = FormOption,
    distill_queries: int = DistillQueriesOption,
    self_study_queries: int = SelfStudyQueriesOption,
    distill_checks: int = DistillChecksOption,
    distill_hidden_weight: float = DistillHiddenWeightOption,
    curve_methods: str = typer.Option(
        "", "--curve-methods", help="scale curve: context, bm25, dense scored on the sessions so far, comma-separated"
    ),
    curve_every: int = typer.Option(5, "--curve-every", help="scale curve: after every N sessions (and the last)"),
):
    """PLUM's LoCoMo experiment: learn sessions in order, then every method side by side, with a report."""
    from paramem.evaluate.experiment import ExperimentConfig, closed_only, run_experiment
    from paramem.evaluate.run import MethodResult, RetrievalConfig
    from paramem.model.loading import DEFAULT_MODEL

    locomo = data / "locomo" / "locomo8.json"
    if not locomo.is_file():
        raise InputError("LoCoMo not found (give --data, the folder holding locomo/locomo8.json)", path=locomo)
    chosen = _methods(methods)
    config = ExperimentConfig(
        locomo=str(locomo.resolve()),
        teacher=teacher,
        sample=sample,
        sessions=None if full or sessions == 0 else sessions,
        probes_per_session=probes_per_session,
        methods=chosen,
        open_methods=chosen if open_questions or full else [],
        open_questions=None if full else open_questions,
        retrieval=RetrievalConfig(unit, k),
        curve_methods=_comma_list(curve_methods),
        curve_every=curve_every,
        remember=RememberConfig(
            base_model=base_model or DEFAULT_MODEL,
            train=TrainConfig(
                epochs=epochs,
                qa_weight=qa_weight,
                objective=objective,
                form=form,
                distill_queries=distill_queries,
                self_study_queries=self_study_queries,
                distill_checks=distill_checks,
                distill_hidden_weight=distill_hidden_weight,
                pairs=PairConfig(negative_ratio=negative_ratio, statements=statements),
            ),
        ),
    )
    if closed_questions_only:
        config.remember = closed_only(config.remember)
    if retention:
        config.mmlu, config.arc = str((data / "mmlu").resolve()), str((data / "arc" / "ARC-Challenge").resolve())
        if full:
            config.mmlu_subjects = config.mmlu_per_subject = config.arc_items = None
    with StepLog("LoCoMo experiment") as log:
        try:
            results = run_experiment(config, out, log.status)
        except ValueError as error:
            raise InputError(str(error)) from None
    print_results(
        f"LoCoMo sample {config.sample}: {results['benchmark']['probes']} yes/no probes",
        [MethodResult.from_dict(m) for m in results["methods"].values()],
    )
    console.print(f"report: {out / 'report.md'}")


@app.command("replies")
@_exits_cleanly
def replies_command(
    out: Path = typer.Option(..., "--out", help="results folder (rerun with the same folder to resume)"),
    dataset: str = typer.Option("msc", "--dataset", help="msc or malp"),
    data: Path | None = typer.Option(None, "--data", help="datasets root (default: $PARAMEM_DATA or ../shared/data)"),
    episodes: int = typer.Option(20, "--episodes", help="report episodes compared"),
    dev_users: int = typer.Option(2, "--dev-users", help="development episodes each search trial learns"),
    replies: int = typer.Option(3, "--replies", help="replies scored per episode"),
    methods: str = typer.Option(
        "base,tplp,rag,uelp,milp", "--methods", help="of base,tplp,rag,uelp,plum,milp,milp-instruction,milp-memory"
    ),
    factor_sets: str = typer.Option(
        "loras,layers,rank",
        "--factor-sets",
        help="searched factor sets separated by ';' (the last is MiLP's; the others give the search-space "
        "ablation), or 'ablation' for the paper's seven",
    ),
    initial: int = typer.Option(8, "--initial", help="random trials of each search"),
    bo: int = typer.Option(8, "--bo", help="Bayesian-optimisation trials of each search"),
    judge_url: str | None = typer.Option(None, "--judge-url", help="OpenAI-compatible judge (default: local model)"),
    judge_model: str = typer.Option("default", "--judge-model"),
    teacher: str = typer.Option(
        "local", "--teacher", help="plum: the teacher of the history's notes (local, extractive)"
    ),
    base_model: str | None = typer.Option(None, "--base-model", help="default: the embedded default model"),
    dtype: str | None = DtypeOption,
):
    """MiLP's evaluation: personalised replies by MiLP, TpLP, RAG, UeLP and PLUM, on one base model."""
    import os

    from paramem.evaluate.personalised import FACTOR_SETS, RepliesConfig, run
    from paramem.memory.milp.search import SearchConfig
    from paramem.model.loading import DEFAULT_MODEL

    root = data or Path(os.environ.get("PARAMEM_DATA", Path.cwd().parent / "shared" / "data"))
    if not root.is_dir():
        raise InputError(f"no datasets at {root} (pass --data or set PARAMEM_DATA)")
    sets = list(FACTOR_SETS) if factor_sets == "ablation" else [f.strip() for f in factor_sets.split(";") if f.strip()]
    config = RepliesConfig(
        dataset=dataset,
        episodes=episodes,
        dev_users=dev_users,
        replies=replies,
        methods=_comma_list(methods),
        factor_sets=sets,
        search=SearchConfig(initial_trials=initial, bo_trials=bo),
        judge_url=judge_url,
        judge_model=judge_model,
        teacher=teacher,
    )
    with StepLog("replies") as log:
        results = run(config, root, out, base_model or DEFAULT_MODEL, _dtype(dtype), log)
    console.print(f"report: {out / 'report.md'}  ({results['seconds'] / 60:.0f} min)")
    console.print((out / "report.md").read_text(encoding="utf-8"), markup=False, highlight=False)


@app.command("demo")
@_exits_cleanly
def demo_command(
    base_model: str | None = typer.Option(None, "--base-model", help="default: the embedded default model"),
    regenerate_notes: bool = typer.Option(
        False, "--regenerate-notes", help="run the teacher again instead of using its shipped notes"
    ),
    teacher: str = typer.Option("local", "--teacher", help="teacher used with --regenerate-notes"),
    epochs: int = typer.Option(3, help="most epochs per conversation (3 keeps the demo near 10 minutes on 2 cores)"),
    home: Path | None = typer.Option(None, "--home", help="keep the demo memory here (default: a temp dir)"),
    json_out: Path | None = typer.Option(None, "--json", help="write results here"),
    dtype: str | None = DtypeOption,
):
    """Learn 8 short conversations written for paramem, then compare no memory with memory."""
    from paramem.cli.demo import run_demo

    run_demo(base_model, regenerate_notes, teacher, epochs, home, json_out, _dtype(dtype))
