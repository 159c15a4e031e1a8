import math
import random

import torch

from paramem.augment.teachers import ExtractiveTeacher
from paramem.cartridge import memory_head, slot_prompt
from paramem.config import TrainConfig
from paramem.distill import (
    CHECK_PROMPTS,
    SELF_STUDY_SEEDS,
    DistillTarget,
    TeacherReading,
    _first_line,
    conversation_slot,
    distill_batches,
    distill_queries,
    distillation_loss,
    dump_targets,
    encode_target,
    kl_to_top_k,
    load_targets,
    notes_queries,
    teacher_targets,
)
from paramem.models import tiny_model
from paramem.prompts import encode_prompt
from paramem.remember import RememberConfig, remember
from paramem.store import UserMemory
from paramem.train import attach_lora

CONFIG = TrainConfig(objective="distill", distill_checks=0, distill_queries=3, distill_top_k=5, distill_answer_tokens=4)


def test_the_loss_is_the_kl_from_the_teachers_top_k_computed_by_hand():
    student = torch.tensor([[2.0, 0.0, -1.0, 0.5]])
    top_ids = torch.tensor([[0, 3]])
    top_logprobs = torch.tensor([[math.log(0.6), math.log(0.2)]])  # renormalised over the top k: 0.75, 0.25
    q = [math.exp(v) for v in student[0].tolist()]
    q = [v / sum(q) for v in q]
    by_hand = 0.75 * math.log(0.75 / q[0]) + 0.25 * math.log(0.25 / q[3])
    assert abs(kl_to_top_k(student, top_ids, top_logprobs).item() - by_hand) < 1e-6
    assert kl_to_top_k(torch.log(torch.tensor([[0.75, 0.0001, 0.0001, 0.25]])), top_ids, top_logprobs) < 1e-3


def test_weighted_positions_count_as_many_times_their_weight():
    student = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.0, 1.0, 0.0, 0.0]])
    top_ids = torch.tensor([[0, 3], [1, 2]])
    top_logprobs = torch.log(torch.tensor([[0.6, 0.2], [0.5, 0.5]]))
    each = [kl_to_top_k(student[i : i + 1], top_ids[i : i + 1], top_logprobs[i : i + 1]).item() for i in range(2)]
    weighted = kl_to_top_k(student, top_ids, top_logprobs, torch.tensor([1.0, 3.0]))
    assert abs(weighted.item() - (each[0] + 3 * each[1]) / 4) < 1e-6
    assert abs(kl_to_top_k(student, top_ids, top_logprobs, torch.ones(2)).item() - sum(each) / 2) < 1e-6


def test_teacher_targets_read_the_conversation_once_and_match_a_full_forward(demo_conversations):
    model, tokenizer = tiny_model()
    garden = demo_conversations[0]
    notes = ExtractiveTeacher().notes(garden)
    targets, cost = teacher_targets(model, tokenizer, garden, notes, CONFIG)
    reading = TeacherReading(model, tokenizer, garden, notes.date)
    assert [t.question for t in targets] == distill_queries(notes, CONFIG, reading) and len(targets) == 3
    assert cost.queries == 3 and cost.prefill_seconds > 0 and cost.writing_seconds > 0  # self-study wrote some
    assert cost.seconds == cost.prefill_seconds + cost.writing_seconds + cost.answering_seconds
    assert "What did we talk about" in targets[0].question  # the recall cue is always asked
    for target in targets:
        prompt = slot_prompt(
            memory_head(tokenizer),
            conversation_slot(tokenizer, garden, notes.date),
            encode_prompt(tokenizer, target.question),
        )
        with torch.inference_mode():
            logits = model(torch.tensor([prompt + target.answer_ids])).logits[0].float().log_softmax(-1)
        for step, (ids, logprobs) in enumerate(zip(target.top_ids, target.top_logprobs)):
            expected = logits[len(prompt) - 1 + step].topk(CONFIG.distill_top_k)
            assert ids == expected.indices.tolist()
            torch.testing.assert_close(torch.tensor(logprobs), expected.values, atol=1e-4, rtol=0)
        assert target.answer_ids == [ids[0] for ids in target.top_ids]  # greedy
    assert load_targets(dump_targets(targets)) == targets


def test_questions_answered_in_one_batch_get_the_answers_each_gets_alone(demo_conversations):
    model, tokenizer = tiny_model()
    reading = TeacherReading(model, tokenizer, demo_conversations[0], None)
    questions = ["Where?", "What did we say about the tomatoes in the garden last week?", "Did I sow beans?"]
    together = reading.answer_many(questions, 6, 5)  # of different lengths: the shorter rows are padded
    for question, target in zip(questions, together):
        alone = reading.answer_many([question], 6, 5)[0]
        assert target.question == question and target.answer_ids == alone.answer_ids
        assert target.top_ids == alone.top_ids
        torch.testing.assert_close(
            torch.tensor(target.top_logprobs), torch.tensor(alone.top_logprobs), atol=1e-4, rtol=0
        )


def test_the_training_loss_is_the_kl_at_the_answer_positions_of_the_full_logits(demo_conversations):
    model, tokenizer = tiny_model()
    notes = ExtractiveTeacher().notes(demo_conversations[0])
    targets, _ = teacher_targets(model, tokenizer, demo_conversations[0], notes, CONFIG)
    examples = [encode_target(tokenizer, t) for t in targets]
    [batch] = distill_batches(examples, 8, tokenizer.pad_token_id, random.Random(0))
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = kl_to_top_k(logits[batch["predict"]], batch["top_ids"], batch["top_logprobs"])
    torch.testing.assert_close(distillation_loss(model, batch), expected)
    assert int(batch["predict"].sum()) == sum(len(t.answer_ids) for t in targets)


def test_the_student_learns_the_teachers_answers_without_the_conversation(demo_conversations):
    model, tokenizer = tiny_model()
    notes = ExtractiveTeacher().notes(demo_conversations[0])
    targets, _ = teacher_targets(model, tokenizer, demo_conversations[0], notes, CONFIG)
    student = attach_lora(model, TrainConfig())
    [batch] = distill_batches(
        [encode_target(tokenizer, t) for t in targets], 8, tokenizer.pad_token_id, random.Random(0)
    )
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(5):
        loss = distillation_loss(student, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert all(later < earlier for earlier, later in zip(losses, losses[1:]))  # falls at every step


def test_remember_with_distill_stores_targets_and_replays_them(demo_conversations, monkeypatch):
    from paramem.train import SequentialTrainer

    seen = []
    original = SequentialTrainer._distill_examples

    def recording(self, notes, earlier, rng):
        examples, own = original(self, notes, earlier, rng)
        seen.append((sorted(self.targets), len(examples) - own))  # the targets it could replay, and did
        return examples, own

    monkeypatch.setattr(SequentialTrainer, "_distill_examples", recording)
    config = RememberConfig(
        base_model="tiny",
        train=TrainConfig(
            objective="distill", distill_checks=0, epochs=1, min_epochs=1, distill_queries=2, distill_answer_tokens=3
        ),
    )
    remember("d", demo_conversations[:1], ExtractiveTeacher(), config)
    memory = UserMemory("d")
    stored = load_targets(memory.targets(demo_conversations[0].id))
    assert len(stored) == 2 and all(t.answer_ids for t in stored)
    record = memory.learned()[0]  # the teacher's stages are timed apart from the epochs, and stored
    assert record.teacher_queries == 2 and 0 < record.teacher_prefill_seconds < record.teacher_seconds
    assert record.teacher_writing_seconds is not None
    learned = remember("d", demo_conversations[:2], ExtractiveTeacher(), config)
    assert [r.id for r in learned] == [demo_conversations[1].id]
    assert memory.targets(demo_conversations[1].id) is not None
    # The second run read the first conversation's stored targets back and replayed some of them
    assert seen[-1][0] == sorted(c.id for c in demo_conversations[:2]) and seen[-1][1] >= 1


def test_remember_objective_distill_from_the_cli(tmp_path):
    import json

    from conftest import DEMO
    from typer.testing import CliRunner

    from paramem.cli import app

    first = (DEMO / "conversations.jsonl").read_text().splitlines()[0]
    path = tmp_path / "c.jsonl"
    path.write_text(first + "\n")
    result = CliRunner().invoke(
        app, ["remember", str(path), "--user", "c", "--base-model", "tiny", "--epochs", "1", "--objective", "distill"]
    )
    assert result.exit_code == 0, result.output
    assert UserMemory("c").targets(json.loads(first)["id"]) is not None


def test_the_locomo_experiment_runs_with_the_distilled_memory(tmp_path):
    import json

    from conftest import FIXTURES
    from typer.testing import CliRunner

    from paramem.cli import app

    result = CliRunner().invoke(
        app,
        [
            "locomo",
            "--out",
            str(tmp_path / "run"),
            "--data",
            str(FIXTURES),
            "--base-model",
            "tiny",
            "--objective",
            "distill",
            "--sessions",
            "2",
            "--probes-per-session",
            "2",
            "--no-retention",
            "--open-questions",
            "0",
            "--methods",
            "none,memory",
            "--epochs",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["config"]["remember"]["train"]["objective"] == "distill" and set(saved["methods"]) == {
        "none",
        "memory",
    }


def test_self_study_queries_are_what_the_teacher_writes_from_its_seed_prompts(demo_conversations):
    model, tokenizer = tiny_model()
    garden = demo_conversations[0]
    notes = ExtractiveTeacher().notes(garden)
    reading = TeacherReading(model, tokenizer, garden, notes.date)
    assert reading.speakers == ["I", "you"]  # roles without names
    written = reading.self_study(3, "s")
    assert len(written) <= 3 and len(set(written)) == len(written)
    seeds = [
        seed.format(speaker=who) for seed in SELF_STUDY_SEEDS for who in (reading.speakers if "{" in seed else [""])
    ]
    greedy = [
        _first_line(tokenizer.decode(target.answer_ids, skip_special_tokens=True))
        for target in reading.answer_many(seeds, 48, 1)
    ]
    usable = [q for q in dict.fromkeys(greedy) if q]  # the seeds answered greedily come first, in order
    assert written[: min(3, len(usable))] == usable[:3]
    config = TrainConfig(objective="distill", distill_checks=0, distill_queries=5, self_study_queries=2)
    queries = distill_queries(notes, config, reading)
    assert len(queries) == 5 and queries[0].startswith("What did we talk about")  # the recall cue first
    study = reading.self_study(2, f"{config.seed}/{notes.conversation_id}")
    assert (
        queries[5 - len(study) :] == study
        and queries[: 5 - len(study)] == notes_queries(notes, config)[: 5 - len(study)]
    )


def test_checks_ask_the_facts_and_near_misses_the_teacher_writes_from_single_turns(demo_conversations):
    model, tokenizer = tiny_model()
    garden = demo_conversations[0]
    reading = TeacherReading(model, tokenizer, garden, None)
    assert reading.checks(4) == []  # the random tiny model writes nothing usable: no check is made up
    # What the teacher writes is the model's; here it is fixed, to show how checks are made from it.
    asked = []

    def writes(questions, max_tokens, top_k, sampler=None, kind="answer"):
        written = []
        for question in questions:
            asked.append(question)
            sentence = f"The message number {len(asked)} is about the garden."
            written.append(DistillTarget(question, tokenizer.encode(sentence), [], [], kind))
        return written

    reading.answer_many = writes
    turns = reading.turns
    assert reading.checks(4) == [
        "Is it true that the message number 1 is about the garden?",
        "Did we discuss that the message number 2 is about the garden?",
        "Did we discuss that the message number 3 is about the garden?",
        "Was it mentioned that the message number 4 is about the garden?",
    ]
    picked = [turns[0], turns[len(turns) // 2]]  # 2 turns spread over the conversation, 2 prompts each
    assert asked == [p.format(speaker=who, text=text[:400]) for who, text in picked for p in CHECK_PROMPTS]


def test_a_check_keeps_only_the_teachers_first_answer_token_and_weighs_it(demo_conversations, monkeypatch):
    model, tokenizer = tiny_model()
    garden = demo_conversations[0]
    notes = ExtractiveTeacher().notes(garden)
    checks = ["Is it true that the garden has tomatoes?", "Did we discuss that I own a boat?"]
    monkeypatch.setattr(TeacherReading, "checks", lambda self, count: checks[:count])
    config = TrainConfig(
        objective="distill", distill_queries=2, self_study_queries=0, distill_top_k=5, distill_checks=2
    )
    targets, cost = teacher_targets(model, tokenizer, garden, notes, config)
    assert cost.queries == 4 and [t.kind for t in targets] == ["answer", "answer", "check", "check"]
    for target, question in zip(targets[2:], checks):
        assert target.question == question and len(target.answer_ids) == len(target.top_ids) == 1
        prompt = slot_prompt(
            memory_head(tokenizer),
            conversation_slot(tokenizer, garden, notes.date),
            encode_prompt(tokenizer, question),
        )
        with torch.inference_mode():
            first = model(torch.tensor([prompt])).logits[0, -1].float().log_softmax(-1).topk(5)
        assert target.top_ids[0] == first.indices.tolist()
    assert load_targets(dump_targets(targets)) == targets
    # in a batch, a check's one position carries its weight; an answer's positions weigh 1
    examples = [encode_target(tokenizer, t, 8.0 if t.kind == "check" else 1.0) for t in targets]
    [batch] = distill_batches(examples, 8, tokenizer.pad_token_id, random.Random(0))
    assert sorted(batch["weights"].tolist()).count(8.0) == 2
    assert len(batch["weights"]) == int(batch["predict"].sum()) == sum(len(t.answer_ids) for t in targets)


def test_a_written_query_is_its_first_real_line():
    assert _first_line('\n1. "What did Caroline paint last week?"\nMore text') == "What did Caroline paint last week?"
    assert _first_line("- Did we talk about jazz?") == "Did we talk about jazz?"
    assert _first_line("Yes.") == "" and _first_line("") == ""
