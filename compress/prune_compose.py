"""The prune-compose stage: composable pruning of a text-to-text model (T5) or an encoder task model (every encoder
family). Several pruned versions of one model that differ only in some modules share the work on the modules they
have in common:

1. versions: a file of N versions, each a pruning rate per part (and, where wanted, per block), or the grid
   `--grid` generates (`self_attention,cross_attention=0.5,0.7 feed_forward=0.5,0.7`: four versions);
2. scheme: the distinct pruned modules the versions use, a module being one block at one rate: a T5 sublayer or
   lm_head (parts self_attention, cross_attention, feed_forward, lm_head), or an encoder layer's attention or FFN
   module (parts attention and ffn; BERT's FFN is two blocks, `intermediate` and `output`);
3. module-level pruning and fine-tuning, once per distinct module: L1 magnitude over the block's matrices, then
   local distillation against the dense block's outputs on the block's own inputs, captured from the dense model on
   real training pairs (as `recover` does for TD layers), its zeros held;
4. composition of each version from its modules, then model-level fine-tuning with the zeros held: seq2seq-finetune,
   or for an encoder finetune on the gold labels (task-distill's prediction phase with `--teacher_model`).

    xcompress prune-compose --model runs/t5-de --task_name text --data_dir data/parallel/gettext-en-de \
        --output_dir runs/t5-de-composed --grid self_attention,cross_attention=0.5,0.7 feed_forward=0.5,0.7 \
        --num_train_epochs 0.5 --baseline_epochs 1
    xcompress prune-compose --model runs/distilbert-sst2 --task_name SST-2 --data_dir data/glue_data \
        --output_dir runs/sst2-composed --grid attention=0.5,0.7 ffn=0.5,0.7 --num_train_epochs 0.1

With `--baseline_epochs`, each version is also built the plain way, from pruned-only modules and model-level
fine-tuning alone, for that many epochs: the comparison composable pruning has to win. Into `--output_dir`: one
directory per version (and `baseline/<version>`) with the model (compact sparse storage) and its tokenizer,
`versions.yaml` (the versions as run), `training_stats.csv` (every validation of every version and arm),
`module_stats.csv` (each module's local loss before and after), `loss.png`, `prune_compose_results.md`, and the
config and summary. A stopped run resumes with its distinct modules and finished versions; modules pruned from
other weights than `--model`'s now (a fingerprint of every tensor tells) are refused, never composed.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.nn.utils import prune

from distill.sparsity import SparsityMask
from modeling.formats import DENSE, KIND_NAMES, SEQ2SEQ
from modeling.loading import inspect_model
from modeling.params import weights_fingerprint
from stagekit.atomic import check_output_dir, fresh_dir, partial_dir, publish_dir, write_json
from stagekit.errors import InputError
from stagekit.options import above, at_least, check_values, option
from stagekit.outputs import finish_stage
from stagekit.training_log import write_stats
from text2text.finetune import STATS_COLUMNS

from .measure import size_on_disk
from .prune_schedule import read_state
from .prune_targets import target_of

STAGE = "prune-compose"
COMPOSED, BASELINE = "composed", "baseline"
# What a resumed run must share with the run that left its modules and versions behind.
NOT_IDENTITY = ("output_dir", "overwrite_output_dir", "quiet")
STATE_FILE, MODULES_FILE = "compose_state.json", "modules.pt"


@dataclasses.dataclass
class PruneComposeConfig:
    model: str = option(help="a fine-tuned text-to-text model (T5) or dense encoder task model (any encoder family)")
    task_name: str = option(help="a GLUE task name, or 'text' (a TSV of source and target texts in --data_dir) for a "
                                 "text-to-text model")
    data_dir: str = option()
    output_dir: str = option()
    versions: str | None = option(None, help="a YAML file: versions: {name: {part: rate, ..., blocks: {block: rate}}}")
    grid: list[str] | None = option(None, help="parts=rates items whose product is the versions, e.g. "
                                               "self_attention,cross_attention=0.5,0.7 feed_forward=0.5,0.7 (T5) "
                                               "or attention=0.5,0.7 ffn=0.5,0.7 (encoders)")
    num_train_epochs: float = option(0.5, help="model-level fine-tuning of each composed version", check=above(0))
    baseline_epochs: float | None = option(None, help="also build each version from pruned-only modules with this "
                                                      "many epochs of model-level fine-tuning", check=above(0))
    module_steps: int = option(100, help="local distillation steps of each distinct module", check=at_least(0))
    module_batches: int = option(16, help="training batches whose block inputs and outputs the modules learn from",
                                 check=at_least(1))
    module_learning_rate: float = option(1e-3, check=above(0))
    learning_rate: float | None = option(None, help="model-level fine-tuning rate (default 5e-4 for text-to-text "
                                                    "models, 2e-5 for encoders)", check=above(0))
    teacher_model: str | None = option(None, help="encoders: fine-tune each version by distilling this fine-tuned "
                                                  "teacher's predictions (task-distill's prediction phase)")
    store: str = option("sparse", choices=["sparse", "dense"],
                        help="sparse: one bit per weight and the non-zero values (xcompress reads it); dense: the "
                             "plain model.safetensors transformers reads")
    max_seq_length: int = option(128, help="encoders: pieces per example", check=at_least(1))
    train_batch_size: int = option(32, check=at_least(1))
    eval_batch_size: int = option(64, check=at_least(1))
    eval_steps: int = option(500, check=at_least(1))
    max_source_length: int = option(128, help="text-to-text: source pieces", check=at_least(2))
    max_target_length: int = option(128, check=at_least(2))
    generation_max_length: int = option(64, check=at_least(1))
    generation_num_beams: int = option(1, check=at_least(1))
    max_train_examples: int | None = option(None, check=at_least(1))
    max_eval_examples: int | None = option(500, help="text-to-text: dev pairs generated at each validation (an "
                                           "encoder is scored on the whole dev set)", check=at_least(1))
    seed: int = option(42)
    overwrite_output_dir: bool = option(False)
    quiet: bool = option(False)


CONFIG = PruneComposeConfig


def grid_versions(items: list[str], parts: tuple[str, ...], family: str) -> dict[str, dict[str, float]]:
    """The versions of `--grid`: every combination of each item's rates, named by them (sa0.5-ca0.5-ff0.7); `parts`
    are the parts the model (of `family`) has."""
    axes = []
    for item in items:
        named, sep, rates = item.partition("=")
        if not sep:
            raise InputError(f"--grid {item}: not parts=rates (e.g. self_attention,cross_attention=0.5,0.7)")
        names = named.split(",")
        try:
            values = [float(r) for r in rates.split(",")]
        except ValueError:
            raise InputError(f"--grid {item}: rates must be numbers separated by commas") from None
        axes.append((names, values))
    versions = {}
    for combo in itertools.product(*(values for _, values in axes)):
        rates = {p: r for (names, _), r in zip(axes, combo) for p in names}
        versions["-".join(f"{_short(p)}{r:g}" for p, r in rates.items())] = rates
    return _checked(versions, parts, family, "--grid")


def _short(part: str) -> str:
    return "".join(w[0] for w in part.split("_")) if "_" in part else part[:2]


def read_versions(path: str, parts: tuple[str, ...], family: str) -> dict[str, dict[str, Any]]:
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"--versions {path}: cannot read it ({e.__class__.__name__})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("versions"), dict) or not doc["versions"]:
        raise InputError(f"--versions {path}: expected a mapping 'versions' of name -> {{part: rate}}")
    return _checked(doc["versions"], parts, family, f"--versions {path}")


def _checked(versions: dict[str, Any], parts: tuple[str, ...], family: str, where: str) -> dict[str, dict[str, Any]]:
    for name, rates in versions.items():
        if not isinstance(rates, dict):
            raise InputError(f"{where}: version {name}: expected part: rate entries")
        for part, rate in rates.items():
            if part == "blocks":
                continue
            if part not in parts:
                raise InputError(f"{where}: version {name}: '{part}' is no part of a {family} model "
                                 f"({', '.join(parts)})")
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
                raise InputError(f"{where}: version {name}: {part} rate {rate!r} is not a fraction in [0, 1)")
    return versions


def block_rates(version: dict[str, Any], blocks: dict[str, str], where: str) -> dict[str, float]:
    """Each block's rate in a version: its own where `blocks` names it, else its part's (0 when the part is absent).
    A `blocks` entry naming a block the model lacks, or a rate outside [0, 1), is refused in one line (`where`
    names the version)."""
    own = version.get("blocks") or {}
    if not isinstance(own, dict):
        raise InputError(f"{where}: blocks: expected block: rate entries")
    for block, rate in own.items():
        if block not in blocks:
            example = next(iter(blocks))
            raise InputError(f"{where}: blocks: the model has no block '{block}' (blocks are named like "
                             f"'{example}'; {len(blocks)} in all)")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise InputError(f"{where}: blocks: {block} rate {rate!r} is not a fraction in [0, 1)")
    return {b: float(own.get(b, version.get(part, 0.0))) for b, part in blocks.items()}


class BlockInputs:
    """What each block received and returned in the dense model on real training batches (each the keyword
    arguments of the model's forward), kept in memory: the arguments it was called with and its output, so that a
    block can be called again alone."""

    def __init__(self, model: nn.Module, blocks: list[str], batches: list[dict[str, torch.Tensor]]):
        self.calls: dict[str, list[tuple[tuple, dict, torch.Tensor]]] = {b: [] for b in blocks}
        handles = [model.get_submodule(b).register_forward_hook(self._keeper(b), with_kwargs=True) for b in blocks]
        try:
            with torch.no_grad():
                for batch in batches:
                    model(**batch)
        finally:
            for h in handles:
                h.remove()

    def _keeper(self, block: str):
        def keep(module, args, kwargs, output):
            self.calls[block].append((_detached(args), _detached(kwargs), _first(output).detach()))
        return keep


def _detached(value):
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple):
        return tuple(_detached(v) for v in value)
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    return value


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def prune_block(module: nn.Module, rate: float) -> None:
    """Zero the `rate` fraction of smallest |w| over all of a block's matrices, permanently."""
    members = [(m, "weight") for m in module.modules() if isinstance(m, nn.Linear)]
    if rate > 0:
        prune.global_unstructured(members, pruning_method=prune.L1Unstructured, amount=rate)
        for m, name in members:
            prune.remove(m, name)


def local_distill(module: nn.Module, calls, steps: int, lr: float) -> tuple[float, float]:
    """Train a pruned block to give the dense block's outputs on its captured inputs (MSE), zeros held; returns the
    mean loss over the captured batches before and after."""
    def mean_loss() -> float:
        with torch.no_grad():
            return sum(float(nn.functional.mse_loss(_first(module(*a, **k)), out)) for a, k, out in calls) / len(calls)

    before = mean_loss()
    keep = SparsityMask(module)
    params = [p for p in module.parameters() if p.dim() >= 2]
    optimizer = torch.optim.Adam(params, lr=lr)
    for step in range(steps):
        args, kwargs, out = calls[step % len(calls)]
        loss = nn.functional.mse_loss(_first(module(*args, **kwargs)), out)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        keep()
    return before, mean_loss()


def run(cfg: PruneComposeConfig) -> dict[str, Any]:
    # --- setup -------------------------------------------------------------------------------------------
    check_values(cfg)
    if (kind := inspect_model(cfg.model, "--model", stage=STAGE)[2].kind) not in (DENSE, SEQ2SEQ):
        raise InputError(f"--model {cfg.model}: {KIND_NAMES[kind]}; prune-compose takes dense encoders, whose layers "
                         f"are modules of their own, and text-to-text models")
    model_dir, target = target_of(cfg, STAGE)
    if (cfg.versions is None) == (cfg.grid is None):
        raise InputError("give the versions as --versions FILE or --grid parts=rates ..., one of the two")
    dense = target.load(model_dir).eval()
    blocks = target.blocks(dense)
    parts = tuple(dict.fromkeys(blocks.values()))
    versions = (read_versions(cfg.versions, parts, target.name) if cfg.versions
                else grid_versions(cfg.grid, parts, target.name))
    where = f"--versions {cfg.versions}" if cfg.versions else "--grid"
    rates = {name: block_rates(v, blocks, f"{where}: version {name}") for name, v in versions.items()}
    scheme = sorted({(b, r) for per_block in rates.values() for b, r in per_block.items() if r > 0})
    learning_rate = cfg.learning_rate or target.learning_rate
    out = check_output_dir(cfg.output_dir, cfg.overwrite_output_dir)
    # Worked on in a hidden directory beside --output_dir: a stopped run resumes with its distinct modules and its
    # finished versions when the same command is given again (a changed flag starts afresh). Modules are composed
    # only into the model they were pruned from: one whose weights changed meanwhile is refused.
    work = partial_dir(out)
    identity = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_IDENTITY}
    state_file, modules_file = work / STATE_FILE, work / MODULES_FILE
    state = read_state(state_file)
    source = weights_fingerprint(dense)
    resumable = state is not None and state["identity"] == identity and modules_file.is_file()
    if resumable and state["source"] != source and not cfg.overwrite_output_dir:
        raise InputError(f"--model {cfg.model}: not the weights the modules in {work} were pruned from (fingerprint "
                         f"{source[:12]}, theirs {state['source'][:12]}); give --overwrite_output_dir to prune afresh")
    started = time.perf_counter()
    if not resumable or state["source"] != source:
        fresh_dir(work)
        # --- modules: each distinct (block, rate) pruned, and locally distilled, once ------------------------
        cpu = time.process_time()
        captured = BlockInputs(dense, sorted({b for b, _ in scheme}), target.training_batches(cfg.module_batches))
        capture_cpu = time.process_time() - cpu
        pruned_only: dict[tuple[str, float], dict] = {}
        distilled: dict[tuple[str, float], dict] = {}
        module_rows = []
        for block, rate in scheme:
            cpu = time.process_time()
            module = copy.deepcopy(dense.get_submodule(block))
            prune_block(module, rate)
            pruned_only[(block, rate)] = copy.deepcopy(module.state_dict())
            before, after = local_distill(module, captured.calls[block], cfg.module_steps, cfg.module_learning_rate)
            distilled[(block, rate)] = module.state_dict()
            module_rows.append({"block": block, "part": blocks[block], "rate": rate, "local_mse_pruned": before,
                                "local_mse_distilled": after, "cpu_seconds": time.process_time() - cpu})
        del captured
        module_cpu = capture_cpu + sum(r["cpu_seconds"] for r in module_rows)
        if not cfg.quiet:
            print(f"prune-compose: {len(scheme)} distinct modules for {len(versions)} versions (independent pruning "
                  f"would tune {sum(r > 0 for v in rates.values() for r in v.values())}), "
                  f"{module_cpu / 60:.1f} CPU min", flush=True)
        torch.save({"distilled": list(distilled.items()), "pruned_only": list(pruned_only.items())}, modules_file)
        state = {"identity": identity, "source": source, "modules": module_rows, "module_cpu_seconds": module_cpu,
                 "original": target.reference(), "results": {COMPOSED: {}, BASELINE: {}}}
        write_json(state_file, state)
    else:
        saved = torch.load(modules_file, weights_only=True)
        distilled, pruned_only = dict(saved["distilled"]), dict(saved["pruned_only"])
        if not cfg.quiet:
            done = sum(len(r) for r in state["results"].values())
            print(f"prune-compose: resuming with {len(distilled)} distinct modules and {done} finished versions "
                  f"({work})", flush=True)
    module_rows, module_cpu, results = state["modules"], state["module_cpu_seconds"], state["results"]

    # --- versions: compose, fine-tune the whole model (those a stopped run finished are kept) -------------------
    arms = [(COMPOSED, distilled, cfg.num_train_epochs)]
    if cfg.baseline_epochs:
        arms.append((BASELINE, pruned_only, cfg.baseline_epochs))
    for arm, modules, epochs in arms:
        for name, per_block in rates.items():
            if name in results[arm]:
                continue
            model = copy.deepcopy(dense)
            for block, rate in per_block.items():
                if rate > 0:
                    model.get_submodule(block).load_state_dict(modules[(block, rate)])
            version_dir = fresh_dir(work / name if arm == COMPOSED else work / BASELINE / name)
            target.save(model, model_dir, version_dir / "composed")
            tuned = target.finetune(version_dir / "composed", version_dir / "tuned", epochs, learning_rate)
            final = target.load(version_dir / "tuned")
            target.publish(final, version_dir / "tuned", version_dir)
            for scratch in ("composed", "tuned"):
                shutil.rmtree(version_dir / scratch)
            results[arm][name] = {
                "score_composed": tuned["score_after_pruning"],
                **{k: tuned[k] for k in ("score", "dev", "steps", "cpu_seconds", "history")},
                "sparsity": {p: v["sparsity"] for p, v in target.sparsity(final).items()},
                "bytes": size_on_disk(version_dir)}
            write_json(state_file, state)
            if not cfg.quiet:
                r = results[arm][name]
                print(f"prune-compose {arm} {name}: dev {r['score_composed']:.4f} composed -> {r['score']:.4f} "
                      f"after {epochs:g} epochs ({r['cpu_seconds'] / 60:.1f} CPU min)", flush=True)

    # --- cleanup -----------------------------------------------------------------------------------------
    totals = {COMPOSED: module_cpu + sum(r["cpu_seconds"] for r in results[COMPOSED].values())}
    if cfg.baseline_epochs:
        totals[BASELINE] = sum(r["cpu_seconds"] for r in results[BASELINE].values())
    results = {arm: r for arm, r in results.items() if arm == COMPOSED or cfg.baseline_epochs}
    summary = {"model": str(model_dir), "task": target.task.name, "family": target.name, "versions": versions,
               "distinct_modules": len(scheme), "modules": module_rows, "module_cpu_seconds": module_cpu,
               "original": state["original"], "results": results, "fine_tuning_cpu_seconds": totals,
               "learning_rate": learning_rate, "original_bytes": size_on_disk(model_dir),
               "seconds": time.perf_counter() - started, "output_dir": str(out), "config": dataclasses.asdict(cfg)}
    (work / "versions.yaml").write_text(yaml.safe_dump({"versions": versions}, sort_keys=False))
    _write_stats(work, results, module_rows)
    _plot_losses(work / "loss.png", results)
    (work / "prune_compose_results.md").write_text(report_table(summary) + "\n")
    state_file.unlink()
    modules_file.unlink()
    finish_stage(work, STAGE, cfg, summary)
    publish_dir(work, out)
    return summary


def _write_stats(directory: Path, results: dict[str, dict[str, Any]], modules: list[dict[str, Any]]) -> None:
    """training_stats.csv (every validation of every version of both arms) and module_stats.csv (each module's
    local loss before and after its fine-tuning)."""
    write_stats(directory / "training_stats.csv", ("arm", "version", *STATS_COLUMNS),
                [{"arm": arm, "version": name, **row} for arm, versions in results.items()
                 for name, r in versions.items() for row in r["history"]])
    write_stats(directory / "module_stats.csv",
                ("block", "part", "rate", "local_mse_pruned", "local_mse_distilled", "cpu_seconds"), modules)


def _plot_losses(path: Path, results: dict[str, dict[str, Any]]) -> None:
    """Training and validation loss of each version's model-level fine-tuning, one colour per version, the
    composed arm solid and the baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (train_ax, val_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    names = list(next(iter(results.values())))
    for arm, versions in results.items():
        for i, (name, r) in enumerate(versions.items()):
            h = r["history"]
            style = "-" if arm == COMPOSED else "--"
            trained = [x for x in h if x["train_loss"] is not None]
            train_ax.plot([x["step"] for x in trained], [x["train_loss"] for x in trained], style, marker="o",
                          color=f"C{names.index(name)}", label=f"{name} {arm}")
            val_ax.plot([x["step"] for x in h], [x["val_loss"] for x in h], style, marker="s",
                        color=f"C{names.index(name)}", label=f"{name} {arm}")
    for ax, title in ((train_ax, "training loss"), (val_ax, "validation loss")):
        ax.set_title(title)
        ax.set_xlabel("model-level fine-tuning steps")
        ax.grid(alpha=0.3)
    val_ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report_table(summary: dict[str, Any]) -> str:
    results, totals = summary["results"], summary["fine_tuning_cpu_seconds"]
    lines = [f"# Composable pruning of {summary['model']} on {summary['task']}", "",
             f"{summary['distinct_modules']} distinct modules, pruned and distilled once in "
             f"{summary['module_cpu_seconds'] / 60:.1f} CPU min; dev score of the original {summary['original']['score']:.4f}.",
             "", "| version | arm | dev composed | dev fine-tuned | steps | CPU min | overall sparsity |", "|---|---|---|---|---|---|---|"]
    for arm, versions in results.items():
        for name, r in versions.items():
            lines.append(f"| {name} | {arm} | {r['score_composed']:.4f} | {r['score']:.4f} | {r['steps']} | "
                         f"{r['cpu_seconds'] / 60:.1f} | {r['sparsity']['all']:.1%} |")
    lines += ["", "Fine-tuning CPU minutes in all: " + ", ".join(f"{arm} {s / 60:.1f}" for arm, s in totals.items())
              + (" (composed includes the modules)." if len(totals) > 1 else ".")]
    return "\n".join(lines)


def report(summary: dict[str, Any]) -> str:
    composed = summary["results"][COMPOSED]
    text = ", ".join(f"{n} {r['score']:.4f}" for n, r in composed.items())
    totals = summary["fine_tuning_cpu_seconds"]
    if BASELINE in summary["results"]:
        base = ", ".join(f"{n} {r['score']:.4f}" for n, r in summary["results"][BASELINE].items())
        text += f"; baseline {base}; CPU {totals[COMPOSED] / 60:.1f} against {totals[BASELINE] / 60:.1f} min"
    return f"prune-compose {summary['task']}: {text} -> {summary['output_dir']}"

