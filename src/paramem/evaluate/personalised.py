"""Personalised reply generation, side by side on one base model (MiLP's evaluation, `paramem replies`):

    base              no memory: the dialogue so far only
    tplp              TpLP: the whole history pasted into the prompt
    rag               MaLP-style retrieval memory: the history's turns most like the last message (BM25)
    uelp              UeLP: a user embedding, a soft prompt (peft prompt tuning) learned from the history
    plum              PLUM's adapter of the history (teacher notes, yes/no pairs)
    milp              MiLP: the searched LoRAs, memory injection then instruction tuning
    milp-instruction  ablation: the same LoRAs, instruction tuning only
    milp-memory       ablation: the same LoRAs, memory injection only

The search runs on development episodes (their sessions 1-2 learned, session 3's replies scored; MaLP:
a dialogue's last history reply scored), once per searched factor set; the comparison runs on report
episodes, never looked at while searching. Every episode's replies are saved as it finishes, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from peft import PeftModel

from paramem.augment.teachers import make_teacher
from paramem.config import MiLPTrainConfig, MultiLoraConfig, PairConfig, RememberConfig, TrainConfig, setting
from paramem.data.conversations import Conversation
from paramem.errors import InputError, check_option
from paramem.evaluate.episodes import Episode, malp_episodes, msc_episodes, select
from paramem.evaluate.judge import EndpointJudge, LocalJudge, both_orders, calibrated, judge_check, strict, tally
from paramem.evaluate.personalised_report import render
from paramem.evaluate.run import run_meta
from paramem.files import write_atomic
from paramem.lifecycle.personalise import DevUser, MemoryObjective, settle_spec
from paramem.lifecycle.remember import remember
from paramem.memory.milp.model import REPLY_SYSTEM, learn, model_depth, replies
from paramem.memory.milp.search import SearchConfig, SearchSpace, choose, search
from paramem.memory.soft_prompt import learn_soft_prompt
from paramem.metrics.replies import ReplyScores, mean_scores, score_reply
from paramem.model.loading import dtype_of, load_model
from paramem.model.prompts import SYSTEM_PROMPT
from paramem.read.loading import load_memory
from paramem.read.retrieval import make_retriever, passages, retrieval_prompt

METHODS = ("base", "tplp", "rag", "uelp", "plum", "milp", "milp-instruction", "milp-memory")
MILP_METHODS = ("milp", "milp-instruction", "milp-memory")
# The paper's search-space ablation: each factor alone, each pair, all three.
FACTOR_SETS = ("loras", "rank", "layers", "loras,rank", "loras,layers", "rank,layers", "loras,layers,rank")
BASELINE = "tplp"  # what win rates are measured against, as in the paper
# Which episodes are compared and how they are judged, not how a reply is made (the search's settings
# matter through the memory it chose, which a MiLP reply's settings name).
NOT_REPLY_SETTINGS = (
    "episodes",
    "dev_users",
    "dev_episodes",
    "methods",
    "factor_sets",
    "search",
    "judge_url",
    "judge_model",
)
# Settings that only one method's replies depend on: changing one leaves the other methods' saved
# replies valid (a PLUM row with another teacher does not redo the base model's replies).
ONE_METHOD_SETTINGS = {
    "rag": ("retrieved",),
    "uelp": ("soft_prompt_tokens", "soft_prompt_learning_rate"),
    "plum": ("teacher", "plum_pairs"),
}


@dataclass
class RepliesConfig:
    dataset: str = setting("msc", "msc (sessions 1-3 learned, session 4 replied) or malp (last exchange held out)")
    episodes: int = setting(20, "report episodes compared")
    dev_users: int = setting(2, "development episodes the search learns and scores in each trial")
    dev_episodes: int = setting(10, "the first this many episodes of the dataset are development, the rest report")
    replies: int = setting(3, "replies generated and scored per episode (the first assistant turns)")
    methods: list[str] = setting(list(METHODS[:4]) + ["milp"], "methods compared")
    factor_sets: list[str] = setting(["loras,layers,rank"], "searched factor sets (ablation: see FACTOR_SETS)")
    search: SearchConfig = field(default_factory=SearchConfig)
    train: MiLPTrainConfig = field(default_factory=MiLPTrainConfig)
    retrieved: int = setting(5, "rag: history turns pasted into the prompt")
    soft_prompt_tokens: int = setting(16, "uelp: virtual tokens of the user embedding")
    soft_prompt_learning_rate: float = setting(1e-2, "uelp: learning rate of the soft prompt")
    judge_url: str | None = setting(None, "an OpenAI-compatible judge endpoint (else the local base model)")
    judge_model: str = setting("default", "the endpoint's model name")
    teacher: str = setting("local", "plum: the teacher that writes the history's notes (local or extractive)")
    plum_pairs: int = setting(
        20, "plum: pairs learned per session and epoch (PLUM's workload; all the notes give is ~5x)"
    )

    def __post_init__(self):
        check_option(self.dataset in ("msc", "malp"), "dataset", "msc or malp", self.dataset)
        check_option(self.episodes >= 1, "episodes", "at least 1", self.episodes)
        check_option(self.dev_users >= 1, "dev_users", "at least 1", self.dev_users)
        check_option(self.replies >= 1, "replies", "at least 1", self.replies)
        check_option(
            bool(self.methods) and set(self.methods) <= set(METHODS), "methods", ", ".join(METHODS), self.methods
        )
        check_option(bool(self.factor_sets), "factor_sets", "at least one", self.factor_sets)
        check_option(self.teacher in ("local", "extractive"), "teacher", "local or extractive", self.teacher)
        check_option(self.plum_pairs >= 1, "plum_pairs", "at least 1", self.plum_pairs)
        check_option(self.retrieved >= 1, "retrieved", "at least 1", self.retrieved)
        check_option(self.soft_prompt_tokens >= 1, "soft_prompt_tokens", "at least 1", self.soft_prompt_tokens)


def load_episodes(config: RepliesConfig, data: Path) -> list[Episode]:
    if config.dataset == "msc":
        return msc_episodes(
            data / "msc" / "msc_dialogue" / "session_3" / "test.txt",
            data / "msc" / "msc_personasummary" / "session_4" / "test.txt",
            max_targets=config.replies,
            dev=config.dev_episodes,
        )
    return malp_episodes(data / "malp" / "dialogues2_cleaned.json", dev=config.dev_episodes)


def dev_user(episode: Episode):
    """A development episode as the search sees it: the last history conversation's replies scored,
    learned from what precedes them (MSC: sessions 1-2 then session 3; MaLP: the dialogue without
    its last history exchange)."""

    if len(episode.history) >= 2:
        return DevUser(episode.id, list(episode.history[:-1]), episode.history[-1])
    messages = episode.history[0].messages
    return DevUser(episode.id, [Conversation(episode.id, messages[:-2])], episode.history[0], len(messages) - 1)


# ---------------------------------------------------------------------------------------------
# The methods


def history_prompt(history: tuple[Conversation, ...]) -> str:
    sessions = "\n\n".join(f"[conversation {i}]\n{c.text}" for i, c in enumerate(history, start=1))
    return f"{REPLY_SYSTEM}\n\nYour past conversations with this user:\n{sessions}"


def retrieval_system(history: tuple[Conversation, ...], query: str, k: int) -> str:
    found = make_retriever("bm25", passages(list(history))).search([query], k)[0]
    return retrieval_prompt(found, REPLY_SYSTEM)


def learn_plum(model_name: str, history: tuple[Conversation, ...], config: RepliesConfig, home: Path, dtype):
    """PLUM's adapter of the history, learned by `remember` into a store of the run's own."""

    user = "episode"
    train = TrainConfig(pairs=PairConfig(max_pairs=config.plum_pairs))
    remember(
        user,
        list(history),
        make_teacher(config.teacher),
        RememberConfig(base_model=model_name, dtype=dtype, train=train),
        home,
    )
    model, tokenizer, _ = load_memory(user, home, dtype)
    return model, tokenizer


class Replier:
    """Every method's replies for one episode, on one loaded base model."""

    def __init__(
        self,
        model,
        tokenizer,
        config: RepliesConfig,
        chosen: dict[str, MultiLoraConfig],
        work: Path,
        model_name: str,
        dtype: str,
    ):
        self.model, self.tokenizer, self.config, self.chosen, self.work = model, tokenizer, config, chosen, work
        self.model_name, self.dtype = model_name, dtype  # PLUM loads its own copy of the base model

    def _replies(self, model, episode: Episode, system_of=None, train=None) -> list[str]:
        contexts = [list(episode.test.messages[:target]) for target in episode.targets]
        systems = [system_of(c) if system_of else REPLY_SYSTEM for c in contexts]
        return replies(model, self.tokenizer, contexts, train or self.config.train, systems)

    def replies(self, method: str, episode: Episode) -> list[str]:
        history = list(episode.history)
        if method == "base":
            return self._replies(self.model, episode)
        if method == "tplp":
            wide = replace(self.config.train, max_length=8192)  # the history must fit
            return self._replies(self.model, episode, lambda _: history_prompt(episode.history), wide)
        if method == "rag":
            k = self.config.retrieved
            return self._replies(self.model, episode, lambda c: retrieval_system(episode.history, c[-1].content, k))
        if method == "uelp":
            prompted = learn_soft_prompt(
                self.model,
                self.tokenizer,
                history,
                self.config.train,
                self.config.soft_prompt_tokens,
                self.config.soft_prompt_learning_rate,
            )
            try:
                return self._replies(prompted, episode)
            finally:
                self.model = prompted.get_base_model()
        if method == "plum":
            home = self.work / "plum" / episode.id
            model, _ = learn_plum(self.model_name, episode.history, self.config, home, self.dtype)
            return self._replies(model, episode, lambda _: SYSTEM_PROMPT)
        stages = {"milp": (True, True), "milp-instruction": (False, True), "milp-memory": (True, False)}[
            method.split("@")[0]
        ]
        train = replace(self.config.train, memory_injection=stages[0], instruction_tuning=stages[1])
        factors = searched_factors(method, self.config)
        learned = learn(self.model, self.tokenizer, history, self.chosen[factors], train)
        try:
            return self._replies(learned, episode)
        finally:
            if isinstance(learned, PeftModel):
                learned.unload()


# ---------------------------------------------------------------------------------------------
# The run


def run_searches(
    model, tokenizer, model_name: str, episodes: list[Episode], config: RepliesConfig, out: Path, on_trial=None
):
    """One search per factor set on the development episodes; {factor set: chosen config}, and the
    trials of each. A search resumes only under the settings it began with (`spec.json`)."""

    users = [dev_user(e) for e in select(episodes, "dev", config.dev_users)]
    if not users:
        raise InputError(f"no development episodes in the {config.dataset} data")
    objective = MemoryObjective(model, tokenizer, users, config.train, replies=config.replies)
    made_with = {  # what every search's trials depend on, whatever its factors
        "base_model": model_name,
        "dtype": dtype_of(model),
        "dev_episodes": [u.name for u in users],
        "train": asdict(config.train),
        "replies": config.replies,
    }
    chosen, trials = {}, {}
    for factors in config.factor_sets:
        space = SearchSpace(depth=model_depth(model), factors=factors.split(","))
        folder = out / "search" / factors.replace(",", "+")
        settle_spec(folder, made_with, "pass another --out")
        found = search(space, objective, folder, config.search, on_trial)
        chosen[factors], trials[factors] = choose(found).memory, found
    return chosen, trials


def searched_factors(method: str, config: RepliesConfig) -> str:
    """The factor set whose chosen memory a MiLP method replies with: "milp@rank" names its own,
    the others use MiLP's (the last searched)."""
    return method.split("@")[1] if "@" in method else config.factor_sets[-1]


def reply_settings(method: str, config: RepliesConfig, chosen: dict, model_name: str, dtype: str) -> str:
    """A digest of everything a method's saved replies depend on, so that a rerun into the same folder
    never mixes replies made under other settings (a longer search can choose another memory). Replies
    saved before digests were kept carry none and are taken as they are."""

    family = method.split("@")[0]  # "milp@rank" is a MiLP row
    others = {k for m, keys in ONE_METHOD_SETTINGS.items() if m != family for k in keys}
    depends = {k: v for k, v in asdict(config).items() if k not in NOT_REPLY_SETTINGS and k not in others}
    depends |= {"base_model": model_name, "dtype": dtype, "method": method}
    if family in MILP_METHODS:
        depends["memory"] = asdict(chosen[searched_factors(method, config)])
    return hashlib.sha256(json.dumps(depends, sort_keys=True).encode()).hexdigest()[:16]


def run(config: RepliesConfig, data: Path, out: Path, model_name: str, dtype: str | None = None, log=None):
    """Search, then reply with every method on the report episodes, judge, and write results.json and
    report.md under `out`. Returns the results."""

    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    episodes = load_episodes(config, data)
    report = select(episodes, "report", config.episodes)
    model, tokenizer = load_model(model_name, dtype)
    dtype = dtype_of(model)
    milp_methods = [m for m in config.methods if m in MILP_METHODS]

    def on_trial(trial) -> None:
        if log is not None:
            log.status(f"search trial {trial.number} ({trial.kind}): loss {trial.loss:.3f} ROUGE-L {trial.rouge_l:.3f}")

    chosen, trials = (
        run_searches(model, tokenizer, model_name, episodes, config, out, on_trial) if milp_methods else ({}, {})
    )
    # the search-space ablation: MiLP with each further factor set's choice
    methods = list(config.methods) + [f"milp@{f}" for f in config.factor_sets[:-1] if "milp" in config.methods]
    replier = Replier(model, tokenizer, config, chosen, out, model_name, dtype)
    folder = out / "episodes"
    folder.mkdir(exist_ok=True)
    if log is not None:
        log.status(f"replying in {len(report)} episodes", total=len(report))
    made_with = {method: reply_settings(method, config, chosen, model_name, dtype) for method in methods}
    for episode in report:
        path = folder / f"{episode.id}.json"
        saved = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        for method in methods:
            if method in saved and saved[method].get("settings", made_with[method]) != made_with[method]:
                raise InputError(
                    f"the saved {method} replies were made with other settings (base model, decoding, "
                    "training or the searched memory); pass another --out",
                    path=path,
                )
            if method not in saved:
                start = time.perf_counter()
                replies = replier.replies(method, episode)
                seconds = time.perf_counter() - start
                saved[method] = {"replies": replies, "seconds": seconds, "settings": made_with[method]}
                write_atomic(path, json.dumps(saved, indent=1))
        if log is not None:
            log.advance(f"episode {episode.id} done")
    judge = (
        EndpointJudge(config.judge_url, config.judge_model)
        if config.judge_url
        else LocalJudge(replier.model, tokenizer)
    )

    results = {"methods": {}, "config": asdict(config), "base_model": model_name, "dtype": dtype}
    results["depth"] = model_depth(model)
    per_episode = [(e, json.loads((folder / f"{e.id}.json").read_text(encoding="utf-8"))) for e in report]
    for method in methods:
        scores: list[ReplyScores] = []
        pairs = []  # the judge's preference for the method's reply over TpLP's, in both orders
        for episode, saved in per_episode:
            replies = saved[method]["replies"]
            scores += episode_scores(episode, replies)
            if method != BASELINE and BASELINE in saved:
                for target, text, baseline in zip(episode.targets, replies, saved[BASELINE]["replies"]):
                    pairs.append(both_orders(judge, list(episode.test.messages[:target]), text, baseline))
        results["methods"][method] = {
            **mean_scores(scores),
            "replies": len(scores),
            "seconds_per_episode": statistics.fmean(s[method]["seconds"] for _, s in per_episode),
            "win_vs_tplp": tally([strict(*p) for p in pairs]).as_dict() if pairs else None,
            "calibrated_win_vs_tplp": tally([calibrated(*p) for p in pairs]).as_dict() if pairs else None,
        }
    results["judge_check"] = judge_check(judge, mismatched_cases(per_episode))
    results["search"] = {
        factors: {
            "chosen": asdict(chosen[factors]),
            "trials": [asdict(t) for t in found],
            "hypervolume": [t.hypervolume for t in found],
        }
        for factors, found in trials.items()
    }
    results["gold"] = gold_scores(per_episode)
    results["episodes"] = {"dataset": config.dataset, "split": "report", "ids": [e.id for e in report]}
    results["dev_episodes"] = [e.id for e in select(episodes, "dev", config.dev_users)]
    results["judge"] = judge.name
    results["seconds"] = time.perf_counter() - started
    results["meta"] = run_meta(sys.argv, model_name, {"dataset": config.dataset, "root": str(data)}, dtype)
    write_atomic(out / "results.json", json.dumps(results, indent=2))
    write_atomic(out / "report.md", render(results))
    return results


def episode_scores(episode: Episode, replies: list[str]) -> list[ReplyScores]:
    """Each reply scored against the gold turn it stands in for and the episode's persona facts."""
    partner = list(episode.partner_facts) or None
    return [
        score_reply(text, episode.test.messages[target].content, list(episode.facts), partner)
        for target, text in zip(episode.targets, replies)
    ]


def mismatched_cases(per_episode) -> list[tuple[list, str, str]]:
    """The judge's check: each scored turn's gold reply against the next episode's gold reply in
    the same place (the better reply is known)."""
    if len(per_episode) < 2:
        return []  # no other episode's reply to pit against
    golds = [[e.test.messages[t].content for t in e.targets] for e, _ in per_episode]
    cases = []
    for i, (episode, _) in enumerate(per_episode):
        other = golds[(i + 1) % len(golds)]
        for j, target in enumerate(episode.targets):
            cases.append((list(episode.test.messages[:target]), golds[i][j], other[j % len(other)]))
    return cases


def gold_scores(per_episode) -> dict:
    """Persona-F1 of the gold replies themselves: the scale the methods' figures sit on."""
    scores = [
        score for e, _ in per_episode for score in episode_scores(e, [e.test.messages[t].content for t in e.targets])
    ]
    means = mean_scores(scores)
    return {"persona_f1": means["persona_f1"], "partner_persona_f1": means["partner_persona_f1"]}
