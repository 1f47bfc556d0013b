"""Profiling: latency, memory (flash, params, MACs, RSS, TFLM arena), accuracy vs the teacher, and
the JSON / Markdown / HTML report. Entry points: :func:`profile_run` and :func:`profile_files`."""

from edgekd.profile.api import profile_artifacts, profile_files, profile_run
from edgekd.profile.latency import latency_stats, mcu_latency_estimate

__all__ = ["latency_stats", "mcu_latency_estimate", "profile_artifacts", "profile_files", "profile_run"]
