"""Small T5 models made from shipped text (nothing is downloaded): a SentencePiece Unigram tokenizer trained on
a text-to-text corpus's own sources and targets, with T5's special pieces (pad 0, end of sequence 1, unknown 2) and
its end-of-sequence piece appended to every text, and a T5 of t5-small's architecture at a chosen size, randomly
initialised. The published t5-small config.json values are here too (`T5_SMALL`)."""
from __future__ import annotations

from pathlib import Path

import torch

from corpora.text_pairs import read_pairs

# t5-small's published config.json (the model's geometry; its weights are not needed here).
T5_SMALL = {"d_model": 512, "d_ff": 2048, "d_kv": 64, "num_heads": 8, "num_layers": 6, "num_decoder_layers": 6,
            "vocab_size": 32128, "relative_attention_num_buckets": 32, "dropout_rate": 0.1,
            "layer_norm_epsilon": 1e-6, "feed_forward_proj": "relu", "initializer_factor": 1.0,
            "decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1, "is_encoder_decoder": True}


def t5_tokenizer(corpus: Path, vocab_size: int, max_pairs: int | None = None):
    """A fast tokenizer of the corpus's train.tsv sources and targets."""
    from tokenizers import SentencePieceUnigramTokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    pairs = read_pairs(corpus / "train.tsv", "--data_dir")[:max_pairs]
    sp = SentencePieceUnigramTokenizer()
    sp.train_from_iterator([t for p in pairs for t in (p.source, p.target)], vocab_size=vocab_size,
                           special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False)
    sp._tokenizer.post_processor = TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                      special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=sp._tokenizer, eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>")


def small_t5(corpus: Path, out: Path, vocab_size: int = 4000, max_pairs: int | None = None, seed: int = 0,
             **geometry) -> Path:
    """A randomly initialised T5 (t5-small's config with `geometry` changed) and its tokenizer, saved at `out`."""
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = t5_tokenizer(corpus, vocab_size, max_pairs)
    config = T5Config(**(T5_SMALL | geometry | {"vocab_size": len(tokenizer)}))
    torch.manual_seed(seed)
    T5ForConditionalGeneration(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# The small T5 the pruning benchmarks measure: t5-small's architecture at a quarter of its width and two thirds of its
# depth, 9.3 M parameters with an 8,000-piece vocabulary.
BENCHMARK_GEOMETRY = {"d_model": 256, "d_ff": 1024, "d_kv": 32, "num_heads": 8, "num_layers": 4, "num_decoder_layers": 4}


def trained_small_t5(corpus: Path, out: Path) -> Path:
    """The benchmarks' T5 at `out`, made and trained on the corpus if it is not there yet: seq2seq-finetune for 3,000
    steps at batch 64, lr 1e-3 (2.6 minutes on an H200, about two hours of one CPU core)."""
    from .finetune import Seq2SeqFinetuneConfig
    from .finetune import run as finetune

    if not (out / "seq2seq_finetune_summary.json").is_file():
        init = out.with_name(out.name + "-init")
        if not (init / "config.json").is_file():
            small_t5(corpus, init, vocab_size=8000, **BENCHMARK_GEOMETRY)
        finetune(Seq2SeqFinetuneConfig(model=str(init), task_name="text", data_dir=str(corpus), output_dir=str(out),
                                       max_steps=3000, train_batch_size=64, learning_rate=1e-3, eval_steps=1500,
                                       max_eval_examples=300, generation_max_length=48, overwrite_output_dir=True,
                                       quiet=True))
    return out
