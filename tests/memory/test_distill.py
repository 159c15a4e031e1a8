import math
import random

import pytest
import torch

from paramem.augment.teachers.extractive import ExtractiveTeacher
from paramem.config import RememberConfig, TrainConfig
from paramem.errors import InputError
from paramem.lifecycle.remember import remember
from paramem.memory.cartridge import memory_head, slot_prompt
from paramem.memory.distill import distill_batches, distillation_loss, encode_target, hidden_distance, kl_to_top_k
from paramem.memory.distill_teacher import (
    CHECK_PROMPTS,
    SELF_STUDY_SEEDS,
    DistillTarget,
    TeacherReading,
    _first_line,
    conversation_slot,
    distill_queries,
    dump_targets,
    load_targets,
    matched_layers,
    notes_queries,
    teacher_targets,
)
from paramem.memory.lora import attach_lora
from paramem.model.loading import tiny_model
from paramem.model.prompts import encode_prompt
from paramem.store.user import UserMemory

CONFIG = TrainConfig(objective="distill", distill_checks=0, distill_queries=3, distill_top_k=5, distill_answer_tokens=4)


def teacher_prompt(tokenizer, conversation, date, question) -> list[int]:
    """The whole prompt the teacher reads a question in, as one sequence (no cache)."""
    return slot_prompt(
        memory_head(tokenizer), conversation_slot(tokenizer, conversation, date), encode_prompt(tokenizer, question)
    )


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
        prompt = teacher_prompt(tokenizer, garden, notes.date, target.question)
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


def test_the_hidden_state_distance_is_the_normalised_l1_computed_by_hand():
    teacher = torch.tensor([[[1.0, -2.0, 1.0], [0.5, 0.5, 0.0]]])  # one position, two layers
    student = torch.tensor([[[0.0, -2.0, 2.0], [0.5, 0.5, 0.0]]])
    by_hand = ((1 + 0 + 1) / 4 + 0 / 1) / 2
    assert hidden_distance(student, teacher).item() == pytest.approx(by_hand)


def test_matched_layers_spread_over_the_depth_with_the_last_included():
    assert matched_layers(24, 4) == [6, 12, 18, 24]
    assert matched_layers(24, 1) == [24]
    assert matched_layers(2, 4) == [1, 2]  # never more than the model has, never the embeddings


def test_the_teachers_hidden_states_are_a_full_forwards_at_the_answer_positions(demo_conversations):
    model, tokenizer = tiny_model()
    garden = demo_conversations[0]
    notes = ExtractiveTeacher().notes(garden)
    config = TrainConfig(**{**CONFIG.__dict__, "distill_hidden_weight": 1.0, "distill_hidden_layers": 2})
    targets, _ = teacher_targets(model, tokenizer, garden, notes, config)
    assert len({len(t.question) for t in targets}) > 1  # rows of different lengths, padded in one batch
    for target in targets:
        prompt = teacher_prompt(tokenizer, garden, notes.date, target.question)
        with torch.inference_mode():
            states = model(torch.tensor([prompt + target.answer_ids]), output_hidden_states=True).hidden_states
        n = len(target.answer_ids)  # the positions that predicted each answer token
        expected = torch.stack([states[layer][0, len(prompt) - 1 : len(prompt) - 1 + n] for layer in (1, 2)])
        torch.testing.assert_close(target.hidden, expected, atol=1e-4, rtol=1e-4)
    # never stored: a target read back has the same answer and log-probabilities, and no hidden states
    assert load_targets(dump_targets(targets)) == targets
    assert all(t.hidden is None for t in load_targets(dump_targets(targets)))


def test_hidden_states_add_their_weighted_distance_where_carried(demo_conversations):
    model, tokenizer = tiny_model()
    notes = ExtractiveTeacher().notes(demo_conversations[0])
    config = TrainConfig(**{**CONFIG.__dict__, "distill_hidden_weight": 1.0, "distill_hidden_layers": 2})
    targets, _ = teacher_targets(model, tokenizer, demo_conversations[0], notes, config)
    student = attach_lora(model, TrainConfig())
    with torch.no_grad():  # a student unlike the teacher, so that the distance is not zero
        for name, param in student.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    replayed = load_targets(dump_targets(targets[:1]))  # as replay reads them: no hidden states
    examples = [encode_target(tokenizer, t) for t in [*targets[1:], *replayed]]
    [batch] = distill_batches(examples, 8, tokenizer.pad_token_id, random.Random(0))
    out = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    kl = kl_to_top_k(out.logits[batch["predict"]], batch["top_ids"], batch["top_logprobs"], batch["weights"])
    student_states = torch.stack([out.hidden_states[layer][batch["predict"]] for layer in (1, 2)], dim=1)
    kept = batch["has_hidden"]
    assert int(kept.sum()) == sum(len(t.answer_ids) for t in targets[1:])  # the replayed one has none
    by_hand = kl + 0.5 * hidden_distance(student_states[kept], batch["hidden"][kept])
    torch.testing.assert_close(distillation_loss(student, batch, hidden_weight=0.5), by_hand)
    torch.testing.assert_close(distillation_loss(student, batch), kl)  # weight 0: the KL alone
    assert hidden_distance(student_states[kept], batch["hidden"][kept]) > 0.01


def test_hidden_state_matching_is_refused_for_cartridges():
    with pytest.raises(InputError, match="distill_hidden_weight"):
        TrainConfig(objective="distill", form="cartridge", distill_hidden_weight=1.0)
    with pytest.raises(InputError, match="distill_hidden_weight"):
        TrainConfig(objective="distill", distill_hidden_weight=-1.0)


def test_remember_with_distill_stores_targets_and_replays_them(demo_conversations, monkeypatch):
    from paramem.memory.trainer import SequentialTrainer

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


def test_remember_matches_hidden_states_while_learning_and_stores_none(demo_conversations, monkeypatch):
    import paramem.memory.trainer
    from paramem.memory.trainer import SequentialTrainer

    seen = []
    original = paramem.memory.trainer.distillation_loss

    def recording(model, batch, hidden_weight=0.0):
        seen.append((hidden_weight, int(batch["has_hidden"].sum()) if "hidden" in batch else 0))
        return original(model, batch, hidden_weight)

    monkeypatch.setattr(paramem.memory.trainer, "distillation_loss", recording)
    replayed = []
    original_examples = SequentialTrainer._distill_examples

    def recording_examples(self, notes, earlier, rng):
        examples, own = original_examples(self, notes, earlier, rng)
        replayed.extend(examples[own:])
        return examples, own

    monkeypatch.setattr(SequentialTrainer, "_distill_examples", recording_examples)
    train = TrainConfig(
        objective="distill",
        distill_checks=0,
        epochs=1,
        min_epochs=1,
        distill_queries=2,
        distill_answer_tokens=3,
        replay_share=0.5,
    )
    config = RememberConfig(base_model="tiny", train=TrainConfig(**{**train.__dict__, "distill_hidden_weight": 0.5}))
    remember("h", demo_conversations[:2], ExtractiveTeacher(), config)
    assert seen and all(weight == 0.5 and carried > 0 for weight, carried in seen)
    # the first conversation, replayed while the second is learned in the same run, goes as stored
    assert replayed and all(example.hidden is None for example in replayed)
    stored = load_targets(UserMemory("h").targets(demo_conversations[0].id))
    assert len(stored) == 2 and all(t.hidden is None for t in stored)


def test_remember_objective_distill_from_the_cli(tmp_path):
    import json

    from conftest import DEMO
    from typer.testing import CliRunner

    from paramem.cli.main import app

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

    from paramem.cli.main import app

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
