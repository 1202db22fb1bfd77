import pytest
import torch

from modeling.stacking import BLOCK_TYPE, OPS, block_layout
from decompose.blocks import stack_encoder_blocks


@pytest.mark.parametrize("ops,per_layer", [("san_ffn", 12), ("san", 4), ("ffn", 8)])
def test_stack_shape_and_layout(teacher, ops, per_layer):
    W = stack_encoder_blocks(teacher, ops)
    assert W.shape == (6 * per_layer, 384, 384)
    assert len(block_layout(6, ops)) == W.shape[0]
    assert W.dtype == torch.float64


def test_blocks_are_the_teacher_matrices(teacher):
    W = stack_encoder_blocks(teacher, "san_ffn", dtype=torch.float32)
    layer = teacher.encoder.layer[3]
    base = 3 * 12
    assert torch.equal(W[base + 0], layer.attention.self.query.weight)
    assert torch.equal(W[base + 2], layer.attention.self.value.weight)
    assert torch.equal(W[base + 3], layer.attention.output.dense.weight)
    # FFN input: row blocks of the (4h, h) matrix; FFN output: column blocks of the (h, 4h) matrix.
    assert torch.equal(W[base + 4 + 2], layer.intermediate.dense.weight[768:1152])
    assert torch.equal(W[base + 8 + 1], layer.output.dense.weight[:, 384:768])


def test_every_kind_has_a_type():
    assert set(BLOCK_TYPE) == set(OPS["san_ffn"])
    assert [BLOCK_TYPE[k] for k in OPS["san"]] == ["Q", "K", "V", "O"]
