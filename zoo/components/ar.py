"""The causal AR backbone: a Llama-style transformer (transformers' `LlamaModel` over `inputs_embeds`) with a KV cache.

Sequences are `[text prefix][block 0][block 1]...`: the prefix is attended by every position, positions inside a
block (a frame's tokens) see each other, and blocks see only earlier blocks. `block_size=1` is plain causal
attention, for token-by-token models. Rotary positions make cached decoding give the same result as a full forward,
and make a re-filled cache (sliding windows) behave like the start of a training clip.

The KV cache is a transformers `Cache` whose layers write into buffers sized to the window being decoded: appending a
token writes its keys in place, where a `DynamicCache` copies the whole cache (quadratic in the window), and attention
reads only the filled part, where a `StaticCache` reads every slot. `write_frames` is the shared
token-by-token decoding loop of the token AR models (raster order within a frame, frame after frame).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import Cache, LlamaConfig, LlamaModel
from transformers.cache_utils import DynamicLayer

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
    seq_len: int,
    block_size: int = 1,
    prefix_len: int = 0,
    device: torch.device | str | None = None,
    first_query: int = 0,
) -> Tensor:
    """Bool `[seq_len - first_query, seq_len]`, True where query (row) may attend to key (column).

    The first `prefix_len` positions form a bidirectional prefix that every position attends; the rest are grouped
    into blocks of `block_size`, bidirectional within a block and causal across blocks. Rows are the queries
    `first_query, ..., seq_len - 1` (a cached call's new positions).
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    key = torch.arange(seq_len, device=device)
    query = key[first_query:, None]

    def block(pos: Tensor) -> Tensor:
        return torch.div(pos - prefix_len, block_size, rounding_mode="floor")

    return ((block(key) <= block(query)) & (query >= prefix_len)) | (key < prefix_len)


class PreallocatedLayer(DynamicLayer):
    """A cache layer that writes keys and values into buffers of `capacity` positions and returns the filled part.

    Same results as transformers' `DynamicLayer`, without its concatenation, which copies the whole cache per token.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        self.device = key_states.device
        self.key_buffer = key_states.new_empty(*key_states.shape[:2], self.capacity, key_states.shape[3])
        self.value_buffer = value_states.new_empty(*value_states.shape[:2], self.capacity, value_states.shape[3])
        self.keys, self.values = self.key_buffer[:, :, :0], self.value_buffer[:, :, :0]
        self.is_initialized = True

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.keys.shape[2]
        end = start + key_states.shape[2]
        if end > self.capacity:
            raise ValueError(f"{end} positions overflow a KV cache of {self.capacity}; start a larger one")
        self.key_buffer[:, :, start:end] = key_states
        self.value_buffer[:, :, start:end] = value_states
        self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
        return self.keys, self.values


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

    def new_cache(self, size: int) -> Cache:
        """An empty KV cache holding up to `size` positions (prefix included), for `forward(past=...)`."""
        size = min(size, self.config.max_positions)
        return Cache(layers=[PreallocatedLayer(size) for _ in range(self.config.depth)])

    def forward(
        self,
        inputs_embeds: Tensor,
        block_size: int = 1,
        past: Cache | None = None,
        use_cache: bool = False,
        prefix_len: int = 0,
        prefix_mask: Tensor | None = None,
        cache_size: int | None = None,
    ) -> tuple[Tensor, Cache | None]:
        """Hidden states `[B, L, dim]` for `inputs_embeds` placed after the `past` cache's positions, and the cache.

        `prefix_len` counts the prefix positions of the whole sequence (cached or not); `prefix_mask` `[B, prefix_len]`
        marks real prefix tokens (False = padding, never attended). Pass the same values on every cached call.
        `use_cache` without `past` starts a cache of `cache_size` positions (default `max_positions`).
        """
        batch, length = inputs_embeds.shape[:2]
        device = inputs_embeds.device
        past_len = past.get_seq_length() if past is not None else 0
        total = past_len + length
        if total > self.config.max_positions:
            raise ValueError(f"sequence of {total} positions exceeds ar.max_positions={self.config.max_positions}")
        mask = block_causal_mask(total, block_size, prefix_len, device, first_query=past_len)
        mask = mask.expand(batch, 1, length, total)
        if prefix_mask is not None:
            keys = torch.ones(batch, total, dtype=torch.bool, device=device)
            keys[:, :prefix_len] = prefix_mask
            # A position always sees itself, so a padded prefix row is never fully masked (no NaN).
            own = torch.arange(past_len, total, device=device)[:, None] == torch.arange(total, device=device)
            mask = (mask & keys[:, None, None, :]) | own
        cache = past
        if cache is None and use_cache:
            cache = self.new_cache(cache_size or self.config.max_positions)
        positions = torch.arange(past_len, total, device=device).unsqueeze(0)
        out = self.backbone(
            inputs_embeds=inputs_embeds,
            attention_mask=mask,
            position_ids=positions,
            use_cache=cache is not None,
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


SlotEmbedder = Callable[[Tensor, int, int], Tensor]
"""`embed(stream, first_slot, num_slots)`: transformer inputs `[R, num_slots, dim]` of those slots of a token stream
`[R, n]` (the tokens in view, raster order); slot i holds token i-1 and predicts token i."""


class TokenSlotEmbedding(nn.Module):
    """The `SlotEmbedder` of a token AR model over frames of `tokens_per_frame` codes, `max_frames` frames in view.

    Slot i holds the embedding of token i-1 (a learned start vector at slot 0) plus learned embeddings of the position
    of token i, the one it predicts (cell within the frame, frame within the view), on top of the rotary positions.
    """

    def __init__(self, vocab_size: int, tokens_per_frame: int, max_frames: int, dim: int) -> None:
        super().__init__()
        self.tokens_per_frame = tokens_per_frame
        self.token = nn.Embedding(vocab_size, dim)
        self.cell = nn.Embedding(tokens_per_frame, dim)
        self.frame = nn.Embedding(max_frames, dim)
        self.start = nn.Parameter(torch.randn(dim) * 0.02)

    def position(self, slots: Tensor) -> Tensor:
        """Embeddings `[..., dim]` of the positions (cell, frame in view) of the tokens at `slots`."""
        return self.cell(slots % self.tokens_per_frame) + self.frame(slots // self.tokens_per_frame)

    def forward(self, stream: Tensor, first_slot: int, num_slots: int) -> Tensor:
        """Inputs `[R, num_slots, dim]` of slots `[first_slot, first_slot + num_slots)` of a stream `[R, n]`."""
        slots = torch.arange(first_slot, first_slot + num_slots, device=stream.device)
        previous = self.token(stream[:, (slots - 1).clamp(min=0)])
        previous = torch.where((slots == 0)[None, :, None], self.start.to(previous.dtype), previous)
        return previous + self.position(slots)


@dataclass
class TokenSampling:
    """How `write_frames` draws tokens: softmax `temperature`, `top_k` best (0 = all), classifier-free
    `guidance_scale` (used when the prefix has a null-prompt stream), and cached (True) or reference decoding."""

    temperature: float = 1.0
    top_k: int = 0
    guidance_scale: float = 1.0
    use_kv_cache: bool = True


@torch.no_grad()
def write_frames(
    transformer: CausalTransformer,
    embed_slots: SlotEmbedder,
    tokens: Tensor,
    num_frames: int,
    view_of: Callable[[int], tuple[int, Hashable]],
    prefix_of: Callable[[int, int], tuple[Tensor, Tensor]],
    view_frames: int,
    generator: torch.Generator,
    sampling: TokenSampling,
) -> Tensor:
    """Extend tokens `[B, T0, S]` to `[B, num_frames, S]`, token by token in raster order, frame after frame.

    `view_of(frame)` -> (first frame in view, key of what the prefix depends on, e.g. the prompts); a new view gets its
    prefix `prefix_of(frame, start)` -> (embeddings `[R, P, dim]`, mask `[R, P]`), with R = B, or 2B whose second half
    is a null-prompt stream for guidance. The cache (`view_frames` frames after the prefix) lives while the view
    does; without `use_kv_cache` every token re-runs the whole view, the reference the cache must match.
    """
    batch, _, per_frame = tokens.shape
    view, cache, prefix, prefix_mask = None, None, None, None
    for frame in range(tokens.shape[1], num_frames):
        start, key = view_of(frame)
        if view != (start, key):
            view, cache = (start, key), None
            prefix, prefix_mask = prefix_of(frame, start)
        streams = prefix.shape[0] // batch
        history = tokens[:, start:frame].flatten(1)
        stream = torch.cat([history, history.new_zeros(batch, per_frame)], dim=1).repeat(streams, 1)
        for slot in range(history.shape[1], stream.shape[1]):  # the slot whose output predicts the token at `slot`
            common = {"block_size": 1, "prefix_len": prefix.shape[1], "prefix_mask": prefix_mask}
            if cache is None:
                inputs = torch.cat([prefix, embed_slots(stream, 0, slot + 1)], dim=1)
                cache_size = prefix.shape[1] + view_frames * per_frame
                hidden, cache = transformer(inputs, use_cache=sampling.use_kv_cache, cache_size=cache_size, **common)
            else:
                hidden, cache = transformer(embed_slots(stream, slot, 1), past=cache, use_cache=True, **common)
            logits = transformer.token_head(hidden[:, -1])
            if streams == 2:
                cond_logits, uncond_logits = logits.chunk(2)
                logits = uncond_logits + sampling.guidance_scale * (cond_logits - uncond_logits)
            stream[:, slot] = sample_tokens(logits, generator, sampling.temperature, sampling.top_k).repeat(streams)
        tokens = torch.cat([tokens, stream[:batch, None, -per_frame:]], dim=1)
    return tokens


__all__ = [
    "ARConfig", "CausalTransformer", "SlotEmbedder", "TokenSampling", "TokenSlotEmbedding", "block_causal_mask",
    "sample_tokens", "write_frames",
]
