"""Vocabulary pruning (TextPruner's): keep the pieces a task's text uses and the special tokens, drop the other rows
of the word-embedding matrix, and renumber the tokenizer to match. WordPiece (BERT, DistilBERT, ELECTRA), byte-level
BPE (RoBERTa) and Unigram (SentencePiece: XLM-R) tokenizers alike.

On the task's text the pruned tokenizer makes the same choices, so the same pieces under new numbers, hence the same
embeddings and predictions; `check_same_pieces` verifies that on every text, not only in theory:
- WordPiece takes, at each position of a word, the longest piece in its vocabulary; every piece it chose is kept.
- BPE applies, in rank order, the merges whose two parts are in the word. Every piece it made is kept with the parts
  of every merge that makes it, down to single characters, and every single character (byte-level BPE: all 256
  bytes, so any text still encodes); a merge stays when its parts and its result do, in its rank order. The merges
  chosen on the task's text are all kept and the ones dropped were not chosen, so the same merges apply.
- Unigram picks the segmentation of highest score; it used only kept pieces, and dropping pieces cannot make another
  better. Every single character is kept too, so unseen text still splits.
Other text with a dropped piece is split into the pieces that remain, or becomes the unknown token where none fit.

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


def vocabulary_closure(tokenizer, used: list[int]) -> list[int]:
    """`used` (sorted ids) plus what the tokenizer's model needs to split the same way: for BPE the parts of the merges
    making each piece and every single character, for Unigram every single character."""
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    if model["type"] == "WordPiece":
        return used
    if model["type"] == "Unigram":
        singles = {i for i, (piece, _) in enumerate(model["vocab"]) if len(piece) == 1}
        return sorted(set(used) | singles | {model.get("unk_id") or 0})
    if model["type"] != "BPE":
        raise ValueError(f"a {model['type']} tokenizer (vocabulary pruning reads WordPiece, BPE and Unigram)")
    vocab, prefix = model["vocab"], model.get("continuing_subword_prefix") or ""
    pieces = {i: p for p, i in vocab.items()}
    made_by: dict[str, list[tuple[str, str]]] = {}
    for a, b in _merges(model):
        made_by.setdefault(a + b.removeprefix(prefix), []).append((a, b))
    kept = {p for p in vocab if len(p.removeprefix(prefix)) <= 1} | {pieces[i] for i in used}
    todo = list(kept)
    while todo:
        for part in (x for pair in made_by.get(todo.pop(), ()) for x in pair):
            if part in vocab and part not in kept:
                kept.add(part)
                todo.append(part)
    return sorted(vocab[p] for p in kept)


def _merges(model: dict[str, Any]) -> list[tuple[str, str]]:
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]


def prune_embeddings_(model: nn.Module, keep: list[int]) -> dict[str, Any]:
    """Keep rows `keep` (sorted old ids) of the word embeddings, in place; returns what the config records."""
    old = model.get_input_embeddings()
    original = old.num_embeddings
    if keep[-1] >= original:
        raise ValueError(f"piece id {keep[-1]} is outside the model's vocabulary of {original}")
    pad = model.config.pad_token_id
    new_pad = keep.index(pad) if pad is not None and pad in keep else None
    if new_pad != pad and _positions_from_padding(model):
        raise ValueError(f"the padding id {pad} would become {new_pad}, and this model numbers positions from it")
    new = nn.Embedding(len(keep), old.embedding_dim, padding_idx=new_pad,
                       dtype=old.weight.dtype, device=old.weight.device)
    with torch.no_grad():
        new.weight.copy_(old.weight[torch.tensor(keep, device=old.weight.device)])
    model.set_input_embeddings(new)
    record = {"original_size": original, "kept": len(keep)}
    model.config.update({"vocab_size": len(keep), "pad_token_id": new_pad, VOCABULARY_KEY: record})
    return record


def _positions_from_padding(model: nn.Module) -> bool:
    from modeling.families import family_of

    config = model.config
    return bool(getattr(config, "positions_from_padding", False)) or family_of(config).position_offset > 0


def tokenizer_model(tokenizer) -> str:
    """The kind of a fast tokenizer's model: WordPiece, BPE, Unigram (SentencePiece), ..."""
    return json.loads(tokenizer.backend_tokenizer.to_str())["model"]["type"]


def write_tokenizer(tokenizer, keep: list[int], source_dir: Path, directory: Path) -> None:
    """tokenizer.json renumbered to `keep` (and WordPiece's vocab.txt), and the other tokenizer files copied, into
    `directory`. A BPE model keeps the merges among kept pieces; a Unigram model its kept pieces' scores."""
    new_id = {old: new for new, old in enumerate(keep)}
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec["model"]
    if model["type"] == "Unigram":
        pieces = {i: entry[0] for i, entry in enumerate(model["vocab"])}
        model["vocab"] = [model["vocab"][old] for old in keep]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id[model["unk_id"]]
        by_piece = {entry[0]: i for i, entry in enumerate(model["vocab"])}
    else:
        pieces = {i: p for p, i in model["vocab"].items()}
        model["vocab"] = by_piece = {pieces[old]: new for old, new in new_id.items()}
    if model["type"] == "BPE":
        prefix = model.get("continuing_subword_prefix") or ""
        model["merges"] = [[a, b] for a, b in _merges(model)
                           if a in by_piece and b in by_piece and a + b.removeprefix(prefix) in by_piece]
    for token in spec.get("added_tokens", []):
        token["id"] = by_piece[token["content"]]
    _renumber_special_tokens(spec.get("post_processor"), by_piece)
    (directory / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    if model["type"] == "WordPiece":
        (directory / "vocab.txt").write_text("".join(pieces[old] + "\n" for old in keep), encoding="utf-8")
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (source_dir / name).is_file():
            config = json.loads((source_dir / name).read_text(encoding="utf-8"))
            if "added_tokens_decoder" in config:  # keyed by id
                config["added_tokens_decoder"] = {str(by_piece[t["content"]]): t
                                                  for t in config["added_tokens_decoder"].values()}
            (directory / name).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _renumber_special_tokens(processor: dict[str, Any] | None, by_piece: dict[str, int]) -> None:
    """The ids a post-processor adds: TemplateProcessing's special_tokens, RoBERTa's and BERT's cls and sep pairs,
    inside a Sequence of processors too."""
    if not processor:
        return
    for special in (processor.get("special_tokens") or {}).values():
        special["ids"] = [by_piece[t] for t in special["tokens"]]
    for key in ("cls", "sep"):
        if isinstance(processor.get(key), list):
            processor[key][1] = by_piece[processor[key][0]]
    for inner in processor.get("processors") or []:
        _renumber_special_tokens(inner, by_piece)


def check_same_pieces(original, pruned, keep: list[int], texts: list[tuple[str, str | None]]) -> int:
    """How many texts the pruned tokenizer splits differently from the original (0 when pruning is exact)."""
    differ = 0
    for start in range(0, len(texts), 1024):
        chunk = [t for pair in texts[start:start + 1024] for t in pair if t is not None]
        before = original(chunk)["input_ids"]
        after = pruned(chunk)["input_ids"]
        differ += sum([keep[i] for i in b] != a for a, b in zip(before, after))
    return differ
