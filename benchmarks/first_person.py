"""First-person yes/no questions on the text side (issue 38): "Did I tell you that I own a Jeep?",
asked of a user's own chats, the way people ask a personal assistant. The demo showed the text side
saying "no" to them with the answer in its passages; LoCoMo's probes are all third person ("Did
Caroline ..."), so no development set held such questions. This one is made from MSC:

- an episode's sessions 1-3 are the user's chats (Speaker 1 is the user, Speaker 2 the assistant,
  as `paramem` reads MSC; the speakers' names are dropped, so passages read "user:" and "assistant:"
  as a real user's do);
- yes: each sentence of the user's persona (MSC's summary of what Speaker 1 said in sessions 1-2),
  sharing a content word with the chats, asked as "Did I tell you that ...?" or "Do you remember
  that ...?" (alternately);
- no: as many persona sentences of other users of the same split, absent from these chats (at most
  a third of their content words in them) and unlike this user's persona (under half);
- partner (a diagnostic, not in the accuracy): the assistant's persona sentences, asked the same way;
  the right answer is no: the user did not say them.

Episodes 0-9 are development data (MSC's DEV_EPISODES, as `paramem replies` splits them), 10-39 the
report set; LoCoMo development samples 0-3 and the demo set are scored beside them. Each probe is
scored (log P(yes) - log P(no), the base model reading the 5 passages BM25 finds, as the text side
ships) and read under decision rules whose thresholds never see the probes' answers:

  prior    minus the content-free question's score with its passages (ships)
  raw      0
  person   the prior, but a first-person question is measured against a first-person content-free
           question ("Did I tell you about that?")
  masked   minus the score of the question itself with its content words masked ("Did I tell you
           that I own a something?"), read with the question's own passages
  mention  (session 32) a question asking whether something was said ("Did we talk about my rescue
           cat?", "Do you remember that I own a Jeep?") is asked of the passages instead: "Do the
           excerpts mention the user's rescue cat?", read at 0 (the content-free "Do the excerpts
           mention that?" says yes to any passages); other questions under the prior rule
  said     (session 33) mention, but a claim about someone else ("Did we talk about the fact that
           Caroline ...?") keeps the prior rule: what the answer path ships (paramem.read.said),
           chosen on the development sets below, where mention said yes to LoCoMo's false claims
  own      (session 34) said, but a rewritten question in the first person ("Did I tell you ...",
           "my rescue cat") reads the 5 passages BM25 finds among the user's own turns: the
           assistant's lines are not evidence of what the user said (under said, the assistant's own
           facts were said yes to)
  agree    (session 35) own, the user's verbs agreeing with "the user" in the rewritten question
           ("the user owns a Jeep", not "the user own a Jeep"); the rules above read it as before

A rule may replace the shipped one only if it wins pooled over the development sets (MSC 0-9,
LoCoMo 0-3, demo) without losing on LoCoMo; the report set is then read once. Writes
benchmarks/results/first_person-<dev|report>-<model>-<dtype>.json (probes, scores and table).

    .venv/bin/python benchmarks/first_person.py                             # development sets only
    .venv/bin/python benchmarks/first_person.py --dev none --report 10-39   # then the report set, once
    .venv/bin/python benchmarks/first_person.py --rescore benchmarks/results/first_person-dev-...json
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import random
import re
import sys
from pathlib import Path

from paramem.config import DEFAULT_MODEL
from paramem.data.conversations import Conversation, Message
from paramem.data.formats import load_conversations
from paramem.data.notes import content_words, is_absent
from paramem.evaluate.episodes import msc_episodes
from paramem.evaluate.locomo import build_locomo
from paramem.evaluate.probes import load_probes
from paramem.evaluate.run import run_meta, write_results
from paramem.metrics.yes_no import margin_summary
from paramem.model.loading import dtype_of, load_model
from paramem.model.scoring import CONTENT_FREE_QUESTION, YesNoScorer
from paramem.read.retrieval import TEXT_K, TEXT_RETRIEVER, make_retriever, passages, retrieval_prompt
from paramem.read.said import FIRST_PERSON, asked_of_the_excerpts, excerpt_question

RESULTS = Path(__file__).parent / "results"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MSC = SHARED / "msc"
LOCOMO = SHARED / "locomo" / "locomo8.json"
DEMO = importlib.resources.files("paramem") / "demo_data"
TEMPLATES = ("Did I tell you that {s}?", "Do you remember that {s}?")
FIRST_PERSON_CONTENT_FREE = "Did I tell you about that?"
# Words of the question's shape, kept when masking (the rest of its content words become "something").
SHAPE = {"tell", "told", "mention", "mentioned", "remember", "say", "said", "ask", "asked"}
RULES = ("prior", "raw", "person", "masked", "mention", "said", "own", "agree")


def persona_sentences(facts) -> list[str]:
    out = []
    for fact in facts:
        for sentence in re.split(r"(?<=[.!?])\s+", fact.strip()):
            sentence = sentence.strip().rstrip(".!")
            if len(sentence.split()) >= 3 and content_words(sentence) and not sentence.endswith("?"):
                out.append(sentence)
    return out


def question(sentence: str, index: int) -> str:
    """A persona sentence ("I own a Jeep", "My dog is old") asked back in the first person."""
    said = sentence if sentence.startswith(("I ", "I'")) else sentence[:1].lower() + sentence[1:]
    return TEMPLATES[index % len(TEMPLATES)].format(s=said)


def masked(question_text: str) -> str:
    """The question with its content words (but those of its shape) replaced by "something"."""
    words = []
    for token in re.findall(r"\w+(?:'\w+)?|[^\w\s]+", question_text):
        masked_word = content_words(token) and token.casefold() not in SHAPE
        if masked_word and words and words[-1] == "something":
            continue
        words.append("something" if masked_word else token)
    return re.sub(r"\s+([?.!,])", r"\1", " ".join(words))


def anonymous(conversation: Conversation) -> Conversation:
    """Without the speakers' names: passages read "user:" / "assistant:" as a real user's chats do."""
    return Conversation(
        conversation.id,
        tuple(Message(m.role, m.content) for m in conversation.messages),
        conversation.timestamp,
        conversation.metadata,
    )


def msc_sets(first: int, last: int) -> list[tuple[str, list[Conversation], list[tuple[str, str, str]]]]:
    """One set per episode: (name, chats, [(question, "yes"/"no", kind)])."""
    episodes = msc_episodes(
        MSC / "msc_dialogue" / "session_3" / "test.txt", MSC / "msc_personasummary" / "session_4" / "test.txt"
    )[first : last + 1]
    pool = {e.id: persona_sentences(e.partner_facts) for e in episodes}
    out = []
    for episode in episodes:
        chats = [anonymous(c) for c in episode.history]
        words = content_words(" ".join(c.text for c in chats))
        mine = [s for s in pool[episode.id] if content_words(s) & words]
        others = [
            s
            for other, sentences in pool.items()
            if other != episode.id
            for s in sentences
            if is_absent(s, words) and not any(_overlap(s, m) >= 0.5 for m in pool[episode.id])
        ]
        rng = random.Random(episode.id)
        negatives = rng.sample(others, min(len(mine), len(others)))
        partner = persona_sentences(episode.facts)
        probes = [(question(s, i), "yes", "user") for i, s in enumerate(mine)]
        probes += [(question(s, i), "no", "other user") for i, s in enumerate(negatives)]
        probes += [(question(s, i), "no", "partner") for i, s in enumerate(partner)]
        out.append((f"msc{episode.id}", chats, probes))
    return out


def _overlap(a: str, b: str) -> float:
    words = content_words(a)
    return len(words & content_words(b)) / len(words) if words else 0.0


def scored(scorer: YesNoScorer, chats: list[Conversation], probes: list[tuple[str, str, str]]) -> dict:
    corpus = passages(chats)
    retriever = make_retriever(TEXT_RETRIEVER, corpus)
    users_own = make_retriever(TEXT_RETRIEVER, [p for p in corpus if p.role == "user"])
    questions = [q for q, _, _ in probes]
    content_free = [CONTENT_FREE_QUESTION, FIRST_PERSON_CONTENT_FREE]
    systems = [retrieval_prompt(found) for found in retriever.search(questions + content_free, TEXT_K)]
    with_passages = scorer.log_odds(questions + content_free, systems)
    masked_scores = scorer.log_odds([masked(q) for q in questions], systems[: len(questions)])
    rewritten = {i: excerpt_question(q, agree=False) for i, q in enumerate(questions)}
    rewritten = {i: r for i, r in rewritten.items() if r is not None}
    mention: list[float | None] = [None] * len(questions)
    for i, score in zip(rewritten, scorer.log_odds(list(rewritten.values()), [systems[i] for i in rewritten])):
        mention[i] = score
    said = {i: asked_of_the_excerpts(q, agree=False) for i, q in enumerate(questions)}
    said = {i: r for i, r in said.items() if r is not None}
    found_own = dict(zip(said, users_own.search([questions[i] for i in said], TEXT_K)))
    own: list[float | None] = [None] * len(questions)
    for i, score in zip(said, scorer.log_odds(list(said.values()), [retrieval_prompt(found_own[i]) for i in said])):
        own[i] = score
    # agree, as the answer path reads a said question: a first-person one against the user's own
    # turns, any other against every turn; only those the agreeing verbs reword are read again
    first = {i for i in said if FIRST_PERSON.search(questions[i])}
    agree = [(own if i in first else mention)[i] if i in said else None for i in range(len(questions))]
    agreeing = {i: asked_of_the_excerpts(questions[i]) for i in said}
    changed = [i for i in said if agreeing[i] != said[i]]
    read_with = [retrieval_prompt(found_own[i]) if i in first else systems[i] for i in changed]
    for i, score in zip(changed, scorer.log_odds([agreeing[i] for i in changed], read_with)):
        agree[i] = score
    prior, person = with_passages[-2:]
    return {
        "questions": questions,
        "gold": [a for _, a, _ in probes],
        "kinds": [k for _, _, k in probes],
        "with": with_passages[: len(questions)],
        "masked": masked_scores,
        "mention": mention,
        "own": own,
        "agree": agree,
        "prior": prior,
        "person": person,
    }


def thresholds(v: dict) -> dict[str, list[float]]:
    n = len(v["questions"])
    first = [bool(FIRST_PERSON.search(q)) for q in v["questions"]]
    said = [asked_of_the_excerpts(q, agree=False) is not None for q in v["questions"]]
    return {
        "prior": [v["prior"]] * n,
        "raw": [0.0] * n,
        "person": [v["person"] if f else v["prior"] for f in first],
        "masked": v["masked"],
        # the margin is the rewritten question's log-odds where there is one: s - (s - m) = m
        "mention": [v["prior"] if m is None else s - m for s, m in zip(v["with"], v["mention"])],
        "said": [s - m if a else v["prior"] for s, m, a in zip(v["with"], v["mention"], said)],
        "own": [
            s - o if o is not None and f else s - m if a else v["prior"]
            for s, o, m, a, f in zip(v["with"], v.get("own", [None] * n), v["mention"], said, first)
        ],
        "agree": [v["prior"] if g is None else s - g for s, g in zip(v["with"], v.get("agree", [None] * n))],
    }


def table(groups: dict[str, list[dict]]) -> dict:
    """Per group of sets and rule: accuracy with yes and no apart (partner probes apart), and AUC."""
    out = {}
    for group, sets in groups.items():
        for rule in RULES:
            gold, margins, partner = [], [], []
            for v in sets:
                for g, k, s, t in zip(v["gold"], v["kinds"], v["with"], thresholds(v)[rule]):
                    (partner if k == "partner" else margins).append(s - t)
                    if k != "partner":
                        gold.append(g)
            summary = margin_summary(gold, margins)
            summary["partner_no"] = round(sum(m <= 0 for m in partner) / len(partner), 4) if partner else None
            out.setdefault(group, {})[rule] = summary
    return out


def printed(rows: dict) -> str:
    lines = ["| set | n | " + " | ".join(RULES) + " | AUC |", "|---" * (len(RULES) + 3) + "|"]
    for group, by_rule in rows.items():
        cells = [
            f"{r['accuracy']:.3f} ({r['yes_accuracy']:.2f}/{r['no_accuracy']:.2f})"
            + (f" p{r['partner_no']:.2f}" if r["partner_no"] is not None else "")
            for r in by_rule.values()
        ]
        first = next(iter(by_rule.values()))
        lines.append(
            f"| {group} | {first['n']} | " + " | ".join(cells) + f" | {first['auc']:.3f} "
            f"(mention {by_rule['mention']['auc']:.3f}, said {by_rule['said']['auc']:.3f}, "
            f"own {by_rule['own']['auc']:.3f}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dev", default="0-9", help="MSC development episodes (first-last); none: skip every dev set")
    parser.add_argument("--report", default="none", help="MSC report episodes (first-last), read once a rule is chosen")
    parser.add_argument("--samples", default="0,1,2,3", help="LoCoMo development samples")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--rescore", type=Path, help="a results file: its table recomputed from its stored scores")
    args = parser.parse_args()
    if args.rescore:  # a new rule read off scores already taken, without the model
        stored = json.loads(args.rescore.read_text())
        groups = dict(stored["scores"])
        if "msc dev" in groups:
            groups["dev pooled"] = groups["msc dev"] + groups["demo (dev)"] + groups["locomo dev"]
        rows = table(groups)
        print(printed(rows))
        write_results(args.rescore, stored | {"table": rows, "rescored_by": " ".join(sys.argv)})
        return
    base, tokenizer = load_model(DEFAULT_MODEL, args.dtype)
    scorer = YesNoScorer(base.eval(), tokenizer)
    groups: dict[str, list[dict]] = {}

    def score_into(group: str, name: str, chats, probes) -> None:
        groups.setdefault(group, []).append({"name": name, **scored(scorer, chats, probes)})
        print(f"{group} {name}: {len(probes)} probes", flush=True)

    if args.dev != "none":
        dev_first, dev_last = map(int, args.dev.split("-"))
        for name, chats, probes in msc_sets(dev_first, dev_last):
            score_into("msc dev", name, chats, probes)
        demo = [(p.question, p.answer, "user") for p in load_probes(str(DEMO / "probes.jsonl"))]
        score_into("demo (dev)", "demo", load_conversations(str(DEMO / "conversations.jsonl")), demo)
        for sample in [int(s) for s in args.samples.split(",")]:
            bench = build_locomo(LOCOMO, sample, 6)
            third = [(p.question, p.answer, "third") for p in bench.probes]
            score_into("locomo dev", f"locomo{sample}", bench.conversations, third)
        groups["dev pooled"] = groups["msc dev"] + groups["demo (dev)"] + groups["locomo dev"]
    if args.report != "none":
        first, last = map(int, args.report.split("-"))
        for name, chats, probes in msc_sets(first, last):
            score_into("msc report", name, chats, probes)
    rows = table(groups)
    print(printed(rows))
    dtype = dtype_of(base)
    result = run_meta(sys.argv, DEFAULT_MODEL, {"msc": str(MSC), "locomo": str(LOCOMO), "demo": str(DEMO)}, dtype)
    groups.pop("dev pooled", None)
    part = "dev" if args.report == "none" else "report" if args.dev == "none" else "dev-report"
    out = RESULTS / f"first_person-{part}-{DEFAULT_MODEL}-{dtype}.json"
    write_results(out, result | {"table": rows, "scores": groups})


if __name__ == "__main__":
    main()
