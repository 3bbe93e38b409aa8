"""hybrid-video-zoo: interchangeable AR / diffusion / hybrid video generators behind one interface."""

from zoo.interface import Conditioning, ConditioningError, ModelConfig, VideoGenerator
from zoo.registry import create_model, export_safetensors, list_models, load_model, register_model

__all__ = [
    "Conditioning",
    "ConditioningError",
    "ModelConfig",
    "VideoGenerator",
    "create_model",
    "export_safetensors",
    "list_models",
    "load_model",
    "register_model",
]
