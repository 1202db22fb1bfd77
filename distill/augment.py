"""TinyBERT's data augmentation of a GLUE training set: `<glue_dir>/<TASK>/train_aug.tsv`, every original row
followed by its augmented copies.

For each sentence (both sentences of a pair task, one at a time), the words (BERT's basic tokenization) that are
alphabetic and not stop words are candidates. A word that is one WordPiece gets the masked-LM's M best
replacements with that word masked in its sentence; a longer word gets its M nearest GloVe neighbours
(`--glove_embs`), or without GloVe its nearest whole words in the model's input-embedding space. N times, each
candidate word is replaced with probability p by one of its candidates; distinct new sentences are kept.

    xcompress fit-mlm-head --teacher_model all-MiniLM-L6-v2 --pregenerated_data data/pregenerated --output_dir runs/mlm
    xcompress augment --pretrained_bert_model runs/mlm --glue_dir data/glue_data --task_name SST-2 --num_workers 2

Deterministic for a seed whatever the number of workers: each row draws from its own generator (seed, row),
rows are batched in fixed chunks, and every worker computes with one thread.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from corpora.glue import GlueTask, column_index, get_task, read_examples, read_rows, subset, task_dir, train_file
from modeling.formats import DENSE, MASKED_LM
from modeling.loading import load_model, load_tokenizer
from stagekit.errors import InputError
from stagekit.model_paths import read_config_dict, resolve_model_dir
from stagekit.options import option

from .neighbours import EmbeddingNeighbours, GloveNeighbours, Neighbours
from .stop_words import STOP_WORDS

CHUNK_ROWS = 16  # rows per masked-LM batch; fixed so that results never depend on the worker count


@dataclasses.dataclass
class AugmentConfig:
    pretrained_bert_model: str = option(help="BERT with a masked-LM head (xcompress fit-mlm-head)")
    glue_dir: str = option()
    task_name: str = option()
    glove_embs: str | None = option(None, help="GloVe vectors in text format, for multi-piece words")
    N: int = option(20, help="augmentation attempts per sentence")
    M: int = option(15, help="candidates per word")
    p: float = option(0.4, help="probability of replacing each candidate word")
    max_seq_length: int = option(128, help="masked-LM context; words past it use neighbours")
    max_train_examples: int | None = option(
        None,
        help="augment a seeded subset of this many rows (as task stages pick it)")
    num_workers: int = option(0, help="processes (default: one per core)")
    seed: int = option(42)
    overwrite: bool = option(False, help="replace an existing train_aug.tsv")
    quiet: bool = option(False)


CONFIG = AugmentConfig


class Augmenter:
    def __init__(self, model_dir: Path, glove: str | None, cfg: AugmentConfig):
        self.cfg = cfg
        self.tokenizer = load_tokenizer(model_dir, "--pretrained_bert_model")
        self.model = load_model(str(model_dir), "--pretrained_bert_model", MASKED_LM, kinds=(DENSE,),
                                stage="augment")[0]
        self.vocab = self.tokenizer.get_vocab()
        self.ids_to_tokens = {i: w for w, i in self.vocab.items()}
        self.neighbours: Neighbours = GloveNeighbours(glove) if glove else EmbeddingNeighbours(
            self.model.bert.embeddings.word_embeddings.weight, self.tokenizer)

    def words(self, sentence: str) -> list[str]:
        """BERT's basic tokenization: normalised (lower-cased for uncased models), split on space and punctuation."""
        backend = self.tokenizer.backend_tokenizer
        normalized = backend.normalizer.normalize_str(sentence) if backend.normalizer else sentence
        return [w for w, _ in backend.pre_tokenizer.pre_tokenize_str(normalized)]

    def is_candidate(self, word: str) -> bool:
        """A word that may be replaced, or may replace one: alphabetic and not a stop word."""
        return word.isalpha() and word not in STOP_WORDS

    def candidates(self, sentences: list[list[str]]) -> list[dict[int, list[str]]]:
        """Per sentence, word position -> replacement candidates (masked-LM for single pieces, else neighbours)."""
        cls_id, sep_id, mask_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id, self.tokenizer.mask_token_id
        found: list[dict[int, list[str]]] = [{} for _ in sentences]
        rows, where = [], []
        for s, words in enumerate(sentences):
            pieces = [self.tokenizer.convert_tokens_to_ids(self.tokenizer.tokenize(w)) or [] for w in words]
            ids = [cls_id] + [i for p in pieces for i in p]
            start = 1
            for k, (w, p) in enumerate(zip(words, pieces)):
                pos, start = start, start + len(p)
                if not self.is_candidate(w):
                    continue
                if w in self.vocab and pos < self.cfg.max_seq_length - 1:
                    masked = ids[:self.cfg.max_seq_length - 1] + [sep_id]
                    masked[pos] = mask_id
                    rows.append(masked)
                    where.append((s, k, pos))
                else:
                    found[s][k] = self.neighbours.nearest(w, self.cfg.M)
        if rows:
            for (s, k, _), cands in zip(where, self._mlm_candidates(rows, where, sentences)):
                found[s][k] = cands
        return found

    @torch.no_grad()
    def _mlm_candidates(self, rows: list[list[int]], where: list[tuple[int, int, int]],
                        sentences: list[list[str]]) -> list[list[str]]:
        length = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), length, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = 1
        hidden = self.model.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        logits = self.model.cls(hidden[torch.arange(len(rows)), torch.tensor([pos for _, _, pos in where])])
        top = logits.topk(min(4 * self.cfg.M, logits.shape[-1]), dim=-1).indices.tolist()
        out = []
        for (s, k, _), ranked in zip(where, top):
            word = sentences[s][k]
            kept = [t for t in (self.ids_to_tokens[i] for i in ranked) if self.is_candidate(t) and t != word]
            out.append(kept[:self.cfg.M])
        return out

    def augment(self, words: list[str], candidates: dict[int, list[str]], rng: np.random.Generator) -> list[str]:
        """Up to N distinct new sentences (TinyBERT: N attempts, duplicates and the original dropped)."""
        original = " ".join(words)
        seen, new = {original}, []
        usable = [(k, c) for k, c in sorted(candidates.items()) if c]
        for _ in range(self.cfg.N):
            sent = list(words)
            for k, cands in usable:
                pick = cands[int(rng.integers(len(cands)))]
                if rng.random() < self.cfg.p:
                    sent[k] = pick
            text = " ".join(sent)
            if text not in seen:
                seen.add(text)
                new.append(text)
        return new


# The augmenter of this process: built once in the parent, inherited by forked workers (a GloVe table is
# read once, not once per worker).
_WORKER: dict[str, Augmenter] = {}


def _augment_chunk(job: tuple[list[tuple[int, list[str]]], list[int], int]) -> list[list[list[str]]]:
    """Rows (row number, fields) -> for each row, the original and its augmented copies, as field lists."""
    rows, text_cols, seed = job
    aug: Augmenter = _WORKER["augmenter"]
    out = []
    for col in text_cols:
        sentences = [aug.words(fields[col]) for _, fields in rows]
        cands = aug.candidates(sentences)
        for i, ((n, fields), words, c) in enumerate(zip(rows, sentences, cands)):
            if col == text_cols[0]:
                out.append([list(fields)])
            rng = np.random.default_rng([seed, n, col])
            out[i] += [fields[:col] + [text] + fields[col + 1:] for text in aug.augment(words, c, rng)]
    return out


def run(cfg: AugmentConfig) -> dict[str, Any]:
    task = get_task(cfg.task_name)
    for ok, flag, what in [(cfg.N >= 1, "--N", "must be >= 1"), (cfg.M >= 1, "--M", "must be >= 1"),
                           (0 <= cfg.p <= 1, "--p", "must be in [0, 1]"), (cfg.num_workers >= 0, "--num_workers", "must be >= 0"),
                           (cfg.max_seq_length >= 8, "--max_seq_length", "must be >= 8"),
                           (cfg.max_train_examples is None or cfg.max_train_examples >= 1, "--max_train_examples", "must be >= 1")]:
        if not ok:
            raise InputError(f"{flag} {getattr(cfg, flag[2:])}: {what}")
    source = train_file(task, cfg.glue_dir)
    target = task_dir(cfg.glue_dir, task) / "train_aug.tsv"
    if target.exists() and not cfg.overwrite:
        raise InputError(f"{target}: exists (pass --overwrite to replace it)")
    model_dir = resolve_model_dir(cfg.pretrained_bert_model, "--pretrained_bert_model")
    if "BertForMaskedLM" not in (read_config_dict(model_dir, "--pretrained_bert_model").get("architectures") or []):
        raise InputError(f"--pretrained_bert_model {cfg.pretrained_bert_model}: has no masked-LM head (make one with "
                         "`xcompress fit-mlm-head`, or pass a BertForMaskedLM checkpoint such as bert-base-uncased)")
    read_examples(task, source)  # the whole file checked (fields, labels) before any work
    header, rows = numbered_rows(task, source, cfg.max_train_examples, cfg.seed)
    text_cols = [column_index(header, c, source) for c in task.text_columns]
    workers = cfg.num_workers or os.cpu_count() or 1
    jobs = [(rows[i:i + CHUNK_ROWS], text_cols, cfg.seed) for i in range(0, len(rows), CHUNK_ROWS)]
    started = time.perf_counter()
    torch.set_num_threads(1)  # one thread everywhere: the same floating-point sums, so the same candidates
    _WORKER["augmenter"] = Augmenter(model_dir, cfg.glove_embs, cfg)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    written = 0
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            if header is not None:
                f.write("\t".join(header) + "\n")
            bar = tqdm(total=len(rows), desc=f"augment {task.name}", unit="row", disable=cfg.quiet)
            for chunk in _map(jobs, workers):
                for variants in chunk:
                    f.writelines("\t".join(fields) + "\n" for fields in variants)
                    written += len(variants)
                bar.update(len(chunk))
            bar.close()
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return {"task": task.name, "source_rows": len(rows), "written_rows": written, "output": str(target),
            "workers": workers, "seconds": time.perf_counter() - started, "config": dataclasses.asdict(cfg)}


def numbered_rows(task: GlueTask, source: Path, max_examples: int | None, seed: int
                  ) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    """The header (None for CoLA) and the non-empty data rows with their file line numbers; with `max_examples`,
    the subset the task stages pick for the same seed."""
    all_rows = read_rows(source)
    header = all_rows[0] if task.header else None
    first = 2 if task.header else 1
    rows = [(n, r) for n, r in enumerate(all_rows[first - 1:], start=first) if r]
    return header, subset(rows, max_examples, seed)


def _map(jobs, workers: int):
    if workers == 1:
        yield from map(_augment_chunk, jobs)
        return
    with multiprocessing.get_context("fork").Pool(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        yield from pool.imap(_augment_chunk, jobs)


def report(summary: dict[str, Any]) -> str:
    return (f"augment {summary['task']}: {summary['source_rows']:,} rows -> {summary['written_rows']:,} rows "
            f"({summary['workers']} worker(s), {summary['seconds'] / 60:.1f} min) -> {summary['output']}")
