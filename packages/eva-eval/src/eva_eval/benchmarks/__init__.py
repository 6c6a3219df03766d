"""The benchmark registry: one module per benchmark, each exporting `BENCHMARK`.

`get_benchmark("MLVU")` (case and dashes ignored) returns the entry; `REGISTRY` maps names to
entries in the order `eva-eval list` prints them.
"""

from __future__ import annotations

from eva_eval.benchmarks import (
    elv_halluc,
    longvideobench,
    lsdbench,
    lvbench,
    mlvu,
    synthetic,
    video_holmes,
    videomme,
)
from eva_eval.benchmarks.spec import Benchmark, Reference

REGISTRY: dict[str, Benchmark] = {
    m.BENCHMARK.name: m.BENCHMARK
    for m in (videomme, longvideobench, mlvu, lsdbench, lvbench, video_holmes, elv_halluc, synthetic)
}


class UnknownBenchmark(KeyError):
    """A benchmark name the registry does not hold."""


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


ALIASES = {"video_mme": "videomme", "mlvu_mcq": "mlvu", "videoholmes": "video_holmes", "elvhalluc": "elv_halluc"}


def get_benchmark(name: str) -> Benchmark:
    """The registry entry for `name` (case, dashes and spaces ignored).

    Raises:
        UnknownBenchmark: no such benchmark; the message lists the known ones.
    """
    key = _key(name)
    key = ALIASES.get(key, key)
    if key not in REGISTRY:
        raise UnknownBenchmark(f"unknown benchmark {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[key]


__all__ = ["REGISTRY", "Benchmark", "Reference", "UnknownBenchmark", "get_benchmark"]
