"""Data for the zoo: embedded procedural datasets, a loader for folders of real videos, the datamodule, video IO.

Every dataset item is `{"video": [T, C, H, W] float in [0, 1], "text": str, "label": long scalar,
"labels": dict of fixed-shape tensors, "index": int}`.
"""

from zoo.data import bouncing_shapes, moving_digits, video_folder  # noqa: F401  (registers the datasets)
from zoo.data.datamodule import VideoDataModule
from zoo.data.registry import (
    DatasetConfig,
    UnknownDatasetError,
    create_dataset,
    dataset_config,
    list_datasets,
    register_dataset,
)
from zoo.data.video_io import VideoReadError, read_video, save_video_grid, write_video

__all__ = [
    "DatasetConfig",
    "UnknownDatasetError",
    "VideoDataModule",
    "VideoReadError",
    "create_dataset",
    "dataset_config",
    "list_datasets",
    "read_video",
    "register_dataset",
    "save_video_grid",
    "write_video",
]
