"""The `generations` stage (stages/synthetic/generations.py): schedules, provenance, resume, refusals, declared columns."""

from __future__ import annotations

import polars as pl
import pytest
from conftest import check_side_outputs_declared
from synthetic_corpus import origin_counts, pydoc_paragraphs

import pipeline
from pipeline.errors import InputDataError, ParamError
from pipeline.runner import StepFailed, read_manifest
from stages.synthetic import (
    PROVENANCE_COLUMNS,
    Generations,
    NGramGenerator,
)
from stages.text import token_table as tokenize


@pytest.fixture(scope="module")
def corpus() -> pl.DataFrame:
    return pydoc_paragraphs(120)


def test_schedule_sizes_and_origin_shares_are_exact(corpus):
    n0, real_fraction, t_max = 30, 0.2, 3
    stage = Generations.from_params({
        "generations": t_max, "corpus_size": n0, "real_fraction": real_fraction, "max_tokens": 30,
        "schedules": ["replace", "keep_real", "accumulate", "accumulate_subsample", "fresh_real"],
    })
    result = stage.execute(corpus, seed=3)
    table = result.table
    n_real = round(real_fraction * n0)
    for schedule in ("replace", "keep_real", "accumulate", "accumulate_subsample", "fresh_real"):
        assert origin_counts(table, schedule, 0) == {"human": n0}
    for t in range(1, t_max + 1):
        assert origin_counts(table, "replace", t) == {"synthetic": n0}
        assert origin_counts(table, "keep_real", t) == {"human": n_real, "synthetic": n0 - n_real}
        assert origin_counts(table, "fresh_real", t) == {"human": n_real, "synthetic": n0 - n_real}
        assert origin_counts(table, "accumulate", t) == {"human": n0, "synthetic": n0 * t}
        sub = origin_counts(table, "accumulate_subsample", t)
        assert sum(sub.values()) == n0
    stats = {(s["schedule"], s["generation"]): s for s in result.stats["generations"]}
    assert stats[("keep_real", 2)]["synthetic_share"] == pytest.approx((n0 - n_real) / n0)
    assert stats[("accumulate", 3)]["rows"] == n0 * 4


def test_real_rows_come_from_the_right_pool(corpus):
    stage = Generations(generations=3, corpus_size=30, real_fraction=0.2, max_tokens=20,
                        schedules=["keep_real", "fresh_real", "accumulate_subsample"])
    table = stage.apply(corpus, seed=5)
    gen0 = set(table.filter((pl.col("generation") == 0) & (pl.col("schedule") == "keep_real"))["doc_id"])
    human = table.filter((pl.col("origin") == "human") & (pl.col("generation") > 0))
    keep = human.filter(pl.col("schedule") == "keep_real")
    assert set(keep["doc_id"]) <= gen0
    fresh = human.filter(pl.col("schedule") == "fresh_real")
    # Fresh real documents are new: outside generation 0 and never reused by a later generation.
    assert not set(fresh["doc_id"]) & gen0
    assert fresh["doc_id"].n_unique() == len(fresh) == 3 * 6
    # accumulate_subsample draws from real + every synthetic set so far, without repeats.
    sub = table.filter(pl.col("schedule") == "accumulate_subsample")
    assert sub.group_by("generation").agg(pl.col("doc_id").n_unique() == pl.len())["doc_id"].all()
    assert sub.filter(pl.col("origin") == "synthetic")["parent_generation"].max() <= 2


def test_every_row_carries_provenance(corpus):
    stage = Generations(generations=2, schedules=["replace", "accumulate"], corpus_size=25, max_tokens=25)
    result = stage.execute(corpus, seed=1)
    check_side_outputs_declared(stage, result)
    table = result.table
    assert table.columns == ["schedule", *PROVENANCE_COLUMNS, "text"]
    assert table.schema["generation"] == pl.Int32 and table.schema["parent_generation"] == pl.Int32
    human = table.filter(pl.col("origin") == "human")
    assert human["parent_generation"].null_count() == len(human)
    assert human["generator"].null_count() == len(human)
    assert set(human["doc_id"]) <= set(corpus["id"])
    synthetic = table.filter(pl.col("origin") == "synthetic")
    assert set(synthetic["generator"]) == {"ngram-3"}
    assert synthetic["prompt_id"].null_count() == len(synthetic)  # unprompted sampling
    replace = synthetic.filter(pl.col("schedule") == "replace")
    assert (replace["parent_generation"] == replace["generation"] - 1).all()
    # Under accumulate, generation 2 carries generation 1's samples along, labelled with their parent.
    acc2 = synthetic.filter((pl.col("schedule") == "accumulate") & (pl.col("generation") == 2))
    assert sorted(acc2["parent_generation"].unique()) == [0, 1]
    assert table.group_by("schedule", "generation").agg(pl.col("doc_id").n_unique() == pl.len())["doc_id"].all()
    # One side output per corpus, and `samples`: what each generation's generator produced.
    assert {"replace-gen-000", "replace-gen-002", "accumulate-gen-002", "samples"} <= set(result.side_outputs)
    assert result.side_outputs["accumulate-gen-002"].height == 25 * 3
    samples = result.side_outputs["samples"]
    assert samples.group_by("schedule", "generation").len()["len"].to_list() == [25] * 6
    # Generated text is words of the corpus it was fit on, re-tokenised exactly.
    vocab = set(tokenize(corpus["text"])["token"])
    assert set(tokenize(synthetic["text"])["token"]) <= vocab


def test_prompted_continuations_name_their_prompt(corpus):
    table = Generations(generations=1, corpus_size=20, prompt_tokens=6, max_tokens=12).apply(corpus, seed=2)
    synthetic = table.filter(pl.col("origin") == "synthetic")
    gen0 = table.filter(pl.col("generation") == 0)
    assert synthetic["prompt_id"].null_count() == 0
    assert set(synthetic["prompt_id"]) <= set(gen0["doc_id"])
    lengths = tokenize(synthetic["text"]).group_by("doc").len()["len"]
    assert lengths.max() <= 12


def test_single_schedule_side_outputs_are_plain_generation_names(corpus):
    result = Generations(generations=2, corpus_size=20, max_tokens=20).execute(corpus, seed=0)
    assert sorted(result.side_outputs) == ["gen-000", "gen-001", "gen-002", "samples", "settings"]
    assert result.side_outputs["gen-001"].equals(
        result.table.filter(pl.col("generation") == 1).drop("schedule"))


def test_same_seed_same_study_other_seed_other_samples(corpus):
    stage = Generations(generations=2, schedules=["replace", "keep_real"], corpus_size=30, max_tokens=30)
    first, second = stage.apply(corpus, seed=7), stage.apply(corpus, seed=7)
    assert first.equals(second)
    other = stage.apply(corpus, seed=8)
    synth = pl.col("origin") == "synthetic"
    assert first.filter(synth)["text"].to_list() != other.filter(synth)["text"].to_list()


FAIL_AT: dict[str, int | None] = {"generation": None}


CALLS: list[tuple[str, int]] = []


def failing_callback(generation, schedule, corpus, generator):
    """Stands in for a user's training code that crashes in the middle of a study."""
    CALLS.append((schedule, generation))
    if FAIL_AT["generation"] == generation:
        raise RuntimeError(f"simulated crash at generation {generation}")
    return None


def test_resume_in_the_middle_of_a_study_recomputes_only_what_is_missing(corpus, tmp_path, monkeypatch):
    fits: list[int] = []
    original_fit = NGramGenerator.fit

    def counting_fit(self, texts, *, generation, schedule):
        fits.append(generation)
        return original_fit(self, texts, generation=generation, schedule=schedule)

    monkeypatch.setattr(NGramGenerator, "fit", counting_fit)
    corpus.write_parquet(tmp_path / "corpus.parquet")
    config = {
        "name": "resume", "seed": 4,
        "steps": [
            {"id": "docs", "stage": "read_parquet", "params": {"path": str(tmp_path / "corpus.parquet"),
                                                               "id_column": "id"}},
            {"id": "gens", "stage": "generations", "inputs": "docs",
             "params": {"generations": 5, "corpus_size": 30, "max_tokens": 25,
                        "callback": "test_generations:failing_callback"}},
        ],
    }
    CALLS.clear()
    FAIL_AT["generation"] = 3
    with pytest.raises(StepFailed, match="simulated crash at generation 3"):
        pipeline.run_pipeline(config, workdir=tmp_path / "runs")
    assert fits == [1, 2]
    fits.clear()
    FAIL_AT["generation"] = None
    pipeline.run_pipeline(config, workdir=tmp_path / "runs")
    assert fits == [3, 4, 5]  # generations 1 and 2 came from the checkpoint
    resumed = pl.read_parquet(tmp_path / "runs/resume/gens/part-*.parquet")
    manifest_stats = read_manifest(tmp_path / "runs/resume/gens")["stats"]
    assert manifest_stats["resumed_generations"] == 2
    # The resumed study is the study an uninterrupted run would have produced.
    fits.clear()
    fresh = Generations(generations=5, corpus_size=30, max_tokens=25, callback="test_generations:failing_callback",
                        id_column="id").apply(corpus, seed=4)
    assert fits == [1, 2, 3, 4, 5]
    assert resumed.equals(fresh)
    # Generation 3 of the run is addressable as its own table.
    gen3 = pipeline.load(tmp_path / "runs/resume/gens/gen-003").collect()
    assert gen3.height == 30 and set(gen3["generation"]) == {3}


def test_library_resume_reuses_checkpoints_in_the_same_workdir(corpus, tmp_path):
    stage = Generations(generations=3, corpus_size=20, max_tokens=20, callback="test_generations:failing_callback")
    FAIL_AT["generation"] = 2
    CALLS.clear()
    with pytest.raises(RuntimeError):
        stage.execute(corpus, seed=1, workdir=tmp_path / "w")
    FAIL_AT["generation"] = None
    result = stage.execute(corpus, seed=1, workdir=tmp_path / "w")
    assert CALLS == [("replace", 1), ("replace", 2), ("replace", 2), ("replace", 3)]
    assert result.stats["resumed_generations"] == 1


@pytest.mark.parametrize("params, param", [
    ({"generations": 0}, "generations"),
    ({"generations": -2}, "generations"),
    ({"real_fraction": 1.5}, "real_fraction"),
    ({"real_fraction": -0.1}, "real_fraction"),
    ({"schedules": ["replace", "recycle"]}, "schedules"),
    ({"top_p": 0.0}, "top_p"),
    ({"temperature": 0}, "temperature"),
    ({"corpus_size": 0}, "corpus_size"),
    ({"generator": "hf", "generator_params": {"model_path": "/nonexistent/model"}}, "generator_params"),
    ({"generator": "external", "generator_params": {"path": "/nonexistent/synthetic"}}, "generator_params"),
    ({"generator_params": {"order": 3, "beam": 4}}, "generator_params"),
    ({"generator_params": {"order": 0}}, "order"),
    ({"generator_params": {"order": "3"}}, "order"),  # a YAML string: it failed in a comparison of str and int
    ({"generator_params": {"smoothing": "x"}}, "smoothing"),
    ({"callback": "no_such_module_here:train"}, "callback"),
    ({"callback": "not an import path"}, "callback"),
    ({"generations": 10**9}, "generations"),  # a billion side-output folders: refused before any is listed
    ({"generations": 2000, "seeds": 3, "schedules": ["replace", "accumulate"]}, "generations"),
    ({"generations": 1, "seeds": 6000}, "seeds"),
])
def test_bad_params_name_the_parameter(params, param):
    with pytest.raises(ParamError) as err:
        Generations.from_params(params)
    assert err.value.param == param


def test_empty_and_unusable_corpora_are_refused(corpus):
    with pytest.raises(InputDataError, match="has no rows"):
        Generations(generations=1).apply(corpus.head(0))
    blank = pl.DataFrame({"id": ["a", "b"], "text": ["", "   "]})
    for texts in (blank, blank.with_columns(text=pl.lit(None, pl.String))):
        # Named neither the column nor the file ("cannot fit an n-gram model on a corpus without any words").
        with pytest.raises(InputDataError, match="column 'text' holds no words") as err:
            Generations(generations=1).apply(texts)
        assert err.value.param == "text_column"
    with pytest.raises(InputDataError, match="corpus_size is 500"):
        Generations(generations=1, corpus_size=500).apply(corpus)
    with pytest.raises(InputDataError, match="fresh_real needs"):
        Generations(generations=5, schedules="fresh_real", corpus_size=100, real_fraction=0.1).apply(corpus)
    with pytest.raises(InputDataError, match="no column 'body'"):
        Generations(generations=1, text_column="body").apply(corpus)
    duplicated = pl.concat([corpus.head(3), corpus.head(3)])
    with pytest.raises(InputDataError, match="duplicate ids"):
        Generations(generations=1).apply(duplicated)


def test_validate_checks_the_columns_of_every_generation_and_side_table(tmp_path):
    from cli_failures import refused_by_validate
    from conftest import run_cli, write_config

    flow = """
name: gens
seed: 1
steps:
  - {id: rows, stage: test_random_rows, params: {n: 30}}
  - {id: gens, stage: generations, inputs: rows, params: {generations: 2, schedules: [replace, keep_real]}}
  - {id: gen2, stage: select, inputs: "gens:keep_real-gen-002", params: {columns: [doc_id, origin, text]}}
"""
    # The side table of generation 2 has the columns selected: the flow validates.
    out = run_cli("validate", str(write_config(tmp_path / "good.yaml", flow)))
    assert out.returncode == 0, out.stderr
    bad = flow + "  - {id: labels, stage: select, inputs: gens, params: {columns: [schedule, label]}}\n"
    message = refused_by_validate(tmp_path / "bad.yaml", bad)
    assert "step 'labels'" in message and "'label'" in message
    assert ("available columns are: ['schedule', 'doc_id', 'generation', 'origin', 'parent_generation', "
            "'generator', 'prompt_id', 'text']") in message
