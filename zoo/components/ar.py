"""The causal AR backbone: a Llama-style transformer (transformers' `LlamaModel` over `inputs_embeds`) with a KV cache.

Sequences are `[text prefix][block 0][block 1]...`: the prefix is attended by every position, positions inside a
block (a frame's tokens) see each other, and blocks see only earlier blocks. `block_size=1` is plain causal
attention, for token-by-token models. Rotary positions make cached decoding give the same result as a full forward,
and make a re-filled cache (sliding windows) behave like the start of a training clip.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import DynamicCache, LlamaConfig, LlamaModel

# transformers 5.x renames LlamaModel's `past_key_values` argument to `cache`; accept either release.
_CACHE_ARG = "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"


@dataclass
class ARConfig:
    """Size of the causal transformer; `max_positions` bounds prefix + tokens of one window."""

    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    max_positions: int = 4096
    dropout: float = 0.0


def block_causal_mask(
    seq_len: int, block_size: int = 1, prefix_len: int = 0, device: torch.device | str | None = None
) -> Tensor:
    """Bool `[seq_len, seq_len]`, True where query (row) may attend to key (column).

    The first `prefix_len` positions form a bidirectional prefix that every position attends; the rest are grouped
    into blocks of `block_size`, bidirectional within a block and causal across blocks.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    pos = torch.arange(seq_len, device=device)
    block = torch.div(pos - prefix_len, block_size, rounding_mode="floor")
    in_prefix = pos < prefix_len
    causal = (block[None, :] <= block[:, None]) & ~in_prefix[:, None]
    return causal | in_prefix[None, :]


class CausalTransformer(nn.Module):
    """Block-causal transformer over input embeddings `[B, L, dim]`, with optional heads.

    `token_head` maps hidden states to logits over `vocab_size` codes; `cond_head` maps them to `cond_dim`-wide
    vectors that condition a diffusion head. Either is None when its size is 0.
    """

    def __init__(self, config: ARConfig, vocab_size: int = 0, cond_dim: int = 0) -> None:
        super().__init__()
        if config.dim % config.heads:
            raise ValueError(f"ar dim {config.dim} must be divisible by heads {config.heads}")
        self.config = config
        llama = LlamaConfig(
            vocab_size=1,  # inputs are embeddings; the unused token table is kept to one row
            hidden_size=config.dim,
            intermediate_size=int(config.dim * config.mlp_ratio),
            num_hidden_layers=config.depth,
            num_attention_heads=config.heads,
            max_position_embeddings=config.max_positions,
            attention_dropout=config.dropout,
            bos_token_id=None,
            eos_token_id=None,
        )
        llama._attn_implementation = "sdpa"  # takes our boolean 4D mask as-is
        self.backbone = LlamaModel(llama)
        self.token_head = nn.Linear(config.dim, vocab_size) if vocab_size else None
        self.cond_head = nn.Linear(config.dim, cond_dim) if cond_dim else None

    def forward(
        self,
        inputs_embeds: Tensor,
        block_size: int = 1,
        past: DynamicCache | None = None,
        use_cache: bool = False,
        prefix_len: int = 0,
        prefix_mask: Tensor | None = None,
    ) -> tuple[Tensor, DynamicCache | None]:
        """Hidden states `[B, L, dim]` for `inputs_embeds` placed after the `past` cache's positions, and the cache.

        `prefix_len` counts the prefix positions of the whole sequence (cached or not); `prefix_mask` `[B, prefix_len]`
        marks real prefix tokens (False = padding, never attended). Pass the same values on every cached call.
        """
        batch, length = inputs_embeds.shape[:2]
        device = inputs_embeds.device
        past_len = past.get_seq_length() if past is not None else 0
        total = past_len + length
        if total > self.config.max_positions:
            raise ValueError(f"sequence of {total} positions exceeds ar.max_positions={self.config.max_positions}")
        mask = block_causal_mask(total, block_size, prefix_len, device)[past_len:]
        mask = mask.expand(batch, 1, length, total)
        if prefix_mask is not None:
            keys = torch.ones(batch, total, dtype=torch.bool, device=device)
            keys[:, :prefix_len] = prefix_mask
            # A position always sees itself, so a padded prefix row is never fully masked (no NaN).
            own = torch.eye(total, dtype=torch.bool, device=device)[past_len:]
            mask = (mask & keys[:, None, None, :]) | own
        cache = past if past is not None else (DynamicCache() if use_cache else None)
        positions = torch.arange(past_len, total, device=device).unsqueeze(0)
        out = self.backbone(
            inputs_embeds=inputs_embeds,
            attention_mask=mask,
            position_ids=positions,
            use_cache=use_cache,
            **{_CACHE_ARG: cache},
        )
        return out.last_hidden_state, cache


def sample_tokens(logits: Tensor, generator: torch.Generator, temperature: float = 1.0, top_k: int = 0) -> Tensor:
    """One token id per row of `logits` `[N, V]`: softmax at `temperature`, restricted to the `top_k` best (0 = all).

    All randomness comes from `generator` (on the logits' device).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(1)


__all__ = ["ARConfig", "CausalTransformer", "block_causal_mask", "sample_tokens"]
