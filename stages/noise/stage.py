"""The `label_noise` stage: parameters, and the partitioned map / merge / finish that runs either mode."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import polars as pl
import pyarrow as pa

from pipeline.columns import polars_schema
from pipeline.errors import InputDataError
from pipeline.io import Dataset
from pipeline.partition_fold import run_locally
from pipeline.partitioned import Partition, PartitionedStage, plan_partitions
from pipeline.stage import Context
from stages._hashing import stream_key
from stages._ids import refuse_bad_id_column
from stages.noise.dilute import dilute_rows
from stages.noise.dilute_plan import dilute_broadcast, refuse_source_kinds
from stages.noise.flip import flip_matrix, flip_rows
from stages.noise.params import check_known, check_stochastic, validate_params
from stages.noise.rows import NOISE_COLUMNS, class_table, with_label_kind
from stages.noise.scan import LabelScan, scan_partition


class LabelNoise(PartitionedStage):
    """Label noise at an exact rate: Rolnick-style dilution (`dilute`) or in-place relabelling (`flip`).

    See the package docstring for the exact definition of every scheme and of the matrix convention
    (rows = clean class, each row sums to 1). Both modes are a partitioned map over the data (the
    label and id columns only: a class index and a hash per row, 12 bytes a row), merged in input
    order; `finish` chooses the noisy rows and streams the rows out in batches, never holding the
    rows themselves. Dilution reads its pool once, however many cycles alpha asks for.

    Parameters:
        mode: 'flip' relabels rows in place; 'dilute' keeps every row and adds round(alpha * N) noisy ones
        noise: dilute: 'uniform' (default) | 'structured'; flip: 'symmetric' (default) | 'pairflip' | 'mapping' | 'matrix'
        rate: flip rate in [0, 1], or a {class: rate} dict for class-dependent rates (not with 'matrix')
        mapping: {class: class} targets for noise 'mapping' (e.g. {cat: dog, dog: cat})
        matrix: K x K transition matrix for noise 'matrix'; rows = clean class, each row sums to 1
        alpha: dilute: noisy rows added per clean row (0 to 10,000, fractional allowed)
        exclude_true: dilute: uniform labels are drawn among the other K-1 classes instead of all K
        delta: structured noise: probability that an added label is the input's confusing class
        confusion: structured noise: 'derangement' | 'centroid' | {class: class} | K x K row-stochastic matrix
        feature_column: numeric vector column for confusion 'centroid' and for out-of-distribution sources
        classes: the class set and its order (default: sorted distinct labels of the data)
        label_column: the column holding labels (integers or strings)
        id_column: unique row id that keys every random draw (a null or repeated id is refused); null keys by row
            position instead
    """

    name = "label_noise"
    inputs: ClassVar[tuple[str, ...]] = ("data", "source")
    optional_inputs: ClassVar[tuple[str, ...]] = ("source",)
    # The map reads only the stage, its partition and the broadcast: an executor may run maps on threads.
    map_in_threads: ClassVar[bool] = True

    def __init__(
        self,
        mode: Literal["flip", "dilute"] = "flip",
        noise: Literal["uniform", "structured", "symmetric", "pairflip", "mapping", "matrix"] | None = None,
        rate: float | dict[Any, float] | None = None,
        mapping: dict[Any, Any] | None = None,
        matrix: list[list[float]] | None = None,
        alpha: float = 1.0,
        exclude_true: bool = False,
        delta: float = 0.5,
        confusion: str | dict[Any, Any] | list[list[float]] = "derangement",
        feature_column: str | None = None,
        classes: list[Any] | None = None,
        label_column: str = "label",
        id_column: str | None = "id",
    ):
        self.mode = mode
        self.noise = noise
        self.rate = rate
        self.mapping = mapping
        self.matrix = matrix
        self.alpha = alpha
        self.exclude_true = exclude_true
        self.delta = delta
        self.confusion = confusion
        self.feature_column = feature_column
        self.classes = classes
        self.label_column = label_column
        self.id_column = id_column

    def output_schema(self, inputs):
        if self.mode == "dilute" and inputs.get("source") is not None:  # `pipeline validate` knows both schemas
            refuse_source_kinds(self, inputs["data"], inputs["source"], None)
        return {**inputs["data"], **{c: None for c in NOISE_COLUMNS}}

    def side_output_names(self):
        return ("transitions",)  # realised clean x noisy counts, in either mode

    @property
    def noise_kind(self) -> str:
        if self.noise is not None:
            return self.noise
        return "uniform" if self.mode == "dilute" else "symmetric"

    def validate(self) -> None:
        validate_params(self)

    # Kept as methods for callers that used them on the stage.
    _check_known = staticmethod(check_known)
    _check_stochastic = staticmethod(check_stochastic)

    def required_column_types(self) -> dict[str, dict[str, str]]:
        return with_label_kind(super().required_column_types(), self.label_column)

    def required_columns(self) -> dict[str, dict[str, str | None]]:
        data: dict[str, str | None] = {self.label_column: "label_column"}
        source: dict[str, str | None] = {}
        if self.id_column:
            data[self.id_column] = "id_column"
            source[self.id_column] = "id_column"
        if self.feature_column:
            data[self.feature_column] = "feature_column"
            source[self.feature_column] = "feature_column"
        return {"data": data, "source": source}

    def check_input_data(self, inputs: dict[str, Dataset]) -> None:
        """Ids unique in each input, whatever the draw: a repeated id draws its twin's fate (both rows flip, to the
        same class, or neither), so the realised noise on record would not be per row. Before, only twins that fell
        either side of a cut were refused (`counts.choose_flips`), so the same data passed at one rate or seed and
        failed at another. A dilute `source` must hold each data column in the same kind (`refuse_source_kinds`)."""
        source = inputs.get("source")
        if self.mode == "dilute" and source is not None:
            refuse_source_kinds(self, polars_schema(inputs["data"].schema), polars_schema(source.schema),
                                source.label)
        if not self.id_column:
            return
        for name in ("data", "source"):
            if inputs.get(name) is not None:
                refuse_bad_id_column(inputs[name], self.id_column, input_name=name,
                                     hint="make the ids unique, or set id_column: null to key by row position")

    # ------------------------------------------------------------ partitioned run

    def run(self, ctx: Context, data: Dataset, source: Dataset | None = None) -> Any:
        """Library calls. A table already in memory is one partition: no checkpoints, no input hashing."""
        self.validate()  # library calls (`LabelNoise(...).apply(df)`) do not go through from_params
        inputs = {"data": data, **({"source": source} if source is not None else {})}
        if data.frame is None:
            return run_locally(self, ctx, inputs, None)
        broadcast = self.broadcast(ctx, inputs)
        whole = plan_partitions(data, 1 << 62)
        state = self.map(whole[0], broadcast) if whole else LabelScan()
        return self.finish(ctx, state, broadcast, inputs)

    def broadcast(self, ctx: Context, inputs: dict[str, Dataset]) -> dict[str, Any]:
        """The classes and their sizes (one pass over the labels), and what the chosen mode needs besides."""
        data, source = inputs["data"], inputs.get("source")
        if self.mode == "flip" and source is not None:
            raise InputDataError("input 'source' is only used by mode 'dilute'; flip relabels the data in place")
        # Dilution counts the classes itself when it can (from its first cycle over the data).
        classes, class_rows = class_table(self, data, need_rows=self.mode == "flip")
        out: dict[str, Any] = {"classes": classes, "class_rows": class_rows, "label": data.label}
        if self.mode == "flip":
            out["matrix"] = flip_matrix(self, classes, data.label)
            out["flip_key"] = stream_key(ctx.seed, "label_noise", "flip")
        else:
            out.update(dilute_broadcast(self, ctx, data, classes, source is not None))
            out["flip_key"] = None
        id_type = data.schema.field(self.id_column).type if self.id_column else None
        out["integer_ids"] = self.mode == "dilute" and id_type is not None and pa.types.is_integer(id_type)
        return out

    def map(self, partition: Partition, broadcast: dict[str, Any]) -> LabelScan:
        return scan_partition(self, partition, broadcast["classes"], broadcast["flip_key"], broadcast["label"],
                              broadcast["integer_ids"])

    def merge(self, a: LabelScan, b: LabelScan) -> LabelScan:
        return a.merge(b)

    def finish(self, ctx: Context, state: LabelScan | None, broadcast: dict[str, Any],
               inputs: dict[str, Dataset]) -> Any:
        state = state if state is not None else LabelScan()
        class_idx, hashes = state.arrays()
        state.class_idx = state.hashes = []  # the arrays now live only here
        if self.mode == "flip":
            return flip_rows(self, ctx, inputs["data"], broadcast, class_idx, hashes)
        return dilute_rows(self, ctx, inputs["data"], inputs.get("source"), broadcast, class_idx, hashes,
                           state.max_id)

    # ------------------------------------------------------------ conformance

    @classmethod
    def example(cls) -> tuple[dict[str, Any], dict[str, pl.DataFrame]]:
        table = pl.DataFrame({"id": list(range(30)), "label": ["cat", "dog", "fox"] * 10})
        return {"mode": "flip", "noise": "symmetric", "rate": 0.3}, {"data": table}
