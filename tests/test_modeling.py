import contextlib
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForSequenceClassification, BertConfig, BertModel

from decompose import decompose_fast
from decompose.convert import td_config_from_teacher, td_state_from_teacher
from modeling import (
    TuckerBertConfig,
    TuckerBertForMaskedLM,
    TuckerBertForSequenceClassification,
    TuckerBertModel,
    onednn,
)
from modeling import modeling_tucker_bert as modeling
from modeling.dropout import keep_mask
from modeling.params import encoder_params
from modeling.recompute import _DroppedProbsTimesValues, gelu_linear
from decompose.blocks import stack_encoder_blocks


def _td_from_teacher(teacher, rank_layer, rank_dim, ops="san_ffn"):
    W = stack_encoder_blocks(teacher, ops)
    cfg = td_config_from_teacher(teacher.config, rank_layer, rank_dim, ops)
    model = TuckerBertModel(cfg)
    model.load_state_dict(td_state_from_teacher(teacher, decompose_fast(W, rank_layer, rank_dim), cfg), strict=True)
    return model.eval()


@pytest.mark.parametrize("ops,n_blocks", [("san_ffn", 72), ("san", 24), ("ffn", 48)])
def test_full_rank_reproduces_teacher(teacher, token_batch, ops, n_blocks):
    td = _td_from_teacher(teacher, n_blocks, 384, ops)
    with torch.no_grad():
        ref = teacher(**token_batch, output_hidden_states=True, output_attentions=True)
        out = td(**token_batch, output_hidden_states=True, output_attentions=True)
        fused = td(**token_batch)  # the SDPA path, no attention outputs requested
    assert len(out.hidden_states) == len(ref.hidden_states) == 7
    for a, b in zip(ref.hidden_states, out.hidden_states):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=0)
    for a, b in zip(ref.attentions, out.attentions):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.pooler_output, ref.pooler_output, atol=1e-4, rtol=0)
    torch.testing.assert_close(fused.last_hidden_state, ref.last_hidden_state, atol=1e-4, rtol=0)


def test_attention_scores_are_the_teachers_pre_softmax_scores(teacher, token_batch):
    td = _td_from_teacher(teacher, 72, 384)
    captured = {}
    layer = teacher.encoder.layer[2].attention.self
    hooks = [layer.query.register_forward_hook(lambda m, i, o: captured.__setitem__("q", o)),
             layer.key.register_forward_hook(lambda m, i, o: captured.__setitem__("k", o))]
    with torch.no_grad():
        teacher(**token_batch)
        out = td(**token_batch, output_attentions=True, output_attention_scores=True)
    for h in hooks:
        h.remove()
    q = captured["q"].view(2, 48, 12, 32).transpose(1, 2)
    k = captured["k"].view(2, 48, 12, 32).transpose(1, 2)
    expected = q @ k.transpose(-1, -2) / 32**0.5
    scores = out.attention_scores[2]
    mask = token_batch["attention_mask"].bool()[:, None, None, :].expand_as(scores)
    torch.testing.assert_close(scores[mask], expected[mask], atol=1e-4, rtol=0)
    assert (scores[~mask] < -1e30).all()  # padded keys carry the additive mask
    torch.testing.assert_close(scores.softmax(-1), out.attentions[2])


def test_bert_base_geometry_parameter_counts():
    base = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    torch.manual_seed(0)
    assert encoder_params(BertModel(BertConfig(**base))) == 85_017_600
    td = TuckerBertModel(TuckerBertConfig(rank_layer=72, rank_dim=384, **base))
    assert encoder_params(td) == 11_299_968
    f = td.encoder.factors
    assert (f.G.numel(), f.U.numel(), f.V.numel(), f.P.numel()) == (10_616_832, 294_912, 294_912, 10_368)
    assert encoder_params(TuckerBertModel(TuckerBertConfig(rank_layer=36, rank_dim=256, **base))) == 2_840_640


def test_random_init_has_bert_scale_weights():
    cfg = TuckerBertConfig(rank_layer=36, rank_dim=192, hidden_size=384, num_hidden_layers=6,
                           num_attention_heads=12, intermediate_size=1536)
    torch.manual_seed(0)
    td = TuckerBertModel(cfg)
    with torch.no_grad():
        block = td.encoder.factors.U @ td.encoder.factors.mixed_cores()[0] @ td.encoder.factors.V
    assert 0.01 < float(block.std()) < 0.04  # initializer_range 0.02, like a dense BERT block


def test_save_load_roundtrip_and_auto_classes(tmp_path, teacher, token_batch):
    td = _td_from_teacher(teacher, 36, 96)
    td.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not (tmp_path / "pytorch_model.bin").exists()
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "tucker_bert"
    again = AutoModel.from_pretrained(tmp_path).eval()
    assert type(again) is TuckerBertModel
    with torch.no_grad():
        torch.testing.assert_close(again(**token_batch).last_hidden_state, td(**token_batch).last_hidden_state)
    clf = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=3)
    assert type(clf) is TuckerBertForSequenceClassification
    out = clf(**token_batch, labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3) and out.loss.ndim == 0
    mlm = TuckerBertForMaskedLM.from_pretrained(tmp_path)
    assert mlm.cls.predictions.decoder.weight.data_ptr() == mlm.bert.embeddings.word_embeddings.weight.data_ptr()


def test_loading_is_strict(tmp_path, teacher, teacher_dir):
    with pytest.raises(ValueError, match="not a TD model"):
        TuckerBertModel.from_pretrained(teacher_dir)
    td = _td_from_teacher(teacher, 12, 32)
    td.save_pretrained(tmp_path / "ok")
    # A checkpoint missing a factor is an error, not a silent re-initialisation.
    state = load_file(tmp_path / "ok" / "model.safetensors")
    del state["encoder.factors.G"]
    (tmp_path / "missing").mkdir()
    (tmp_path / "missing" / "config.json").write_text((tmp_path / "ok" / "config.json").read_text())
    save_file(state, tmp_path / "missing" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="missing: encoder.factors.G"):
        TuckerBertModel.from_pretrained(tmp_path / "missing")
    # A config with other ranks than the weights: mismatched shapes are an error.
    cfg = json.loads((tmp_path / "ok" / "config.json").read_text())
    cfg["rank_dim"] = 48
    (tmp_path / "ok" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="mismatched"):
        TuckerBertModel.from_pretrained(tmp_path / "ok")


def test_folded_weights_cached_without_grad_and_invalidated_by_updates(teacher, token_batch):
    td = _td_from_teacher(teacher, 12, 32)
    factors = td.encoder.factors
    with torch.no_grad():
        first = td(**token_batch).last_hidden_state
        assert factors.folded() is factors.folded()
        factors.G.mul_(0.5)
        second = td(**token_batch).last_hidden_state
    assert not torch.allclose(first, second)
    with torch.enable_grad():
        assert factors.folded() is not factors.folded()


def test_gradients_reach_factors_and_biases(teacher, token_batch):
    td = _td_from_teacher(teacher, 12, 32).train()
    td(**token_batch).last_hidden_state.pow(2).mean().backward()
    f = td.encoder.factors
    for p in (f.U, f.V, f.G, f.P, td.encoder.layer[0].attention.qkv.bias, td.encoder.layer[5].ffn.output.bias):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_cpu_dropout_and_recomputed_products_match_plain_autograd():
    torch.manual_seed(0)
    keep = keep_mask(torch.Size([512, 1024]), 0.1)
    assert abs(keep.float().mean().item() - 0.9) < 0.002
    x = torch.randn(4, 8, 32, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 32, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gelu_linear, (x, w))
    torch.testing.assert_close(gelu_linear(x, w), torch.nn.functional.linear(torch.nn.functional.gelu(x), w))
    probs = torch.randn(6, 9, 9, dtype=torch.float64).softmax(-1).requires_grad_()
    v = torch.randn(6, 9, 4, dtype=torch.float64, requires_grad=True)
    keep = keep_mask(probs.shape, 0.3)
    fused = _DroppedProbsTimesValues.apply
    assert torch.autograd.gradcheck(lambda a, b: fused(a, keep, b, 1 / 0.7), (probs, v))
    torch.testing.assert_close(fused(probs, keep, v, 1 / 0.7), torch.bmm(torch.where(keep, probs, 0.0) / 0.7, v))


@pytest.mark.parametrize("shape,out_features,transposed,bias,gelu", [
    ((4, 10, 48), 16, False, True, False),   # weight gradient with the narrower side first
    ((40, 16), 48, True, False, False),      # the other way round, weight a transposed view
    ((4, 10, 48), 96, False, False, True),   # gelu_linear, GELU recomputed in backward
])
def test_onednn_products_match_float64_forward_and_backward(shape, out_features, transposed, bias, gelu):
    F = torch.nn.functional
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(*((shape[-1], out_features) if transposed else (out_features, shape[-1])), dtype=torch.float64,
                    requires_grad=True)
    b = torch.randn(out_features, dtype=torch.float64, requires_grad=True) if bias else None

    def apply(x, w, b):
        weight = w.T if transposed else w
        return gelu_linear(x, weight) if gelu else F.linear(x, weight, b)

    leaves = [t for t in (x, w, b) if t is not None]
    ref = apply(x, w, b)
    ref_grads = torch.autograd.grad(ref.pow(2).sum(), leaves)
    leaves32 = [t.detach().float().requires_grad_() for t in leaves]
    x32, w32, b32 = leaves32[0], leaves32[1], leaves32[2] if bias else None
    assert onednn.backend(torch.device("cpu")) == "onednn"
    with onednn.products(torch.device("cpu")):
        out = apply(x32, w32, b32)
    assert type(out.grad_fn).__name__ == "_LinearBackward"  # computed by oneDNN, not by the default path
    grads = torch.autograd.grad(out.pow(2).sum(), leaves32)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g.double(), r, rtol=1e-4, atol=1e-4 * r.abs().max().item())
    if bias:  # views as operands: every-other element of a bias, a row slice of a weight, a transposed input
        strided_bias, rows = torch.randn(2 * out_features)[::2], torch.randn(out_features + 3, shape[-1])[2:-1]
        xt = torch.randn(*reversed(shape)).transpose(0, -1)
        with onednn.products(torch.device("cpu")):
            out = F.linear(xt, rows, strided_bias)
        torch.testing.assert_close(out, F.linear(xt.contiguous(), rows.contiguous(), strided_bias.contiguous()))


def test_onednn_training_step_matches_default_products(teacher, token_batch, monkeypatch):
    """A TD training step (dropout on, same seed) and the dense teacher give the same results inside
    products() as with torch's default products; XCOMPRESS_CPU_GEMM=blas turns it off."""
    td = _td_from_teacher(teacher, 12, 32).train()
    cpu = torch.device("cpu")

    def step(context):
        td.zero_grad()
        torch.manual_seed(1)
        with context:
            out = td(**token_batch, output_attention_scores=True)
            loss = out.last_hidden_state.pow(2).mean() + out.attention_scores[-1].clamp(min=-1e4).pow(2).mean()
            with torch.no_grad():
                hidden = teacher(**token_batch).last_hidden_state
        loss.backward()
        return loss.detach(), hidden, [p.grad.clone() for p in td.encoder.factors.parameters()]

    loss, hidden, grads = step(onednn.products(cpu))
    ref_loss, ref_hidden, ref_grads = step(contextlib.nullcontext())
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(hidden, ref_hidden, rtol=0, atol=1e-4)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-3, atol=1e-4 * r.abs().max().item())
    monkeypatch.setenv("XCOMPRESS_CPU_GEMM", "blas")
    assert onednn.backend(cpu) == "default" and isinstance(onednn.products(cpu), contextlib.nullcontext)


def test_ffn_preactivation_is_recomputed_not_kept(teacher, token_batch, monkeypatch):
    """With gradients on, each layer's 4h-wide FFN pre-activation is rebuilt in backward (checkpointed): fewer
    bytes saved for backward, the same gradients as keeping it."""
    td = _td_from_teacher(teacher, 12, 32).train()

    def run():
        saved = []
        td.zero_grad()
        torch.manual_seed(0)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel() * t.element_size()) or t,
                                                      lambda t: t):
            loss = td(**token_batch).last_hidden_state.pow(2).mean()
        loss.backward()
        return sum(saved), [p.grad.clone() for p in td.parameters() if p.grad is not None]

    kept, grads = run()
    monkeypatch.setattr(modeling, "checkpoint", lambda fn, *args, **kwargs: fn(*args))
    kept_plain, grads_plain = run()
    tokens = token_batch["input_ids"].numel()
    layers, width = td.config.num_hidden_layers, td.config.intermediate_size
    assert kept_plain - kept >= layers * tokens * width * 4
    for g, r in zip(grads, grads_plain):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-7)


def test_training_dropout_is_active_and_reproducible_for_a_seed(teacher, token_batch):
    td = _td_from_teacher(teacher, 12, 32).train()

    def step(seed):
        torch.manual_seed(seed)
        td.zero_grad()
        out = td(**token_batch).last_hidden_state
        out.pow(2).mean().backward()
        return out.detach(), td.encoder.factors.G.grad.clone()

    (a, grad_a), (b, grad_b), (c, _) = step(7), step(7), step(8)
    assert torch.equal(a, b) and torch.equal(grad_a, grad_b)  # a resumed run redraws the same masks
    assert not torch.allclose(a, c)
    with torch.no_grad():
        assert not torch.allclose(a, td.eval()(**token_batch).last_hidden_state)


@pytest.mark.parametrize("bad", [dict(intermediate_size=1000), dict(rank_dim=400), dict(rank_layer=73), dict(ops="all")])
def test_config_refuses_impossible_geometry(bad):
    kwargs = dict(rank_layer=36, rank_dim=192, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                  intermediate_size=1536) | bad
    with pytest.raises(Exception, match="intermediate_size|rank_dim|rank_layer|ops"):
        TuckerBertConfig(**kwargs)


def test_scores_for_selected_layers_only(teacher, token_batch):
    td = _td_from_teacher(teacher, 36, 96)
    with torch.no_grad():
        full = td(**token_batch, output_hidden_states=True, output_attention_scores=True)
        last = td(**token_batch, output_hidden_states=True, output_attention_scores=[5])
    assert last.attention_scores[:5] == (None,) * 5
    torch.testing.assert_close(last.attention_scores[5], full.attention_scores[5])
    for a, b in zip(full.hidden_states, last.hidden_states):  # fused and explicit attention agree
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
