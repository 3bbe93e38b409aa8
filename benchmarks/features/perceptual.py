"""LPIPS (Zhang et al. 2018) for tLP: the `lpips` package's shipped linear heads on the torchvision AlexNet backbone.

The `lpips` package would download the backbone through torchvision at construction; we build it with a random
trunk and load the trunk from our checksum-verified cache instead, so the same offline rules apply as for I3D.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch
from torch import nn

from benchmarks.features.weight_cache import WeightFile, fetch, register_weight_file

# lpips.pretrained_networks.alexnet keeps torchvision's `features` indices inside five slices.
_ALEXNET_SLICES = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
_PARAMETERS = ("weight", "bias")
# The v0.1 AlexNet heads the `lpips` package ships; matches the digest prefix of the LPIPS_v0.1_alex-df73285e.pth name
# other packages ship it under. A module constant so result keys can pin it without importing `lpips`.
LPIPS_HEADS = "lpips_alex_v0.1"
LPIPS_HEADS_SHA256 = "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"


def alexnet_trunk_state(torchvision_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision AlexNet keys (`features.3.weight`) -> LPIPS trunk keys (`net.slice2.3.weight`), no classifier."""
    trunk = {}
    for key, value in torchvision_state.items():
        match = re.fullmatch(r"features\.(\d+)\.(weight|bias)", key)
        if match is None:
            continue
        index = int(match.group(1))
        trunk[f"net.slice{_ALEXNET_SLICES[index]}.{index}.{match.group(2)}"] = value
    return trunk


def lpips_heads_file() -> WeightFile:
    """The v0.1 AlexNet linear heads shipped inside the `lpips` package, as a checksummed weight file."""
    import lpips

    return register_weight_file(
        WeightFile(
            name=LPIPS_HEADS,
            filename="alex.pth",
            urls=("https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth",),
            sha256=LPIPS_HEADS_SHA256,
            bundled=Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth",
            description="LPIPS v0.1 linear heads for AlexNet (shipped in the lpips package)",
        )
    )


def load_lpips_alex(backbone_path: str | Path) -> nn.Module:
    """`lpips.LPIPS(net="alex")` with its packaged v0.1 heads (checksum-verified) and the AlexNet trunk from
    `backbone_path`.
    """
    import lpips

    fetch(lpips_heads_file().name)
    trunk = alexnet_trunk_state(torch.load(backbone_path, map_location="cpu", weights_only=True))
    expected = {f"net.slice{part}.{index}.{kind}" for index, part in _ALEXNET_SLICES.items() for kind in _PARAMETERS}
    if set(trunk) != expected:
        raise ValueError(f"{backbone_path} is not a torchvision AlexNet state dict (got keys {sorted(trunk)[:3]}...)")
    with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=False` for the random trunk
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    model.load_state_dict(trunk, strict=False)  # the heads are already loaded; `trunk` covers every net.* key
    return model.eval().requires_grad_(False)
