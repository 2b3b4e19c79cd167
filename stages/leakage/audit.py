"""The leakage audit: stream the training corpus once past a list of evidence kinds, then judge each test item.

Three built-in kinds of evidence per test item, each switchable, because each misses what another
catches (see `ngram.py` and `chunks.py`); more kinds plug in through `evidence.py`:

1. exact word n-grams after normalisation (NFKC, case, punctuation, whitespace), as GPT-3 did,
   ignoring n-grams found in more than `max_doc_freq` training documents (common phrases);
2. chunk overlap as in RETRO: the item's 64-token chunks, their k nearest training chunks, and
   r = longest common token substring / chunk length (RETRO counts r <= 12.5% as no leakage);
3. semantic similarity of chunks, which survives paraphrase, light edits and reordering that break
   every n-gram.

Every kind streams over the training corpus once and holds only the test side in memory. Only the
few training documents that matched are read a second time, to recover character spans.

Default thresholds were chosen on data (see `LeakageAudit` and `bench/bench_leakage.py --calibrate`):
planted copies, edits, reorderings and rewrites of Python documentation against clean controls.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Literal

import polars as pl
import pyarrow as pa

from pipeline.errors import InputDataError, ParamError
from pipeline.io import BATCH_BYTES, Dataset
from pipeline.params import Annotated, Cosine, Field, Fraction, NonNegativeInt, PositiveInt
from pipeline.partitioned import Partition, PartitionedStage
from pipeline.stage import Context
from stages._ids import refuse_bad_id_column, refuse_null_texts
from stages.leakage.chunks import SIMILARITY_DEFAULTS
from stages.leakage.duplicates import duplicates_summary
from stages.leakage.evidence import EVIDENCE_KINDS, Evidence, TestSide, TrainBatch, builtin_kinds
from stages.leakage.field_checks import field_column_kinds, field_param, present_roles, refuse_unusable_fields
from stages.leakage.judging import judge, record_stats
from stages.leakage.partials import PartitionView, export, fresh, restore, wanted_docs
from stages.leakage.sample import train_sample
from stages.leakage.spans import MATCHES_SCHEMA, fetch_train_docs, item_ids
from stages.leakage.truth import precision_recall
from stages.leakage.variants import (
    check_fields,
    check_train_fields,
    item_texts,
    train_columns,
    training_text,
)
from stages.text import MAX_N, tokenize

MAP_BATCH_BYTES = 4 << 20  # text bytes per training batch inside a map (see `LeakageAudit.map`)
# What the `dirty` side output adds to the test rows (`finish`): a test column of one of these names would be replaced.
DIRTY_COLUMNS = ("verdict", "train_id")
EVIDENCE_SPAN_COLUMNS = ["train_id", "evidence_kind", "evidence", "train_evidence", "test_char_start",
                         "test_char_end", "train_char_start", "train_char_end"]


class LeakageAudit(PartitionedStage):
    """Per test item: is it (partly, or reworded) in the training corpus? Findings, matches, clean/dirty splits, report.

    Main output `findings` (one row per test item); side outputs `matches` (test/train pairs with
    scores and character spans), `clean` and `dirty` (the test rows, split by verdict, for GPT-3's
    clean-vs-all comparison); artefacts report.html and report.md.

    Verdicts: `contaminated` when n-gram overlap >= ngram_contaminated, or chunk overlap ratio >=
    chunk_contaminated, or similarity >= similarity_contaminated; `partial` when any rare n-gram
    matches, or r > chunk_partial (RETRO's 12.5%), or similarity >= similarity_partial; else `clean`.
    The similarity defaults were chosen on data with `python -m bench.bench_leakage --calibrate
    BACKEND`: training = the 79 pydoc topics; test = 40 planted items of each kind (`plant`) and 86
    stdlib module docstrings as clean controls (same domain, different text). `partial` sits just
    above the highest control, `contaminated` near the median of light edits and reorderings:
    static: controls max 0.89 / p99 0.86; rewritten min 0.905, reordered min 0.94, edited min 0.96
    -> (0.90, 0.96). sentence-transformers: controls max 0.77 / p99 0.72; edited median 0.93,
    reordered median 0.92, rewritten median 0.81 -> (0.78, 0.90). With these, no control is flagged
    and every verbatim, surface, partial, edited and reordered item is (static also catches every
    word-shuffled rewrite; MiniLM 55% of them, as shuffling hurts a contextual model more).

    Parameters:
        text_column: column holding the text, in both train and test
        id_column: column holding row ids, in both (row numbers are used when it is absent)
        subset_column: test column to break totals down by (a task or source), or null
        ngram: run the exact n-gram pass
        n: words per n-gram (8..50; GPT-3 used 13)
        max_doc_freq: ignore n-grams found in more than this many training documents (common phrases)
        chunk_overlap: run RETRO's chunk overlap (needs embeddings to retrieve neighbours)
        semantic: report the best chunk similarity (paraphrase evidence; needs embeddings)
        chunk_tokens: words per chunk (RETRO used 64)
        chunk_stride: words between chunk starts; null = half a chunk (overlapping chunks align leaked text better)
        k: training chunks retrieved per test chunk
        backend: embedding backend: 'static' (distilled from MiniLM, ~250x faster on CPU) or 'sentence-transformers' (contextual)
        model: embedding model directory, or null for the packaged all-MiniLM-L6-v2
        embed_batch_size: texts per embedding batch
        ngram_contaminated: n-gram overlap (fraction of the item's n-grams) that makes an item contaminated
        chunk_partial: chunk overlap ratio above which an item is at least partial (RETRO: 0.125)
        chunk_contaminated: chunk overlap ratio that makes an item contaminated
        similarity_partial: cosine similarity that makes an item at least partial; null = the backend's calibrated default
        similarity_contaminated: cosine similarity that makes an item contaminated; null = the backend's calibrated default
        report_items: how many of the worst items the report shows side by side
        batch_rows: training rows read per batch (memory vs speed)
        evidence: further registered evidence kinds to run (see stages.leakage.evidence), by name
        cache: embed through the content-addressed embedding cache (only unseen chunks reach the model); null = on for sentence-transformers, off for static (measured: the static table embeds faster than a cold cache stores)
        candidates: paraphrase evidence: training chunks kept per test variant by the static table, then re-scored with MiniLM
        null_quantile: paraphrase evidence: the operating point, as a quantile of this test set's null (best score against a training passage the item owns, other than its best)
        paraphrase_min_score: paraphrase evidence: the lowest threshold the null may set (0.6: chosen on HumanEval, short-docstring rephrasings and pydoc-vs-stdlib cross-domain controls; see bench/results.md)
        paraphrase_precision: paraphrase evidence: MiniLM's precision when re-scoring; auto = bfloat16 where the CPU computes it natively (1.8x faster, scores within 0.002), else float32; float32 = scores that do not depend on the CPU's bfloat16 support
        fields: eval-aware items: test columns by role ({question: q, choices: options, answer: label, passage: p}); the paraphrase kind scores each item as question, question + answer and full prompt (its best counts); the built-in kinds (ngram, chunk_overlap, semantic) read one text per item: the test's text_column where it has one, else the full prompt (question and every option) with choices, question + answer with an answer and no choices, else the question, so an item leaked as question + answer scores lower there (its wrong options count against it); a null role is left out; question and passage are text, choices a list, answer text (or a letter), a 0-based integer index into choices (the number itself without choices) or a boolean
        train_fields: instruction-tuning training data: training columns by role ({instruction: prompt, input: context, response: completion}), joined into the text every evidence kind reads (instead of text_column); a role may be null (left out), and a column null in some rows; a row with every one null is refused
        duplicates: (optional input) a dedup step's `removed` side output: the report gains a duplicates section
    """

    name = "leakage_audit"
    # 8: words keep their combining marks (the text core: Hindi, Arabic, decomposed accents were cut at each mark),
    # and a chunk overlap run under 8 words (RETRO's 12.5% of a chunk) is no evidence for a test item of under 8 words
    # either (a 1-3 word item found in any training chunk was contaminated at r = 1.0);
    # 7: a semantic or paraphrase match's training span is the whole chunk it matched (was as many words as the test
    # side from the chunk's start); 6: a chunk match's span is its longest common run on both sides (was the test
    # chunk against as many words from the training chunk's start: up to a stride off); 5: paraphrase spans, report
    # windows; 4: evidence of a kind that flagged; 3: question-only `fields`
    version = "8"
    inputs = ("train", "test", "index", "truth", "duplicates")
    partition_input = "train"
    map_in_threads = True  # map() reads only the broadcast and its partition (auditspeed: local maps on threads)
    # `index`: an `index` step over the training corpus's chunks: the chunk/semantic passes search it
    # instead of embedding the training corpus again. `truth`: labels (test_id, planted), e.g.
    # plant_leakage's `truth`, for precision/recall per evidence kind in the stats and the report.
    # `duplicates`: a dedup step's `removed` side output, for the report's duplicates section (duplicates.py).
    optional_inputs = ("index", "truth", "duplicates")
    requires = ("faiss",)

    def __init__(
        self,
        text_column: str = "text",
        id_column: str = "id",
        subset_column: str | None = None,
        ngram: bool = True,
        n: Annotated[int, Field(ge=8, le=MAX_N)] = 13,
        max_doc_freq: PositiveInt = 10,
        chunk_overlap: bool = True,
        semantic: bool = True,
        chunk_tokens: Annotated[int, Field(ge=8, le=512)] = 64,
        chunk_stride: PositiveInt | None = None,
        k: Annotated[int, Field(ge=1, le=1000)] = 10,
        backend: Literal["sentence-transformers", "static"] = "static",
        model: str | None = None,
        embed_batch_size: PositiveInt = 64,
        ngram_contaminated: Fraction = 0.5,
        chunk_partial: Fraction = 0.125,
        chunk_contaminated: Fraction = 0.5,
        similarity_partial: Cosine | None = None,
        similarity_contaminated: Cosine | None = None,
        report_items: NonNegativeInt = 20,
        batch_rows: PositiveInt = 20_000,
        evidence: list[str] | None = None,
        cache: bool | None = None,
        candidates: Annotated[int, Field(ge=2, le=100)] = 8,
        null_quantile: Fraction = 0.99,
        paraphrase_min_score: Fraction = 0.6,
        paraphrase_precision: Literal["auto", "float32", "bfloat16"] = "auto",
        fields: dict[str, str | None] | None = None,
        train_fields: dict[str, str | None] | None = None,
    ):
        self.text_column = text_column
        self.id_column = id_column
        self.subset_column = subset_column
        self.ngram = ngram
        self.n = n
        self.max_doc_freq = max_doc_freq
        self.chunk_overlap = chunk_overlap
        self.semantic = semantic
        self.chunk_tokens = chunk_tokens
        self.chunk_stride = chunk_stride
        self.k = k
        self.backend = backend
        self.model = model
        self.embed_batch_size = embed_batch_size
        self.ngram_contaminated = ngram_contaminated
        self.chunk_partial = chunk_partial
        self.chunk_contaminated = chunk_contaminated
        self.similarity_partial = similarity_partial
        self.similarity_contaminated = similarity_contaminated
        self.report_items = report_items
        self.batch_rows = batch_rows
        self.evidence = evidence
        self.cache = cache
        self.candidates = candidates
        self.null_quantile = null_quantile
        self.paraphrase_min_score = paraphrase_min_score
        self.paraphrase_precision = paraphrase_precision
        self.fields = present_roles(fields)  # a null role is an absent one
        self.train_fields = present_roles(train_fields)
        self.cache_dir = None  # set from the run's context: where the embedding cache lives
        self._train_has_id = True  # set by broadcast() from the training input's columns

    # -- contract ---------------------------------------------------------------------------

    def validate(self) -> None:
        if not (self.ngram or self.chunk_overlap or self.semantic or self.evidence):
            raise ParamError("ngram", "all three passes are off; enable ngram, chunk_overlap or semantic")
        if self.chunk_stride is not None and self.chunk_stride > self.chunk_tokens:
            raise ParamError("chunk_stride", f"must be between 1 and chunk_tokens ({self.chunk_tokens}), got {self.chunk_stride}")
        if self.chunk_contaminated < self.chunk_partial:
            raise ParamError("chunk_contaminated", f"must be >= chunk_partial ({self.chunk_partial})")
        if self.similarity_thresholds[1] < self.similarity_thresholds[0]:
            raise ParamError("similarity_contaminated", f"must be >= similarity_partial ({self.similarity_partial})")
        check_fields(self.fields)
        check_train_fields(self.train_fields)
        unknown = [k for k in self.evidence or [] if k not in EVIDENCE_KINDS]
        if unknown:
            raise ParamError("evidence", f"unknown evidence kind {unknown[0]!r}; registered: {', '.join(EVIDENCE_KINDS)}")

    def check_input_data(self, inputs: dict[str, Dataset]) -> None:
        test = inputs["test"]  # a test item's findings are keyed by its id: a repeated or null one is ambiguous
        refuse_dirty_clash(test.columns, test.label)
        if self.id_column in test.columns:
            refuse_bad_id_column(test, self.id_column)
        if self.fields:
            refuse_unusable_fields(test, self.fields, self.id_column)
        # A missing role of an instruction/response pair is legitimately null; a row with every role null has no
        # text at all, like a null text.
        refuse_null_texts(inputs["train"], train_columns(self.text_column, self.train_fields),
                          "a training document with no text would be skipped without a word", input_name="train",
                          param="train_fields" if self.train_fields else "text_column")

    def required_columns(self) -> dict[str, dict[str, str | None]]:
        test = {self.text_column: "text_column"} if not self.fields else {
            c: field_param(role) for role, c in self.fields.items()}
        if self.subset_column:
            test[self.subset_column] = "subset_column"
        train = {c: "train_fields" for c in self.train_fields.values()} if self.train_fields else {
            self.text_column: "text_column"}
        return {"train": train, "test": test}

    def required_column_types(self) -> dict[str, dict[str, str]]:
        """Beyond the text column: each field role's kind (`field_checks`)."""
        types = super().required_column_types()
        types.setdefault("test", {}).update(field_column_kinds(self.fields or {}))
        return types

    @property
    def similarity_thresholds(self) -> tuple[float, float]:
        """(partial, contaminated): the given values, or the calibrated defaults of the backend."""
        partial, contaminated = SIMILARITY_DEFAULTS[self.backend]
        return (
            partial if self.similarity_partial is None else self.similarity_partial,
            contaminated if self.similarity_contaminated is None else self.similarity_contaminated,
        )

    @property
    def chunk_step(self) -> int:
        """Words between training chunk starts: `chunk_stride`, or half a chunk."""
        return self.chunk_stride or max(self.chunk_tokens // 2, 1)

    @property
    def uses_embeddings(self) -> bool:
        return self.chunk_overlap or self.semantic

    # -- evidence kinds -----------------------------------------------------------------------

    def evidence_classes(self) -> list[type[Evidence]]:
        """Every kind this audit reports on (enabled or not): built-ins first, then `evidence`, in order."""
        extra = [EVIDENCE_KINDS[k] for k in self.evidence or [] if not EVIDENCE_KINDS[k].builtin_switch]
        return builtin_kinds() + extra

    def enabled(self, cls: type[Evidence]) -> bool:
        if cls.builtin_switch:
            return bool(getattr(self, cls.builtin_switch)) or cls.kind in (self.evidence or [])
        return cls.kind in (self.evidence or [])

    # -- run --------------------------------------------------------------------------------

    # -- partitioned run: map over partitions of `train`, merge, finish (pipeline.partitioned) --

    def partitionable(self) -> bool:
        """Kinds that declare their partial state can merge across processes; any other runs in one partition."""
        return all(cls.partial_attributes for cls in self.evidence_classes() if self.enabled(cls))

    def broadcast(self, ctx: Context, inputs: dict[str, Dataset]) -> dict:
        """The test side and each kind's test-derived tables, built once (put in Ray's object store once)."""
        use_cache = self.cache if self.cache is not None else self.backend != "static"
        self.cache_dir = ctx.cache_dir if use_cache else None
        test_df = inputs["test"].collect()
        texts = item_texts(test_df, self.text_column, self.fields, inputs["test"].label)
        side = TestSide(texts=texts, tokens=tokenize(texts))
        index = inputs.get("index")
        shared: dict = {"prebuilt_index": self._load_index(index)} if index is not None else {}
        shared["test_frame"] = test_df
        kinds = [cls for cls in self.evidence_classes() if self.enabled(cls)]
        if any(cls.reads_train_sample for cls in kinds):
            shared["train_sample"] = train_sample(inputs["train"], train_columns(self.text_column, self.train_fields),
                                                  self._batch_texts)
        templates = [cls(self, side, shared) for cls in kinds]
        shared.pop("train_sample", None)  # what the kinds took from it is theirs; the text is not broadcast
        self._train_has_id = self.id_column in inputs["train"].columns
        return {"test_df": test_df, "side": side, "templates": templates}

    def map(self, partition: Partition, broadcast: dict) -> dict:
        """Stream one partition past fresh copies of the kinds; keep the matched rows' text (read once more, here:
        see `fetch_train_docs`)."""
        evidences = [fresh(ev) for ev in broadcast["templates"]]
        # Tokenising a batch takes ~10x its text in working memory: small batches keep a map's peak
        # (and with maps on threads, the process's) near the broadcast's, whatever the partition size.
        # Maps in flight on threads share one batch's worth (the engine gives each 1/threads of a batch).
        share = min(partition.batch_bytes / BATCH_BYTES, 1.0)
        partition = dataclasses.replace(partition, batch_bytes=max(1, int(MAP_BATCH_BYTES * share)))
        rows, train_bytes, timings = self._stream(partition, evidences)
        wanted = wanted_docs(evidences)
        view = PartitionView(partition, self._train_columns(), self.text_column,
                              lambda b: training_text(b, self.text_column, self.train_fields))
        docs = fetch_train_docs(view, (wanted - partition.base).tolist(), self.text_column, self.id_column,
                                self.batch_rows, first_row=partition.base)
        # The matched texts travel as an Arrow table: it pickles as its buffers (a checkpoint, the merged state's
        # size, Ray's object store), where a polars frame is serialised (31.5 MB corpus, 10.7 MB of matched
        # documents: 0.039 -> 0.015 s to pickle, and 0.027 s -> 0.3 ms to measure).
        return {"evidence": [export(ev) for ev in evidences], "rows": rows, "train_bytes": train_bytes,
                "timings": timings, "docs": docs.to_arrow()}

    def merge(self, a: dict, b: dict) -> dict:
        """Fold `b` (the partitions after `a`) into `a`; keep only the texts the merged evidence still needs."""
        templates = self._templates
        evidences = [restore(t, pa_, copy=True) for t, pa_ in zip(templates, a["evidence"])]
        for ev, template, pb in zip(evidences, templates, b["evidence"]):
            ev.merge(restore(template, pb, copy=False))
        wanted = wanted_docs(evidences)
        docs = pl.concat([pl.from_arrow(a["docs"]), pl.from_arrow(b["docs"])]).filter(pl.col("doc").is_in(wanted))
        timings = {k: a["timings"].get(k, 0.0) + b["timings"].get(k, 0.0) for k in a["timings"]}
        return {"evidence": [export(ev) for ev in evidences], "rows": a["rows"] + b["rows"],
                "train_bytes": a["train_bytes"] + b["train_bytes"], "timings": timings, "docs": docs.to_arrow()}

    def finish(self, ctx: Context, state: dict, broadcast: dict, inputs: dict[str, Dataset]) -> pl.DataFrame:
        test_df, side = broadcast["test_df"], broadcast["side"]
        evidences = [restore(t, p, copy=False) for t, p in zip(broadcast["templates"], state["evidence"])]
        wanted = wanted_docs(evidences)
        train_docs = pl.from_arrow(state["docs"]).filter(pl.col("doc").is_in(wanted)).sort("doc")
        findings, matches = judge(side, evidences, self.evidence_classes(), item_ids(test_df, self.id_column),
                                  train_docs)
        if self.subset_column:
            findings = findings.with_columns(subset=test_df.get_column(self.subset_column).cast(pl.String))
        out = findings.select(self.output_columns())

        verdicts = out.get_column("verdict")
        ctx.write_side_output("matches", matches)
        ctx.write_side_output("clean", test_df.filter((verdicts == "clean").to_numpy()))
        ctx.write_side_output("dirty", test_df.with_columns(verdict=verdicts, train_id=out.get_column("train_id"))
                              .filter(verdicts != "clean"))
        record_stats(ctx, side, evidences, verdicts, state["rows"], state["train_bytes"], state["timings"], self.n)
        ctx.record("seed", ctx.seed)
        truth = inputs.get("truth")
        if truth is not None:
            ctx.record("evidence_precision_recall", precision_recall(findings, evidences, truth.collect()))
        if inputs.get("duplicates") is not None:
            ctx.record("duplicates", duplicates_summary(inputs["duplicates"], out, self.id_column))

        from stages.leakage.report import worst_items, write_reports

        shown = set(worst_items(findings, self.report_items, self.evidence_classes())["doc"].to_list())
        shown_docs = train_docs.filter(pl.col("doc").is_in([d for d in shown if d is not None]))  # not every fetched text
        train_texts = dict(zip(shown_docs["doc"].to_list(), shown_docs["text"].to_list()))
        write_reports(out, side.texts.to_list(), train_texts, findings.get_column("doc").to_list(), self, ctx.stats,
                      html_path=ctx.artefact_path("report.html"), md_path=ctx.artefact_path("report.md"))
        return out

    @property
    def _templates(self) -> list[Evidence]:
        """Kinds built on an empty test side: merge needs only their classes and settings, not the test set."""
        cached = self.__dict__.get("_merge_templates")
        if cached is None:
            empty = pl.Series("text", [], pl.String)
            side = TestSide(texts=empty, tokens=tokenize(empty))
            cached = [cls(self, side, {}) for cls in self.evidence_classes() if self.enabled(cls)]
            self.__dict__["_merge_templates"] = cached
        return cached

    def _load_index(self, index: Dataset):
        from pathlib import Path

        from stages.retrieval import Index

        if index.files is None:
            raise InputDataError("input 'index' must be the output directory of an 'index' step", file=index.label)
        loaded = Index.load(Path(index.files[0]).parent)
        if loaded._docs is None:
            raise InputDataError("the index was built without doc_column: its chunks cannot be traced to training "
                                 "documents; rebuild it with doc_column (e.g. doc_id)", file=index.label)
        if self.chunk_overlap and "text" not in loaded.mapping.columns:
            raise ParamError("chunk_overlap", "needs each indexed chunk's text: build the index with "
                             "keep_columns: [text], or set chunk_overlap: false")
        return loaded

    def _train_columns(self) -> list[str]:
        return train_columns(self.text_column, self.train_fields) + ([self.id_column] if self._train_has_id else [])

    def _batch_texts(self, batch: pl.DataFrame) -> pl.Series:
        """Each training row's text as every kind reads it (`training_text`: the text column, or the fields joined)."""
        return training_text(batch, self.text_column, self.train_fields).get_column(self.text_column).cast(
            pl.String).fill_null("")

    def _stream(self, partition: Partition, evidences: list[Evidence]) -> tuple[int, int, dict]:
        """One pass over a partition of the training corpus: tokenise each batch once, hand it to every kind."""
        train_columns = self._train_columns()
        base, train_bytes = partition.base, 0
        timings = {"tokenize_s": 0.0} | {f"{ev.kind}_s": 0.0 for ev in evidences}
        for batch, arrow in partition.iter_batches_with_arrow(self.batch_rows, columns=train_columns):
            texts = self._batch_texts(batch)
            train_bytes += int(texts.str.len_bytes().sum() or 0)
            t0 = time.perf_counter()
            ids = batch.get_column(self.id_column).cast(pl.String) if self.id_column in batch.columns else None
            # The text column as read, where it is the text every kind reads: tokenize takes Arrow's large strings in
            # their own buffers.
            read = arrow.column(self.text_column) if arrow is not None and not self.train_fields else None
            read = read if read is not None and read.type == pa.large_string() else texts
            item = TrainBatch(texts=texts, tokens=tokenize(read), base=base, ids=ids)
            timings["tokenize_s"] += time.perf_counter() - t0
            for ev in evidences:
                t0 = time.perf_counter()
                ev.add_batch(item)
                timings[f"{ev.kind}_s"] += time.perf_counter() - t0
            base += batch.height
        return base - partition.base, train_bytes, timings

    def output_schema(self, inputs):
        declared = {c: t for cls in self.evidence_classes() for c, t in cls.columns.items()}
        types = {"test_id": pl.String, "verdict": pl.String, **declared, "train_id": pl.String,
                 "evidence_kind": pl.String, "evidence": pl.String, "train_evidence": pl.String, "subset": pl.String}
        return {c: types.get(c, pl.Int64) for c in self.output_columns()}

    def side_output_names(self):
        return ("matches", "clean", "dirty")

    def side_output_schemas(self, inputs):
        test = inputs["test"]
        refuse_dirty_clash(test)  # `pipeline validate` too, from the schema
        return {"matches": MATCHES_SCHEMA, "clean": dict(test), "dirty": {**test, **dict.fromkeys(DIRTY_COLUMNS, pl.String)}}

    def output_columns(self) -> list[str]:
        """The findings columns, in order: fixed ones, each evidence kind's, then the best span's."""
        declared = [c for cls in self.evidence_classes() for c in cls.columns]
        return ["test_id", "verdict", *declared, *EVIDENCE_SPAN_COLUMNS] + (["subset"] if self.subset_column else [])

    @classmethod
    def example(cls):
        from pydoc_data.topics import topics

        names = sorted(topics)[:12]
        train = pl.DataFrame({"id": names, "text": [topics[t] for t in names]})
        leaked = " ".join(topics[names[3]].split()[:60]).upper()
        test = pl.DataFrame({
            "id": ["leaked", "clean"],
            "text": [leaked, " ".join(topics[sorted(topics)[40]].split()[:60])],
        })
        return {"chunk_overlap": False, "semantic": False}, {"train": train, "test": test}


def refuse_dirty_clash(test_columns, label: str | None = None) -> None:
    """A test column named as one `dirty` adds would be overwritten there with no word: refused, naming it."""
    clash = [c for c in DIRTY_COLUMNS if c in test_columns]
    if clash:
        raise InputDataError(f"input 'test' already has a column '{clash[0]}', which the side output 'dirty' adds "
                             f"(each dirty item's {' and '.join(DIRTY_COLUMNS)}); rename it first", file=label)
