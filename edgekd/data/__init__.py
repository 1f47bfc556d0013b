"""Data sets: a registry of loaders returning in-memory arrays, seeded splits and normalisation."""

from edgekd.data import detection, loaders, smd  # noqa: F401  (registration)
from edgekd.data.registry import (
    DATASETS,
    ArrayDataset,
    DataSplits,
    check_options,
    data_dir,
    load_data,
    load_data_from_info,
    register_dataset,
)

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "DataSplits",
    "check_options",
    "data_dir",
    "load_data",
    "load_data_from_info",
    "register_dataset",
]
