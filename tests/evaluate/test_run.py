import pytest
import torch
from conftest import DEMO

from paramem.config import TrainConfig
from paramem.evaluate.probes import load_probes
from paramem.evaluate.run import METHODS, evaluate_yes_no
from paramem.memory.lora import attach_lora
from paramem.model.loading import tiny_model


def scores(results, method):
    [result] = [r for r in results if r.method == method]
    return [p["score"] for p in result.predictions]


def test_every_method_scores_the_same_probes_and_switches_the_adapter_right(demo_conversations):
    model, tokenizer = tiny_model()
    model = attach_lora(model, TrainConfig())
    with torch.no_grad():  # a LoRA that changes the output, so memory must differ from none
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    from paramem.augment.teachers.extractive import ExtractiveTeacher

    probes = load_probes(DEMO / "probes.jsonl")[:6]
    notes = [ExtractiveTeacher().notes(c) for c in demo_conversations]
    results = evaluate_yes_no(model, tokenizer, probes, list(METHODS), demo_conversations, notes=notes)

    assert [r.method for r in results] == list(METHODS)
    for r in results:
        m = r.metrics["prior"]
        assert (m.n, m.n_yes + m.n_no) == (6, 6) and set(m.intervals) >= {"accuracy", "yes_accuracy", "no_accuracy"}
        assert set(r.metrics) == {"prior", "raw"}
    assert scores(results, "memory") != scores(results, "none")
    assert scores(results, "hybrid") != scores(results, "dense")
    tokens = {r.method: r.prompt_tokens for r in results}
    assert tokens["none"] == tokens["memory"] < tokens["bm25"] < tokens["context"]
    assert tokens["hybrid"] == tokens["dense"]  # the memory with the dense passages (HYBRID_RETRIEVER)
    # text is the shipped text side (BM25 at k 5, the default k here); the answer path reads the same
    # passages, asking these questions (all about what was said) of the excerpts (read/said.py)
    assert scores(results, "text") == scores(results, "bm25") != scores(results, "paramem")
    thresholds = {r.method: r.thresholds["prior"] for r in results}
    assert thresholds["paramem"] == pytest.approx(thresholds["bm25"], abs=1e-4)
    assert tokens["notes"] < tokens["bm25"]  # a fact is shorter than a turn


def test_the_balanced_rule_says_yes_to_half_the_held_out_pairs():
    import statistics

    from paramem.augment.pairs import validation_pairs
    from paramem.data.notes import Notes, Topic
    from paramem.model.scoring import YesNoScorer

    model, tokenizer = tiny_model()
    model = attach_lora(model, TrainConfig())
    notes = Notes(
        "garden",
        "2 March 2026",
        topics=[Topic(t, [t + "s", "some " + t]) for t in ("tomato", "pot", "compost")],
        facts=[],
        negatives=[Topic(t, [t + "s", "some " + t]) for t in ("rose", "lawn", "herb")],
    )
    heldout = validation_pairs(notes)
    probes = load_probes(DEMO / "probes.jsonl")[:4]
    [result] = evaluate_yes_no(model, tokenizer, probes, ["memory"], heldout=heldout)
    scores = YesNoScorer(model, tokenizer).log_odds([p.question for p in heldout])
    assert result.thresholds["balanced"] == statistics.median(scores)
    assert sum(s > result.thresholds["balanced"] for s in scores) == len(scores) // 2
    assert set(result.metrics) == {"prior", "heldout", "balanced", "raw"}
    # reading the held-out pairs for the thresholds is timed apart from answering the probes
    assert result.threshold_seconds > 0 and result.to_dict()["threshold_seconds"] is not None


def test_every_results_file_names_the_cpu_its_bf16_flags_and_the_dtype():
    from paramem.evaluate.run import run_meta

    meta = run_meta(["paramem", "eval"], "tiny", {"probes": "p.jsonl"}, "float32")
    assert meta["dtype"] == "float32" and meta["machine"]["cpu"]["model"]
    assert {"avx2", "avx512_bf16", "amx_bf16"} <= set(meta["machine"]["cpu"]["bf16_flags"])


def test_a_benchmarks_results_file_is_written_whole_in_a_folder_made_for_it(tmp_path, capsys):
    import json

    from paramem.evaluate.run import write_results

    out = tmp_path / "results" / "x.json"
    write_results(out, {"accuracy": 0.5, "rows": [1, 2]})
    assert json.loads(out.read_text(encoding="utf-8")) == {"accuracy": 0.5, "rows": [1, 2]}
    assert capsys.readouterr().out.strip() == f"wrote {out}"
