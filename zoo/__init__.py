"""hybrid-video-zoo: interchangeable AR / diffusion / hybrid video generators behind one interface."""

import os

# OpenMP threads that spin while they wait starve each other on a small or shared CPU box (small ops ran 10-40x
# slower under load); passive waiting costs nothing measurable on a free one. Takes effect if torch is not loaded yet.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from zoo.interface import Conditioning, ConditioningError, ModelConfig, VideoGenerator, autoencoder_field  # noqa: E402
from zoo.pretrained import list_pretrained, pretrained_card  # noqa: E402
from zoo.registry import create_model, export_safetensors, list_models, load_model, register_model  # noqa: E402

__all__ = [
    "Conditioning",
    "ConditioningError",
    "ModelConfig",
    "VideoGenerator",
    "autoencoder_field",
    "create_model",
    "export_safetensors",
    "list_models",
    "list_pretrained",
    "load_model",
    "pretrained_card",
    "register_model",
]
