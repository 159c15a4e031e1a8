"""The options the commands share, each declared once, and what turns their text into settings."""

from __future__ import annotations

import inspect
from functools import wraps

import typer

from paramem.config import PairConfig, RememberConfig, TrainConfig, option_default, option_help
from paramem.errors import InputError

HomeOption = typer.Option(None, "--home", help="memory home (default: $PARAMEM_HOME or ~/.local/share/paramem)")
ReadoutOption = typer.Option(
    None,
    "--readout",
    help="how yes/no questions are read from a model: recall "
    "(the memory recalls each conversation from its date; the question is matched to it) "
    "or log-odds (P(yes) vs P(no) of the answer token); default: recall for a sequential memory, "
    "log-odds for cartridges",
)
PassagesOption = typer.Option(None, "--k", help="stored turns read per question (default: the text side's, TEXT_K)")
MemoryAloneOption = typer.Option(
    False,
    "--memory-alone",
    help="read the memory alone, as if no text were stored (research: --readout and --decision apply)",
)


def config_option(config: type, name: str, *flags: str, default=None):
    """A CLI option whose default and help are the config field's own, written once in config.py."""
    return typer.Option(
        option_default(config, name) if default is None else default, *flags, help=option_help(config, name)
    )


DtypeOption = config_option(RememberConfig, "dtype", "--dtype")


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
EpochsOption = config_option(TrainConfig, "epochs", "--epochs")
LearningRateOption = typer.Option(
    str(option_default(TrainConfig, "learning_rate")),
    "--lr",
    help="learning rate; several, comma-separated (2e-4,5e-4,1e-3): " + option_help(TrainConfig, "learning_rates"),
)
LambdaOption = config_option(TrainConfig, "qa_weight", "--lambda")
ReplayOption = config_option(TrainConfig, "replay_share", "--replay")
ReplayedCuesOption = config_option(TrainConfig, "replayed_cues", "--replayed-cues")
DistillQueriesOption = config_option(TrainConfig, "distill_queries", "--distill-queries")
SelfStudyQueriesOption = config_option(TrainConfig, "self_study_queries", "--self-study-queries")
DistillChecksOption = config_option(TrainConfig, "distill_checks", "--distill-checks")
DistillHiddenWeightOption = config_option(TrainConfig, "distill_hidden_weight", "--distill-hidden-weight")
NegativeRatioOption = config_option(PairConfig, "negative_ratio", "--negative-ratio")
ObjectiveOption = config_option(TrainConfig, "objective", "--objective")
FormOption = config_option(TrainConfig, "form", "--form")
KeepTextOption = config_option(RememberConfig, "keep_text", "--keep-text")
RegenerateNotesOption = config_option(RememberConfig, "regenerate_notes", "--regenerate-notes")
NotesCacheOption = config_option(RememberConfig, "notes_cache", "--notes-cache/--no-notes-cache")


def chosen_teacher(kind: str, model: str | None, url: str | None, key_env: str):
    """The chosen teacher; a bad choice is bad input (InputError)."""
    from paramem.augment.teachers import make_teacher

    return make_teacher(kind, model, url, key_env)


def chosen_dtype(text: str | None) -> str | None:
    from paramem.config import dtype_name

    return None if text is None else dtype_name(text)


def chosen_readout(text: str | None, memory=None) -> str | None:
    """A readout checked by name; None is the memory's own default (`readers.default_readout`)."""
    from paramem.read.readers import READOUTS, default_readout

    if text is None:
        return default_readout(memory) if memory is not None else None
    if text not in READOUTS:
        raise InputError(f"unknown readout {text!r} (available: {', '.join(READOUTS)})")
    return text


def comma_list(text: str) -> list[str]:
    """The non-empty items of a comma-separated option, stripped."""
    return [item.strip() for item in text.split(",") if item.strip()]


def method_list(text: str) -> list[str]:
    """A comma-separated list of evaluation methods, each one known."""
    from paramem.evaluate.run import METHODS

    chosen = comma_list(text)
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        raise InputError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; available: {', '.join(METHODS)}")
    return chosen


def learning_rate_list(text: str) -> list[float]:
    """Parsed here; checked (above 0) by TrainConfig, like every other option."""
    try:
        rates = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        rates = []
    if not rates:
        raise InputError(f"--lr {text!r}: give one or more numbers, comma-separated")
    return rates


# The options that shape how a conversation is learned, with their types: `remember` and
# `remember-many` take them all through `learning_options`, so each is declared here only.
LEARNING_OPTIONS = {
    "epochs": (int, EpochsOption),
    "lr": (str, LearningRateOption),
    "qa_weight": (float, LambdaOption),
    "replay": (float, ReplayOption),
    "replayed_cues": (int, ReplayedCuesOption),
    "negative_ratio": (float, NegativeRatioOption),
    "objective": (str, ObjectiveOption),
    "form": (str, FormOption),
    "distill_queries": (int, DistillQueriesOption),
    "distill_checks": (int, DistillChecksOption),
    "distill_hidden_weight": (float, DistillHiddenWeightOption),
}


def train_config(**chosen) -> TrainConfig:
    """The options of LEARNING_OPTIONS, by name, as a TrainConfig."""
    rates = learning_rate_list(chosen.pop("lr"))
    return TrainConfig(
        learning_rate=rates[0],
        learning_rates=rates if len(rates) > 1 else None,
        replay_share=chosen.pop("replay"),
        pairs=PairConfig(negative_ratio=chosen.pop("negative_ratio")),
        **chosen,  # the rest are TrainConfig's own names
    )


def learning_options(command):
    """Give `command` every option of LEARNING_OPTIONS (typer reads them from its signature), and
    call it with `train`, the TrainConfig they make, in their place."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "train"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
        for name, (kind, option) in LEARNING_OPTIONS.items()
    ]

    @wraps(command)
    def with_train(*args, **kwargs):
        chosen = {name: kwargs.pop(name) for name in LEARNING_OPTIONS}
        return command(*args, train=train_config(**chosen), **kwargs)

    with_train.__signature__ = signature.replace(parameters=own + added)
    with_train.__annotations__ = {**command.__annotations__, **{n: k for n, (k, _) in LEARNING_OPTIONS.items()}}
    return with_train
