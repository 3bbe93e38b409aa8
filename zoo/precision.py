"""Numeric precision of a model's forward passes: bf16 autocast with attention kept in float32 on CPU.

`zoo.training` trains with it (`trainer.precision: bf16-mixed` on CPU is `CPUBF16Mixed`) and `VideoGenerator.generate`
samples with it (`sampling_precision: bf16-mixed`); both name precisions as Lightning does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

SAMPLING_PRECISIONS = ("32-true", "bf16-mixed")


def _as_float32(value: Any) -> Any:
    return value.float() if isinstance(value, torch.Tensor) and value.dtype == torch.bfloat16 else value


def _bfloat16_on_cpu(tensor: torch.Tensor) -> bool:
    """Whether `tensor` enters attention as bfloat16 on CPU: it is, or CPU autocast would cast it to bfloat16."""
    autocast = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    return tensor.device.type == "cpu" and (tensor.dtype == torch.bfloat16 or autocast)


class Float32Attention(TorchFunctionMode):
    """Runs `scaled_dot_product_attention` in float32 where it would run in bfloat16 on CPU (bfloat16 inputs, or
    float32 ones under bfloat16 autocast), its output cast to bfloat16 as that would have returned.

    On CPU, PyTorch's bfloat16 flash attention is slower than float32's (forward + backward of one tiny-config
    attention: 30 ms against 5), while bfloat16 matmuls and convolutions run ~2.5x faster than float32 on AVX512-BF16
    (`python -m benchmarks.bench_models --precisions 32,bf16-sdpa,bf16`). The backward follows the forward's dtype.
    """

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention or not _bfloat16_on_cpu(args[0] if args else kwargs["query"]):
            return func(*args, **kwargs)
        with torch.autocast("cpu", enabled=False):
            out = func(*map(_as_float32, args), **{key: _as_float32(value) for key, value in kwargs.items()})
        return out.to(torch.bfloat16)


@contextmanager
def bf16_autocast(device: torch.device) -> Iterator[None]:
    """bfloat16 autocast on `device`'s type; on CPU with attention in float32 (`Float32Attention`)."""
    attention = Float32Attention() if device.type == "cpu" else nullcontext()
    with torch.autocast(device.type, dtype=torch.bfloat16), attention:
        yield


def sampling_context(precision: str, device: torch.device) -> Any:
    """The context a model samples in: "32-true" (float32) or "bf16-mixed" (`bf16_autocast`)."""
    return bf16_autocast(device) if precision == "bf16-mixed" else nullcontext()
