"""The one answer path (read/respond.py): where each answer comes from, its evidence, abstention."""

from dataclasses import replace

import pytest

from paramem.augment.teachers.extractive import ExtractiveTeacher
from paramem.config import RememberConfig, TrainConfig
from paramem.lifecycle.remember import remember
from paramem.model.loading import tiny_model
from paramem.read.respond import ABSTAIN, AnswerConfig, Responder
from paramem.store.user import UserMemory

CONFIG = RememberConfig(base_model="tiny", train=TrainConfig(epochs=1, min_epochs=1))
NEVER_ABSTAIN = AnswerConfig(support_threshold=float("-inf"), max_new_tokens=3)
ALWAYS_ABSTAIN = AnswerConfig(support_threshold=float("inf"), max_new_tokens=3)


def indexed_only(user, conversations, monkeypatch):
    """Remember stopped as the model would load: the conversations are indexed, nothing is learned."""
    import paramem.lifecycle.remember as remember_module

    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(remember_module, "load_model", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        remember(user, conversations, ExtractiveTeacher(), CONFIG)


def test_a_user_with_nothing_stored_is_answered_without_a_model():
    with UserMemory("nobody") as memory:
        memory.create()
    responder = Responder.for_user("nobody")
    assert responder.model is None and responder.source == "nothing"
    said, asked = responder.respond(["What did I plant?", "Did we talk about tomatoes?"])
    assert (said.answer, said.abstained, said.supported_by) == (ABSTAIN, True, "nothing")
    assert (asked.answer, asked.yes_no, asked.abstained) == ("no", True, False)


def test_an_indexed_conversation_answers_from_its_text_before_it_is_learned(demo_conversations, monkeypatch):
    indexed_only("u", demo_conversations[:3], monkeypatch)
    responder = Responder.for_user("u", config=NEVER_ABSTAIN)
    assert responder.memory is None and responder.source == "text"
    closed, opened = responder.respond(["Did my tomato seedlings get yellow leaves?", "Why were my seedlings yellow?"])
    assert closed.yes_no and closed.answer in ("yes", "no") and closed.margin is not None
    assert closed.evidence[0].conversation == "garden" and closed.evidence[0].date == "2026-03-02"
    assert all(e.source == "text" for e in closed.evidence) and len(closed.evidence) == NEVER_ABSTAIN.k
    assert not opened.yes_no and not opened.abstained and opened.answer != ABSTAIN
    assert opened.evidence[0].conversation == "garden"


def test_an_unsupported_open_question_abstains_and_writes_nothing(demo_conversations, monkeypatch):
    indexed_only("u", demo_conversations[:1], monkeypatch)
    [response] = Responder.for_user("u", config=ALWAYS_ABSTAIN).respond(["Where did I run the marathon?"])
    assert response.abstained and response.answer == ABSTAIN and response.supported_by == "text"


def test_the_text_side_reads_with_the_memory_switched_off(demo_conversations):
    from paramem.read.loading import load_memory

    remember("u", demo_conversations[:2], ExtractiveTeacher(), CONFIG)
    assert Responder.for_user("u").memory is None  # the text holds everything: the memory is not loaded
    model, tokenizer, memory = load_memory("u")
    responder = Responder(model, tokenizer, memory.texts.conversations(), memory, NEVER_ABSTAIN)
    assert responder.source == "text"
    question = "Did my tomato seedlings get yellow leaves?"
    [with_memory_loaded] = responder.respond([question])
    base, tokenizer = tiny_model()
    alone = Responder(base.eval(), tokenizer, UserMemory("u").texts.conversations(), None, NEVER_ABSTAIN)
    [base_only] = alone.respond([question])
    assert with_memory_loaded.margin == pytest.approx(base_only.margin, abs=1e-4)


def test_memory_beside_text_loads_the_memory_and_reads_it_with_the_passages(demo_conversations, monkeypatch):
    from peft import PeftModel

    remember("u", demo_conversations[:2], ExtractiveTeacher(), CONFIG)
    beside = replace(NEVER_ABSTAIN, memory_beside_text=True)
    responder = Responder.for_user("u", config=beside)
    assert isinstance(responder.model, PeftModel) and responder.memory is not None
    assert responder.source == "text and memory" and responder.memory_only == []
    with responder.model.disable_adapter():  # the same passages, the memory off: the text side's score
        [off] = responder.respond(["Did my tomato seedlings get yellow leaves?"])
    [on] = responder.respond(["Did my tomato seedlings get yellow leaves?"])
    assert on.supported_by == "text and memory" and on.evidence[0].conversation == "garden"
    assert on.margin != pytest.approx(off.margin, abs=1e-6)  # the adapter was read
    # with no memory learned there is nothing to read beside the text
    indexed_only("v", demo_conversations[:1], monkeypatch)
    assert Responder.for_user("v", config=beside).source == "text"


def test_once_the_text_is_gone_the_memory_answers_and_says_so(demo_conversations):
    dropping = replace(CONFIG, keep_text="until-consolidated")
    remember("u", demo_conversations[:2], ExtractiveTeacher(), dropping)
    responder = Responder.for_user("u", config=NEVER_ABSTAIN)
    assert responder.source == "memory"
    closed, opened = responder.respond(["Did we talk about tomatoes?", "What did I plant?"])
    assert closed.supported_by == "memory" and closed.answer in ("yes", "no")
    assert opened.supported_by == "memory" and opened.margin is not None

    # a third conversation kept as text: the memory reads its passages and carries the other two
    remember("u", demo_conversations[2:3], ExtractiveTeacher(), CONFIG)
    responder = Responder.for_user("u", config=NEVER_ABSTAIN)
    assert responder.source == "text and memory"
    [answer] = responder.respond(["Did we talk about the marathon?"])
    carried = [e.conversation for e in answer.evidence if e.source == "memory"]
    assert carried == [c.id for c in demo_conversations[:2]]
    assert {e.conversation for e in answer.evidence if e.source == "text"} == {demo_conversations[2].id}


def test_a_bad_answer_config_is_one_line():
    from paramem.errors import InputError

    with pytest.raises(InputError, match="k \\(--k\\) must be at least 1"):
        AnswerConfig(k=0)
    with pytest.raises(InputError, match="retriever must be"):
        AnswerConfig(retriever="grep")


def test_recite_then_retrieve_adds_the_memorys_recitation_to_the_query(demo_conversations):
    from paramem.read.loading import load_memory

    remember("u", demo_conversations[:3], ExtractiveTeacher(), CONFIG)
    model, tokenizer, memory = load_memory("u")

    class Reciting(Responder):  # a memory whose recitation is known
        def recite(self, questions):
            return ["I ran the Lisbon half marathon in October."] * len(questions)

    config = replace(NEVER_ABSTAIN, recite=True, k=1)
    reciting = Reciting(model, tokenizer, memory.texts.conversations(), memory, config)
    searched = []
    search = reciting.retriever.search
    reciting.retriever.search = lambda queries, k: searched.extend(queries) or search(queries, k)
    [response] = reciting.respond(["What did I sign up for?"])
    assert searched[-1] == "What did I sign up for? I ran the Lisbon half marathon in October."
    assert response.evidence[0].conversation == "marathon"  # found by the recitation's words
    plain = Responder(model, tokenizer, memory.texts.conversations(), memory, replace(config, recite=False))
    assert plain.query("What did I sign up for?") == "What did I sign up for?"
    assert len(Responder(model, tokenizer, [], memory, config).recite(["What did I sign up for?"])) == 1


def test_coverage_is_the_share_of_the_questions_words_the_passages_hold():
    from paramem.read.respond import coverage
    from paramem.read.retrieval import Passage

    found = [Passage("garden", "[2026-03-02] user: The pots have no drainage holes.", "2026-03-02")]
    assert coverage("Did the pots have drainage holes?", found) == 1.0
    assert coverage("What car insurance did I buy?", found) == 0.0
    assert coverage("Why?", found) == 1.0  # no content words: nothing to miss


def test_an_open_question_whose_words_the_text_lacks_abstains(demo_conversations, monkeypatch):
    indexed_only("u", demo_conversations[:1], monkeypatch)
    config = replace(NEVER_ABSTAIN, coverage_threshold=0.5)
    lacking, covered = Responder.for_user("u", config=config).respond(
        ["What car insurance did I buy?", "Why were my tomato seedlings yellow?"]
    )
    assert lacking.abstained and lacking.answer == ABSTAIN
    assert not covered.abstained


def test_with_no_text_an_open_answer_is_written_from_the_memorys_recital_with_the_memory_off(
    demo_conversations, monkeypatch
):
    import paramem.read.respond as respond_module
    from paramem.read.loading import load_memory
    from paramem.read.respond import RECITAL_HEADING

    remember("u", demo_conversations[:2], ExtractiveTeacher(), replace(CONFIG, keep_text="until-consolidated"))
    model, tokenizer, memory = load_memory("u")
    recital = "We talked about tomatoes on 2 March 2026."

    class Reciting(Responder):  # a memory whose recitation is known, and sure it holds an answer
        def recite(self, questions):
            return [recital] * len(questions)

        def support(self, questions):
            return [[] for _ in questions], [""] * len(questions), [1.0] * len(questions)

    written = []

    def answer_many(model, tokenizer, questions, systems, max_new_tokens):
        lora = [m for m in model.modules() if hasattr(m, "disable_adapters")]
        written.append((systems, all(m.disable_adapters for m in lora) and bool(lora)))
        return ["Tomatoes."] * len(questions)

    monkeypatch.setattr(respond_module, "answer_many", answer_many)
    [response] = Reciting(model, tokenizer, [], memory, NEVER_ABSTAIN).respond(["What did I plant?"])
    assert (response.answer, response.supported_by) == ("Tomatoes.", "memory")
    [(systems, memory_off)] = written
    assert memory_off and systems[0].endswith(f"{RECITAL_HEADING}\n- {recital}")
    Reciting(model, tokenizer, [], memory, replace(NEVER_ABSTAIN, read_recital=False)).respond(["What did I plant?"])
    assert written[-1][1] is False  # without it, the memory writes its own answer


def test_a_question_about_what_was_said_is_asked_of_the_passages_at_zero(demo_conversations, monkeypatch):
    from paramem.model.scoring import YesNoScorer
    from paramem.read.retrieval import retrieval_prompt

    indexed_only("u", demo_conversations[:3], monkeypatch)
    responder = Responder.for_user("u", config=NEVER_ABSTAIN)
    said, claim = "Did we talk about my tomato seedlings?", "Did we talk about the fact that Ana grows tomatoes?"
    margins, found = responder.yes_no_margins([said, claim])
    scorer = YesNoScorer(responder.model, responder.tokenizer)
    rewritten, as_asked = scorer.log_odds(
        ["Do the excerpts mention the user's tomato seedlings?", claim], [retrieval_prompt(f) for f in found]
    )
    threshold = responder.yes_no_threshold()
    assert margins == pytest.approx([rewritten, as_asked - threshold], abs=1e-4)
    [response] = responder.respond([said])
    assert response.margin == pytest.approx(rewritten, abs=1e-4) and response.answer == (
        "yes" if rewritten > 0 else "no"
    )
    # the evaluation's reader: a score minus the path's threshold is the path's margin
    scores = responder.yes_no_reader().score([said, claim])
    assert [s - threshold for s in scores] == pytest.approx(margins, abs=1e-4)
    # and it counts the prompt the said question is read with, not the question as asked
    excerpt_prompt = scorer.prompts(
        ["Do the excerpts mention the user's tomato seedlings?"], [retrieval_prompt(found[0])]
    )
    assert responder.yes_no_reader().prompt_tokens([said]) == len(excerpt_prompt[0])


def test_a_first_person_question_about_what_was_said_reads_the_users_own_turns():
    from paramem.data.conversations import Conversation, Message

    chat = Conversation(
        "pets",
        (
            Message("user", "I went hiking in the hills on Sunday."),
            Message("assistant", "My rescue cat would hate hiking; my rescue cat sleeps all day."),
            Message("user", "Hiking with a cat sounds hard."),
        ),
        "2026-03-02T10:00:00",
    )
    responder = Responder(None, None, [chat])  # retrieval alone: no model is needed to choose passages
    mine, ours, claim = "Did I tell you about my rescue cat?", "Did we talk about a rescue cat?", "Is the cat old?"
    asked, found = responder.yes_no_reading([mine, ours, claim])
    assert asked == ["Do the excerpts mention the user's rescue cat?", "Do the excerpts mention a rescue cat?", claim]
    assert {p.role for p in found[0]} == {"user"}  # the assistant's cat is not the user's
    assert "assistant" in {p.role for p in found[1]} and "assistant" in {p.role for p in found[2]}
