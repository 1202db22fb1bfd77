"""A second inference backend: ONNX export of a classifier and onnxruntime sessions, fp32 and int8.

The model is exported with torch.onnx's dynamo exporter (batch and sequence dynamic); a TD model is folded
first (plain Linear maps). The int8 graph is onnxruntime's dynamic quantization of the fp32 graph (int8
weights per channel, activations quantized at run time), the counterpart of `quantize_`.
"""
from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from modeling import fold_for_inference
from modeling.formats import TUCKER, kind_of

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
FP32_FILE, INT8_FILE = "model.onnx", "model.int8.onnx"


def export_onnx(model: nn.Module, path: Path) -> Path:
    """Write `model` (fp32, not quantized) as ONNX with dynamic batch and sequence axes."""
    model = copy.deepcopy(model).eval()
    if kind_of(model) == TUCKER:
        fold_for_inference(model)
    example = {k: torch.ones(2, 16, dtype=torch.long) for k in INPUTS}
    example["token_type_ids"].zero_()
    batch, seq = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=2, max=4096)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(_LogitsOnly(model), (), kwargs=example, input_names=list(INPUTS),
                                    output_names=["logits"], dynamic_shapes={k: {0: batch, 1: seq} for k in INPUTS},
                                    dynamo=True, verbose=False)
    program.save(str(path))
    _drop_shape_annotations(path)
    return path


def _drop_shape_annotations(path: Path) -> None:
    """Remove the exporter's intermediate shape annotations: some carry the example's batch size as a fixed
    dimension, which onnx's shape inference (run by the int8 quantizer) then rejects. Runtimes re-infer them."""
    import onnx

    graph = onnx.load(str(path))
    del graph.graph.value_info[:]
    onnx.save(graph, str(path))


def quantize_onnx(fp32: Path, int8: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer's generic advice to pre-process (shape inference) first
    try:
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)
    return int8


class OnnxClassifier:
    """An onnxruntime session called like the PyTorch classifier: logits from a batch of input tensors."""

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.path = path

    def logits(self, batch: dict[str, torch.Tensor]) -> np.ndarray:
        feed = {k: batch[k].numpy() if k in batch else np.zeros_like(batch["input_ids"].numpy()) for k in INPUTS}
        return self.session.run(["logits"], feed)[0]


class _LogitsOnly(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits
