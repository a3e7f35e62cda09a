"""Benchmark registry: every scorer is registered here by name."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from frankmerge.evaluation.benchmarks import logicvista, mathverse, mathvision, mathvista, mme, mmmu, mmmu_pro, wemath
from frankmerge.evaluation.benchmarks.base import Aggregate, Benchmark, Breakdown, GroupScore
from frankmerge.evaluation.errors import UnknownBenchmarkError

BENCHMARKS: Mapping[str, Benchmark] = MappingProxyType(
    {
        b.name: b
        for b in (
            mmmu.BENCHMARK,
            mmmu_pro.BENCHMARK,
            mmmu_pro.VISION_BENCHMARK,
            mathvista.BENCHMARK,
            mathvision.BENCHMARK,
            mathverse.BENCHMARK,
            wemath.BENCHMARK,
            logicvista.BENCHMARK,
            mme.BENCHMARK,
        )
    }
)


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark called `name` (case-insensitive, '-' or '_')."""
    key = name.strip().lower().replace("-", "_")
    if key not in BENCHMARKS:
        raise UnknownBenchmarkError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[key]


__all__ = ["BENCHMARKS", "Aggregate", "Benchmark", "Breakdown", "GroupScore", "get_benchmark"]
