"""The built-in word n-gram language model of the `generations` stage, held in sorted NumPy arrays.

It fits and samples a few thousand documents in well under a second, so a 10-generation
model-collapse study runs on a laptop; `detokenize` turns sampled tokens back into prose.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import polars as pl

from pipeline.errors import InputDataError, ParamError, PipelineError
from stages.text import token_ids, token_table

_MIX = np.uint64(0x9E3779B97F4A7C15)
_HASH_START = np.uint64(0x243F6A8885A308D3)


def _mix(key: np.ndarray, token: np.ndarray) -> np.ndarray:
    """Extend a context hash by one token (64-bit polynomial hash; wraps on overflow by design)."""
    with np.errstate(over="ignore"):
        return key * _MIX + token.astype(np.uint64) + np.uint64(1)


def _lookup(keys: np.ndarray, probes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each probe in `keys` (distinct; 0 where absent) and whether it is there.

    A polars hash join: 2-3x less CPU than a binary search of millions of random probes (cache misses).
    """
    table = pl.DataFrame({"k": keys, "i": np.arange(len(keys), dtype=np.int64)})
    pos = pl.DataFrame({"k": probes}).join(table, on="k", how="left", maintain_order="left")["i"]
    return pos.fill_null(0).to_numpy(), pos.is_not_null().to_numpy()


def _within_document(doc: np.ndarray, key: np.ndarray) -> np.ndarray:
    """For each (document, key): how often that key occurs in that document (the counts a text adds to a table)."""
    frame = pl.DataFrame({"d": doc, "k": key})
    return frame.select(pl.len().over("d", "k")).to_series().to_numpy().astype(np.float64)


def _distinct_per_document(doc: np.ndarray, key: np.ndarray, where: np.ndarray, n_docs: int) -> np.ndarray:
    """Per document: how many distinct keys it has among the positions `where`."""
    out = np.zeros(n_docs)
    if where.any():
        per = pl.DataFrame({"d": doc[where], "k": key[where]}).unique().group_by("d").len()
        out[per["d"].to_numpy()] = per["len"].to_numpy()
    return out


def _distinct_per_context(doc: np.ndarray, ctx: np.ndarray, pair: np.ndarray, where: np.ndarray,
                          rows: np.ndarray) -> np.ndarray:
    """At each of `rows`: how many distinct pairs among the positions `where` share its document and context."""
    out = np.zeros(len(doc))
    if where.any():
        per = pl.DataFrame({"d": doc[where], "c": ctx[where], "p": pair[where]}).unique().group_by("d", "c").len()
        at = pl.DataFrame({"d": doc[rows], "c": ctx[rows]}).join(per, on=["d", "c"], how="left", maintain_order="left")
        out[rows] = at["len"].fill_null(0).to_numpy()
    return out


def detokenize(doc_index: np.ndarray, tokens: pl.Series, n_docs: int) -> list[str]:
    """Join tokens back into text, gluing punctuation to its neighbour as written prose does."""
    joined = (
        pl.DataFrame({"doc": doc_index.astype(np.int64), "token": tokens})
        .group_by("doc", maintain_order=True)
        .agg(pl.col("token").str.join(" "))
    )
    full = pl.DataFrame({"doc": np.arange(n_docs, dtype=np.int64)}).join(joined, on="doc", how="left")
    text = (
        full["token"].fill_null("")
        .str.replace_all(r" ([.,;:!?)\]}])", "$1")
        .str.replace_all(r"([(\[{]) ", "$1")
    )
    return text.to_list()


class NGramLM:
    """Interpolated Witten-Bell word n-gram model, every table a sorted NumPy array.

    P(w | h) = lambda_h * c(h, w) / c(h) + (1 - lambda_h) * P(w | h minus its oldest word), with
    lambda_h = c(h) / (c(h) + distinct continuations of h), down to an add-k unigram. Sampling draws
    from that mixture exactly: pick the order by the lambdas, then a continuation of the context by
    its (temperature- and top-p-adjusted) counts, all documents in one vectorised step per token.
    The vocabulary is refit on each corpus, so a word that a generation never produced cannot come
    back later: that is how the tails disappear in a collapse study.
    """

    def __init__(self, order: int = 3, smoothing: float = 0.01):
        # Checked for type too: a YAML "3" (a string) failed in a comparison with Python's own words.
        if isinstance(order, bool) or not isinstance(order, numbers.Integral) or order < 1:
            raise ParamError("order", f"must be an integer of at least 1 (1 = unigram), got {order!r}")
        if isinstance(smoothing, bool) or not isinstance(smoothing, numbers.Real) or not smoothing >= 0:
            raise ParamError("smoothing", f"must be a number >= 0 (add-k on the unigram level), got {smoothing!r}")
        self.order = order
        self.smoothing = smoothing
        self.vocab: pl.Series | None = None

    # -- fitting --------------------------------------------------------------------------------

    def _encode(self, texts: pl.Series | Sequence[str], tokens: pl.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of every document in the model's vocabulary (unknown words get `unk`)."""
        toks = (token_table(texts) if tokens is None else tokens).join(self._vocab_ids, on="token", how="left", maintain_order="left")
        return (toks["doc"].to_numpy().astype(np.int64),
                toks["id"].fill_null(self.unk).to_numpy().astype(np.int64))

    def _targets(self, doc: np.ndarray, ids: np.ndarray, n_docs: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Every predicted token (each word and one end-of-document per text) and its context hashes.

        Contexts are padded with begin-of-document marks, so the first words of a text have
        contexts of their own, as in the sampler.
        """
        lengths = np.bincount(doc, minlength=n_docs) + 1  # + end of document
        pad = self.order - 1
        starts = np.concatenate([[0], np.cumsum(lengths + pad)[:-1]])
        seq = np.full(int((lengths + pad).sum()), self.bos, dtype=np.int64)
        within = np.arange(len(ids)) - np.repeat(np.concatenate([[0], np.cumsum(lengths - 1)[:-1]]), lengths - 1)
        seq[starts[doc] + pad + within] = ids
        seq[starts + pad + lengths - 1] = self.eos
        target_pos = (np.repeat(starts + pad, lengths) + np.arange(lengths.sum())
                      - np.repeat(np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths))
        keys = []
        key = np.full(len(target_pos), _HASH_START, dtype=np.uint64)
        for k in range(1, self.order):
            key = _mix(key, seq[target_pos - k])
            keys.append(key)
        return seq[target_pos], keys

    def fit(self, texts: pl.Series | Sequence[str], tokens: pl.DataFrame | None = None) -> NGramLM:
        """Fit on `texts`; `tokens` is `token_table(texts)` when the caller has it already (not tokenised twice)."""
        toks = token_table(texts) if tokens is None else tokens
        if len(toks) == 0:
            raise InputDataError("cannot fit an n-gram model on a corpus without any words")
        ids, self.vocab = token_ids(toks["token"])
        self._vocab_ids = pl.DataFrame({"token": self.vocab, "id": np.arange(len(self.vocab), dtype=np.int64)})
        self.eos, self.bos, self.unk = len(self.vocab), len(self.vocab) + 1, len(self.vocab) + 2
        n_docs = len(texts)
        target, keys = self._targets(toks["doc"].to_numpy().astype(np.int64), ids.astype(np.int64), n_docs)
        self.unigram = np.bincount(target, minlength=self.eos + 1).astype(np.float64)
        self.tables = [self._context_table(key, target) for key in keys]
        # Kept (a reference, not a copy) to tell which scored texts the model was fit on: see `log_prob`.
        self._fit_texts = pl.Series("text", texts, dtype=pl.String).fill_null("")
        return self

    @staticmethod
    def _context_table(ctx: np.ndarray, nxt: np.ndarray) -> dict[str, np.ndarray]:
        """Counts of distinct (context, next) pairs, grouped by context.

        Two one-key uint64 sorts (pairs by hash, then by context) instead of a multi-key sort: the
        pair hashes come out sorted for lookups, and contexts come out grouped for sampling. Both
        are polars arg-sorts (about half NumPy's CPU time on uint64, and multi-threaded); the
        second keeps the pair order within a context, as NumPy's stable sort did.
        """
        pair = _mix(ctx, nxt)
        order = pl.Series(pair).arg_sort().to_numpy()
        pair = pair[order]
        first = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
        counts = np.diff(np.append(first, len(pair))).astype(np.float64)
        p_ctx, p_nxt = ctx[order[first]], nxt[order[first]]
        by_ctx = pl.DataFrame({"c": p_ctx}).select(pl.arg_sort_by("c", maintain_order=True)).to_series().to_numpy()
        p_ctx = p_ctx[by_ctx]
        starts = np.nonzero(np.r_[True, p_ctx[1:] != p_ctx[:-1]])[0]
        ends = np.append(starts[1:], len(p_ctx))
        grouped_counts = counts[by_ctx]
        return {
            "ctx": p_ctx[starts], "start": starts, "end": ends,
            "total": np.add.reduceat(grouped_counts, starts), "types": (ends - starts).astype(np.float64),
            "next": p_nxt[by_ctx], "count": grouped_counts,
            "pair_key": pair[first], "pair_count": counts,
        }

    @staticmethod
    def _by_descending_count(table: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The same table with each context's continuations ordered by count, most frequent first.

        Only top-p needs this order (it keeps a prefix of each group), so it is made on demand.
        """
        group = np.repeat(np.arange(len(table["start"])), table["end"] - table["start"])
        perm = np.lexsort((table["next"], -table["count"], group))
        return {**table, "next": table["next"][perm], "count": table["count"][perm]}

    # -- scoring --------------------------------------------------------------------------------

    def _unigram_prob(self) -> np.ndarray:
        v = self.eos + 1
        return (self.unigram + self.smoothing) / (self.unigram.sum() + self.smoothing * v)

    def log_prob(self, texts: pl.Series | Sequence[str], tokens: pl.DataFrame | None = None,
                 leave_one_out: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Natural-log probability of every predicted token, and the document it belongs to.

        `tokens`: `token_table(texts)`, when the caller has it already. `leave_one_out`: a text the model
        was fit on is scored by the model fit without it (one copy of it, if the fit corpus repeats it):
        its own counts are taken out of every table before it is scored, which is exactly that refit
        (scored in-sample, the model had memorised it). A text that was the whole fit corpus leaves no
        model to score it: NaN.
        """
        n_docs = len(texts)
        doc, ids = self._encode(texts, tokens)
        target, keys = self._targets(doc, ids, n_docs)
        lengths = np.bincount(doc, minlength=n_docs) + 1
        token_doc = np.repeat(np.arange(n_docs), lengths)
        own = self._own_tokens(texts, token_doc) if leave_one_out else np.zeros(len(target), bool)
        v = self.eos + 1
        counts, total, vocab = np.where(target < v, self.unigram[np.minimum(target, v - 1)], 0.0), \
            np.full(len(target), self.unigram.sum()), np.full(len(target), float(v))
        if own.any():
            counts[own] -= _within_document(token_doc[own], target[own])
            total[own] -= lengths[token_doc[own]]
            # A word only the left-out text used leaves the vocabulary (the refit would not know it).
            gone = (counts == 0) & own & (target != self.eos)
            vocab -= _distinct_per_document(token_doc, target, gone, n_docs)[token_doc]
        floor = self.smoothing / (total + self.smoothing * vocab) if self.smoothing else np.full(len(target), 1e-12)
        prob = np.where(counts > 0, (counts + self.smoothing) / (total + self.smoothing * vocab), floor)
        for key, table in zip(keys, self.tables):
            pos_c, found = _lookup(table["ctx"], key)
            ctx_total, types = table["total"][pos_c], table["types"][pos_c]
            pair = _mix(key, target)
            ppos, pair_found = _lookup(table["pair_key"], pair)
            count = np.where(pair_found, table["pair_count"][ppos], 0.0)
            if own.any():
                ctx_total, types, count = ctx_total.copy(), types.copy(), count.copy()
                mine = own & found
                pair_own = _within_document(token_doc[mine], pair[mine])
                ctx_total[mine] -= _within_document(token_doc[mine], key[mine])
                count[mine] -= pair_own
                # Continuations of a context that only the left-out text used are no longer continuations.
                gone = np.zeros(len(target), bool)
                gone[np.flatnonzero(mine)[pair_own == table["pair_count"][ppos[mine]]]] = True
                types -= _distinct_per_context(token_doc, key, pair, gone, mine)
                found = found & (ctx_total > 0)
            with np.errstate(invalid="ignore", divide="ignore"):
                lam = ctx_total / (ctx_total + types)
                prob = np.where(found, lam * count / ctx_total + (1 - lam) * prob, prob)
        prob = np.where(own & (total == 0), np.nan, prob)  # the left-out text was the whole corpus
        return np.log(np.maximum(prob, 1e-300)), token_doc

    def _own_tokens(self, texts: pl.Series | Sequence[str], token_doc: np.ndarray) -> np.ndarray:
        """Per predicted token: whether its document is one the model was fit on (scored leave-one-out)."""
        scored = pl.DataFrame({"text": pl.Series(texts, dtype=pl.String).fill_null("")})
        fit = pl.DataFrame({"text": self._fit_texts.unique(), "fit": True})
        return scored.join(fit, on="text", how="left", maintain_order="left")["fit"].is_not_null().to_numpy()[token_doc]

    def perplexity(self, texts: pl.Series | Sequence[str], tokens: pl.DataFrame | None = None,
                   leave_one_out: bool = False) -> np.ndarray:
        """Per-document perplexity (end-of-document included, so an empty text is still scored); see `log_prob`
        for `leave_one_out`."""
        logp, doc = self.log_prob(texts, tokens, leave_one_out)
        n = np.bincount(doc, minlength=len(texts))
        return np.exp(-np.bincount(doc, weights=logp, minlength=len(texts)) / np.maximum(n, 1))

    # -- sampling -------------------------------------------------------------------------------

    @staticmethod
    def _biased_cumsum(count: np.ndarray, start: np.ndarray, end: np.ndarray,
                       temperature: float, top_p: float) -> np.ndarray:
        """Cumulative sampling weights after temperature and per-context top-p truncation.

        Below temperature 1 each context's counts are first divided by its largest: count ** (1 / T) overflowed
        to inf from T = 0.01 on (a count of 1,203), and every later context lost its mass (empty documents)."""
        if temperature != 1.0:
            w = (count / np.repeat(np.maximum.reduceat(count, start), end - start)) ** (1.0 / temperature) \
                if len(count) else count.copy()
        else:
            w = count.copy()
        if top_p < 1.0 and len(w):
            cw = np.cumsum(w)
            lengths = end - start
            group_start = np.repeat(start, lengths)
            base = cw[group_start] - w[group_start]
            before = cw - w - base
            group_total = np.repeat(cw[end - 1] - cw[start] + w[start], lengths)
            w = np.where(before < top_p * group_total, w, 0.0)
        return np.cumsum(w)

    def _unigram_cumsum(self, temperature: float, top_p: float) -> np.ndarray:
        """Cumulative sampling weights of the unigram level, by token id, after temperature and top-p, as
        `_biased_cumsum` treats each context: top-p left this level whole, so every backed-off draw could still
        pick any word (at top_p 0.5 a trigram of the Python reference sampled 1,960 distinct words, 1,549 now)."""
        # Scaled by the largest count before the power, as `_biased_cumsum` does, so no weight overflows.
        w = self.unigram if temperature == 1.0 else (self.unigram / self.unigram.max()) ** (1.0 / temperature)
        if top_p < 1.0:
            order = np.argsort(-w, kind="stable")  # most frequent first, ties by id (as `_by_descending_count`)
            before = np.cumsum(w[order]) - w[order]
            kept = np.zeros(w.size, bool)
            kept[order] = before < top_p * w.sum()
            w = np.where(kept, w, 0.0)
        return np.cumsum(w)

    @staticmethod
    def _draw(cum: np.ndarray, lo: np.ndarray, hi: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Index in [lo, hi) drawn in proportion to the weights whose running sum is `cum`."""
        below = np.where(lo > 0, cum[np.maximum(lo - 1, 0)], 0.0)
        target = below + u * (cum[hi - 1] - below)
        return np.clip(np.searchsorted(cum, target, side="right"), lo, hi - 1)

    def sample(
        self,
        n: int,
        rng: np.random.Generator,
        *,
        max_tokens: int = 128,
        temperature: float = 1.0,
        top_p: float = 1.0,
        prompts: Sequence[str] | None = None,
        prompt_tokens: int | None = None,
    ) -> list[str]:
        """`n` documents, or continuations of the first `prompt_tokens` words of each prompt."""
        if self.vocab is None:
            raise PipelineError("the n-gram model must be fit before it can sample")
        width = max(self.order - 1, 1)
        history = np.full((n, width), self.bos, dtype=np.int64)
        if prompts is not None:
            doc, ids = self._encode(list(prompts))
            keep = np.arange(len(doc)) - np.searchsorted(doc, doc) < (prompt_tokens or 1 << 30)
            doc, ids = doc[keep], ids[keep]
            # The last `width` words of each prompt become the sampler's starting context.
            ends = np.searchsorted(doc, np.arange(n), side="right")
            for j in range(1, width + 1):
                pos = ends - j
                ok = (pos >= 0) & (pos < len(doc))
                ok[ok] &= doc[pos[ok]] == np.arange(n)[ok]
                history[ok, width - j] = ids[pos[ok]]
        uni_p = self._unigram_prob()
        uni_cum = self._unigram_cumsum(temperature, top_p)
        # Below top_p 1 the add-k share (every word alike, the far tail) is dropped too, as the nucleus would.
        lam_uni = 1.0 if top_p < 1.0 else self.unigram.sum() / (self.unigram.sum() + self.smoothing * len(uni_p))
        tables = [self._by_descending_count(t) for t in self.tables] if top_p < 1.0 else self.tables
        cums = [self._biased_cumsum(t["count"], t["start"], t["end"], temperature, top_p) for t in tables]
        out = np.full((n, max_tokens), -1, dtype=np.int64)
        alive = np.ones(n, bool)
        for step in range(max_tokens):
            rows = np.nonzero(alive)[0]
            if len(rows) == 0:
                break
            chosen = self._next_tokens(tables, history[rows], rng, cums, uni_cum, lam_uni, len(uni_p))
            if step == 0 and prompts is None:
                # An empty document is a waste of a sample: redraw the rare end-of-document at step 0.
                for _ in range(8):
                    again = chosen == self.eos
                    if not again.any():
                        break
                    chosen[again] = self._next_tokens(tables, history[rows[again]], rng, cums, uni_cum,
                                                      lam_uni, len(uni_p))
            out[rows, step] = chosen
            alive[rows[chosen == self.eos]] = False
            if self.order > 1:
                history[rows] = np.concatenate([history[rows, 1:], chosen[:, None]], axis=1)
        mask = (out >= 0) & (out < self.eos)
        # Tokens after an end-of-document are never written (the row stops), so `mask` is the text.
        doc_index = np.nonzero(mask)[0]
        return detokenize(doc_index, self.vocab.gather(out[mask]), n)

    def _next_tokens(self, tables: list[dict], history: np.ndarray, rng: np.random.Generator, cums: list[np.ndarray],
                     uni_cum: np.ndarray, lam_uni: float, v: int) -> np.ndarray:
        m = len(history)
        chosen = np.full(m, -1, dtype=np.int64)
        pending = np.ones(m, bool)
        keys = []
        key = np.full(m, _HASH_START, dtype=np.uint64)
        for k in range(1, self.order):
            key = _mix(key, history[:, -k])
            keys.append(key)
        for k in range(self.order - 1, 0, -1):
            table, cum, key = tables[k - 1], cums[k - 1], keys[k - 1]
            pos = np.minimum(np.searchsorted(table["ctx"], key), len(table["ctx"]) - 1)
            found = table["ctx"][pos] == key
            lam = np.where(found, table["total"][pos] / (table["total"][pos] + table["types"][pos]), 0.0)
            u = rng.random(m)
            lo, hi = table["start"][pos], table["end"][pos]
            has_mass = cum[hi - 1] > np.where(lo > 0, cum[np.maximum(lo - 1, 0)], 0.0)
            take = pending & found & (u < lam) & has_mass
            if take.any():
                idx = self._draw(cum, lo[take], hi[take], rng.random(int(take.sum())))
                chosen[take] = table["next"][idx]
            pending &= ~take
        if pending.any():
            rows = np.nonzero(pending)[0]
            from_counts = rng.random(len(rows)) < lam_uni
            picks = np.searchsorted(uni_cum, rng.random(len(rows)) * uni_cum[-1], side="right")
            uniform = rng.integers(0, v, len(rows))
            chosen[rows] = np.where(from_counts, np.minimum(picks, v - 1), uniform)
        return chosen

