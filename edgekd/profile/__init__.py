"""Profiling: latency, memory (flash, params, MACs, RSS, TFLM arena), accuracy vs the teacher, and
the JSON / Markdown / HTML report. Entry points: :func:`profile_run`, :func:`profile_files` and
:func:`profile_networks`, each taking one :class:`ProfileOptions`."""

from edgekd.profile.api import profile_artifacts, profile_files, profile_networks, profile_run
from edgekd.profile.latency import latency_stats, mcu_latency_estimate
from edgekd.profile.options import ProfileOptions

__all__ = [
    "ProfileOptions",
    "latency_stats",
    "mcu_latency_estimate",
    "profile_artifacts",
    "profile_files",
    "profile_networks",
    "profile_run",
]
