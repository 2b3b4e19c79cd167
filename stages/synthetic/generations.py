"""The `generations` stage: generations of synthetic data under mixing schedules, with provenance per row."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import xxhash

from pipeline.errors import InputDataError, ParamError, PipelineError
from pipeline.io import Dataset
from pipeline.params import Annotated, Field, Fraction, PositiveInt
from pipeline.stage import Context, Stage
from stages._ids import refuse_bad_ids
from stages.synthetic.generators import _check_callback_path, _resolve_callback, make_generator

SCHEDULES = ("replace", "keep_real", "accumulate", "accumulate_subsample", "fresh_real")
PROVENANCE_COLUMNS = ("doc_id", "generation", "origin", "parent_generation", "generator", "prompt_id")
# Corpora (seeds x schedules x generations + 1) one step may write: each is a side-output folder.
MAX_CORPORA = 10_000

def _frame(doc_id, generation, origin, parent, generator, prompt_id, text) -> pl.DataFrame:
    n = len(text)

    def col(value, dtype):
        if isinstance(value, (list, np.ndarray, pl.Series)):
            return pl.Series(values=value, dtype=dtype)
        return pl.repeat(value, n, dtype=dtype, eager=True)

    return pl.DataFrame({
        "doc_id": col(doc_id, pl.String), "generation": col(generation, pl.Int32),
        "origin": col(origin, pl.String), "parent_generation": col(parent, pl.Int32),
        "generator": col(generator, pl.String), "prompt_id": col(prompt_id, pl.String),
        "text": col(text, pl.String),
    })


class Generations(Stage):
    """Run generations of synthetic data under one or more mixing schedules, with provenance per row.

    Generation 0 is the human corpus (`corpus_size` documents drawn from the input). For t = 1..T the
    generator is fit on corpus t-1 and samples synthetic documents; corpus t is then built by the
    schedule (N = generation-0 size, R = round(real_fraction * N)):
      replace: N synthetic; keep_real: R real drawn afresh from generation 0 plus N - R synthetic
      (Shumailov's 10% setting); accumulate: all real plus every earlier synthetic set, N new per
      generation (Gerstgrasser et al.); accumulate_subsample: N drawn from that growing pool;
      fresh_real: R real documents never used before (outside generation 0) plus N - R synthetic
      (the fresh-data loop of Alemohammad et al.).
    Every schedule starts from the same generation 0 and uses its own seeded draws, so schedules
    compare like for like. Outputs: the main table is every corpus (generation of every schedule,
    with a `schedule` column); each corpus is also a side output, `gen-003` (or `replace-gen-003`
    when several schedules run); and `samples` holds what each generation's generator produced
    (generation 0 = the human corpus), the view in which Shumailov and Gerstgrasser measure collapse,
    since an accumulating corpus keeps its real data by construction; `settings` is one row with the
    seed, params and (for trained generators) how each fit was stopped, for the report. Finished generations are
    checkpointed, so a killed study resumes where it stopped.

    Parameters:
        generations: number of synthetic generations T (>= 1)
        schedules: one schedule or a list: replace, keep_real, accumulate, accumulate_subsample, fresh_real
        corpus_size: documents in generation 0 and in each fixed-size corpus (null = every input row)
        real_fraction: share of real documents per generation for keep_real and fresh_real
        generator: ngram (built in), lstm (word LSTM trained in torch), hf (local causal LM) or external (your own Parquet per generation)
        seeds: independent replicas of every schedule (own sampling, mixing and training seeds; shared generation 0); > 1 adds a `seed` column
        generator_params: ngram {order, smoothing}; lstm {embedding, hidden, layers, sequence_length, learning_rate, batch_size, max_steps, eval_every, patience, validation_fraction, fine_tune}; hf {model_path, batch_size, device}; external {path, text_column}
        text_column: input column holding the text (the output keeps the same name)
        id_column: input column with document ids (null = row number)
        prompt_tokens: if set, synthetic texts continue the first this-many tokens of a real document
        max_tokens: most tokens generated per synthetic document
        temperature: sampling temperature (< 1 sharpens: the sampling-bias knob)
        top_p: nucleus sampling mass kept per step (< 1 drops the tail)
        callback: 'module:function' called before each fit as f(generation=, schedule=, corpus=, generator=); may return a new model path
    """

    name = "generations"
    version = "4"  # 4: the n-gram sampler's top_p truncates its unigram level too (it kept every word there)
    # 3: the n-gram sampler below temperature 1 no longer overflows or loses weights
    inputs = ("data",)

    def __init__(
        self,
        generations: PositiveInt = 5,
        schedules: list[str] | str = "replace",
        corpus_size: PositiveInt | None = None,
        real_fraction: Fraction = 0.1,
        generator: Literal["ngram", "lstm", "hf", "external"] = "ngram",
        seeds: PositiveInt = 1,
        generator_params: dict[str, Any] | None = None,
        text_column: str = "text",
        id_column: str | None = "id",
        prompt_tokens: PositiveInt | None = None,
        max_tokens: PositiveInt = 128,
        temperature: Annotated[float, Field(gt=0.0)] = 1.0,
        top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0,
        callback: str | None = None,
    ):
        self.generations = generations
        self.schedules = schedules
        self.corpus_size = corpus_size
        self.real_fraction = real_fraction
        self.generator = generator
        self.seeds = seeds
        self.generator_params = generator_params
        self.text_column = text_column
        self.id_column = id_column
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.callback = callback

    @property
    def schedule_list(self) -> list[str]:
        return [self.schedules] if isinstance(self.schedules, str) else list(self.schedules)

    def validate(self) -> None:
        if not self.schedule_list:
            raise ParamError("schedules", f"give at least one of {', '.join(SCHEDULES)}")
        for s in self.schedule_list:
            if s not in SCHEDULES:
                raise ParamError("schedules", f"unknown schedule '{s}'; choose from {', '.join(SCHEDULES)}")
        if len(set(self.schedule_list)) != len(self.schedule_list):
            raise ParamError("schedules", "lists a schedule twice")
        corpora = self.seeds * len(self.schedule_list) * (self.generations + 1)
        if corpora > MAX_CORPORA:
            # Each corpus is a side-output folder (and a model trained); past this, listing them alone
            # takes minutes and gigabytes before anything runs.
            # The parameter to blame: seeds when they alone exceed the limit at the fewest generations (one).
            blame = "seeds" if self.seeds * len(self.schedule_list) * 2 > MAX_CORPORA else "generations"
            raise ParamError(blame, f"{self.seeds} seeds x {len(self.schedule_list)} schedules x "
                                    f"{self.generations + 1} generations = {corpora:,} corpora; at most "
                                    f"{MAX_CORPORA:,} in one step", hint="split the study into several steps")
        make_generator(self.generator, self.generator_params)
        _check_callback_path(self.callback)  # imported when the step runs, never while validating

    def required_columns(self):
        cols = {self.text_column: "text_column"}
        if self.id_column is not None:
            cols[self.id_column] = "id_column"
        return {"data": cols}

    def required_column_types(self) -> dict[str, dict[str, str]]:
        # A list or struct id cannot name a parent in the provenance columns (it failed inside polars).
        return {"data": {**super().required_column_types()["data"],
                         **({self.id_column: "scalar"} if self.id_column else {})}}

    def _corpus_schema(self) -> dict[str, Any]:
        """Columns of one generation's corpus: provenance, then the text under the input's name."""
        types = {"generation": pl.Int32, "parent_generation": pl.Int32}
        return {**{c: types.get(c, pl.String) for c in PROVENANCE_COLUMNS}, self.text_column: pl.String}

    def output_schema(self, inputs):
        seed = {"seed": pl.Int32} if self.seeds > 1 else {}
        return {"schedule": pl.String, **seed, **self._corpus_schema()}

    def side_output_names(self):
        return (*self._corpus_names(), "samples", "settings")

    def _corpus_names(self) -> list[str]:
        """One side output per replica, schedule and generation, in the order they are written."""
        return [self.side_name(schedule, t, replica) for replica in range(self.seeds)
                for schedule in self.schedule_list for t in range(self.generations + 1)]

    def side_output_schemas(self, inputs):
        corpus = self._corpus_schema()
        sides = {name: corpus for name in self._corpus_names()}
        sides["samples"] = self.output_schema(inputs)
        sides["settings"] = {"stage": pl.String, "seed": pl.Int64, "generator": pl.String, "params": pl.String,
                             "training": pl.String}
        return sides

    def side_name(self, schedule: str, generation: int, replica: int = 0) -> str:
        prefix = f"{schedule}-" if len(self.schedule_list) > 1 else ""
        if self.seeds > 1:
            prefix = f"seed{replica}-{prefix}"
        return f"{prefix}gen-{generation:03d}"

    def _seed_cols(self, replica: int) -> dict[str, int]:
        """The `seed` column's value for a replica (no column when the study runs one seed)."""
        return {"seed": replica} if self.seeds > 1 else {}

    def _rng(self, ctx: Context, replica: int, *salt) -> np.random.Generator:
        """Seeded draws per replica; replica 0 of a one-seed study keeps the salts it always had."""
        return ctx.rng(*(("replica", replica) if self.seeds > 1 else ()), *salt)

    @classmethod
    def example(cls):
        import pydoc_data.topics

        paragraphs = [p.strip() for k in sorted(pydoc_data.topics.topics)[:6]
                      for p in pydoc_data.topics.topics[k].split("\n\n") if p.strip()]
        df = pl.DataFrame({"id": [f"p{i}" for i in range(len(paragraphs))], "text": paragraphs})
        return {"generations": 2, "schedules": ["replace", "keep_real", "accumulate"], "corpus_size": 40,
                "max_tokens": 40}, {"data": df}

    # -- run ------------------------------------------------------------------------------------

    def run(self, ctx: Context, data: Dataset) -> pl.DataFrame:
        cols = [self.text_column] + ([self.id_column] if self.id_column else [])
        human = data.lazy().select(list(dict.fromkeys(cols))).collect()  # id_column may be the text column
        ids = (human[self.id_column].cast(pl.String) if self.id_column
               else pl.Series(np.arange(len(human)).astype(str)))
        human = pl.DataFrame({"doc_id": ids, "text": human[self.text_column].cast(pl.String).fill_null("")})
        if len(human) and not human["text"].str.contains(r"\w").any():
            # Else the generator's fit failed with "no words", naming neither the column nor the file.
            raise InputDataError(f"column '{self.text_column}' holds no words (all {len(human):,} rows null or blank); "
                                 "the generator has nothing to learn from", param="text_column", file=data.label)
        if self.id_column:  # provenance names each row's parent by id: a null names none, a repeat two
            refuse_bad_ids(human["doc_id"].alias(self.id_column), self.id_column, data.label,
                           hint="provenance needs unique ids: deduplicate the input first, or set id_column: null "
                                "to number the rows")
        n0 = self.corpus_size if self.corpus_size is not None else len(human)
        if n0 > len(human):
            raise InputDataError(f"corpus_size is {n0} but the input has only {len(human)} rows",
                                 param="corpus_size", file=data.label)
        pick = np.sort(ctx.rng("generation-0").choice(len(human), size=n0, replace=False)) \
            if n0 < len(human) else np.arange(n0)
        gen0 = _frame(human["doc_id"].gather(pick), 0, "human", None, None, None, human["text"].gather(pick))
        unused = np.setdiff1d(np.arange(len(human)), pick)
        fresh_pool = _frame(human["doc_id"].gather(unused), 0, "human", None, None, None,
                            human["text"].gather(unused))
        n_real = int(round(self.real_fraction * n0))
        if "fresh_real" in self.schedule_list and len(fresh_pool) < n_real * self.generations:
            raise InputDataError(
                f"fresh_real needs {n_real * self.generations} real documents outside generation 0 "
                f"({self.generations} generations x {n_real}), but only {len(fresh_pool)} are left; "
                "lower corpus_size or real_fraction", param="corpus_size", file=data.label)

        ckpt = self._checkpoint(ctx, human)
        callback = _resolve_callback(self.callback)
        generator = make_generator(self.generator, self.generator_params)
        bar = ctx.progress(total=self.generations * len(self.schedule_list) * self.seeds, unit="generations")
        frames, samples, stats = [], [], []
        for replica in range(self.seeds):
            for schedule in self.schedule_list:
                corpora, news = self._chain(ctx, schedule, replica, gen0, fresh_pool, n0, n_real, generator,
                                            callback, ckpt, stats, bar)
                tag = {"schedule": pl.lit(schedule), **{k: pl.lit(v, pl.Int32)
                                                        for k, v in self._seed_cols(replica).items()}}
                for t, corpus in enumerate(corpora):
                    ctx.write_side_output(self.side_name(schedule, t, replica), corpus.rename({"text": self.text_column}))
                    frames.append(corpus.with_columns(**tag))
                samples += [f.with_columns(**tag) for f in (gen0, *news)]
        bar.close()
        columns = ["schedule", *(["seed"] if self.seeds > 1 else []), *PROVENANCE_COLUMNS, "text"]
        ctx.write_side_output("samples", pl.concat(samples).select(columns).rename({"text": self.text_column}))
        ctx.record("generation_0_rows", n0)
        ctx.record("real_per_generation", n_real)
        ctx.record("generator", generator.label())
        ctx.record("generations", stats)
        ctx.record("resumed_generations", sum(s["resumed"] for s in stats))
        training = getattr(generator, "training_log", [])
        if training:
            ctx.record("training", training)
        # One row the collapse report prints: what was run, under which seed, and how training stopped.
        ctx.write_side_output("settings", pl.DataFrame({
            "stage": [self.name], "seed": [ctx.seed], "generator": [generator.label()],
            "params": [json.dumps(self.get_params(), sort_keys=True, default=repr)],
            "training": [json.dumps(training)]}))
        return pl.concat(frames).select(columns).rename({"text": self.text_column})

    def _chain(self, ctx, schedule, replica, gen0, fresh_pool, n0, n_real, generator, callback, ckpt, stats, bar):
        """Generations 1..T of one schedule and replica (from checkpoints where present); a stats row each."""
        corpora = [gen0]
        news: list[pl.DataFrame] = []
        for t in range(1, self.generations + 1):
            cached = self._load(ckpt, schedule, t, replica)
            if cached is not None:
                corpus, new = cached
                resumed = True
            else:
                corpus, new = self._generation(ctx, schedule, t, corpora, news, fresh_pool, n0, n_real,
                                               generator, callback, replica)
                self._save(ckpt, schedule, t, corpus, new, replica)
                resumed = False
            corpora.append(corpus)
            news.append(new)
            synthetic = int((corpus["origin"] == "synthetic").sum())
            stats.append({"schedule": schedule, **self._seed_cols(replica), "generation": t,
                          "rows": len(corpus), "synthetic": synthetic,
                          "synthetic_share": round(synthetic / max(len(corpus), 1), 6), "resumed": resumed})
            bar.update(1)
        return corpora, news

    def _generation(self, ctx, schedule, t, corpora, news, fresh_pool, n0, n_real, generator, callback, replica=0):
        """Fit on corpus t-1, sample, and mix corpus t by the schedule."""
        previous = corpora[-1]
        if hasattr(generator, "reseed"):  # generators that train draw their initialisation from the study seed
            generator.reseed(int(self._rng(ctx, replica, schedule, t, "fit").integers(0, 2**62)))
        if callback is not None:
            new_path = callback(generation=t, schedule=schedule, corpus=previous, generator=generator)
            if new_path is not None:
                generator.load(new_path)
        generator.fit(previous["text"], generation=t, schedule=schedule)
        log = getattr(generator, "training_log", None)
        if log and self.seeds > 1:
            log[-1]["seed"] = replica
        n_synth = n0 - n_real if schedule in ("keep_real", "fresh_real") else n0
        rng = self._rng(ctx, replica, schedule, t, "sample")
        prompts = prompt_ids = None
        if self.prompt_tokens is not None:
            gen0 = corpora[0]
            which = rng.choice(len(gen0), size=n_synth, replace=n_synth > len(gen0))
            prompts = gen0["text"].gather(which).to_list()
            prompt_ids = gen0["doc_id"].gather(which)
        texts = generator.sample(n_synth, rng, generation=t, schedule=schedule, prompts=prompts,
                                 prompt_tokens=self.prompt_tokens, max_tokens=self.max_tokens,
                                 temperature=self.temperature, top_p=self.top_p) if n_synth else []
        if len(texts) != n_synth:
            raise PipelineError(f"the '{generator.name}' generator returned {len(texts)} texts for {n_synth} requested")
        doc_ids = [f"{schedule}/g{t:03d}/{i:06d}" for i in range(n_synth)]
        new = _frame(doc_ids, t, "synthetic", t - 1, generator.label(), prompt_ids, texts)
        mix_rng = self._rng(ctx, replica, schedule, t, "mix")
        if schedule == "replace":
            corpus = new
        elif schedule == "keep_real":
            real = corpora[0].gather(np.sort(mix_rng.choice(len(corpora[0]), size=n_real, replace=False)))
            corpus = pl.concat([real.with_columns(generation=pl.lit(t, pl.Int32)), new])
        elif schedule == "fresh_real":
            # The held-out pool is shuffled once (by the seed) so "fresh" documents are a random draw.
            order = self._rng(ctx, replica, schedule, "fresh-order").permutation(len(fresh_pool))
            real = fresh_pool.gather(np.sort(order[(t - 1) * n_real: t * n_real]))
            corpus = pl.concat([real.with_columns(generation=pl.lit(t, pl.Int32)), new])
        elif schedule == "accumulate":
            corpus = pl.concat([previous, new]).with_columns(generation=pl.lit(t, pl.Int32))
        else:  # accumulate_subsample
            pool = pl.concat([corpora[0], *news, new])
            corpus = pool.gather(np.sort(mix_rng.choice(len(pool), size=n0, replace=False)))
            corpus = corpus.with_columns(generation=pl.lit(t, pl.Int32))
        return corpus, new

    # -- checkpoints ------------------------------------------------------------------------------

    def _checkpoint(self, ctx: Context, human: pl.DataFrame) -> Path | None:
        """The checkpoint folder for these exact params, seed and input (stale ones are cleared)."""
        if ctx.checkpoint_dir is None:
            return None
        h = xxhash.xxh3_128()
        h.update(json.dumps(self.get_params(), sort_keys=True, default=repr).encode())
        h.update(str(ctx.seed).encode())
        h.update(human.hash_rows(seed=0).to_numpy().tobytes())
        key = h.hexdigest()
        root = Path(ctx.checkpoint_dir) / "generations"
        marker = root / "_key"
        if root.exists() and (not marker.exists() or marker.read_text() != key):
            import shutil

            shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
        marker.write_text(key)
        return root

    @staticmethod
    def _paths(ckpt: Path, schedule: str, t: int, replica: int = 0) -> tuple[Path, Path]:
        stem = f"seed{replica}-{schedule}" if replica else schedule
        return ckpt / f"{stem}-gen-{t:03d}.parquet", ckpt / f"{stem}-new-{t:03d}.parquet"

    def _save(self, ckpt, schedule, t, corpus, new, replica=0):
        if ckpt is None:
            return
        for path, frame in zip(self._paths(ckpt, schedule, t, replica), (corpus, new)):
            tmp = path.with_suffix(".tmp")
            frame.write_parquet(tmp)
            os.replace(tmp, path)

    def _load(self, ckpt, schedule, t, replica=0):
        if ckpt is None:
            return None
        corpus_path, new_path = self._paths(ckpt, schedule, t, replica)
        if not (corpus_path.exists() and new_path.exists()):
            return None
        return pl.read_parquet(corpus_path), pl.read_parquet(new_path)
