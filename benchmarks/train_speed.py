"""Training and answering speed: paramem's trainer against the naive way, side by side, same run.

    .venv/bin/python benchmarks/train_speed.py --base-model smollm2-135m --conversation marathon

Every variant learns the same demo conversation from the same teacher notes (the shipped ones): the
same question/answer pairs, redrawn the same way each epoch, at PLUM's settings (LoRA r=16, alpha=64
on all linear layers, lambda=10, lr 5e-4, batch 8, 10 epochs).

  naive           Hugging Face Trainer + peft, default settings, fp32, every example padded to the
                  longest; PLUM's weighted loss through a `compute_loss` override. The E epochs' pair
                  sets are concatenated into one pass, so it sees exactly the pairs paramem sees.
  paramem-10      paramem's trainer for all 10 epochs: the dtype measured fastest on this CPU (bf16 with
                  AMX or AVX512-BF16, else float32), length-bucketed batches, eager attention,
                  the vocabulary head only where a token is trained.
  paramem         the same with paramem's default stopping rule: keep the epoch with the best
                  held-out reworded accuracy, stop after 3 epochs without improvement or as soon
                  as every held-out pair is answered right.
  paramem-top     paramem with LoRA on the top half of the layers only (no backward pass below).
  paramem-fast    paramem-top with the LoRA weights in the base model's dtype instead of float32.

`--pairs 20` caps every epoch at PLUM's workload of about 20 pairs (each kind keeps its share); by
default every pair the notes give is trained (about 50 for a demo conversation).

Each variant runs in its own process, for a clean peak memory. Quality is held-out accuracy on the
teacher's held-out reworded pairs plus the demo's human-written probes for that conversation, both
decided at P(yes) > P(no). FLOP/s counts the work a variant must do on its real (non-padding) tokens:
forward through the decoder, backward down to the lowest LoRA layer, head forward and backward at
trained positions; it is divided by the matrix-multiply peak, measured by this script on this machine,
of the dtype the variant computed in (each row names it).
Answering: yes/no probes per second with the adapter, paramem's scorer (batched, shared-prefix KV
cache, yes/no logits only) against one full forward pass per question.

Writes benchmarks/results/train_speed-<model>[-pairs<N>]-<cpu>.json and .md, where <cpu> says how
this CPU computes bf16: amx, avx512bf16, or nobf16 (AVX2 and the like: float32 is chosen there).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from paramem.model.compute import DTYPES, cpu_info, matmul_gflops
from paramem.model.loading import dtype_of

RESULTS = Path(__file__).parent / "results"
VARIANTS = ("naive", "paramem-10", "paramem", "paramem-top", "paramem-fast")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def demo_notes(conversation_id: str):
    from paramem.cli.demo import demo_files
    from paramem.data.notes import Notes

    _, probes_file, notes_file = demo_files()
    shipped = json.loads(notes_file.read_text(encoding="utf-8"))
    [item] = [n for n in shipped["notes"] if n["conversation_id"] == conversation_id]
    probes = [json.loads(line) for line in probes_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    return Notes.from_dict(item), [p for p in probes if p["conversation"] == conversation_id]


def model_shape(model, lowest_lora_layer: int) -> dict[str, int]:
    """Parameter counts that set the FLOPs of a token (embeddings excluded: a lookup, not a product)."""
    from paramem.model.loading import decoder_and_head

    decoder, head = decoder_and_head(model)
    layers = decoder.layers
    per_layer = [sum(p.numel() for n, p in layer.named_parameters() if "lora_" not in n) for layer in layers]
    return {
        "body": sum(per_layer),
        "body_with_backward": sum(per_layer[lowest_lora_layer:]),
        "head": head.weight.numel(),
    }


def useful_flops(shape: dict[str, int], tokens: int, trained_positions: int) -> float:
    return 2 * shape["body"] * tokens + 2 * shape["body_with_backward"] * tokens + 4 * shape["head"] * trained_positions


def accuracy(model, tokenizer, notes, probes) -> dict:
    from paramem.augment.pairs import validation_pairs
    from paramem.model.scoring import YesNoScorer

    model.eval()
    scorer = YesNoScorer(model, tokenizer)
    out = {}
    for name, items in (
        ("heldout", [(p.question, p.label) for p in validation_pairs(notes)]),
        ("probes", [(p["question"], p["answer"]) for p in probes]),
    ):
        decisions = scorer.decide([q for q, _ in items], threshold=0.0)
        out[name] = {
            "accuracy": round(sum(d == gold for (d, _), (_, gold) in zip(decisions, items)) / len(items), 3),
            "n": len(items),
        }
    return out


def epoch_examples(tokenizer, notes, config, epochs: int):
    from paramem.augment.pairs import training_pairs
    from paramem.memory.trainer import encode_pair

    return [
        [encode_pair(tokenizer, p, config) for p in training_pairs(notes, e, config.pairs)]
        for e in range(1, epochs + 1)
    ]


def run_naive(args, notes, probes) -> dict:
    from peft import get_peft_model
    from transformers import Trainer, TrainingArguments

    from paramem.augment.pairs import PairConfig
    from paramem.config import TrainConfig
    from paramem.memory.batching import weighted_cross_entropy
    from paramem.memory.lora import lora_config
    from paramem.model.loading import load_model

    config = TrainConfig(epochs=args.epochs, pairs=PairConfig(max_pairs=args.pairs))
    model, tokenizer = load_model(args.base_model, dtype=torch.float32)
    model = get_peft_model(model, lora_config(config, model))
    examples = [e for epoch in epoch_examples(tokenizer, notes, config, args.epochs) for e in epoch]
    width = max(len(e.input_ids) for e in examples)

    def padded(e):
        pad = width - len(e.input_ids)
        return {
            "input_ids": torch.tensor(e.input_ids + [tokenizer.pad_token_id] * pad),
            "attention_mask": torch.tensor([1] * len(e.input_ids) + [0] * pad),
            "weights": torch.tensor(e.weights + [0.0] * pad),
        }

    class WeightedLossTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            weights = inputs.pop("weights")
            outputs = model(**inputs)
            loss = weighted_cross_entropy(outputs.logits, inputs["input_ids"], weights)
            return (loss, outputs) if return_outputs else loss

    with tempfile.TemporaryDirectory() as scratch:
        training = TrainingArguments(
            output_dir=scratch,
            per_device_train_batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            num_train_epochs=1,
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            use_cpu=True,
            remove_unused_columns=False,
            disable_tqdm=True,
            seed=config.seed,
        )
        trainer = WeightedLossTrainer(model=model, args=training, train_dataset=[padded(e) for e in examples])
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    tokens = sum(len(e.input_ids) for e in examples)
    trained = sum(sum(w > 0 for w in e.weights[1:]) for e in examples)
    return {
        "seconds": seconds,
        "epochs": args.epochs,
        "tokens": tokens,
        "computed_tokens": width * len(examples),
        "trained_positions": trained,
        "lowest_lora_layer": 0,
        "quality": accuracy(model, tokenizer, notes, probes),
        "dtype": dtype_of(model),
        "shape": model_shape(model, 0),
    }


def run_paramem(args, notes, probes, variant: str) -> dict:
    from paramem.augment.pairs import PairConfig
    from paramem.config import TrainConfig
    from paramem.memory.lora import attach_lora
    from paramem.memory.trainer import SequentialTrainer
    from paramem.model.loading import load_model

    model, tokenizer = load_model(args.base_model)
    layer_count = model.config.num_hidden_layers
    top = variant in ("paramem-top", "paramem-fast")
    layers = list(range(layer_count // 2, layer_count)) if top else None
    config = TrainConfig(
        epochs=args.epochs,
        early_stopping=variant != "paramem-10",
        layers=layers,
        adapter_float32=variant != "paramem-fast",
        pairs=PairConfig(max_pairs=args.pairs),
    )
    model = attach_lora(model, config)
    trainer = SequentialTrainer(model, tokenizer, config)
    result = trainer.learn(notes, [])
    # Which tokens the kept epochs trained on: the same examples the trainer drew, epoch by epoch.
    per_epoch = epoch_examples(tokenizer, notes, config, result.epochs_run)
    trained = sum(sum(w > 0 for w in e.weights[1:]) for epoch in per_epoch for e in epoch)
    lowest = layers[0] if layers else 0
    out = {
        "seconds": result.seconds,
        "epochs": result.epochs_run,
        "kept_epoch": result.epochs,
        "tokens": result.tokens,
        "computed_tokens": result.computed_tokens,
        "trained_positions": trained,
        "lowest_lora_layer": lowest,
        "quality": accuracy(model, tokenizer, notes, probes),
        "dtype": dtype_of(model),
        "shape": model_shape(model, lowest),
    }
    if args.adapter_out and variant == "paramem":  # serving is measured on the default adapter
        model.save_pretrained(args.adapter_out)
    return out


def run_serving(args, notes, probes) -> dict:
    """Probes per second with the adapter: paramem's scorer against one full forward per question."""
    from peft import PeftModel

    from paramem.cli.demo import demo_files
    from paramem.model.loading import load_model
    from paramem.model.prompts import encode_prompt
    from paramem.model.scoring import YesNoScorer

    _, probes_file, _ = demo_files()
    questions = [json.loads(line)["question"] for line in probes_file.read_text().splitlines() if line.strip()]
    base, tokenizer = load_model(args.base_model)
    model = PeftModel.from_pretrained(base, args.adapter_out)
    model.eval()
    scorer = YesNoScorer(model, tokenizer)
    scorer.log_odds(questions[:4])  # warm-up
    start = time.perf_counter()
    scorer.log_odds(questions)
    fast = time.perf_counter() - start
    yes, no = scorer.yes_ids[0], scorer.no_ids[0]
    start = time.perf_counter()
    with torch.inference_mode():
        for question in questions:
            logits = model(input_ids=torch.tensor([encode_prompt(tokenizer, question)])).logits[0, -1]
            _ = bool(logits[yes] > logits[no])
    naive = time.perf_counter() - start
    adapter_bytes = sum(f.stat().st_size for f in Path(args.adapter_out).iterdir() if f.is_file())
    return {
        "probes": len(questions),
        "paramem_probes_per_s": len(questions) / fast,
        "naive_probes_per_s": len(questions) / naive,
        "adapter_bytes": adapter_bytes,
    }


def markdown(rows: dict, serving: dict | None, peak: dict) -> str:
    """The README's table and answering line."""
    base = rows.get("naive", {}).get("seconds")
    lines = [
        "| variant | dtype | seconds | epochs run | tokens/s | padding computed | fraction of peak | held-out acc (n) "
        "| peak RSS | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        q = r["quality"]["heldout"]
        speedup = f"{base / r['seconds']:.1f}x" if base else "-"
        lines.append(
            f"| {name} | {r['dtype']} | {r['seconds']:.1f} | {r['epochs']} | {r['tokens_per_s']:.0f} | "
            f"{1 - r['tokens'] / r['computed_tokens']:.0%} | {r['fraction_of_peak']:.1%} | "
            f"{q['accuracy']:.2f} ({q['n']}) | {r['peak_rss_mb']:,} MB | "
            f"{speedup} |"
        )
    lines.append(
        f"\nmatrix-multiply peaks measured in the same run: bfloat16 {peak['bfloat16'] / 1e9:.1f} GFLOP/s, "
        f"float32 {peak['float32'] / 1e9:.0f} GFLOP/s."
    )
    if serving:
        lines.append(
            f"\nAnswering {serving['probes']} yes/no probes with the adapter: paramem's scorer "
            f"{serving['paramem_probes_per_s']:.1f} probes/s, one full forward pass per question "
            f"{serving['naive_probes_per_s']:.1f} probes/s; serving peak RSS {serving['peak_rss_mb']:,} MB; "
            f"adapter {serving['adapter_bytes'] / 1e6:.1f} MB."
        )
    return "\n".join(lines) + "\n"


def child(args) -> None:
    torch.manual_seed(0)
    notes, probes = demo_notes(args.conversation)
    if args.variant == "serving":
        out = run_serving(args, notes, probes)
    elif args.variant == "naive":
        out = run_naive(args, notes, probes)
    else:
        out = run_paramem(args, notes, probes, args.variant)
    out["peak_rss_mb"] = round(peak_rss_mb())
    out["dtype"] = out.get("dtype") or "float32"
    print("RESULT " + json.dumps(out), flush=True)


def run_child(args, variant: str, adapter_out: str) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        "--variant",
        variant,
        "--base-model",
        args.base_model,
        "--conversation",
        args.conversation,
        "--epochs",
        str(args.epochs),
        "--adapter-out",
        adapter_out,
    ]
    if args.pairs:
        command += ["--pairs", str(args.pairs)]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"variant {variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def cpu_kind() -> str:
    """How this CPU computes bf16, for the results file's name: figures differ by far between kinds."""
    from paramem.model.compute import cpu_info

    flags = cpu_info()["bf16_flags"]
    if flags["amx_bf16"]:
        return "amx"
    return "avx512bf16" if flags["avx512_bf16"] else "nobf16"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", default="smollm2-135m")
    parser.add_argument("--conversation", default="marathon", help="a demo conversation id")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--pairs",
        type=int,
        default=None,
        help="at most this many pairs per epoch (PLUM trains about 20; default: all the notes give)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--adapter-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    from rich.console import Console
    from rich.table import Table

    from paramem.evaluate.run import run_meta

    console = Console(width=180)  # the table is wide; logs are not terminals
    # The peak of each dtype on this CPU (bf16 is ~50x slower than float32 without AMX or AVX512-BF16):
    # each variant's FLOP/s is divided by the peak of the dtype it actually computed in.
    peak = {
        name: matmul_gflops(dtype, rows=512, hidden=2048, intermediate=2048, budget_s=1.0) * 1e9
        for name, dtype in DTYPES.items()
    }
    console.print(
        f"matrix-multiply peak on this machine ({cpu_info()['model']}): bfloat16 {peak['bfloat16'] / 1e9:.1f} "
        f"GFLOP/s, float32 {peak['float32'] / 1e9:.0f} GFLOP/s ({torch.get_num_threads()} threads)"
    )
    rows = {}
    with tempfile.TemporaryDirectory() as scratch:
        adapter = str(Path(scratch) / "adapter")
        for variant in args.variants.split(","):
            console.print(f"running {variant} ...")
            row = run_child(args, variant, adapter)
            row["tokens_per_s"] = row["tokens"] / row["seconds"]
            row["useful_flops_per_s"] = (
                useful_flops(row["shape"], row["tokens"], row["trained_positions"]) / row["seconds"]
            )
            row["fraction_of_peak"] = row["useful_flops_per_s"] / peak[row["dtype"]]
            rows[variant] = row
            console.print(f"  {row['seconds']:.1f} s, {row['tokens_per_s']:.0f} tok/s, quality {row['quality']}")
        serving = run_child(args, "serving", adapter) if "paramem" in rows else None

    table = Table(
        title=f"learning one conversation ({args.conversation}), {args.base_model}, up to {args.epochs} epochs"
    )
    for column in (
        "variant",
        "dtype",
        "seconds",
        "epochs run",
        "tokens/s",
        "padding computed",
        "fraction of peak",
        "held-out acc (n)",
        "probe acc (n)",
        "peak RSS MB",
        "speed-up",
    ):
        table.add_column(column)
    base = rows.get("naive", {}).get("seconds")
    for name, r in rows.items():
        q = r["quality"]
        table.add_row(
            name,
            r["dtype"],
            f"{r['seconds']:.1f}",
            str(r["epochs"]),
            f"{r['tokens_per_s']:.0f}",
            f"{1 - r['tokens'] / r['computed_tokens']:.0%}",
            f"{r['fraction_of_peak']:.1%}",
            f"{q['heldout']['accuracy']:.2f} ({q['heldout']['n']})",
            f"{q['probes']['accuracy']:.2f} ({q['probes']['n']})",
            str(r["peak_rss_mb"]),
            f"{base / r['seconds']:.1f}x" if base else "-",
        )
    console.print(table)
    if serving:
        console.print(
            f"answering {serving['probes']} yes/no probes with the adapter: paramem "
            f"{serving['paramem_probes_per_s']:.1f} probes/s, one full forward per question "
            f"{serving['naive_probes_per_s']:.1f} probes/s; peak RSS {serving['peak_rss_mb']} MB; "
            f"adapter {serving['adapter_bytes'] / 1e6:.1f} MB"
        )
    RESULTS.mkdir(exist_ok=True)
    name = f"train_speed-{args.base_model}" + (f"-pairs{args.pairs}" if args.pairs else "") + f"-{cpu_kind()}"
    (RESULTS / f"{name}.md").write_text(markdown(rows, serving, peak), encoding="utf-8")
    out = RESULTS / f"{name}.json"
    meta = run_meta(sys.argv, args.base_model, {"conversation": args.conversation, "notes": "shipped demo notes"})
    out.write_text(
        json.dumps(
            {
                **meta,
                "peak_flops": peak,
                "epochs": args.epochs,
                "pairs_cap": args.pairs,
                "variants": rows,
                "serving": serving,
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
