"""results.json of an experiment -> report.md and PNG plots in the same folder."""

from __future__ import annotations

from pathlib import Path

from paramem.evaluate.run import MethodResult
from paramem.read.readers import TEXT_RULE, main_rule


def _interval(metrics: dict, name: str) -> str:
    low, high = metrics["intervals"].get(name, (float("nan"), float("nan")))
    return f"{metrics[name]:.3f} [{low:.2f}, {high:.2f}]"


def _ranking_auc(method: dict) -> str:
    auc, (low, high) = MethodResult.from_dict(method).auc  # also for results saved before AUC was
    return f"{auc:.3f} [{low:.2f}, {high:.2f}]"


def methods_table(results: dict, aucs: dict[str, str], rule: str = "prior") -> list[str]:
    """One row per method under `rule`; `aucs` holds each method's ranking AUC, the same under every rule."""
    lines = [
        "| method | accuracy [95% CI] | yes-acc | no-acc | macro-F1 | yes-rate | ranking AUC | open F1 | "
        "prompt tokens | s / answer | bytes / user |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    open_results = results.get("open", {})
    for name, method in results["methods"].items():
        m = method["metrics"][rule]
        cost = results.get("costs", {}).get(name, {})
        f1 = open_results.get(name, {}).get("f1")
        lines.append(
            f"| {name} | {_interval(m, 'accuracy')} | {_interval(m, 'yes_accuracy')} | "
            f"{_interval(m, 'no_accuracy')} | {m['macro_f1']:.3f} | {m['yes_rate']:.2f} | {aucs[name]} | "
            f"{'-' if f1 is None else f'{f1:.3f}'} | {method['prompt_tokens']} | "
            f"{cost.get('seconds_per_answer', float('nan')):.2f} | {cost.get('bytes_per_user', 0):,} |"
        )
    return lines


def curve_rule(config: dict) -> str:
    """The rule the forgetting curve reads the memory under: its form's (older runs: sequential)."""
    return main_rule("log-odds", config.get("remember", {}).get("train", {}).get("form", "sequential"))


def curve_rows(results: dict) -> tuple[list[str], list[float], list[float], list[float]]:
    """(sessions, accuracy right after learning each, accuracy at the end, mean over learned so far)."""
    curve = results.get("curve", [])
    sessions = list(curve[-1]) if curve else []
    right_after = [curve[i][s] for i, s in enumerate(sessions)]
    at_end = [curve[-1][s] for s in sessions]
    growing = [sum(point.values()) / len(point) for point in curve]
    return sessions, right_after, at_end, growing


def scale_rows(results: dict) -> list[dict]:
    """Per point of the scale curve: sessions learned, each method's mean accuracy over the sessions so
    far (the memory's from its own curve), and the text methods' prompt tokens and seconds per answer."""
    memory = results.get("curve", [])
    rows = []
    for point in results.get("text_curve", []):
        learned = point["learned"]
        row = {"learned": learned, "methods": {}}
        if len(memory) >= learned:
            row["methods"]["memory"] = {"mean": sum(memory[learned - 1].values()) / len(memory[learned - 1])}
        for method, scored in point["methods"].items():
            row["methods"][method] = {"mean": sum(scored["accuracy"].values()) / len(scored["accuracy"]), **scored}
        rows.append(row)
    return rows


def plot(results: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    sessions, right_after, at_end, growing = curve_rows(results)
    if sessions:
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
        x = range(1, len(sessions) + 1)
        left.plot(x, right_after, "o-", label="right after learning it")
        left.plot(x, at_end, "s--", label=f"after all {len(sessions)} sessions")
        left.set(
            xlabel="session (learned in this order)", ylabel="yes/no accuracy", ylim=(0, 1), title="forgetting curve"
        )
        left.axhline(0.5, color="grey", lw=0.5)
        left.legend()
        right.plot(x, growing, "o-", label=f"memory ({curve_rule(results.get('config', {}))} rule)")
        scale = scale_rows(results)
        for method in results.get("config", {}).get("curve_methods", []):
            points = [(r["learned"], r["methods"][method]["mean"]) for r in scale]
            if points:
                right.plot(*zip(*points), "s--", label=f"{method} ({TEXT_RULE} rule)")
        if len(right.get_lines()) > 1:
            right.legend()
        right.set(
            xlabel="sessions learned",
            ylabel="accuracy on all learned sessions",
            ylim=(0, 1),
            title="accuracy as memory grows",
        )
        right.axhline(0.5, color="grey", lw=0.5)
        fig.tight_layout()
        fig.savefig(out / "forgetting.png", dpi=120)
        plt.close(fig)
        written.append("forgetting.png")
    if results.get("methods"):
        names = list(results["methods"])
        fig, ax = plt.subplots(figsize=(8, 3.8))
        for offset, (key, label) in enumerate((("yes_accuracy", "yes"), ("no_accuracy", "no"), ("accuracy", "all"))):
            values = [results["methods"][n]["metrics"]["prior"][key] for n in names]
            errors = [
                [v - results["methods"][n]["metrics"]["prior"]["intervals"][key][0] for n, v in zip(names, values)],
                [results["methods"][n]["metrics"]["prior"]["intervals"][key][1] - v for n, v in zip(names, values)],
            ]
            ax.bar(
                [i + (offset - 1) * 0.27 for i in range(len(names))], values, 0.27, yerr=errors, label=label, capsize=2
            )
        ax.set_xticks(range(len(names)), names)
        ax.set(ylabel="accuracy (95% CI)", ylim=(0, 1), title="yes/no probes, prior rule")
        ax.axhline(0.5, color="grey", lw=0.5)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "methods.png", dpi=120)
        plt.close(fig)
        written.append("methods.png")
    return written


def learning_settings(config: dict) -> dict:
    """PLUM's ablation settings of a saved experiment config: nested under `remember` since the config
    tree (config.py), flat in results written before it."""
    if "remember" in config:
        train = config["remember"]["train"]
        pairs = train["pairs"]
        return {
            "epochs": train["epochs"],
            "qa_weight": train["qa_weight"],
            "negative_ratio": pairs["negative_ratio"],
            "open_pairs": pairs["open_questions"],
            "statements": pairs["statements"],
        }
    return {
        "epochs": config["epochs"],
        "qa_weight": config["qa_weight"],
        "negative_ratio": config["negative_ratio"],
        "open_pairs": config["open_pairs"],
        "statements": config.get("statements", True),
    }


def write_report(results: dict, out: Path) -> Path:
    bench, config = results["benchmark"], results["config"]
    learning = learning_settings(config)
    aucs = {name: _ranking_auc(method) for name, method in results["methods"].items()}
    lines = [
        f"# LoCoMo experiment: sample {bench['sample_id']} ({' and '.join(bench['speakers'])}), "
        f"{bench.get('split', 'unsplit')} split",
        "",
        f"- command: `{results['command']}`",
        f"- git commit: {results['git_commit']}",
        f"- base model: {results['base_model']}; teacher: {config['teacher']}; date: {results['date']}",
        f"- machine: {results['machine']}",
        f"- sessions learned, in date order: {len(bench['sessions'])} ({bench['sessions'][0]} ... "
        f"{bench['sessions'][-1]}); up to {learning['epochs']} epochs each, lambda {learning['qa_weight']}, "
        f"negatives per positive {learning['negative_ratio']}, open pairs {learning['open_pairs']}, "
        f"statements {learning['statements']}",
        f"- probes: {bench['probes']} yes/no ({bench['yes']} yes) from LoCoMo's observations and other samples' "
        f"observations (absent here); {bench['open_questions']} open questions with evidence in these sessions",
        "",
        "## Yes/no probes, every method (prior rule: log-odds minus those of a content-free question)",
        "",
        *methods_table(results, aucs),
        "",
    ]
    for rule in ("balanced", "heldout", "raw"):
        if results["methods"] and rule in next(iter(results["methods"].values()))["metrics"]:
            lines += [f"### the same under the {rule} rule", "", *methods_table(results, aucs, rule), ""]
    if results.get("open"):
        lines += [
            "## Open questions (LoCoMo token F1; category 5 = says it was not mentioned)",
            "",
            "| method | F1 (cat. 1-4) | by category | n |",
            "|---|---|---|---|",
        ]
        for name, o in results["open"].items():
            f1 = "-" if o["f1"] is None else f"{o['f1']:.3f}"
            cats = ", ".join(f"{c}: {v:.2f}" for c, v in o["by_category"].items())
            lines.append(f"| {name} | {f1} | {cats} | {o['n']} |")
        lines.append("")
    sessions, right_after, at_end, growing = curve_rows(results)
    if sessions:
        lines += [
            f"## Forgetting curve (memory, log-odds, {curve_rule(config)} rule as in its table row)",
            "",
            "![forgetting](forgetting.png)",
            "",
            "| session | right after learning it | after all sessions | mean over learned so far |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {s} | {a:.2f} | {e:.2f} | {g:.2f} |" for s, a, e, g in zip(sessions, right_after, at_end, growing)
        ]
        lines.append("")
    scale = scale_rows(results)
    if scale:
        methods = list(scale[-1]["methods"])
        lines += [
            f"## Scale: accuracy on every session learned so far (memory: {curve_rule(config)} rule; "
            f"the methods that read the text: {TEXT_RULE} rule)",
            "",
            "The methods that read the text read only the sessions so far; context keeps what fits its prompt.",
            "",
            "| sessions learned | " + " | ".join(methods) + " | context: sessions read, prompt tokens | "
            "s / answer (" + ", ".join(m for m in methods if m != "memory") + ") |",
            "|---|" + "---|" * len(methods) + "---|---|",
        ]
        for row in scale:
            scored = row["methods"]
            context = scored.get("context")
            read = f"{context['sessions_read']}, {context['prompt_tokens']}" if context else "-"
            speed = ", ".join(f"{v['seconds_per_answer']:.2f}" for m, v in scored.items() if m != "memory")
            means = " | ".join(f"{scored[m]['mean']:.2f}" if m in scored else "-" for m in methods)
            lines.append(f"| {row['learned']} | {means} | {read} | {speed} |")
        lines.append("")
    if results.get("retention"):
        lines += [
            "## Capability retention (5-shot)",
            "",
            "| benchmark | base | with memory adapter | n |",
            "|---|---|---|---|",
        ]
        for name, r in results["retention"].items():
            lines.append(f"| {name} | {r['base']['accuracy']:.3f} | {r['memory']['accuracy']:.3f} | {r['base']['n']} |")
        lines.append("")
    plots = plot(results, out)
    if "methods.png" in plots:
        lines += ["![methods](methods.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
