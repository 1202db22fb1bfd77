"""The prediction phase's loss on the embedded teacher and real SST-2 / STS-B rows: soft cross-entropy, MSE on the
logits, and the gold labels mixed in, where rows without a label (-1, NaN) add nothing."""
import pytest
import torch
import torch.nn.functional as F

from corpora.glue import dev_files, get_task
from distill.task_training import PredictionObjective
from modeling.loading import load_tokenizer
from tasks.classifier import load_classifier
from tasks.features import load_features
from tests.conftest import REPO


def _model_and_batch(task_name: str):
    task = get_task(task_name)
    torch.manual_seed(0)
    model, model_dir = load_classifier("all-MiniLM-L6-v2", "--model", task)
    rows = load_features(task, dev_files(task, REPO / "data/glue_data")[0], load_tokenizer(model_dir, "--model"), 64, 16)
    return model, rows.batch(range(16))


@pytest.mark.parametrize("task_name", ["SST-2", "STS-B"])
def test_gold_labels_mix_into_the_distillation_loss(task_name):
    model, batch = _model_and_batch(task_name)
    regression = task_name == "STS-B"
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        logits = model(**inputs).logits
        own = model(**inputs, labels=batch["labels"]).loss  # the model's task loss on the gold labels
        teacher = logits + torch.randn(logits.shape, generator=torch.Generator().manual_seed(1))
        soft = PredictionObjective(model, 2.0, regression)(batch, teacher)["loss"]
        mixed = PredictionObjective(model, 2.0, regression, hard_label_weight=0.3)(batch, teacher)
        gold_only = PredictionObjective(model, 2.0, regression, hard_label_weight=0.999)(batch, teacher)
    if regression:
        assert torch.allclose(soft, F.mse_loss(logits.view(-1), teacher.view(-1)))
    else:
        target = torch.softmax(teacher / 2, -1)
        assert torch.allclose(soft, -(target * torch.log_softmax(logits / 2, -1)).sum(-1).mean())
    assert torch.allclose(mixed["distill"], soft) and torch.allclose(mixed["hard"], own, atol=1e-6)
    assert torch.allclose(mixed["loss"], 0.7 * soft + 0.3 * own, atol=1e-6)
    assert torch.allclose(gold_only["loss"], own, atol=1e-2 * float(own) + 1e-3 * float(soft))
    # rows without a gold label (augmented rows of a regression task, unlabelled rows) are left out of the gold part
    batch["labels"] = batch["labels"].clone()
    batch["labels"][8:] = float("nan") if regression else -1
    with torch.no_grad():
        half = PredictionObjective(model, 2.0, regression, hard_label_weight=0.3)(batch, teacher)["hard"]
        first = {k: v[:8] for k, v in batch.items()}
        assert torch.allclose(half, model(**{k: first[k] for k in inputs}, labels=first["labels"]).loss, atol=1e-6)


def test_mse_on_the_logits_of_a_classifier():
    model, batch = _model_and_batch("SST-2")
    teacher = torch.tensor([[2.0, -1.0]]).repeat(16, 1)
    with torch.no_grad():
        logits = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).logits
        loss = PredictionObjective(model, 1.0, False, loss="mse")(batch, teacher)["loss"]
    assert torch.allclose(loss, F.mse_loss(logits, teacher))
