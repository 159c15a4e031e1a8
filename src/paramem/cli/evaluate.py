"""paramem eval, locomo, replies and demo: every method side by side on the same probes and data."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from paramem.cli.app import app, exits_cleanly
from paramem.cli.options import (
    DistillChecksOption,
    DistillHiddenWeightOption,
    DistillQueriesOption,
    DtypeOption,
    FormOption,
    HomeOption,
    ObjectiveOption,
    ReadoutOption,
    SelfStudyQueriesOption,
    chosen_dtype,
    chosen_readout,
    comma_list,
    method_list,
)
from paramem.cli.progress import StepLog, console, print_results
from paramem.config import PairConfig, RememberConfig, TrainConfig
from paramem.errors import InputError


@app.command("eval", rich_help_panel="Evaluate")
@exits_cleanly
def eval_command(
    user: str = typer.Option(..., "--user", "-u"),
    probes: Path = typer.Option(..., "--probes", help="yes/no probe file (JSONL)"),
    methods: str = typer.Option(
        "memory,none",
        help="comma-separated: none, memory, context, bm25, dense, fused, hybrid, notes (retrieval over the "
        "teacher's facts, mem0-style), text (the text side as shipped), paramem (the answer path as shipped)",
    ),
    conversations: Path | None = typer.Option(
        None,
        "--conversations",
        help="the user's conversation file, for the methods that read text (default: the text USER's store keeps)",
    ),
    k: int = typer.Option(5, "--k", help="passages retrieved per question (bm25, dense, fused, hybrid)"),
    unit: str = typer.Option("turn", "--unit", help="what retrieval searches: turn or session"),
    readout: str = ReadoutOption,
    json_out: Path | None = typer.Option(None, "--json", help="write results here"),
    dtype: str | None = DtypeOption,
    home: Path | None = HomeOption,
):
    """Score USER's memory, and other methods on the same base model, on yes/no probes."""
    from paramem.augment.pairs import heldout_pairs
    from paramem.data.formats import load_conversations
    from paramem.evaluate.probes import load_probes
    from paramem.evaluate.run import TEXT_METHODS, evaluate_yes_no, run_meta, write_json
    from paramem.model.loading import dtype_of
    from paramem.read.loading import load_memory
    from paramem.read.recall import recall_cues
    from paramem.read.retrieval import RetrievalConfig
    from paramem.store.user import UserMemory

    chosen, readout = method_list(methods), chosen_readout(readout)
    retrieval = RetrievalConfig(unit, k)  # checks both
    texts = load_conversations(conversations) if conversations else None
    memory = UserMemory(user, home).require()
    texts = texts or memory.texts.conversations() or None
    needs_text = [m for m in chosen if m in TEXT_METHODS]
    if needs_text and texts is None:
        raise InputError(f"the {', '.join(needs_text)} method(s) need --conversations FILE (no text is stored)")
    learned = memory.learned()
    loaded = load_probes(probes, {c.id for c in learned})
    model, tokenizer, memory = load_memory(user, home, chosen_dtype(dtype))
    readout = chosen_readout(readout, memory)
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
            form=memory.form,
            notes=notes,
        )
    except ValueError as error:  # a method the readout cannot read
        raise InputError(str(error)) from error
    print_results(f"{user}: {len(loaded)} probes, {readout} readout", results)
    if json_out:
        settings = memory.settings()
        meta = run_meta(sys.argv, settings["base_model"], {"probes": str(probes), "user": user}, dtype_of(model))
        write_json(results, json_out, meta)
        console.print(f"wrote {json_out}")


@app.command("locomo", rich_help_panel="Evaluate")
@exits_cleanly
def locomo_command(
    out: Path = typer.Option(..., "--out", help="output folder (results.json, report.md, plots); rerun to resume"),
    data: Path = typer.Option(Path("../shared/data"), "--data", help="folder holding locomo/, mmlu/ and arc/"),
    base_model: str | None = typer.Option(None, "--base-model", help="default: the embedded default model"),
    teacher: str = typer.Option("extractive", "--teacher", help="extractive or local (openai needs --teacher-url)"),
    sample: int = typer.Option(0, help="LoCoMo sample (pair of speakers), 0-7"),
    sessions: int = typer.Option(6, help="its first N sessions in date order (0: all)"),
    probes_per_session: int = typer.Option(8, help="yes/no probes per session, half yes"),
    methods: str = typer.Option(
        ",".join(("none", "memory", "context", "bm25", "dense", "hybrid", "text", "paramem")),
        help="yes/no methods, comma-separated",
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
    from paramem.config import DEFAULT_MODEL
    from paramem.evaluate.experiment import closed_only, run_experiment
    from paramem.evaluate.experiment_config import ExperimentConfig
    from paramem.evaluate.run import MethodResult
    from paramem.read.retrieval import RetrievalConfig

    locomo = data / "locomo" / "locomo8.json"
    if not locomo.is_file():
        raise InputError("LoCoMo not found (give --data, the folder holding locomo/locomo8.json)", path=locomo)
    chosen = method_list(methods)
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
        curve_methods=comma_list(curve_methods),
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


@app.command("replies", rich_help_panel="Evaluate")
@exits_cleanly
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

    from paramem.config import DEFAULT_MODEL
    from paramem.evaluate.personalised import FACTOR_SETS, RepliesConfig, run
    from paramem.memory.milp.search import SearchConfig

    root = data or Path(os.environ.get("PARAMEM_DATA", Path.cwd().parent / "shared" / "data"))
    if not root.is_dir():
        raise InputError(f"no datasets at {root} (pass --data or set PARAMEM_DATA)")
    sets = list(FACTOR_SETS) if factor_sets == "ablation" else [f.strip() for f in factor_sets.split(";") if f.strip()]
    config = RepliesConfig(
        dataset=dataset,
        episodes=episodes,
        dev_users=dev_users,
        replies=replies,
        methods=comma_list(methods),
        factor_sets=sets,
        search=SearchConfig(initial_trials=initial, bo_trials=bo),
        judge_url=judge_url,
        judge_model=judge_model,
        teacher=teacher,
    )
    with StepLog("replies") as log:
        results = run(config, root, out, base_model or DEFAULT_MODEL, chosen_dtype(dtype), log)
    console.print(f"report: {out / 'report.md'}  ({results['seconds'] / 60:.0f} min)")
    console.print((out / "report.md").read_text(encoding="utf-8"), markup=False, highlight=False)


@app.command("demo", rich_help_panel="Evaluate")
@exits_cleanly
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

    run_demo(base_model, regenerate_notes, teacher, epochs, home, json_out, chosen_dtype(dtype))
