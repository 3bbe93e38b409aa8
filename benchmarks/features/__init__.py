"""Feature extractors for the metrics, by name: `create_extractor(name)`, `list_extractors()`.

Every extractor is an `nn.Module` with a `num_features` attribute, in eval mode, whose weights come from the
checksum-verified download cache (`benchmarks.features.weight_cache`) or from files committed in this repository
(`benchmarks/features/weights/`); none is ever built with random weights. Video extractors map `[B, T, C, H, W]` in
[0, 1] to `[B, d]`; frame extractors (".frames", "inception_*") map `[N, C, H, W]` in [0, 1] to `[N, d]`; classifiers map videos to `{label: logits}`.

    i3d_torchscript                  FVD's I3D, StyleGAN-V TorchScript, 400-d logits (canonical)
    i3d_inception_state_dict         I3D from i3d_pretrained_400.pt (VideoGPT/TATS/cd-fvd), 400-d logits
    i3d_inception_state_dict.pool    same network, 1024-d pooled features
    inception_clean                  clean-fid "clean" Inception-v3, 2048-d (frames)
    inception_torchmetrics           torchmetrics/torch-fidelity Inception-v3, 2048-d (frames; needs torch-fidelity)
    lpips_alex                       LPIPS v0.1 AlexNet (for tLP)
    domain_moving_digits             our network for moving_digits (see domain.py), 384-d video features
    domain_moving_digits.frames      its 128-d frame features (FID-domain)
    domain_moving_digits.classifier  its label heads (prompt adherence); same three for domain_bouncing_shapes

Each extractor also declares the weight files it loads: `extractor_weights(name)` gives their sha256 as recorded
(the checksum loading verifies) without building anything, so protocols can key results by them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from benchmarks.features.domain import (
    DOMAIN_HEADS,
    DomainFrameFeatures,
    DomainVideoFeatures,
    DomainVideoNet,
    domain_weights_sha256,
    load_domain_net,
)
from benchmarks.features.i3d import I3DFeatures, InceptionI3d, StateDictI3D, TorchScriptI3D, load_i3d_state_dict
from benchmarks.features.inception import (
    CleanInceptionFeatures,
    TorchmetricsInceptionFeatures,
    load_clean_inception,
)
from benchmarks.features.perceptual import LPIPS_HEADS, LPIPS_HEADS_SHA256, load_lpips_alex
from benchmarks.features.weight_cache import fetch, recorded_sha256
from hvz_registry import Registry, UnknownNameError

# {weight file: sha256} of what an extractor loads, computed on demand (a retrained domain network is read anew).
WeightsDeclaration = Callable[[], dict[str, str | None]]


def _i3d_torchscript(**kwargs: Any) -> nn.Module:
    return I3DFeatures(TorchScriptI3D(fetch("i3d_torchscript")), **kwargs)


def _i3d_state_dict(output: str) -> Callable[..., nn.Module]:
    def build(**kwargs: Any) -> nn.Module:
        return I3DFeatures(StateDictI3D(load_i3d_state_dict(fetch("i3d_pretrained_400")), output=output), **kwargs)

    return build


def _files(*names: str) -> WeightsDeclaration:
    return lambda: {name: recorded_sha256(name) for name in names}


@dataclass(frozen=True)
class Extractor:
    """How to build an extractor (`factory(**kwargs)`) and which weight files it loads (None: weights in code)."""

    factory: Callable[..., nn.Module]
    weights: WeightsDeclaration | None = None


class UnknownExtractorError(UnknownNameError):
    """An extractor name that is not registered."""


EXTRACTORS: Registry[Extractor] = Registry("extractor", error=UnknownExtractorError)


def register_extractor(name: str, factory: Callable[..., nn.Module], weights: WeightsDeclaration | None = None) -> None:
    """Make `create_extractor(name)` call `factory(**kwargs)`; `weights()` gives {weight file: sha256} of the files
    it loads (leave it out for weights defined in code, which `MetricSpec.extractor_sha256` can pin). A name already
    taken by another extractor is an error."""
    EXTRACTORS.register(name, Extractor(factory, weights))


register_extractor("i3d_torchscript", _i3d_torchscript, _files("i3d_torchscript"))
register_extractor("i3d_inception_state_dict", _i3d_state_dict("logits"), _files("i3d_pretrained_400"))
register_extractor("i3d_inception_state_dict.pool", _i3d_state_dict("pool"), _files("i3d_pretrained_400"))
register_extractor("inception_clean", lambda: CleanInceptionFeatures(load_clean_inception(fetch("inception-2015-12-05"))),
                   _files("inception-2015-12-05"))
register_extractor("inception_torchmetrics", lambda: TorchmetricsInceptionFeatures(fetch("pt_inception-2015-12-05")),
                   _files("pt_inception-2015-12-05"))
register_extractor("lpips_alex", lambda: load_lpips_alex(fetch("alexnet-owt")),
                   lambda: {**_files("alexnet-owt")(), LPIPS_HEADS: LPIPS_HEADS_SHA256})


def _domain_weights(dataset: str) -> WeightsDeclaration:
    return lambda: {f"domain_{dataset}": domain_weights_sha256(dataset)}


for _dataset in DOMAIN_HEADS:
    register_extractor(f"domain_{_dataset}", lambda dataset=_dataset: DomainVideoFeatures(load_domain_net(dataset)),
                       _domain_weights(_dataset))
    register_extractor(f"domain_{_dataset}.frames",
                       lambda dataset=_dataset: DomainFrameFeatures(load_domain_net(dataset)), _domain_weights(_dataset))
    register_extractor(f"domain_{_dataset}.classifier", lambda dataset=_dataset: load_domain_net(dataset),
                       _domain_weights(_dataset))


def extractor_weights(name: str) -> dict[str, str | None]:
    """{weight file: sha256} of the files extractor `name` loads, as recorded (what loading verifies), read without
    building it or hashing big files; {} for an extractor that declares none or is unknown."""
    declaration = EXTRACTORS.get(name).weights if name in EXTRACTORS else None
    return declaration() if declaration is not None else {}


def list_extractors(pattern: str = "*") -> list[str]:
    """Registered extractor names matching a shell-style pattern, sorted."""
    return EXTRACTORS.names(pattern)


def create_extractor(name: str, **kwargs: Any) -> nn.Module:
    """Build extractor `name` with verified weights (raises `WeightsUnavailableError` offline without them)."""
    return EXTRACTORS.get(name).factory(**kwargs).eval()


__all__ = [
    "CleanInceptionFeatures",
    "DomainFrameFeatures",
    "DomainVideoFeatures",
    "DomainVideoNet",
    "Extractor",
    "I3DFeatures",
    "InceptionI3d",
    "StateDictI3D",
    "TorchScriptI3D",
    "TorchmetricsInceptionFeatures",
    "UnknownExtractorError",
    "create_extractor",
    "extractor_weights",
    "list_extractors",
    "load_clean_inception",
    "load_domain_net",
    "load_i3d_state_dict",
    "load_lpips_alex",
    "register_extractor",
]
