from conftest import DATA, FIXTURES, needs_data

from paramem.data.formats import load_conversations
from paramem.evaluate.episodes import malp_episodes, msc_episodes, select
from paramem.metrics.replies import persona_f1

MSC = FIXTURES / "msc"


def test_msc_speakers_are_told_apart_by_place_in_every_file():
    sessions = load_conversations(MSC / "msc_dialogue" / "session_3" / "test.txt")
    # previous sessions carry no speaker ids; session 3 of test_1 names its speakers by worker number
    for conversation in sessions:
        roles = [m.role for m in conversation.messages]
        assert roles == ["user", "assistant"] * (len(roles) // 2)
        assert {m.name for m in conversation.messages} == {"Speaker 1", "Speaker 2"}
    assert [c.id for c in sessions[:3]] == ["test_0/session_1", "test_0/session_2", "test_0/session_3"]
    fourth = load_conversations(MSC / "msc_personasummary" / "session_4" / "test.txt")
    assert fourth[0].id == "test_0/session_4"  # the folder gives the session's number
    assert [(m.role, m.name) for m in fourth[0].messages[:2]] == [("user", "Speaker 1"), ("assistant", "Speaker 2")]


def test_msc_episode_pairs_sessions_1_to_3_with_session_4():
    episodes = msc_episodes(
        MSC / "msc_dialogue" / "session_3" / "test.txt", MSC / "msc_personasummary" / "session_4" / "test.txt"
    )
    first = episodes[0]
    assert first.id == "test_0" and [c.id for c in first.history] == [f"test_0/session_{n}" for n in (1, 2, 3)]
    assert first.test.id == "test_0/session_4"
    assert [first.test.messages[i].content for i in first.targets] == [
        "Long, but the honey you gave me kept me going.",
        "Thank you, the other nurses loved it too.",
    ]
    # the replies are Speaker 2's: their persona is what Persona-F1 measures against
    assert first.facts == ("I am a nurse.", "I work nights.") and first.partner_facts[0] == "I keep bees."
    assert [e.split for e in episodes] == ["dev", "dev"]


def test_malp_episode_holds_out_the_last_exchange():
    (episode,) = malp_episodes(FIXTURES / "malp.json")[:1]
    test = episode.test.messages
    assert episode.targets == (len(test) - 1,) and test[-1].role == "assistant" and test[-2].role == "user"
    assert episode.history[0].messages == test[:-2]
    assert episode.facts == tuple(m.content for m in test[:-2] if m.role == "user")


def test_select_takes_the_first_of_a_split():
    episodes = malp_episodes(FIXTURES / "malp.json")
    assert select(episodes, "dev", 1) == episodes[:1]
    assert select(episodes, "report", None) == [e for e in episodes if e.split == "report"]


@needs_data
def test_msc_real_files_match_every_episode_and_speaker_place_follows_persona():
    session_3 = DATA / "msc" / "msc_dialogue" / "session_3" / "test.txt"
    episodes = msc_episodes(session_3, DATA / "msc" / "msc_personasummary" / "session_4" / "test.txt")
    assert len(episodes) == 501 and all(len(e.history) == 3 and e.targets for e in episodes)
    # Sessions 1-2: the opener's turns match persona 0 better than the replier's do (measured: 501/501
    # and 471/501). Sessions 3-4 give no clear signal either way (about half), so place it is, as ParlAI.
    agree = 0
    for episode in episodes:
        first = episode.history[0].messages
        opener = " ".join(m.content for m in first if m.role == "user")
        replier = " ".join(m.content for m in first if m.role == "assistant")
        p0, p1 = list(episode.partner_facts), list(episode.facts)
        agree += persona_f1(opener, p0) + persona_f1(replier, p1) > persona_f1(opener, p1) + persona_f1(replier, p0)
    assert agree >= 0.95 * len(episodes)


@needs_data
def test_malp_real_file_gives_episodes():
    episodes = malp_episodes(DATA / "malp" / "dialogues2_cleaned.json")
    assert len(episodes) > 100 and all(e.facts and e.history[0].messages for e in episodes)
