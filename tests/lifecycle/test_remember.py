import json
from dataclasses import replace

import pytest
import torch
from conftest import files_holding, sentences_left
from peft import PeftModel

from paramem.augment.teachers.extractive import ExtractiveTeacher
from paramem.config import RememberConfig, TrainConfig
from paramem.errors import InputError
from paramem.lifecycle.remember import Callbacks, remember
from paramem.model.loading import tiny_model
from paramem.store.user import UserMemory


def config(**train):
    return RememberConfig(base_model="tiny", train=TrainConfig(epochs=2, min_epochs=1, **train))


def test_learns_in_order_and_skips_what_is_known(demo_conversations):
    first = remember("u", demo_conversations[:2], ExtractiveTeacher(), config())
    assert [r.id for r in first] == ["garden", "interview"]
    again = remember("u", demo_conversations[:3], ExtractiveTeacher(), config())
    assert [r.id for r in again] == ["marathon"]
    memory = UserMemory("u")
    assert [c.id for c in memory.learned()] == ["garden", "interview", "marathon"]
    rows = memory.learned()
    assert all(r.qa_pairs > 0 and r.epochs >= 1 and r.seconds > 0 and r.content_hash for r in rows)
    assert memory.current_version() == 3


def test_interrupted_run_resumes_without_losing_what_was_learned(demo_conversations):
    learned_ids = []

    def stop_after_two(record):
        learned_ids.append(record.id)
        if len(learned_ids) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        remember(
            "u", demo_conversations[:4], ExtractiveTeacher(), config(), callbacks=Callbacks(on_learned=stop_after_two)
        )
    memory = UserMemory("u")
    assert [c.id for c in memory.learned()] == ["garden", "interview"]
    weights_before = PeftModel.from_pretrained(tiny_model()[0], str(memory.adapter_dir)).state_dict()
    resumed = remember("u", demo_conversations[:4], ExtractiveTeacher(), config())
    assert [r.id for r in resumed] == ["marathon", "cat"]
    assert [c.id for c in memory.learned()][:2] == ["garden", "interview"]
    weights_after = PeftModel.from_pretrained(tiny_model()[0], str(memory.adapter_dir)).state_dict()
    changed = [k for k in weights_before if "lora" in k and not torch.equal(weights_before[k], weights_after[k])]
    assert changed  # continued from the stored adapter and kept learning


def test_same_id_with_new_content_is_refused(demo_conversations):
    from dataclasses import replace

    remember("u", demo_conversations[:1], ExtractiveTeacher(), config())
    changed = replace(demo_conversations[0], messages=demo_conversations[1].messages)
    with pytest.raises(InputError, match="already learned with different content"):
        remember("u", [changed], ExtractiveTeacher(), config())


def test_each_keep_text_mode_keeps_what_it_says(demo_conversations):
    """always: the text stays after learning; until-consolidated: indexed, then deleted in the commit;
    never: not written. The old `text` column stays empty in every mode."""
    import sqlite3

    kept = {}
    for mode in ("always", "until-consolidated", "never"):
        remember(mode, demo_conversations[:1], ExtractiveTeacher(), replace(config(), keep_text=mode))
        memory = UserMemory(mode)
        kept[mode] = [c.id for c in memory.texts.conversations()]
        with sqlite3.connect(memory.manifest) as db:
            assert db.execute("SELECT text FROM conversations").fetchone()[0] is None
    assert kept == {"always": [demo_conversations[0].id], "until-consolidated": [], "never": []}


def teacher_words(conversation) -> list[str]:
    """What the teacher's notes hold of a conversation: its facts, and its topics of two words or more."""
    notes = ExtractiveTeacher().notes(conversation)
    return [f.statement for f in notes.facts] + [t.name for t in notes.topics if len(t.name.split()) > 1]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    from paramem.files import cache_home

    monkeypatch.setenv("PARAMEM_CACHE", str(tmp_path / "cache"))
    return cache_home()


def test_until_consolidated_leaves_no_turn_or_teacher_note_in_the_store_or_the_caches(demo_conversations, cache):
    """The raw turns go with the commit; the teacher's notes never reach the store (the memory's own
    replace them) and their cache entry goes after it. Every file is scanned."""
    until = replace(config(), keep_text="until-consolidated")
    remember("u", demo_conversations[:2], ExtractiveTeacher(), until)
    memory = UserMemory("u")
    assert memory.texts.conversations() == []
    assert [n.written_by for n in memory.notes()] == ["memory", "memory"]
    for conversation in demo_conversations[:2]:
        assert teacher_words(conversation)  # there is something to find
        assert not sentences_left(conversation, memory.root, cache)
        assert not files_holding(teacher_words(conversation), memory.root, cache)


def test_the_memory_keeps_only_what_it_recalls_of_what_it_was_taught(demo_conversations, cache, monkeypatch):
    """A stub memory recalls one of the teacher's facts word for word, an invention and a stutter:
    the notes stored keep the fact, once, and nothing of the invention."""
    import paramem.lifecycle.remember as remember_module
    from paramem.augment.pairs import recall_opening

    conversation = demo_conversations[0]
    taught = ExtractiveTeacher().notes(conversation)
    fact, topic = taught.facts[0].statement, taught.topics[0].name

    def recollect(model, tokenizer, cues):
        opening = recall_opening(taught)
        return [f"{opening} {topic} {topic} and a golden retriever. {fact} The user owns a golden retriever."] * len(
            cues
        )

    monkeypatch.setattr(remember_module, "recollect", recollect)
    remember("u", [conversation], ExtractiveTeacher(), replace(config(), keep_text="until-consolidated"))
    (notes,) = UserMemory("u").notes()
    assert notes.written_by == "memory"
    assert [t.name for t in notes.topics] == [topic]
    assert [f.statement for f in notes.facts] == [fact]
    assert "retriever" not in json.dumps(notes.to_dict())


def test_forgetting_relearns_the_rest_from_the_notes_the_memory_wrote(demo_conversations, cache):
    from paramem.lifecycle.forget import forget

    remember("u", demo_conversations[:2], ExtractiveTeacher(), replace(config(), keep_text="until-consolidated"))
    forgotten = forget("u", demo_conversations[0].id)
    assert (forgotten.how, forgotten.relearned) == ("retrained", 1)
    memory = UserMemory("u")
    assert [(r.id, n.written_by) for r, n in zip(memory.learned(), memory.notes())] == [
        (demo_conversations[1].id, "memory")
    ]


def test_a_memory_that_kept_its_text_drops_the_teachers_notes_with_it(demo_conversations, cache):
    """A user who learned with the text kept, then asks for until-consolidated: the next run, even with
    nothing new to learn, drops the texts and has the memory write the notes."""
    first = demo_conversations[0]
    remember("u", [first], ExtractiveTeacher(), config())
    memory = UserMemory("u")
    assert memory.notes()[0].written_by == "teacher"
    assert files_holding(teacher_words(first), memory.root)
    version = memory.current_version()
    assert remember("u", [], ExtractiveTeacher(), replace(config(), keep_text="until-consolidated")) == []
    assert memory.notes()[0].written_by == "memory" and memory.current_version() == version
    assert memory.texts.conversations() == []
    assert not files_holding(teacher_words(first), memory.root, cache)


def test_a_cartridge_memory_keeps_neither_the_teachers_notes_nor_its_targets(demo_conversations, cache):
    from paramem.lifecycle.forget import forget

    cartridge = TrainConfig(
        objective="distill", distill_checks=0, form="cartridge", epochs=1, distill_queries=2, distill_answer_tokens=3
    )
    dropping = RememberConfig(base_model="tiny", keep_text="until-consolidated", train=cartridge)
    remember("u", demo_conversations[:2], ExtractiveTeacher(), dropping)
    memory = UserMemory("u")
    assert [n.written_by for n in memory.notes()] == ["memory", "memory"]
    assert not [p for p in (memory.root / "targets").rglob("*") if p.is_file()]
    assert not files_holding(teacher_words(demo_conversations[0]), memory.root, cache)
    assert forget("u", demo_conversations[0].id).how == "dropped"


def test_a_sequential_distilled_memory_cannot_drop_its_text():
    with pytest.raises(InputError, match="always for a sequential distilled memory"):
        RememberConfig(base_model="tiny", keep_text="until-consolidated", train=TrainConfig(objective="distill"))


def test_a_conversation_is_indexed_before_any_model_loads(demo_conversations, monkeypatch):
    import paramem.lifecycle.remember as remember_module

    seen = []

    def crash(*args, **kwargs):
        seen.append([c.id for c in UserMemory("u").texts.conversations()])
        raise KeyboardInterrupt  # the process dies as the model would load

    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(remember_module, "load_model", crash)
        remember("u", demo_conversations[:2], ExtractiveTeacher(), config())
    assert seen == [[c.id for c in demo_conversations[:2]]]
    memory = UserMemory("u")
    assert {c.id: s for c, s in zip(demo_conversations[:2], memory.texts.states().values())} == {
        c.id: "indexed" for c in demo_conversations[:2]
    }
    # the next run, given nothing new, learns what the crashed one indexed
    learned = remember("u", [], ExtractiveTeacher(), config())
    assert [r.id for r in learned] == [c.id for c in demo_conversations[:2]]
    assert set(memory.texts.states().values()) == {"consolidated"}


def test_a_refused_conversation_leaves_no_text(demo_conversations):
    from paramem.data.conversations import Conversation, Message

    empty = Conversation("hm", (Message("user", "hm"), Message("assistant", "ok")))
    with pytest.raises(InputError, match="found nothing to learn"):
        remember("u", [empty], ExtractiveTeacher(), config())
    assert not UserMemory("u").exists


def test_the_dtype_a_memory_learned_in_is_recorded_and_used_to_load_it(demo_conversations):
    from paramem.model.loading import dtype_of
    from paramem.read.loading import load_memory

    remember(
        "u",
        demo_conversations[:1],
        ExtractiveTeacher(),
        RememberConfig(base_model="tiny", dtype="bfloat16", train=TrainConfig(epochs=1, min_epochs=1)),
    )
    assert UserMemory("u").settings()["dtype"] == "bfloat16"
    model, _, _ = load_memory("u")
    assert dtype_of(model) == "bfloat16"
    assert dtype_of(load_memory("u", dtype="float32")[0]) == "float32"  # --dtype overrides it


MULTILINGUAL = {
    "zh": ["我下个月要去京都看樱花。我已经订好了酒店。", "京都的樱花四月最美。"],
    "ru": ["Я хочу поехать в Москву на следующей неделе. Мой брат живёт там с семьёй.", "Москва весной красивая."],
    "de": ["Ich möchte nächste Woche nach Zürich fahren. Meine Schwester wohnt dort am Seeufer.", "Zürich ist schön."],
    "ar": ["أريد أن أزور القاهرة الشهر القادم. أخي يعيش هناك مع عائلته.", "القاهرة جميلة في الربيع."],
    "emoji": ["I finally ran my first marathon 🏃‍♀️🎉 in Lisbon yesterday! My legs hurt so much 😅", "Congrats 🥳"],
}


def test_conversations_in_every_language_are_learned_with_notes(tmp_path):
    from paramem.augment.pairs import validation_pairs
    from paramem.data.formats import load_conversations

    records = [
        {"id": lang, "messages": [{"role": "user", "content": u}, {"role": "assistant", "content": a}]}
        for lang, (u, a) in MULTILINGUAL.items()
    ]
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    learned = remember("u", load_conversations(path), ExtractiveTeacher(), config())
    assert [r.id for r in learned] == list(MULTILINGUAL)
    for notes in UserMemory("u").notes():
        assert notes.topics and notes.facts and validation_pairs(notes), notes.conversation_id


def test_a_conversation_with_nothing_to_learn_is_refused_before_anything_is_stored(tmp_path):
    from paramem.data.formats import load_conversations

    path = tmp_path / "c.jsonl"
    records = [
        {"id": "fine", "messages": [{"role": "user", "content": MULTILINGUAL["de"][0]}]},
        {"id": "empty-ish", "messages": [{"role": "user", "content": "ok 👍"}]},
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    with pytest.raises(InputError, match=rf"^{path}:2: conversation 'empty-ish': the extractive teacher found nothing"):
        remember("u", load_conversations(path), ExtractiveTeacher(), config())
    assert not UserMemory("u").exists  # no manifest was started


def test_no_notes_cache_writes_no_teacher_notes_to_disk(demo_conversations, tmp_path, monkeypatch):
    monkeypatch.setenv("PARAMEM_CACHE", str(tmp_path / "cache"))
    remember(
        "u",
        demo_conversations[:1],
        ExtractiveTeacher(),
        RememberConfig(base_model="tiny", notes_cache=False, train=TrainConfig(epochs=1, min_epochs=1)),
    )
    assert not (tmp_path / "cache" / "teacher").exists()
    remember("v", demo_conversations[:1], ExtractiveTeacher(), config())
    assert list((tmp_path / "cache" / "teacher").rglob("*.json"))  # the default keeps them


def test_forgetting_takes_a_forgotten_conversation_out_of_the_notes_the_memory_wrote_of_others(
    demo_conversations, cache
):
    """A memory may recall one conversation's facts under another's date: relearning the kept ones must
    not learn the forgotten one back from them."""
    from paramem.data.notes import Fact
    from paramem.lifecycle.forget import forget

    remember("u", demo_conversations[:2], ExtractiveTeacher(), replace(config(), keep_text="until-consolidated"))
    memory = UserMemory("u")
    first, second = memory.notes()
    first.facts = [Fact("The user planted tomatoes in a plastic pot on the balcony.")]
    second.facts = [*second.facts, Fact("The user planted tomatoes in a plastic pot on the balcony.")]
    with memory:
        memory.update_notes([first, second])
    forget("u", first.conversation_id)
    assert "planted tomatoes" not in " ".join(f.statement for n in memory.notes() for f in n.facts)


def test_a_bfloat16_memory_learns_on_after_writing_its_notes(demo_conversations, cache):
    """Recalling casts the weights to float32 and back: cast in inference mode they could not be
    trained again, and the second conversation failed on the real model (bf16)."""
    until = RememberConfig(
        base_model="tiny", keep_text="until-consolidated", dtype="bfloat16", train=TrainConfig(epochs=1, min_epochs=1)
    )
    assert len(remember("u", demo_conversations[:2], ExtractiveTeacher(), until)) == 2
