"""The pregenerate stage: a Wikipedia dump (or extracted text) -> masked-LM training epochs.

    xcompress pregenerate --train_corpus data/wiki/enwiki-sample-206pages.xml.bz2 --bert_model all-MiniLM-L6-v2 \
        --do_lower_case --epochs_to_generate 3 --max_seq_len 128 --output_dir data/pregenerated --num_workers 2
    python -m pregenerate ...   (same flags)

Writes, in TinyBERT's format, `epoch_{i}.json` + `epoch_{i}_metrics.json` for each epoch, plus `epoch_{i}.idx`
(line offsets for lazy readers), `corpus/` (the tokenized corpus), `pregenerate_config.json` and
`pregenerate_summary.json`. A rerun with the same settings resumes: finished epochs are kept.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

from stagekit.atomic import write_json
from stagekit.errors import InputError
from stagekit.model_paths import resolve_model_dir
from stagekit.options import option

from . import workers
from .corpus import build_corpus
from .documents import paragraphs
from .epochs import epoch_is_complete, write_epoch
from .instances import MaskingConfig
from .parallel import worker_pool
from .sentences import SHIPPED_LANGUAGE, model_path, train_splitter
from .sources import corpus_language, iter_documents
from .tokenize import read_vocab, vocab_digest, vocab_file

CONFIG_FILE, SUMMARY_FILE = "pregenerate_config.json", "pregenerate_summary.json"
# Fields that do not change what is generated: a rerun differing only in these resumes the same run.
_NOT_IDENTITY = {"output_dir", "num_workers", "overwrite_output_dir", "epochs_to_generate", "quiet", "reduce_memory"}


@dataclasses.dataclass
class PregenerateConfig:
    train_corpus: str = option(
        help="MediaWiki dump (.xml/.xml.bz2), WikiExtractor output, plain text, or a directory of them")
    bert_model: str = option(help="model directory with vocab.txt, or all-MiniLM-L6-v2")
    output_dir: str = option()
    do_lower_case: bool = option(False)
    language: str | None = option(None, help="the dump's language (default: what its <siteinfo> says, else en)")
    reduce_memory: bool = option(False, help="accepted for TinyBERT compatibility (memory is flat: the corpus is streamed)")
    epochs_to_generate: int = option(3)
    max_seq_len: int = option(128)
    short_seq_prob: float = option(0.1)
    masked_lm_prob: float = option(0.15)
    max_predictions_per_seq: int = option(20)
    do_whole_word_mask: bool = option(False)
    num_workers: int = option(1)
    dump_part: int | None = option(None, help="read only this slice (0-based) of a multistream dump: a job-array task")
    dump_parts: int | None = option(None, help="with --dump_part: how many slices the dump is cut into")
    seed: int = option(42)
    overwrite_output_dir: bool = option(False)
    quiet: bool = option(False, help="no progress bars")


CONFIG = PregenerateConfig


def _validate(cfg: PregenerateConfig) -> None:
    checks = [
        (cfg.epochs_to_generate >= 1, "--epochs_to_generate", "must be >= 1"),
        (8 <= cfg.max_seq_len <= 8192, "--max_seq_len", "must be between 8 and 8192"),
        (0 <= cfg.short_seq_prob <= 1, "--short_seq_prob", "must be in [0, 1]"),
        (0 < cfg.masked_lm_prob < 1, "--masked_lm_prob", "must be in (0, 1)"),
        (cfg.max_predictions_per_seq >= 1, "--max_predictions_per_seq", "must be >= 1"),
        (cfg.num_workers >= 1, "--num_workers", "must be >= 1"),
        ((cfg.dump_part is None) == (cfg.dump_parts is None), "--dump_part", "and --dump_parts go together"),
        (cfg.dump_parts is None or cfg.dump_parts >= 1, "--dump_parts", "must be >= 1"),
        (cfg.dump_part is None or 0 <= cfg.dump_part < (cfg.dump_parts or 0), "--dump_part",
         "must be in [0, --dump_parts)"),
    ]
    for ok, flag, what in checks:
        if not ok:
            raise InputError(f"{flag} {getattr(cfg, flag[2:])}: {what}")
    if not Path(cfg.train_corpus).exists():
        raise InputError(f"--train_corpus {cfg.train_corpus}: no such file or directory")


def _check_casing(cfg: PregenerateConfig) -> None:
    """An uncased vocabulary fed cased text (or the reverse) silently turns words into [UNK]: refuse it."""
    tc = resolve_model_dir(cfg.bert_model, "--bert_model") / "tokenizer_config.json"
    if not tc.is_file():
        return
    try:
        lower = json.loads(tc.read_text()).get("do_lower_case")
    except (OSError, json.JSONDecodeError):
        return
    if lower is True and not cfg.do_lower_case:
        raise InputError(f"--bert_model {cfg.bert_model}: the vocabulary is uncased; pass --do_lower_case")
    if lower is False and cfg.do_lower_case:
        raise InputError(f"--do_lower_case: the vocabulary of {cfg.bert_model} is cased; drop --do_lower_case")


def _identity(cfg: PregenerateConfig, digest: str) -> dict[str, Any]:
    ident = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_IDENTITY}
    ident["train_corpus"] = str(Path(cfg.train_corpus).resolve())
    return ident | {"vocab_sha256": digest}


def _remove_stale_temporaries(out: Path) -> None:
    """A killed run leaves its hidden temporaries (never a partial epoch); only this stage's are removed."""
    for tmp in out.glob(".*.tmp-*"):
        if tmp.is_dir() and (tmp.name.startswith(".corpus.tmp-") or tmp.name.startswith(".epoch_")):
            shutil.rmtree(tmp, ignore_errors=True)
    for tmp in out.glob(".tmp-punkt_*"):
        tmp.unlink()


def _prepare_output(out: Path, identity: dict[str, Any], overwrite: bool) -> bool:
    """Make `out` ready; returns whether this run created it. Another run's output is never touched silently."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--output_dir {out}: exists and is not a directory")
    if out.is_dir():
        _remove_stale_temporaries(out)
    if not out.exists() or not any(out.iterdir()):
        out.mkdir(parents=True, exist_ok=True)
        return True
    previous = out / CONFIG_FILE
    if previous.is_file():
        old = json.loads(previous.read_text()).get("identity", {})
        if old == identity:
            return False  # same run: resume
        if not overwrite:
            diff = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
            raise InputError(f"--output_dir {out}: holds another run's epochs (different {', '.join(diff)}); "
                             "pass --overwrite_output_dir or choose another directory")
    elif not overwrite:
        raise InputError(f"--output_dir {out}: directory exists and is not empty "
                         "(pass --overwrite_output_dir to replace it)")
    shutil.rmtree(out)
    out.mkdir(parents=True)
    return True


def _sentence_model(cfg: PregenerateConfig, out: Path) -> tuple[str, Path | None]:
    """The corpus's language and the Punkt model that splits it: None for the English one that ships; any other
    language's is trained on the corpus once and kept in the output directory."""
    detected = None if cfg.language else corpus_language(cfg.train_corpus)
    language = cfg.language or detected or SHIPPED_LANGUAGE
    model = model_path(out, language)
    if model is None or model.is_file():
        return language, model
    source = (f"--language {language}" if cfg.language else
              f"--train_corpus {cfg.train_corpus}: language {language} (its <siteinfo>; --language overrides)")
    docs = iter_documents(cfg.train_corpus, cfg.language)
    used = train_splitter((p for d in docs for p in paragraphs(d) or ()), language, model, source)
    return language, model if used else None


def run(cfg: PregenerateConfig) -> dict[str, Any]:
    _validate(cfg)
    vocab = vocab_file(cfg.bert_model)
    tokens = read_vocab(vocab)
    _check_casing(cfg)
    out = Path(cfg.output_dir)
    identity = _identity(cfg, vocab_digest(vocab))
    created = _prepare_output(out, identity, cfg.overwrite_output_dir)
    masking = MaskingConfig(cfg.max_seq_len, cfg.short_seq_prob, cfg.masked_lm_prob,
                            cfg.max_predictions_per_seq, cfg.do_whole_word_mask)
    corpus_dir = out / "corpus"
    window = 4 * cfg.num_workers
    start = time.perf_counter()
    try:
        language, sentence_model = _sentence_model(cfg, out)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    init_args = (str(vocab), cfg.do_lower_case, str(sentence_model) if sentence_model else None, tokens,
                 str(corpus_dir), masking, cfg.seed)
    with worker_pool(cfg.num_workers, workers.init, init_args) as pool:
        try:
            if (corpus_dir / "corpus.json").is_file():
                corpus = json.loads((corpus_dir / "corpus.json").read_text())
            else:
                corpus = build_corpus(cfg.train_corpus, corpus_dir, workers.process_part, pool, window,
                                      provenance={"train_corpus": identity["train_corpus"], "vocab": str(vocab)},
                                      language=cfg.language, read_threads=cfg.num_workers,
                                      dump_slice=None if cfg.dump_parts is None else (cfg.dump_part, cfg.dump_parts),
                                      show_progress=not cfg.quiet)
            write_json(out / CONFIG_FILE, {"identity": identity, "config": dataclasses.asdict(cfg)})
        except BaseException:
            if created:
                shutil.rmtree(out, ignore_errors=True)
            raise
        epochs = []
        for epoch in range(cfg.epochs_to_generate):
            if epoch_is_complete(out, epoch):
                metrics = json.loads((out / f"epoch_{epoch}_metrics.json").read_text()) | {"resumed": True}
            else:
                metrics = write_epoch(out, epoch, corpus["documents"], cfg.max_seq_len, cfg.seed, pool, window,
                                      show_progress=not cfg.quiet)
            epochs.append({"epoch": epoch} | metrics)
    generated = [e for e in epochs if not e.get("resumed")]
    gen_seconds = sum(e["seconds"] for e in generated)
    summary = {
        "language": language, "sentence_model": str(sentence_model) if sentence_model else "nupunkt (English)",
        "documents": corpus["documents"], "sentences": corpus["sentences"], "tokens": corpus["tokens"],
        "text_megabytes": corpus["text_bytes"] / 1e6, "dropped_documents": corpus["dropped_documents"],
        "corpus_seconds": corpus["seconds"],
        "instances_per_epoch": [e["num_training_examples"] for e in epochs],
        "epochs": epochs,
        "instances_per_second": sum(e["num_training_examples"] for e in generated) / gen_seconds if generated else None,
        "seconds": time.perf_counter() - start,
        "config": dataclasses.asdict(cfg),
    }
    write_json(out / SUMMARY_FILE, summary)
    return summary


def report(summary: dict[str, Any]) -> str:
    rate = summary["instances_per_second"]
    return (f"pregenerate: {summary['documents']:,} documents, {summary['sentences']:,} sentences, "
            f"{summary['tokens']:,} tokens; instances per epoch {summary['instances_per_epoch']}"
            + (f", {rate:,.0f} instances/s" if rate else ", all epochs resumed")
            + f" -> {summary['config']['output_dir']}")
