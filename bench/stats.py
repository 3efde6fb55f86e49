"""Summaries of repeated measurements: median, spread and percentiles."""

from __future__ import annotations

import math
import statistics


def percentile(values: list[float], fraction: float) -> float:
    """Return the ``fraction`` percentile of ``values`` (0.99 for p99), by linear interpolation."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    lower = math.floor(position)
    upper = math.ceil(position)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def summarize(samples: list[float]) -> dict:
    """Return the median, min, max and quartiles of one side's repetitions, with the samples."""
    if not samples:
        raise ValueError("no samples to summarize")
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "q1": percentile(samples, 0.25),
        "q3": percentile(samples, 0.75),
        "n": len(samples),
        "samples": list(samples),
    }


def paired_ratios(pool_samples: list[float], baseline_samples: list[float]) -> list[float]:
    """Return pool / baseline of each repetition; both sides ran in the same repetition."""
    if len(pool_samples) != len(baseline_samples):
        raise ValueError(
            f"{len(pool_samples)} pool samples but {len(baseline_samples)} baseline samples"
        )
    return [
        pool / baseline
        for pool, baseline in zip(pool_samples, baseline_samples, strict=True)
        if baseline
    ]
