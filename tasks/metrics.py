"""GLUE metrics, as the GLUE server and the BERT/TinyBERT papers compute them.

`score` is the one number a task is ranked by here (best checkpoint, percentage of the teacher): MCC for
CoLA, accuracy for the classification tasks, the mean of accuracy and F1 for MRPC and QQP, the mean of
Pearson and Spearman correlation for STS-B.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float((pred == gold).mean())


def f1_positive(pred: np.ndarray, gold: np.ndarray) -> float:
    """F1 of the positive class (label index 1)."""
    tp = float(((pred == 1) & (gold == 1)).sum())
    fp = float(((pred == 1) & (gold != 1)).sum())
    fn = float(((pred != 1) & (gold == 1)).sum())
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def matthews_corrcoef(pred: np.ndarray, gold: np.ndarray) -> float:
    """Binary MCC; 0 when a row or column of the confusion matrix is empty (as scikit-learn does)."""
    tp = float(((pred == 1) & (gold == 1)).sum())
    tn = float(((pred == 0) & (gold == 0)).sum())
    fp = float(((pred == 1) & (gold == 0)).sum())
    fn = float(((pred == 0) & (gold == 1)).sum())
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denom == 0 else (tp * tn - fp * fn) / denom


def correlations(pred: np.ndarray, gold: np.ndarray) -> tuple[float, float]:
    """Pearson and Spearman (ties ranked by their mean); 0 for a constant prediction."""
    if np.ptp(pred) == 0:
        return 0.0, 0.0
    return float(stats.pearsonr(pred, gold)[0]), float(stats.spearmanr(pred, gold)[0])


def collapse(predictions: np.ndarray, gold: np.ndarray, regression: bool) -> str | None:
    """What is wrong when a model's predictions no longer depend on its input, or None. A constant prediction
    scores 0 correlation (STS-B) or MCC (CoLA), or the majority class's accuracy, and would pass for a weak model."""
    if len(predictions) < 2:
        return None
    if not np.isfinite(predictions).all():
        return f"{int((~np.isfinite(predictions)).sum())} of {len(predictions)} predictions are not finite (NaN or inf)"
    if regression:
        spread, wanted = float(np.std(predictions)), float(np.std(gold))
        if spread <= 0.01 * wanted:
            return (f"predictions collapsed to a constant ({np.mean(predictions):.3f} +- {spread:.4f}; "
                    f"the labels' spread is {wanted:.3f})")
        return None
    labels = np.unique(predictions)
    if labels.size == 1 and np.unique(gold).size > 1:
        return f"predictions collapsed to one class (all {len(predictions)} are label {labels[0]})"
    return None


def glue_metrics(metric: str, predictions: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """All of a task's metrics plus `score`. Classification: label indices; regression: floats."""
    if metric == "mcc":
        m = {"mcc": matthews_corrcoef(predictions, gold)}
        return m | {"score": m["mcc"]}
    if metric == "acc":
        m = {"acc": accuracy(predictions, gold)}
        return m | {"score": m["acc"]}
    if metric == "acc_and_f1":
        m = {"acc": accuracy(predictions, gold), "f1": f1_positive(predictions, gold)}
        return m | {"acc_and_f1": (m["acc"] + m["f1"]) / 2, "score": (m["acc"] + m["f1"]) / 2}
    if metric == "corr":
        pearson, spearman = correlations(predictions.astype(np.float64), gold.astype(np.float64))
        return {"pearson": pearson, "spearman": spearman, "corr": (pearson + spearman) / 2,
                "score": (pearson + spearman) / 2}
    raise ValueError(f"unknown metric {metric!r}")
