"""Every model directory xcompress writes loads in plain transformers: a process where importing any of xcompress's
packages fails builds it from the code copied beside its weights (`trust_remote_code=True`) and gives the same
logits as xcompress's own loader: TD, pruned and dense models, fp32, bf16 and int8, a vocabulary-pruned TD model, and
the TD and pruned formats of other families (RoBERTa, DistilBERT: the embedded teacher transplanted)."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modeling.formats import CLASSIFIER
from modeling.loading import load_model, load_tokenizer

TEXTS = ["a gripping , well-acted thriller", "the plot is thin and the jokes fall flat"]
TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")

# Run in a fresh interpreter: xcompress's packages cannot be imported, only torch and transformers.
PLAIN = """
import importlib.abc, json, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"modeling", "stagekit", "distill", "compress", "decompose", "corpora", "pregenerate", "tasks"}:
            raise ImportError("xcompress is not installed here: " + name)
sys.meta_path.insert(0, Blocked())
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
out = {}
for d in sys.argv[2:]:
    model = AutoModelForSequenceClassification.from_pretrained(d, trust_remote_code=True).eval()
    batch = AutoTokenizer.from_pretrained(d, trust_remote_code=True)(json.loads(sys.argv[1]), padding=True,
                                                                     return_tensors="pt")
    with torch.no_grad():
        out[d] = model(**batch).logits.tolist()
print(json.dumps(out))
"""


def _with_tokenizer(model, source: Path, target: Path, quantized: bool = False) -> Path:
    from modeling.int8 import save_quantized

    target.mkdir(parents=True)
    if quantized:
        save_quantized(model, target)
    else:
        model.save_pretrained(target)
    for name in TOKENIZER:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
    return target


@pytest.fixture(scope="module")
def model_dirs(td_student, teacher_dir, tmp_path_factory) -> dict[str, Path]:
    from compress.prune_structured import prune_heads_and_ffn
    from compress.prune_vocabulary import prune_embeddings_, write_tokenizer
    from decompose.convert import factorize_teacher
    from modeling.int8 import quantize_
    from tests.transplants import transplant

    root = tmp_path_factory.mktemp("remote")
    torch.manual_seed(0)  # the fresh classification heads
    dirs = {}
    td, _ = load_model(str(td_student), "--model", CLASSIFIER, config_updates={"num_labels": 2}, new_head=True)
    dirs["TD"] = _with_tokenizer(td, td_student, root / "td")
    dirs["TD int8"] = _with_tokenizer(quantize_(copy.deepcopy(td)), td_student, root / "td-int8", quantized=True)
    dirs["TD bf16"] = _with_tokenizer(copy.deepcopy(td).to(torch.bfloat16), td_student, root / "td-bf16")
    tokenizer = load_tokenizer(td_student, "--model")
    keep = sorted(set(tokenizer(TEXTS)["input_ids"][0] + tokenizer(TEXTS)["input_ids"][1]) | set(tokenizer.all_special_ids))
    prune_embeddings_(td, keep)
    dirs["TD vocabulary"] = root / "td-vocab"
    td.save_pretrained(dirs["TD vocabulary"])
    write_tokenizer(tokenizer, keep, td_student, dirs["TD vocabulary"])
    dense, _ = load_model(str(teacher_dir), "--model", CLASSIFIER, config_updates={"num_labels": 2}, new_head=True)
    dirs["dense int8"] = _with_tokenizer(quantize_(copy.deepcopy(dense)), teacher_dir, root / "dense-int8", quantized=True)
    prune_heads_and_ffn(dense, [torch.arange(8)] * 6, [torch.arange(768)] * 6)  # now a PrunedBert classifier
    dirs["pruned"] = _with_tokenizer(dense, teacher_dir, root / "pruned")
    dirs["pruned int8"] = _with_tokenizer(quantize_(copy.deepcopy(dense)), teacher_dir, root / "pruned-int8",
                                          quantized=True)
    for family in ("roberta", "distilbert"):
        source = transplant(teacher_dir, family, root / f"{family}-source")
        model, _ = load_model(str(source), "--model", CLASSIFIER, config_updates={"num_labels": 2}, new_head=True)
        dirs[f"TD {family}"] = _with_tokenizer(factorize_teacher(model, 36, 192)[0], source, root / f"td-{family}")
        prune_heads_and_ffn(model, [torch.arange(8)] * 6, [torch.arange(768)] * 6)
        dirs[f"pruned {family}"] = _with_tokenizer(model, source, root / f"pruned-{family}")
    return dirs


def test_every_format_loads_in_plain_transformers_with_the_same_logits(model_dirs, tmp_path):
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", PLAIN, json.dumps(TEXTS), *map(str, model_dirs.values())],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    plain = json.loads(r.stdout.strip().splitlines()[-1])
    for label, directory in model_dirs.items():
        config = json.loads((directory / "config.json").read_text())
        assert "AutoModelForSequenceClassification" in config["auto_map"], label
        model, _ = load_model(str(directory), "--model", CLASSIFIER)
        batch = load_tokenizer(directory, "--model")(TEXTS, padding=True, return_tensors="pt")
        with torch.no_grad():
            ours = model(**batch).logits
        assert torch.equal(torch.tensor(plain[str(directory)]), ours.float()), label
