"""The causal AR backbone: block-causal masks, cached decoding equal to a full forward, prefixes, heads, sampling."""

from __future__ import annotations

import pytest
import torch

from zoo.components.ar import ARConfig, CausalTransformer, block_causal_mask, sample_tokens

SMALL = ARConfig(dim=32, depth=2, heads=4, max_positions=64)


@pytest.fixture(scope="module")
def transformer():
    torch.manual_seed(0)
    return CausalTransformer(SMALL, vocab_size=11, cond_dim=5).eval()


def test_block_causal_mask_by_hand():
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 0, 0, 0],  # prefix: sees the prefix only
            [1, 1, 0, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0, 0],  # block 0: prefix + itself, both ways
            [1, 1, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 1, 1, 0],  # block 1
            [1, 1, 1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1, 1, 1],  # block 2 (partial)
        ],
        dtype=torch.bool,
    )
    assert torch.equal(block_causal_mask(7, block_size=2, prefix_len=2), expected)
    assert torch.equal(block_causal_mask(5), torch.ones(5, 5, dtype=torch.bool).tril())
    with pytest.raises(ValueError, match="block_size"):
        block_causal_mask(4, block_size=0)


def _cached(transformer, x, prefix_len, prefix_mask, block_size, first, step):
    """Run `x` through the cache: `first` positions at once, then `step` positions per call."""
    kwargs = {"block_size": block_size, "prefix_len": prefix_len, "prefix_mask": prefix_mask}
    hidden, cache = transformer(x[:, :first], use_cache=True, **kwargs)
    outputs = [hidden]
    for start in range(first, x.shape[1], step):
        hidden, cache = transformer(x[:, start : start + step], past=cache, use_cache=True, **kwargs)
        outputs.append(hidden)
    assert cache.get_seq_length() == x.shape[1]
    return torch.cat(outputs, dim=1)


@pytest.mark.parametrize("block_size", [1, 4])
def test_cached_decoding_equals_full_forward(transformer, block_size):
    torch.manual_seed(1)
    prefix_len, length = 3, 12
    x = torch.randn(2, prefix_len + length, SMALL.dim)
    prefix_mask = torch.tensor([[True, True, False], [True, True, True]])
    with torch.no_grad():
        full, no_cache = transformer(x, block_size=block_size, prefix_len=prefix_len, prefix_mask=prefix_mask)
        # Token by token for plain causal attention; block by block when blocks are bidirectional.
        step = block_size
        cached = _cached(transformer, x, prefix_len, prefix_mask, block_size, prefix_len + step, step)
    assert no_cache is None
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=0)


def test_attention_respects_causality_blocks_and_padding(transformer):
    torch.manual_seed(2)
    x = torch.randn(1, 2 + 6, SMALL.dim)
    prefix_mask = torch.tensor([[True, False]])

    def run(inputs, block_size):
        with torch.no_grad():
            return transformer(inputs, block_size=block_size, prefix_len=2, prefix_mask=prefix_mask)[0]

    for block_size in (1, 3):
        base = run(x, block_size)
        later = x.clone()
        later[:, 6] += 1.0  # position 6 is token 4: block 1 when blocks are 3 long
        changed = (run(later, block_size) - base).abs().amax(dim=-1)[0] > 1e-6
        if block_size == 1:
            assert not changed[:6].any() and changed[6:].all(), "no position sees a later one"
        else:
            assert not changed[:5].any() and changed[5:].all(), "a block is bidirectional, blocks are causal"
        padded = x.clone()
        padded[:, 1] += 5.0  # the padded prefix token is never attended
        assert torch.equal(run(padded, block_size)[:, 2:], base[:, 2:])


def test_heads_and_limits(transformer):
    hidden, _ = transformer(torch.randn(2, 7, SMALL.dim))
    assert hidden.shape == (2, 7, SMALL.dim)
    assert transformer.token_head(hidden).shape == (2, 7, 11)
    assert transformer.cond_head(hidden).shape == (2, 7, 5)
    bare = CausalTransformer(SMALL)
    assert bare.token_head is None and bare.cond_head is None
    with pytest.raises(ValueError, match="max_positions"):
        transformer(torch.randn(1, SMALL.max_positions + 1, SMALL.dim))
    with pytest.raises(ValueError, match="divisible"):
        CausalTransformer(ARConfig(dim=30, heads=4))


def test_sample_tokens():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.9], [5.0, 0.0, 0.0, 0.0]])
    greedy = sample_tokens(logits, torch.Generator().manual_seed(0), top_k=1)
    assert greedy.tolist() == [1, 0]
    a = sample_tokens(logits.repeat(50, 1), torch.Generator().manual_seed(7), temperature=2.0)
    b = sample_tokens(logits.repeat(50, 1), torch.Generator().manual_seed(7), temperature=2.0)
    assert torch.equal(a, b), "all randomness comes from the generator"
    top2 = sample_tokens(logits.repeat(200, 1), torch.Generator().manual_seed(1), top_k=2)
    assert set(top2[0::2].tolist()) == {1, 3} and set(top2[1::2].tolist()) <= {0, 1, 2, 3}
    with pytest.raises(ValueError, match="temperature"):
        sample_tokens(logits, torch.Generator(), temperature=0.0)
