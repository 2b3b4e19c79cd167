"""Stages that exist only for the engine's tests: slow, failing, and random ones.

Loaded into CLI subprocesses through CORPUSFORGE_PLUGINS=plugin_stages (tests/ on PYTHONPATH).
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl

from pipeline.stage import Context, Stage


class RandomRows(Stage):
    """Rows of seeded random numbers: tells whether the seed reaches stages.

    Parameters:
        n: rows to make
    """

    name = "test_random_rows"
    inputs = ()

    def __init__(self, n: int = 100):
        self.n = n

    def output_schema(self, inputs):
        return {"id": pl.String, "text": pl.String}

    def run(self, ctx: Context) -> pl.DataFrame:
        rng = ctx.rng("rows")
        return pl.DataFrame({"id": [f"r{i}" for i in range(self.n)], "text": [f"value {v}" for v in rng.integers(0, 10**9, self.n)]})


class SlowCopy(Stage):
    """Copies its input batch by batch, sleeping between batches; optionally fails part-way.

    Parameters:
        delay_s: seconds to sleep after each batch
        batch_rows: rows per batch
        marker: a file created when the stage starts (lets a test kill the run mid-step)
        fail_after_batches: raise after this many batches (null: never)
    """

    name = "test_slow_copy"

    def __init__(self, delay_s: float = 0.0, batch_rows: int = 10, marker: str | None = None,
                 fail_after_batches: int | None = None):
        self.delay_s = delay_s
        self.batch_rows = batch_rows
        self.marker = marker
        self.fail_after_batches = fail_after_batches

    def run(self, ctx: Context, data):
        if self.marker:
            Path(self.marker).touch()
        for i, batch in enumerate(data.iter_batches(self.batch_rows)):
            if self.fail_after_batches is not None and i >= self.fail_after_batches:
                raise RuntimeError("planned failure for the atomicity test")
            time.sleep(self.delay_s)
            yield batch
