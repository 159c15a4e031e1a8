"""`paramem demo` end to end on the tiny model: the shipped conversations, probes and notes, no memory
against memory, read both ways, with yes and no accuracy apart."""

import json

from paramem.cli.demo import DEMO_QUESTIONS, demo_files, run_demo
from paramem.data.formats import load_conversations
from paramem.evaluate.probes import load_probes


def test_the_demo_learns_the_shipped_conversations_and_compares_no_memory_with_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("PARAMEM_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo.json"
    run_demo("tiny", False, "local", 1, tmp_path / "home", out)
    saved = json.loads(out.read_text())
    rows = {(m["method"], m["readout"]) for m in saved["methods"]}
    both = {(method, readout) for method in ("none", "memory") for readout in ("log-odds", "recall")}
    assert rows == both | {("paramem", "log-odds")}
    # answered from the index before anything was learned, each with the conversations it read
    first = saved["first_answers"]
    assert [a["question"] for a in first] == list(DEMO_QUESTIONS) and all(a["evidence"] for a in first)
    assert first[0]["seconds"] < saved["learn_seconds"]
    conversations_file, probes_file, _ = demo_files()
    probes = load_probes(probes_file, {c.id for c in load_conversations(conversations_file)})
    for m in saved["methods"]:
        scores = m["metrics"]["prior"]
        assert scores["n"] == len(probes) and {"yes_accuracy", "no_accuracy"} <= set(scores)
    assert saved["base_model"] == "tiny"
