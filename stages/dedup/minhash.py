"""`dedup_minhash`: near-duplicates by MinHash over word or character shingles, LSH banding and union-find.

Map (per partition): each text's shingle hashes (text core) -> a `num_perm` MinHash signature
(rensa) -> one key per LSH band, and a digest of the shingle sequence; memory keeps those (8 bytes
x bands + 8 a row), not the texts. The band keys are then shuffled by band (`stages.dedup.shuffle`,
the partitioned contract's shuffle: on Ray, from the map tasks' workers straight to one reduce task
per band), and each band's buckets give candidate pairs (see `stages.dedup.lsh` for the bands x
rows choice and its S-curve); the digests go to one more reducer, whose groups are the exact
copies. A pair that several bands find comes out of several reducers, so the reducers' pairs go on to a
second round by pair, whose reducers make them distinct. Finish: the driver gets only distinct pairs,
never a per-row array.
Candidates are verified (true Jaccard of the shingle sets, re-read only for the candidate rows that
are not copies; or the signature estimate, recomputed for the candidate rows; or not at all), joined
by union-find, and one row per cluster is kept. On Ray, pairs of data rows are compared where their
sets or signatures meet on the workers (`Context.join_rows`); otherwise the sets are read by
`Context.gather_rows` where the data's partitions are and spilled to a scratch file, so memory stays
at the pairs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl

from pipeline.arrays import unique_sorted
from pipeline.errors import ParamError
from pipeline.partitioned import Partition
from pipeline.stage import Context
from stages.dedup.base import SCAN_BATCH_ROWS, Broadcast, Scan, TextDedupStage, selected_rows
from stages.dedup.lsh import Banding, band_keys, choose_bands, signature_similarity, unique_pairs
from stages.dedup.shingles import MAX_NGRAM, shingle_hashes, shingle_sets
from stages.dedup.shuffle import band_parts, merge_sorted_pairs, split_by_row
from stages.dedup.signatures import (
    ALGORITHM_VERSION,
    SpilledSets,
    jaccard_pairs,
    minhash_signatures,
    sequence_digests,
)

VERIFY_MODES = ("jaccard", "signature", "none")
# A band's reducer holds at most about this many rows' keys: past it, each band's keys are cut into key ranges
# (`key_ranges`), 16 bytes a row in a range's reducer. 2^25 rows: 0.5 GB a reducer; a 1 TB corpus of 2 KB
# documents (5e8 rows) gets 16 ranges per band.
REDUCER_ROWS = 1 << 25


@dataclass
class MinhashState:
    """What verification and the similarity column need, for candidate rows only (never every row)."""

    # verify='signature' or 'none': the signatures of the candidate rows compared here (sorted rows), recomputed
    # where they are (on Ray only rows paired with a reference row: pairs of data rows are compared on the workers).
    signature_rows: np.ndarray | None = None
    signatures: np.ndarray | None = None
    # verify='jaccard': exact copies (equal shingle sequences: Jaccard 1, never re-read) as star members
    # (sorted) and the lowest row of their copy group.
    copy_rows: np.ndarray | None = None
    copy_leaders: np.ndarray | None = None
    # verify='jaccard': the spilled shingle sets of the rows that needed them: rows (sorted) and set index.
    sets: SpilledSets | None = None
    set_rows: np.ndarray | None = None
    set_ids: np.ndarray | None = None
    # Similarities already computed: pair code (low row * n + high row), sorted, and the value.
    known_codes: np.ndarray | None = None
    known_values: np.ndarray | None = None

    def copy_root(self, rows: np.ndarray) -> np.ndarray:
        """Each row's copy group, named by its lowest row (a row with no copy is its own)."""
        where, found = sorted_lookup(self.copy_rows, rows)
        return np.where(found, self.copy_leaders[where], rows) if self.copy_rows.size else rows

    def has_set(self, rows: np.ndarray) -> np.ndarray:
        return sorted_lookup(self.set_rows, rows)[1]

    def set_index(self, rows: np.ndarray) -> np.ndarray:
        """Set indices of rows that have sets (`has_set`)."""
        return self.set_ids[np.searchsorted(self.set_rows, rows)]


def sorted_lookup(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position of each value in the sorted `keys`, clipped to a valid index; whether it is there)."""
    if not keys.size:
        return np.zeros(values.shape, np.int64), np.zeros(values.shape, bool)
    where = np.minimum(np.searchsorted(keys, values), keys.size - 1)
    return where, keys[where] == values


class DedupMinhash(TextDedupStage):
    """Remove near-duplicate rows (MinHash LSH over shingles), within data or against a `reference`.

    Two rows are duplicates when their shingle sets' Jaccard similarity is at least `threshold`
    (checked as `verify` says); duplicates join transitively into clusters and each cluster keeps
    one row. Side outputs `removed` and `clusters` as in `dedup_exact`.

    Parameters:
        text_column: column holding the text
        id_column: column identifying rows (named in the side outputs; used by keep='lowest_id')
        ngram: shingle size in units (datatrove and Lee et al. use 5 words)
        unit: shingle unit: 'word' or 'char'
        normalization: text core normalisation before character shingling: 'none', 'whitespace' or 'full' (word shingles always use the text core's normalised words)
        num_perm: MinHash values per signature
        threshold: Jaccard similarity at or above which two rows are duplicates, in (0, 1]
        bands: LSH bands; with rows, bands x rows must equal num_perm (unset: derived from threshold)
        rows: MinHash values per band (unset: derived from threshold)
        verify: candidate check: 'jaccard' (true shingle Jaccard), 'signature' (MinHash estimate) or 'none'
        keep: which row of a cluster stays: 'first' (input order), 'longest', 'lowest_id' or 'column'
        keep_column: with keep='column', the number, boolean, date, time or Enum whose best value wins (e.g. a quality score; nulls lose, NaN is refused)
        keep_descending: with keep='column', True keeps the highest value, False the lowest
        within_data: with a reference, also remove duplicates within data (False: only rows duplicating the reference)
    """

    name = "dedup_minhash"
    reason = "near duplicate"
    # 4: removed.duplicate_of and clusters.id keep the id column's type (were strings; base.DedupStage has 3);
    # 3: word shingles keep combining marks in their words (the text core's words)
    version = "4"

    def __init__(
        self,
        text_column: str = "text",
        id_column: str = "id",
        ngram: int = 5,
        unit: Literal["word", "char"] = "word",
        normalization: Literal["none", "whitespace", "full"] = "full",
        num_perm: int = 128,
        threshold: float = 0.8,
        bands: int | None = None,
        rows: int | None = None,
        verify: Literal["jaccard", "signature", "none"] = "jaccard",
        keep: Literal["first", "longest", "lowest_id", "column"] = "first",
        keep_column: str | None = None,
        keep_descending: bool = True,
        within_data: bool = True,
    ):
        self.text_column = text_column
        self.id_column = id_column
        self.ngram = ngram
        self.unit = unit
        self.normalization = normalization
        self.num_perm = num_perm
        self.threshold = threshold
        self.bands = bands
        self.rows = rows
        self.verify = verify
        self.keep = keep
        self.keep_column = keep_column
        self.keep_descending = keep_descending
        self.within_data = within_data

    def validate(self) -> None:
        self.validate_keep()
        check_minhash_params(self.ngram, self.num_perm, self.threshold, self.bands, self.rows)
        if self.verify not in VERIFY_MODES:
            raise ParamError("verify", f"must be one of {', '.join(VERIFY_MODES)}, got {self.verify!r}")

    def banding(self) -> Banding:
        return resolve_banding(self.num_perm, self.threshold, self.bands, self.rows, self.verify != "none")

    def fingerprint_extra(self) -> Any:
        return {"minhash_algorithm": ALGORITHM_VERSION}

    def batch_features(self, batch: pl.DataFrame, label: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(band keys, shingle-sequence digests with verify='jaccard') of a batch: the map side of the shuffle.

        A digest settles exact copies (Jaccard 1) without re-reading them; the other modes recompute the
        few candidate rows' signatures instead of keeping every row's.
        """
        texts = self.texts(batch, label)
        hashes, offsets = shingle_hashes(texts, self.unit, self.ngram, self.normalization)
        signatures = minhash_signatures(hashes, offsets, self.num_perm)
        banding = self.banding()
        keys = band_keys(signatures, banding.bands, banding.rows)
        return keys, (sequence_digests(hashes, offsets) if self.verify == "jaccard" else None)

    # -- the LSH shuffle: band keys (and digests) leave the scan in the map; one reducer per bucket ------

    def key_ranges(self, rows: int) -> int:
        """Key ranges per band (a power of two): one while a band's keys fit one reducer (`REDUCER_ROWS`), else
        enough that each range's do. Band keys and digests are uniform hashes: ranges hold about equal shares."""
        return 1 << max(0, math.ceil(math.log2(max(rows, 1) / REDUCER_ROWS)))

    def shuffle_buckets(self, broadcast: Broadcast) -> int:
        """A reducer per band and key range; with verify='jaccard' one more column, the digests, groups the rows
        of equal shingle sequences (copies)."""
        return (self.banding().bands + (self.verify == "jaccard")) * broadcast.key_ranges

    def split(self, scan: Scan, broadcast: Broadcast) -> tuple[Scan, list]:
        """(the scan with no features left, each reducer's part: `band_parts` of the band keys [+ the digests])."""
        features, scan.features = scan.features, []
        keys = np.concatenate([k for k, _ in features]) if features else np.empty((0, self.banding().bands), np.uint64)
        if self.verify == "jaccard":
            digests = np.concatenate([d for _, d in features]) if features else np.empty(0, np.uint64)
            keys = np.column_stack([keys, digests])
        return scan, band_parts(keys, broadcast.key_ranges, scan.first_row)

    def second_buckets(self, broadcast: Broadcast) -> int:
        """A pair that k bands find comes out of k band reducers; a second round by pair makes the pairs distinct
        on the workers, so the driver receives each once (at 1 TB with 10% near-copies, up to ~13 GB of per-band
        pairs otherwise: docs/scaling.md). One reducer per key range, each holding the pairs of its lower rows."""
        return broadcast.key_ranges

    def split_reduced(self, bucket: int, result: np.ndarray, broadcast: Broadcast) -> list[np.ndarray]:
        """A reducer's pairs (band pairs, or the copies column's) by their lower row's residue."""
        return split_by_row(result, broadcast.key_ranges)

    def reduce_second(self, bucket: int, parts: list[np.ndarray], broadcast: Broadcast) -> tuple:
        """(the distinct band pairs of these rows, sorted by (low, high); their copy pairs; how many band pairs
        arrived), from every first-round reducer's share in bucket order: band columns first, then the copies'."""
        bands = self.banding().bands * broadcast.key_ranges
        copies = [p for p in parts[bands:] if len(p)]  # copy groups: disjoint rows, each pair once already
        found = [p for p in parts[:bands] if len(p)]
        del parts[:]
        arrived = sum(len(p) for p in found)
        rows = max((int(p.max()) for p in found), default=0) + 1
        return unique_pairs(found, rows), np.concatenate(copies) if copies else np.empty((0, 2), np.int64), arrived

    def duplicate_pairs(self, ctx: Context, scan: Scan) -> tuple[np.ndarray, MinhashState]:
        banding = self.banding()
        results, scan.shuffled = scan.shuffled or [], None
        ranges = max(len(results), 1)  # the second round's buckets: one per key range
        copies = [c for _, c, _ in results if len(c)]
        copies_found = np.concatenate(copies) if copies else np.empty((0, 2), np.int64)
        band_pairs = sum(arrived for _, _, arrived in results)
        candidates = merge_sorted_pairs([pairs for pairs, _, _ in results], scan.n)
        del results, copies
        state = MinhashState()
        if self.verify == "jaccard":
            order = np.argsort(copies_found[:, 1], kind="stable")
            state.copy_rows, state.copy_leaders = copies_found[order, 1], copies_found[order, 0]
            # Pairs of equal shingle sequences (copies) have Jaccard 1: only the others are re-read.
            copies = state.copy_root(candidates[:, 0]) == state.copy_root(candidates[:, 1])
            state.sets = SpilledSets()
            state.set_rows, state.set_ids = np.empty(0, np.int64), np.empty(0, np.int64)
            try:
                similarity = np.ones(len(candidates), np.float64)
                similarity[~copies] = self._pair_values(scan, state, candidates[~copies])
            except BaseException:
                state.sets.close()
                raise
        else:
            state.signature_rows = np.empty(0, np.int64)
            state.signatures = np.empty((0, self.num_perm), np.uint32)
            similarity = (self._pair_values(scan, state, candidates) if self.verify == "signature"
                          else np.ones(len(candidates), np.float64))
        pairs = candidates[similarity >= self.threshold]
        if self.verify != "none":
            # unique_pairs returns pairs sorted by (low, high), so their codes are sorted too.
            state.known_codes, state.known_values = candidates[:, 0] * scan.n + candidates[:, 1], similarity
        ctx.record("banding", banding.describe())
        ctx.record("key_ranges", ranges)
        ctx.record("band_pairs", int(band_pairs))  # a pair once per band that found it: what the second round merged
        ctx.record("candidate_pairs", int(len(candidates)))
        ctx.record("verified_pairs", int(len(pairs)))
        ctx.record("verify", self.verify)
        return pairs, state

    def similarity(self, scan: Scan, state: MinhashState, rows: np.ndarray, kept: np.ndarray) -> np.ndarray:
        """Each member's similarity to its cluster's kept row (Jaccard, or the MinHash estimate without it).
        Most kept rows are a verified candidate of their member's: that value is reused, the rest computed."""
        pairs = np.stack([rows, kept], axis=1)
        out = np.ones(len(pairs), np.float64)
        hit = np.zeros(len(pairs), bool)
        if state.known_codes is not None:
            where, hit = sorted_lookup(state.known_codes, np.minimum(rows, kept) * scan.n + np.maximum(rows, kept))
            out[hit] = state.known_values[where[hit]]
        todo = ~hit & (rows != kept)
        if state.sets is not None:
            todo &= state.copy_root(rows) != state.copy_root(kept)
        if todo.any():
            out[todo] = self._pair_values(scan, state, pairs[todo])
        return out

    def release(self, state: MinhashState) -> None:
        if state.sets is not None:
            state.sets.close()

    def _text_spec(self) -> tuple:
        return (self.text_column, self.unit, self.ngram, self.normalization, self.num_perm)

    def _pair_values(self, scan: Scan, state: MinhashState, pairs: np.ndarray) -> np.ndarray:
        """True Jaccard of row pairs (verify='jaccard'), else the MinHash estimate. On Ray, pairs of data rows are
        compared on the workers (`Context.join_rows`: their sets or signatures meet there and never reach the
        driver); the rest here, on their rows' spilled sets or signatures, made as needed (the reference's here,
        the data's where its partitions are)."""
        jaccard = self.verify == "jaccard"
        out = np.empty(len(pairs), np.float64)
        joined = pairs.min(axis=1) >= scan.n_reference if scan.join_rows else np.zeros(len(pairs), bool)
        if joined.any():
            rows_fn, pair_fn = ((partition_shingle_sets, set_jaccard) if jaccard
                                else (partition_signature_rows, signature_pair_similarity))
            out[joined] = scan.join_rows(rows_fn, pairs[joined] - scan.n_reference, pair_fn, self._text_spec())
        rest = pairs[~joined]
        needed = unique_sorted(rest)
        if jaccard:
            self._add_sets(scan, state, needed[~state.has_set(needed)])
            out[~joined] = state.sets.jaccard(state.set_index(rest))
        else:
            self._add_signatures(scan, state, needed[~sorted_lookup(state.signature_rows, needed)[1]])
            out[~joined] = signature_similarity(state.signatures, np.searchsorted(state.signature_rows, rest))
        return out

    def _add_signatures(self, scan: Scan, state: MinhashState, needed: np.ndarray) -> None:
        """Recompute the signatures of the sorted `needed` rows (none held yet) where they are, and hold them."""
        if needed.size:
            rows = np.concatenate([state.signature_rows, needed])
            order = np.argsort(rows, kind="stable")
            state.signature_rows = rows[order]
            state.signatures = np.concatenate([state.signatures, self._signatures(scan, needed)])[order]

    def _add_sets(self, scan: Scan, state: MinhashState, needed: np.ndarray) -> None:
        """Spill the shingle sets (sorted, distinct) of the `needed` rows (sorted, none with a set yet), read
        again: the reference's here, the data's where its partitions are (on Ray the workers shingle them;
        only the sets come back)."""
        if needed.size == 0:
            state.sets.seal()
            return
        rows = np.concatenate([state.set_rows, needed])
        ids = np.concatenate([state.set_ids, state.sets.count + np.arange(needed.size)])
        order = np.argsort(rows, kind="stable")
        state.set_rows, state.set_ids = rows[order], ids[order]
        for sets in self._read_rows(scan, needed, rows_shingle_sets, partition_shingle_sets):
            state.sets.append(*sets)
        state.sets.seal()

    def _signatures(self, scan: Scan, rows: np.ndarray) -> np.ndarray:
        """Signatures of the sorted `rows`, recomputed from their texts where they are."""
        found = list(self._read_rows(scan, rows, rows_signatures, partition_signatures))
        return np.concatenate(found) if found else np.empty((0, self.num_perm), np.uint32)

    def _read_rows(self, scan: Scan, rows: np.ndarray, of_batches, of_partition) -> Iterator:
        """What `of_batches` makes of the sorted `rows`, in row order: the reference's read here, the data's
        by `of_partition` where its partitions are."""
        spec = self._text_spec()
        in_reference = rows[rows < scan.n_reference]
        if in_reference.size:
            yield from of_batches(scan.reference_source.iter_batches(SCAN_BATCH_ROWS, columns=[self.text_column]),
                                  in_reference, spec)
        in_data = rows[rows >= scan.n_reference] - scan.n_reference
        if in_data.size:
            for found in scan.gather_rows(of_partition, in_data, spec):
                yield from found

    @classmethod
    def example(cls):
        import pydoc_data.topics as topics

        texts = [" ".join(text.split()[:80]) for _, text in sorted(topics.topics.items())[:5] if len(text.split()) > 80]
        edited = texts[0].split()
        edited[10] = "changed"
        texts.append(" ".join(edited))
        return {"threshold": 0.7}, {"data": pl.DataFrame({"id": range(len(texts)), "text": texts})}


def selected_texts(batches: Iterator[pl.DataFrame], rows: np.ndarray, column: str) -> Iterator[pl.Series]:
    """The texts of the sorted `rows` (numbered over `batches`), batch by batch."""
    for batch, inside in selected_rows(batches, rows):
        yield batch.get_column(column).gather(inside).cast(pl.String)  # a Categorical text as its strings


def rows_shingle_sets(batches: Iterator[pl.DataFrame], rows: np.ndarray, spec: tuple) -> Iterator[tuple]:
    """(values, offsets) shingle sets of the sorted `rows` (numbered over `batches`), batch by batch."""
    text_column, unit, ngram, normalization, _ = spec
    for texts in selected_texts(batches, rows, text_column):
        yield shingle_sets(texts, unit, ngram, normalization)


def rows_signatures(batches: Iterator[pl.DataFrame], rows: np.ndarray, spec: tuple) -> Iterator[np.ndarray]:
    """MinHash signatures of the sorted `rows`, batch by batch (the same values the map computed)."""
    text_column, unit, ngram, normalization, num_perm = spec
    for texts in selected_texts(batches, rows, text_column):
        yield minhash_signatures(*shingle_hashes(texts, unit, ngram, normalization), num_perm)


def partition_shingle_sets(partition: Partition, rows: np.ndarray, spec: tuple) -> list[tuple]:
    """`Context.gather_rows` function: the shingle sets of some rows of one partition, made where it is."""
    return list(rows_shingle_sets(partition.iter_batches(SCAN_BATCH_ROWS, columns=[spec[0]]), rows, spec))


def set_jaccard(flat: np.ndarray, offsets: np.ndarray, pairs: np.ndarray, spec: tuple) -> np.ndarray:
    """`Context.join_rows` function: true Jaccard of pairs of rows' shingle sets (flat, offsets)."""
    return jaccard_pairs(flat, offsets, pairs)


def partition_signatures(partition: Partition, rows: np.ndarray, spec: tuple) -> list[np.ndarray]:
    """`Context.gather_rows` function: the signatures of some rows of one partition, made where it is."""
    return list(rows_signatures(partition.iter_batches(SCAN_BATCH_ROWS, columns=[spec[0]]), rows, spec))


def partition_signature_rows(partition: Partition, rows: np.ndarray, spec: tuple) -> list[tuple]:
    """`Context.join_rows` function: the signatures of some rows of one partition as ragged rows (flat, offsets)."""
    return [(s.reshape(-1), np.arange(len(s) + 1, dtype=np.int64) * spec[4])
            for s in partition_signatures(partition, rows, spec)]


def signature_pair_similarity(flat: np.ndarray, offsets: np.ndarray, pairs: np.ndarray, spec: tuple) -> np.ndarray:
    """`Context.join_rows` function: the MinHash estimate of pairs of rows' signatures (flat, offsets)."""
    return signature_similarity(flat.reshape(-1, spec[4]), pairs)


def check_minhash_params(ngram: int, num_perm: int, threshold: float, bands: int | None, rows: int | None) -> None:
    """Refuse impossible MinHash settings with the parameter named (shared by the stage and the metric)."""
    if not 1 <= ngram <= MAX_NGRAM:
        raise ParamError("ngram", f"must be between 1 and {MAX_NGRAM} units, got {ngram}")
    if not 1 <= num_perm <= 4096:
        raise ParamError("num_perm", f"must be between 1 and 4096, got {num_perm}")
    if not 0.0 < threshold <= 1.0:
        raise ParamError("threshold", f"is a Jaccard similarity in (0, 1], got {threshold}")
    if (bands is None) != (rows is None):
        raise ParamError("bands" if bands is None else "rows", "set both bands and rows, or neither (then both "
                         "are derived from threshold)")
    if bands is not None and rows is not None:
        if bands < 1 or rows < 1:
            raise ParamError("bands", f"bands and rows must be >= 1, got {bands} x {rows}")
        if bands * rows != num_perm:
            raise ParamError("bands", f"bands x rows must equal num_perm: {bands} x {rows} = {bands * rows}, "
                             f"num_perm is {num_perm}")


# With verification, a pair at exactly the threshold must become a candidate this often (lsh.choose_bands).
VERIFIED_CANDIDATE_PROBABILITY = 0.9


def resolve_banding(num_perm: int, threshold: float, bands: int | None, rows: int | None,
                    verified: bool = True) -> Banding:
    if bands is None or rows is None:
        bands, rows = choose_bands(threshold, num_perm, VERIFIED_CANDIDATE_PROBABILITY if verified else None)
    return Banding(bands=bands, rows=rows, threshold=threshold)
