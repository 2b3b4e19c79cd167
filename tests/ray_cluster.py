"""The test-only stages that the Ray executor's tests run on the loopback cluster (`ray_cluster` in conftest.py).

Ray workers unpickle stage classes by module name, so the cluster's processes get this folder (and
the repository root) on PYTHONPATH, as real cluster nodes have corpusforge installed.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from pipeline.io import Dataset
from pipeline.stage import Context, RowwiseStage, Stage

ray = pytest.importorskip("ray", reason="the Ray executor's tests need ray (pip install 'corpusforge[ray]')")

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent


def _in_ray_worker() -> bool:
    return ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE


def _die_once(marker_dir: str | None, key: str) -> None:
    """Kill this worker process the first time `key` is reached (a marker file remembers it)."""
    if marker_dir is None or not _in_ray_worker():
        return
    marker = Path(marker_dir) / f"killed-{key}"
    if not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)


class TagLength(RowwiseStage):
    """Test stage: add `chars`; note which node ran each batch; optionally die once at one id.

    Parameters:
        marker_dir: folder for node and kill markers (null: none)
        kill_at_id: kill the worker the first time a batch holds this id
        hold_s: seconds each batch holds its worker (so concurrent fragments must use both nodes)
        exit_code: call sys.exit with this code in every batch (null: never)
    """

    name = "test_ray_tag_length"
    allow_empty_input = True

    def __init__(self, marker_dir: str | None = None, kill_at_id: str | None = None, hold_s: float = 0.0,
                 exit_code: int | None = None):
        self.marker_dir = marker_dir
        self.kill_at_id = kill_at_id
        self.hold_s = hold_s
        self.exit_code = exit_code

    def process_batch(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        if self.exit_code is not None:
            sys.exit(self.exit_code)
        if self.marker_dir is not None and _in_ray_worker():
            node = ray.get_runtime_context().get_node_id()
            (Path(self.marker_dir) / f"node-{node}").touch()
            time.sleep(self.hold_s)
        if self.kill_at_id is not None and self.kill_at_id in batch["id"].to_list():
            _die_once(self.marker_dir, "rowwise")
        ctx.stats["rows_tagged"] = ctx.stats.get("rows_tagged", 0) + batch.height
        ctx.record("column", "chars")
        return batch.with_columns(chars=pl.col("text").str.len_chars())

    @classmethod
    def example(cls):
        return {}, {"data": pl.DataFrame({"id": ["a", "b"], "text": ["one", "three"]})}


class SortedWithSide(Stage):
    """Test stage: the whole table sorted by id, a side output of long rows; optionally dies once.

    Parameters:
        marker_dir: where the kill marker goes (null: never die)
        exit_code: call sys.exit with this code (null: never), as a stage author's script might
    """

    name = "test_ray_sorted_with_side"

    def __init__(self, marker_dir: str | None = None, exit_code: int | None = None):
        self.marker_dir = marker_dir
        self.exit_code = exit_code

    def side_output_names(self):
        return ("long",)

    def run(self, ctx: Context, data: Dataset) -> pl.DataFrame:
        _die_once(self.marker_dir, "table")
        if self.exit_code is not None:
            sys.exit(self.exit_code)
        df = data.collect().sort("id")
        ctx.write_side_output("long", df.filter(pl.col("text").str.len_chars() > 500))
        ctx.record("rows", df.height)
        return df

    @classmethod
    def example(cls):
        return {}, {"data": pl.DataFrame({"id": ["b", "a"], "text": ["x" * 600, "y"]})}


_VOCABULARY: frozenset[str] | None = None


def _load_vocabulary(marker_dir: str | None) -> frozenset[str]:
    """The 'model': pydoc topic names, loaded once per process (a marker file counts the loads)."""
    global _VOCABULARY
    if _VOCABULARY is None:
        from pydoc_data.topics import topics

        _VOCABULARY = frozenset(word.lower() for word in topics)
        if marker_dir is not None and _in_ray_worker():
            (Path(marker_dir) / f"load-{os.getpid()}").touch()
    return _VOCABULARY


class CountTopicWords(RowwiseStage):
    """Test stage holding a model: count words of each text that are pydoc topic names.

    Parameters:
        marker_dir: folder for load and kill markers (null: none)
        kill_at_id: kill the actor the first time a batch holds this id
    """

    name = "test_ray_count_topic_words"
    uses_model = True
    allow_empty_input = True

    def __init__(self, marker_dir: str | None = None, kill_at_id: str | None = None):
        self.marker_dir = marker_dir
        self.kill_at_id = kill_at_id

    def process_batch(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        vocabulary = pl.Series(sorted(_load_vocabulary(self.marker_dir)), dtype=pl.String)
        if self.kill_at_id is not None and self.kill_at_id in batch["id"].to_list():
            _die_once(self.marker_dir, "actor")
        words = pl.col("text").str.to_lowercase().str.extract_all(r"[a-z_]+")
        return batch.with_columns(topic_words=words.list.eval(pl.element().is_in(vocabulary.implode())).list.sum())

    @classmethod
    def example(cls):
        return {}, {"data": pl.DataFrame({"id": ["a"], "text": ["the for loop and the if statement"]})}


class FirstWordIfLong(RowwiseStage):
    """Test stage whose output type depends on the batch: an all-null column where no text is long.

    Parameters:
        min_chars: texts at least this long get their first word
    """

    name = "test_ray_first_word_if_long"
    allow_empty_input = True

    def __init__(self, min_chars: int = 1000):
        self.min_chars = min_chars

    def process_batch(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        long = batch.filter(pl.col("text").str.len_chars() >= self.min_chars)
        if long.height == 0:
            return batch.select("id", first_word=pl.lit(None))  # dtype Null, as a naive stage would
        words = pl.when(pl.col("text").str.len_chars() >= self.min_chars).then(pl.col("text").str.extract(r"(\w+)"))
        return batch.select("id", first_word=words)

    @classmethod
    def example(cls):
        return {"min_chars": 4}, {"data": pl.DataFrame({"id": ["a", "b"], "text": ["hi", "hello world"]})}
