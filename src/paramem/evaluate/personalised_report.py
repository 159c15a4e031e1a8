"""The report of `paramem replies`: every method's ROUGE-1/L, Persona-F1 and judged win rate, and the
ablations, as markdown."""

from __future__ import annotations

from paramem.config import MultiLoraConfig, TrainConfig
from paramem.memory.milp.search import describe


def _figure(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _verdict(verdict: dict | None) -> str:
    """'0.46 (8/39/13)': the win rate, then wins / ties / losses."""
    if verdict is None:
        return "-"
    return f"{verdict['win_rate']:.2f} ({verdict['wins']}/{verdict['ties']}/{verdict['losses']})"


def render(results: dict) -> str:
    config = results["config"]
    lines = [
        f"# Personalised replies: {config['dataset']}, {len(results['episodes']['ids'])} report episodes",
        "",
        f"Base model {results['base_model']} ({results['dtype']}); search on development episodes "
        f"{', '.join(results['dev_episodes'])}; judge: {results['judge']} (each pair in both orders).",
        "",
        "| method | ROUGE-1 | ROUGE-L | Persona-F1 | partner P-F1 | win / tie / loss vs TpLP | judge agreement "
        "| calibrated: win rate (win / tie / loss) | s/episode |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, m in results["methods"].items():
        win = m["win_vs_tplp"]
        agreement = _figure(win["agreement"]) if win else "-"
        balanced = m.get("calibrated_win_vs_tplp")  # absent from runs judged before it existed
        lines.append(
            f"| {method} | {_figure(m['rouge1'])} | {_figure(m['rouge_l'])} | {_figure(m['persona_f1'])} | "
            f"{_figure(m['partner_persona_f1'])} | {_verdict(win)} | {agreement} | {_verdict(balanced)} | "
            f"{m['seconds_per_episode']:.0f} |"
        )
    gold = results["gold"]
    lines += [
        "",
        f"Gold replies: Persona-F1 {_figure(gold['persona_f1'])}, partner {_figure(gold['partner_persona_f1'])}.",
    ]
    check = results.get("judge_check")
    if check and check["cases"]:
        sure, balanced = check["strict"], check["calibrated"]
        lines += [
            "",
            f"What the judge is worth: asked to pick the gold reply against another episode's gold reply "
            f"({check['cases']} pairs, both orders), it picked it {sure['wins']} times, the other "
            f"{sure['losses']}, and disagreed with itself {sure['ties']} times (strict rule); by the "
            f"calibrated rule it picked the gold reply {balanced['wins']} times, the other {balanced['losses']}, "
            f"and tied {balanced['ties']} times (the two orders' preferences summing to exactly 0).",
        ]
    if "plum" in results["methods"]:
        lines += [
            "",
            f"PLUM learned each history session from the {config['teacher']} teacher's notes, "
            f"{config['plum_pairs']} pairs an epoch, up to {TrainConfig().epochs} epochs (the best held-out one kept).",
        ]
    if len(results["search"]) > 1:
        lines += ["", *ablation_table(results)]
    for factors, found in results["search"].items():
        chosen = describe(MultiLoraConfig(**found["chosen"]), results["depth"])
        volumes = ", ".join(f"{v:.4f}" for v in found["hypervolume"])
        lines += ["", f"Search over {factors}: chosen {chosen}.", f"Hypervolume after each trial: {volumes}."]
    return "\n".join(lines) + "\n"


def ablation_table(results: dict) -> list[str]:
    """The search-space ablation side by side: per searched factor set, what its search reached on
    the development episodes (the hypervolume shares trial 0's reference point, so the sets compare)
    and how its chosen memory replies on the report episodes."""

    last, fixed = results["config"]["factor_sets"][-1], MultiLoraConfig()
    lines = [
        "Search-space ablation (each factor set searched with the same trial budget on the same "
        f"development episodes; a factor not searched keeps its default: n={fixed.loras}, every layer, "
        f"r={fixed.rank}):",
        "",
        "| factors searched | chosen | dev loss | dev ROUGE-L | hypervolume | ROUGE-1 | ROUGE-L | Persona-F1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for factors, found in results["search"].items():
        chosen = MultiLoraConfig(**found["chosen"])
        trial = next(t for t in found["trials"] if MultiLoraConfig(**t["config"]) == chosen)
        replied = results["methods"].get("milp" if factors == last else f"milp@{factors}")
        figures = [_figure(replied[k]) if replied else "-" for k in ("rouge1", "rouge_l", "persona_f1")]
        lines.append(
            f"| {factors} | {describe(chosen, results['depth'])} | {trial['loss']:.3f} | {trial['rouge_l']:.3f} | "
            f"{found['hypervolume'][-1]:.4f} | {' | '.join(figures)} |"
        )
    return lines
