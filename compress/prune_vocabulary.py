"""Vocabulary pruning (TextPruner's, for WordPiece): keep the word pieces a task's text uses and the special
tokens, drop the other rows of the word-embedding matrix, and renumber the tokenizer to match.

WordPiece takes, at each position of a word, the longest piece in its vocabulary. Every piece that this
longest match chose on the task's text is kept, and no piece is added, so on that text the pruned tokenizer
makes the same choices: the same pieces under new numbers, hence the same embeddings and the same predictions.
`check_same_pieces` verifies that on every text, not only in theory. Text with a dropped piece is split into the
pieces that remain, or becomes [UNK] where none fit.

The kept pieces stay in their original order, so [PAD] (id 0 in every BERT vocabulary) keeps its id. The config
records `xcompress_vocabulary`: the original size and how many pieces were kept.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modeling.formats import VOCABULARY_KEY


def used_pieces(tokenizer, texts: Iterable[tuple[str, str | None]]) -> list[int]:
    """Sorted ids of every piece the tokenizer makes of `texts` (untruncated), plus its special tokens."""
    used = set(tokenizer.all_special_ids)
    batch: list[tuple[str, str | None]] = []
    for pair in texts:
        batch.append(pair)
        if len(batch) == 1024:
            used.update(_ids_of(tokenizer, batch))
            batch = []
    used.update(_ids_of(tokenizer, batch))
    return sorted(used)


def _ids_of(tokenizer, pairs: list[tuple[str, str | None]]) -> set[int]:
    if not pairs:
        return set()
    texts = [t for pair in pairs for t in pair if t is not None]
    return {i for ids in tokenizer(texts, add_special_tokens=False)["input_ids"] for i in ids}


def prune_embeddings_(model: nn.Module, keep: list[int]) -> dict[str, Any]:
    """Keep rows `keep` (sorted old ids) of the word embeddings, in place; returns what the config records."""
    old = model.get_input_embeddings()
    original = old.num_embeddings
    if keep[-1] >= original:
        raise ValueError(f"piece id {keep[-1]} is outside the model's vocabulary of {original}")
    pad = model.config.pad_token_id
    new_pad = keep.index(pad) if pad is not None and pad in keep else None
    new = nn.Embedding(len(keep), old.embedding_dim, padding_idx=new_pad,
                       dtype=old.weight.dtype, device=old.weight.device)
    with torch.no_grad():
        new.weight.copy_(old.weight[torch.tensor(keep, device=old.weight.device)])
    model.set_input_embeddings(new)
    record = {"original_size": original, "kept": len(keep)}
    model.config.update({"vocab_size": len(keep), "pad_token_id": new_pad, VOCABULARY_KEY: record})
    return record


def tokenizer_model(tokenizer) -> str:
    """The kind of a fast tokenizer's model: WordPiece, BPE, Unigram (SentencePiece), ..."""
    return json.loads(tokenizer.backend_tokenizer.to_str())["model"]["type"]


def write_tokenizer(tokenizer, keep: list[int], source_dir: Path, directory: Path) -> None:
    """tokenizer.json and vocab.txt renumbered to `keep`, and the other tokenizer files copied, into `directory`."""
    new_id = {old: new for new, old in enumerate(keep)}
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    pieces = {i: p for p, i in spec["model"]["vocab"].items()}
    spec["model"]["vocab"] = {pieces[old]: new for old, new in new_id.items()}
    by_piece = spec["model"]["vocab"]
    for token in spec.get("added_tokens", []):
        token["id"] = by_piece[token["content"]]
    for special in ((spec.get("post_processor") or {}).get("special_tokens") or {}).values():
        special["ids"] = [by_piece[t] for t in special["tokens"]]
    (directory / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    (directory / "vocab.txt").write_text("".join(pieces[old] + "\n" for old in keep), encoding="utf-8")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (source_dir / name).is_file():
            config = json.loads((source_dir / name).read_text(encoding="utf-8"))
            if "added_tokens_decoder" in config:  # keyed by id
                config["added_tokens_decoder"] = {str(by_piece[t["content"]]): t
                                                  for t in config["added_tokens_decoder"].values()}
            (directory / name).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def check_same_pieces(original, pruned, keep: list[int], texts: list[tuple[str, str | None]]) -> int:
    """How many texts the pruned tokenizer splits differently from the original (0 when pruning is exact)."""
    differ = 0
    for start in range(0, len(texts), 1024):
        chunk = [t for pair in texts[start:start + 1024] for t in pair if t is not None]
        before = original(chunk)["input_ids"]
        after = pruned(chunk)["input_ids"]
        differ += sum([keep[i] for i in b] != a for a, b in zip(before, after))
    return differ
