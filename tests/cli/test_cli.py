import json

import pytest
from conftest import DEMO, FIXTURES, write_jsonl
from typer.testing import CliRunner

from paramem.cli.main import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result):
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_help_lists_the_commands():
    result = run("--help")
    assert result.exit_code == 0
    for command in ("remember", "remember-many", "ask", "chat", "eval", "locomo", "demo"):
        assert command in result.output


def test_malformed_file_exits_2_with_file_line_and_reason(tmp_path, isolated_home):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "a", "messages": [{"role": "user", "content": "hi"}]}\n{"id": "b", "messages": [{"role": "user"}]}\n'
    )
    result = run("remember", bad, "--user", "u", "--base-model", "tiny")
    assert result.exit_code == 2
    assert one_line_error(result) == f"error: {bad}:2: message 0: missing 'content'"
    assert not (isolated_home / "users" / "u").exists()  # nothing stored


def test_empty_conversation_and_unknown_format_exit_2(tmp_path):
    empty = write_jsonl(tmp_path / "e.jsonl", [{"id": "a", "messages": []}])
    assert run("remember", empty, "--user", "u", "--base-model", "tiny").exit_code == 2
    result = run("remember", empty, "--user", "u", "--format", "yaml")
    assert result.exit_code == 2 and "unknown format 'yaml'" in one_line_error(result)


@pytest.mark.parametrize(
    "option, value, reason",
    [
        ("--lr", "fast", "give one or more numbers"),
        ("--lr", ",", "give one or more numbers"),
        ("--lr", "5e-4,-1", "learning rate (--lr) must be above 0"),
        ("--epochs", "0", "epochs (--epochs) must be at least 1, not 0"),
        ("--replay", "1.0", "replay_share (--replay) must be in [0, 1), not 1.0"),
        ("--replay", "1.5", "replay_share (--replay) must be in [0, 1)"),
        ("--replay", "-0.1", "replay_share (--replay) must be in [0, 1)"),
        ("--replayed-cues", "-1", "replayed_cues (--replayed-cues) must be 0 or more, not -1"),
        ("--negative-ratio", "-1", "negative_ratio (--negative-ratio) must be 0 or more"),
        ("--lambda", "0", "qa_weight (--lambda) must be above 0, not 0.0"),
        ("--lambda", "-3", "qa_weight (--lambda) must be above 0"),
        ("--dtype", "float16", "unknown dtype 'float16'"),
        ("--objective", "rote", "objective (--objective) must be plum or distill"),
    ],
)
def test_bad_options_exit_2_with_one_line_before_anything_is_stored(isolated_home, option, value, reason):
    result = run("remember", DEMO / "conversations.jsonl", "--user", "u", "--base-model", "tiny", option, value)
    assert result.exit_code == 2 and reason in one_line_error(result)
    assert not (isolated_home / "users" / "u").exists()


def test_learning_options_reach_the_stored_settings(tmp_path, isolated_home):
    from paramem.store.user import UserMemory

    one = write_jsonl(tmp_path / "c.jsonl", [json.loads((DEMO / "conversations.jsonl").read_text().splitlines()[0])])
    result = run(
        "remember",
        one,
        "--user",
        "u",
        "--base-model",
        "tiny",
        "--epochs",
        "1",
        "--replay",
        "0.2",
        "--replayed-cues",
        "3",
        "--distill-queries",
        "5",
    )
    assert result.exit_code == 0, result.output
    train = UserMemory("u", isolated_home).settings()["train"]
    assert (train["epochs"], train["replay_share"], train["replayed_cues"], train["distill_queries"]) == (1, 0.2, 3, 5)


def test_unknown_user_exits_2():
    for args in (
        ("ask", "--user", "ghost", "Did we talk?"),
        ("eval", "--user", "ghost", "--probes", DEMO / "probes.jsonl"),
    ):
        result = run(*args)
        assert result.exit_code == 2
        assert "unknown user 'ghost'" in one_line_error(result)


def test_remember_ask_eval_end_to_end_on_the_tiny_model(tmp_path):
    conversations = write_jsonl(
        tmp_path / "c.jsonl", [json.loads(line) for line in (DEMO / "conversations.jsonl").read_text().splitlines()[:2]]
    )
    result = run(
        "remember", conversations, "--user", "amy", "--base-model", "tiny", "--epochs", "1", "--lr", "5e-4,1e-3"
    )
    assert result.exit_code == 0, result.output
    assert "learned 2 conversation(s)" in result.output and " epochs at lr 0.00" in result.output
    # Not a terminal: a line per step instead of a bar that would print nothing until the end
    assert "conversations: 2 to learn" in result.output
    assert "conversations: 1/2 garden: epoch 1/1 loss" in result.output
    assert "conversations: 2/2 interview: learned, epoch 1 kept" in result.output
    again = run("remember", conversations, "--user", "amy", "--epochs", "1")
    assert again.exit_code == 0 and "learned 0 conversation(s)" in again.output and "skipped 2" in again.output

    # The answer path: the stored turns, read by the base model, the evidence named
    answer = run("ask", "--user", "amy", "Did we discuss tomatoes?")
    assert answer.exit_code == 0 and answer.output.split()[0] in ("Yes", "No"), answer.output
    assert "(text; log-odds" in answer.output and "garden (2026-" in answer.output
    answer = run("ask", "--user", "amy", "--k", "2", "What did I plant on my balcony?")
    assert answer.exit_code == 0 and answer.output.strip(), answer.output
    answer = run("ask", "--user", "amy", "--k", "0", "Did we?")
    assert answer.exit_code == 2 and "k (--k) must be at least 1, not 0" in one_line_error(answer)
    answer = run("ask", "--user", "amy", "--readout", "recall", "Did we?")
    assert answer.exit_code == 2 and "add --memory-alone" in one_line_error(answer)
    # The memory alone (research): its readouts
    answer = run("ask", "--user", "amy", "--memory-alone", "Did we discuss tomatoes?")
    assert answer.exit_code == 0 and answer.output.split()[0] in ("Yes", "No") and "closest recalled" in answer.output
    answer = run("ask", "--user", "amy", "--memory-alone", "--readout", "log-odds", "Did we discuss tomatoes?")
    assert answer.exit_code == 0 and answer.output.split()[0] in ("Yes", "No") and "log-odds" in answer.output
    answer = run("ask", "--user", "amy", "--memory-alone", "--readout", "tea-leaves", "Did we discuss tomatoes?")
    assert answer.exit_code == 2 and "unknown readout 'tea-leaves'" in one_line_error(answer)
    chat = runner.invoke(app, ["chat", "--user", "amy", "--max-new-tokens", "4"], input="Hello there\n\n")
    assert chat.exit_code == 0, chat.output
    assert chat.output.count("memory>") == 1  # one reply, then the empty line ends the chat
    chat = runner.invoke(app, ["chat", "--user", "amy", "--k", "2", "--max-new-tokens", "4"], input="Tomatoes?\n\n")
    assert chat.exit_code == 0 and chat.output.count("memory>") == 1, chat.output

    probes = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"conversation": "garden", "question": "Did we talk about plants?", "answer": "yes"},
            {"conversation": "interview", "question": "Did we talk about cars?", "answer": "no"},
        ],
    )
    out = tmp_path / "results.json"
    result = run("eval", "--user", "amy", "--probes", probes, "--methods", "memory,none", "--json", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert [m["method"] for m in report["methods"]] == ["memory", "none"]
    assert {m["readout"] for m in report["methods"]} == {"recall"} and len(report["methods"][0]["recollections"]) == 2
    for method in report["methods"]:
        assert set(method["metrics"]) == {"prior", "heldout", "balanced", "raw"}
        assert 0 <= method["auc_interval"][0] <= method["auc"] <= method["auc_interval"][1] <= 1
        for metrics in method["metrics"].values():
            assert {"accuracy", "yes_accuracy", "no_accuracy", "n"} <= metrics.keys() and metrics["n"] == 2
    assert report["base_model"] == "tiny" and report["git_commit"] is not None

    unknown = write_jsonl(tmp_path / "u.jsonl", [{"conversation": "nope", "question": "Did we?", "answer": "yes"}])
    result = run("eval", "--user", "amy", "--probes", unknown)
    assert result.exit_code == 2 and f"{unknown}:1: unknown conversation 'nope'" in one_line_error(result)
    result = run("eval", "--user", "amy", "--probes", probes, "--methods", "memory,bm42")
    assert result.exit_code == 2 and "unknown method(s) bm42" in one_line_error(result)
    result = run(
        "eval", "--user", "amy", "--probes", probes, "--methods", "memory,bm25", "--conversations", conversations
    )
    assert result.exit_code == 2 and "the recall readout reads none, memory, context, not bm25" in one_line_error(
        result
    )


def test_second_remember_for_the_same_user_is_refused(tmp_path):
    from paramem.store.user import UserMemory

    conversations = DEMO / "conversations.jsonl"
    holder = UserMemory("busy").lock()
    try:
        result = run("remember", conversations, "--user", "busy", "--base-model", "tiny")
    finally:
        holder.unlock()
    assert result.exit_code == 2
    assert "user 'busy' is being updated by paramem pid" in one_line_error(result)


def test_locomo_without_the_data_is_one_line_and_exit_2(tmp_path):
    result = run("locomo", "--out", tmp_path / "run", "--data", tmp_path / "nowhere")
    assert result.exit_code == 2
    assert one_line_error(result).endswith(
        "locomo8.json: LoCoMo not found (give --data, the folder holding locomo/locomo8.json)"
    )


def test_remember_many_with_an_empty_folder_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "users").mkdir()
    result = run("remember-many", tmp_path / "users", "--base-model", "tiny")
    assert result.exit_code == 2
    assert "no conversation files" in one_line_error(result)


def test_text_methods_read_the_stored_text_or_need_the_conversations(tmp_path, demo_conversations):
    from dataclasses import replace

    from paramem.augment.teachers.extractive import ExtractiveTeacher
    from paramem.config import RememberConfig, TrainConfig
    from paramem.lifecycle.remember import remember

    kept = RememberConfig(base_model="tiny", train=TrainConfig(epochs=1, min_epochs=1))
    remember("u", demo_conversations[:1], ExtractiveTeacher(), kept)
    remember("v", demo_conversations[:1], ExtractiveTeacher(), replace(kept, keep_text="never"))
    probes = write_jsonl(
        tmp_path / "p.jsonl", [{"conversation": "garden", "question": "Did we talk about tomatoes?", "answer": "yes"}]
    )
    out = tmp_path / "r.json"
    methods = "memory,text,paramem,hybrid,notes"
    result = run(
        "eval", "--user", "u", "--probes", probes, "--methods", methods, "--readout", "log-odds", "--json", out
    )
    assert result.exit_code == 0, result.output
    shipped = {m["method"]: m["main_rule"] for m in json.loads(out.read_text())["methods"]}
    assert shipped == {"memory": "prior", "text": "prior", "paramem": "prior", "hybrid": "prior", "notes": "prior"}
    result = run("eval", "--user", "v", "--probes", probes, "--methods", "memory,bm25")
    assert result.exit_code == 2
    assert one_line_error(result) == "error: the bm25 method(s) need --conversations FILE (no text is stored)"


def test_a_damaged_adapter_or_recall_cache_is_one_line_and_exit_2(tmp_path, isolated_home):
    conversations = write_jsonl(
        tmp_path / "c.jsonl", [json.loads(line) for line in (DEMO / "conversations.jsonl").read_text().splitlines()[:1]]
    )
    assert run("remember", conversations, "--user", "dan", "--base-model", "tiny", "--epochs", "1").exit_code == 0
    assert run("ask", "--user", "dan", "--memory-alone", "Did we discuss tomatoes?").exit_code == 0  # recall.json
    version = isolated_home / "users" / "dan" / "versions" / "1"
    (version / "recall.json").write_text("{half a file")
    result = run("ask", "--user", "dan", "--memory-alone", "Did we discuss tomatoes?")
    assert result.exit_code == 2
    assert one_line_error(result).startswith(f"error: {version / 'recall.json'}: cannot be read")
    (version / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    assert run("ask", "--user", "dan", "Did we discuss tomatoes?").exit_code == 0  # the text answers, not the memory
    result = run("ask", "--user", "dan", "--memory-alone", "Did we discuss tomatoes?")
    assert result.exit_code == 2
    line = one_line_error(result)
    assert (
        line.startswith(f"error: {version / 'adapter_model.safetensors'}: cannot be read") and "changed nothing" in line
    )
    assert (version / "adapter_model.safetensors").read_bytes() == b"\x00" * 64


@pytest.mark.parametrize(
    "args, reason",
    [
        (["eval", "--user", "u", "--probes", DEMO / "probes.jsonl", "--k", "0"], "k (--k) must be at least 1, not 0"),
        (["eval", "--user", "u", "--probes", DEMO / "probes.jsonl", "--unit", "page"], "unit (--unit) must be turn or"),
        (["locomo", "--out", "x", "--data", FIXTURES, "--probes-per-session", "3"], "an even number, 2 or more"),
        (["locomo", "--out", "x", "--data", FIXTURES, "--sample", "-1"], "sample (--sample) must be 0 or more"),
        (["locomo", "--out", "x", "--data", FIXTURES, "--epochs", "0"], "epochs (--epochs) must be at least 1"),
        (["locomo", "--out", "x", "--data", FIXTURES, "--distill-queries", "0"], "distill_queries (--distill-queries)"),
        (["locomo", "--out", "x", "--data", FIXTURES, "--self-study-queries", "-1"], "(--self-study-queries) must"),
        (["chat", "--user", "u", "--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
        (["remember-many", DEMO, "--cpus-per-user", "0"], "--cpus-per-user must be at least 1"),
    ],
)
def test_every_command_checks_its_numbers_in_one_line(args, reason):
    result = run(*args)
    assert result.exit_code == 2 and reason in one_line_error(result)


def test_a_store_that_cannot_be_written_is_one_line_not_a_traceback(tmp_path, monkeypatch):
    blocker = tmp_path / "home"
    blocker.write_text("a file where the memory home should be")
    monkeypatch.setenv("PARAMEM_HOME", str(blocker))
    result = run("remember", DEMO / "conversations.jsonl", "--user", "u", "--base-model", "tiny", "--epochs", "1")
    assert result.exit_code == 1 and one_line_error(result).startswith("error: ")
    assert "Traceback" not in result.output + result.stderr
