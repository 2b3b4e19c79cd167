"""Corpus metrics for collapse studies, and the report that draws them across generations.

`corpus_metrics` measures any corpus, per group (by default per `schedule` and `generation`, the
columns the `generations` stage writes, and `seed` when it runs replicas): size, vocabulary, type-token ratio, distinct-n, unigram
entropy, tail mass and Jensen-Shannon divergence against a reference (generation 0), self-BLEU on a
sample, embedding diversity (Vendi score and mean pairwise cosine distance) on a sample, and each
document's perplexity under an n-gram model of the reference (Shumailov et al.'s histograms).
Everything but the embeddings is token-id arithmetic in polars and NumPy, so a corpus of millions
of tokens is measured in seconds.

`collapse_report` (stages/collapse_report.py, re-exported here) turns that table into PNG curves,
perplexity histograms and a self-contained report.html.
"""

from stages.collapse_report import DEFAULT_PLOT_METRICS, CollapseReport
from stages.metrics.measures import mean_pairwise_cosine_distance, ngram_keys, self_bleu, vendi_score
from stages.metrics.stage import AUTO_GROUPS, METRIC_COLUMNS, CorpusMetrics

__all__ = ["AUTO_GROUPS", "DEFAULT_PLOT_METRICS", "METRIC_COLUMNS", "CollapseReport", "CorpusMetrics",
           "mean_pairwise_cosine_distance", "ngram_keys", "self_bleu", "vendi_score"]
