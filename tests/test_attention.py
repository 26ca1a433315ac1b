"""Attention, multi-head attention and the Transformer block against PyTorch and gradcheck."""
import numpy as np
import pytest
import torch

import tinygrad_seq as tgs
from tinygrad_seq import Tensor, gradcheck, nn
from tinygrad_seq.models.transformer_lm import TransformerLM, TransformerLMConfig
from tinygrad_seq.nn import functional as F

RNG = np.random.default_rng(0)


def leaf(shape, dtype=np.float32):
    data = RNG.standard_normal(shape).astype(dtype)
    return Tensor(data, requires_grad=True, dtype=dtype), torch.tensor(data, requires_grad=True)


def load_from_torch(ours, theirs):
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mask_kind", [None, "bool", "float"])
def test_sdpa_matches_torch(causal, mask_kind):
    (q, tq), (k, tk), (v, tv) = leaf((2, 3, 5, 8)), leaf((2, 3, 5, 8)), leaf((2, 3, 5, 6))
    mask = tmask = None
    if mask_kind == "bool":
        m = RNG.random((5, 5)) > 0.3
        m[:, 0] = True  # every row keeps one position, as PyTorch would otherwise give NaN
        mask, tmask = Tensor(m), torch.tensor(m)
    elif mask_kind == "float":
        m = RNG.standard_normal((5, 5)).astype(np.float32)
        mask, tmask = Tensor(m), torch.tensor(m)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
    ref = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=tmask,
                                                           is_causal=causal and tmask is None)
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=1e-5, atol=1e-5)
    g = RNG.standard_normal(out.shape).astype(np.float32)
    out.backward(Tensor(g))
    ref.backward(torch.tensor(g))
    for ours, theirs in ((q, tq), (k, tk), (v, tv)):
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_sdpa_gradcheck_with_causal_mask():
    q, k, v = (RNG.standard_normal((1, 4, 3)) for _ in range(3))
    assert gradcheck(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True), [q, k, v])


def test_fully_masked_row_gives_zero_weights_not_nan():
    scores = Tensor(RNG.standard_normal((2, 4)), requires_grad=True)
    mask = np.array([[True] * 4, [False, True, False, True]])
    probs = F.softmax(scores, dim=-1, mask=mask)
    assert np.all(probs.numpy()[0] == 0)
    np.testing.assert_allclose(probs.numpy()[1].sum(), 1.0, rtol=1e-6)
    assert probs.numpy()[1, 1] == 0 and probs.numpy()[1, 3] == 0


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_matches_torch(batch_first):
    torch.manual_seed(0)
    E, H, N, L, S = 8, 2, 3, 4, 5
    theirs = torch.nn.MultiheadAttention(E, H, batch_first=batch_first)
    ours = nn.MultiheadAttention(E, H, batch_first=batch_first)
    assert list(dict(ours.named_parameters())) == [n for n, _ in theirs.named_parameters()]
    load_from_torch(ours, theirs)
    qshape = (N, L, E) if batch_first else (L, N, E)
    kshape = (N, S, E) if batch_first else (S, N, E)
    (q, tq), (k, tk), (v, tv) = leaf(qshape), leaf(kshape), leaf(kshape)
    pad = np.zeros((N, S), dtype=bool)
    pad[0, -2:] = True
    out, w = ours(q, k, v, key_padding_mask=Tensor(pad))
    tout, tw = theirs(tq, tk, tv, key_padding_mask=torch.tensor(pad))
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(w.numpy(), tw.detach().numpy(), rtol=1e-5, atol=1e-6)
    (out.sum() + (w * w).sum()).backward()
    (tout.sum() + (tw * tw).sum()).backward()
    for ours_t, theirs_t in ((q, tq), (k, tk), (v, tv)):
        np.testing.assert_allclose(ours_t.grad.numpy(), theirs_t.grad.numpy(), rtol=1e-4, atol=1e-5)
    tgrads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), tgrads[name].grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


def test_multihead_self_attention_causal_mask_matches_torch():
    torch.manual_seed(1)
    theirs = torch.nn.MultiheadAttention(8, 4, batch_first=True)
    ours = nn.MultiheadAttention(8, 4, batch_first=True)
    load_from_torch(ours, theirs)
    x, tx = leaf((2, 6, 8))
    causal = np.triu(np.ones((6, 6), dtype=bool), 1)  # True = not allowed (MHA's convention)
    out, w = ours(x, x, x, attn_mask=Tensor(causal), average_attn_weights=False)
    tout, tw = theirs(tx, tx, tx, attn_mask=torch.tensor(causal), average_attn_weights=False)
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(w.numpy(), tw.detach().numpy(), rtol=1e-5, atol=1e-6)
    out.sum().backward()
    tout.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("norm_first", [True, False])
def test_transformer_encoder_layer_matches_torch(norm_first):
    torch.manual_seed(2)
    theirs = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation="gelu", batch_first=True,
                                              norm_first=norm_first)
    ours = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation="gelu", batch_first=True,
                                      norm_first=norm_first)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    load_from_torch(ours, theirs)
    x, tx = leaf((2, 5, 8))
    mask = torch.nn.Transformer.generate_square_subsequent_mask(5)
    out = ours(x, is_causal=True)
    tout = theirs(tx, src_mask=mask, is_causal=True)
    np.testing.assert_allclose(out.numpy(), tout.detach().numpy(), rtol=1e-4, atol=1e-5)
    out.sum().backward()
    tout.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-3, atol=1e-4)
    tgrads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), tgrads[name].grad.numpy(), rtol=1e-3, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("scorer", ["additive", "dot", "general"])
def test_notes_attention_weights_sum_to_one_and_pass_gradcheck(scorer):
    make = {"additive": lambda: nn.AdditiveAttention(3, 4, 5), "dot": lambda: nn.DotAttention(),
            "general": lambda: nn.GeneralAttention(3, 4)}[scorer]
    tgs.manual_seed(0)
    attention = make().double()
    query = RNG.standard_normal((2, 3 if scorer != "dot" else 4))
    keys = RNG.standard_normal((2, 6, 4))
    mask = np.zeros((2, 6), dtype=bool)
    mask[1, 4:] = True
    context, weights = attention(Tensor(query, dtype=np.float64), Tensor(keys, dtype=np.float64), mask=mask)
    np.testing.assert_allclose(weights.numpy().sum(-1), 1.0, rtol=1e-12)
    assert np.all(weights.numpy()[1, 4:] == 0)
    np.testing.assert_allclose(context.numpy(), np.einsum("bs,bsd->bd", weights.numpy(), keys), rtol=1e-10)
    assert gradcheck(lambda q, k: attention(q, k, mask=mask)[0], [query, keys])


def test_positional_encodings():
    pe = nn.SinusoidalPositionalEncoding(6, max_len=10)
    x = Tensor(np.zeros((1, 4, 6)))
    table = pe(x).numpy()[0]
    np.testing.assert_allclose(table[:, 0], np.sin(np.arange(4)), rtol=1e-6)
    np.testing.assert_allclose(table[:, 1], np.cos(np.arange(4)), rtol=1e-6)
    np.testing.assert_allclose(table[2, 2], np.sin(2 / 10000 ** (2 / 6)), rtol=1e-5)
    with pytest.raises(ValueError, match="longer than max_len"):
        pe(Tensor(np.zeros((1, 11, 6))))
    learned = nn.LearnedPositionalEmbedding(8, 6)
    y = learned(Tensor(np.zeros((2, 5, 6))))
    np.testing.assert_allclose(y.numpy()[1], learned.embedding.weight.numpy()[:5])


def test_transformer_lm_is_causal_and_learns():
    tgs.manual_seed(0)
    model = TransformerLM(TransformerLMConfig(vocab_size=7, block_size=8, n_embd=16, n_head=2, n_layer=1))
    idx = np.array([[1, 2, 3, 4, 5, 6]])
    changed = idx.copy()
    changed[0, 4:] = 0
    a, b = model(Tensor(idx)).numpy(), model(Tensor(changed)).numpy()
    np.testing.assert_allclose(a[0, :4], b[0, :4], rtol=1e-5)  # the future does not leak backwards
    assert not np.allclose(a[0, 4:], b[0, 4:])
    opt = tgs.optim.Adam(model.parameters(), lr=1e-2)
    seq = np.tile(np.arange(7), 3)[None]
    x, y = Tensor(seq[:, :8]), Tensor(seq[:, 1:9])
    losses = []
    for _ in range(60):
        loss = F.cross_entropy(model(x).reshape(-1, 7), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
