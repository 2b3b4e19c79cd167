"""Label noise with exact, documented counts: Rolnick-style dilution and in-place flips (`label_noise`).

Two studies need two different kinds of noise. "Deep Learning is Robust to Massive Label Noise"
(Rolnick et al. 2017) keeps every clean example and *adds* alpha noisy examples per clean one
(`mode: dilute`); the usual noisy-label benchmarks instead *relabel* a fraction of the data in place
(`mode: flip`). Popular generators miss the requested rate (they draw each flip independently, or
let "symmetric" noise redraw the true class), so this stage makes every count exact and says
precisely what each scheme means.

Definitions (K classes, in the order of `classes`, or the sorted distinct labels of the data):

- Transition matrix convention: rows are the clean class, columns the noisy label, and every row sums
  to 1: `T[i, j] = P(noisy = j | clean = i)`.
- `flip`: `symmetric` at rate r is `T[i, i] = 1 - r`, `T[i, j] = r / (K - 1)` (never the true class);
  `pairflip` is `T[i, (i + 1) mod K] = r`; `mapping` sends class a to mapping[a] at rate r (classes
  not in the mapping keep their label); `matrix` takes T from the user. `rate` may be one number or
  a {class: rate} dict (class-dependent rates; classes left out get 0).
  Exactness: class i with N_i rows gets exactly floor(N_i * (1 - T[i, i]) + 0.5) flips, and those
  flips are split over the targets j by largest remainder of flips * T[i, j] / (1 - T[i, i]), so each
  cell of the realised transition table is within one example of the requested count, never "in
  expectation". Which rows flip: every row gets a 64-bit hash of (seed, row id); within each class the
  rows with the smallest hashes flip, and the flipped rows, in hash order, fill the target cells in
  class order. Nothing depends on batch boundaries or executors, and raising r with the same seed
  flips a superset of the rows.
- `dilute`: adds exactly floor(alpha * N + 0.5) rows. Their inputs are taken from the data (or from
  the `source` input: out-of-distribution inputs) in whole cycles, every pool row once per cycle,
  plus a final partial cycle of the pool rows with the smallest hashes, so each pool row is used
  either floor(M / P) or floor(M / P) + 1 times. Each added row's label is drawn from a hash of
  (seed, source id, cycle): `uniform` is uniform over the K classes (`exclude_true: true` draws
  among the other K - 1); `structured` takes, with probability delta, a label from the confusing
  distribution C[true class] and otherwise a uniform one. C comes from `confusion`: a {class: class}
  mapping, a K x K row-stochastic matrix, `derangement` (a uniformly random derangement of the
  classes drawn with the seed: every class has one confusing class, never itself) or `centroid`
  (the class whose mean `feature_column` vector is nearest, Euclidean, to the class's own mean).
  Out-of-distribution inputs have no true class; under structured noise their confusing class is
  the data class whose centroid is nearest to the input itself (needs `feature_column`).

Output: every input column (the label column now holds the possibly noisy label), plus
`clean_label` (null for out-of-distribution inputs), `is_noisy` (label differs from clean_label, or
the input is out of distribution), `noise_origin` (`clean` | `added` | `flipped`) and `source_id`
(the id of the row an added row was drawn from; a row's own id otherwise). Added rows get fresh ids:
integer ids continue after the largest data id, string ids read `<source_id>~n<cycle>` (`~s` for
rows from `source`). The side output `transitions` holds the realised clean x noisy counts, and the
manifest records requested against realised noise.
"""

from stages._vectors import vector_matrix
from stages.noise.counts import largest_remainder, round_half_up
from stages.noise.params import DILUTE_NOISE, FLIP_NOISE, MATRIX_CONVENTION
from stages.noise.rows import NOISE_COLUMNS
from stages.noise.stage import LabelNoise

__all__ = ["DILUTE_NOISE", "FLIP_NOISE", "MATRIX_CONVENTION", "NOISE_COLUMNS", "LabelNoise", "largest_remainder",
           "round_half_up", "vector_matrix"]
