"""How many threads the native libraries a stage computes with (torch, FAISS's OpenMP) may use."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any


def use_all_cores(set_threads: Callable[[int], Any]) -> None:
    """Give a native library every core of the machine, unless OMP_NUM_THREADS says how many. Ray sets it to a
    task's or actor's `num_cpus` (1 by default), so n one-CPU actors on a node run n threads, not n times the
    node's cores; users and `nice`d benchmarks set it to share a machine."""
    if "OMP_NUM_THREADS" not in os.environ:
        set_threads(max(1, os.cpu_count() or 1))


def load_faiss():
    """The faiss module, its OpenMP threads set by `use_all_cores`."""
    import faiss

    use_all_cores(faiss.omp_set_num_threads)
    return faiss
