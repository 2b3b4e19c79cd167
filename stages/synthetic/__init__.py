"""Synthetic data across generations: generators, mixing schedules and per-row provenance.

A model-collapse study (Shumailov et al. 2024, Gerstgrasser et al. 2024, Alemohammad et al. 2023)
fits a generator on corpus t-1, samples synthetic documents from it, and mixes them with real data
by a schedule to make corpus t. The `generations` stage runs that loop for several schedules in one
step, so every schedule starts from the very same generation 0 and the curves are comparable.

Generators share one small interface (`Generator`): `fit` on a corpus, `sample` n documents or
continuations of prompts from a seeded NumPy generator. Three are built in:

- `ngram`: an interpolated Witten-Bell word n-gram model held in sorted NumPy arrays; it fits and
  samples a few thousand documents in well under a second, so a 10-generation study runs on a laptop;
- `lstm`: a 2-layer word LSTM trained in torch on each generation's corpus, from scratch or
  fine-tuned from the previous generation's model (stages/neural_lm.py);
- `hf`: a Hugging Face causal LM from a local path, prompted with the first tokens of real documents
  as in Shumailov et al.; fine-tuning between generations is the user's own code, run by `callback`;
- `external`: the user's own synthetic Parquet per generation, mixed by the same schedules.

The package: `ngram` (the n-gram model), `generators` (the interface, built-in kinds, callbacks),
`generations` (the stage and its checkpoints). Everything is re-exported here, so
`from stages.synthetic import Generations, NGramLM, make_generator` keeps working.
"""

from stages.synthetic.generations import PROVENANCE_COLUMNS, SCHEDULES, Generations
from stages.synthetic.generators import (
    GENERATORS,
    ExternalGenerator,
    Generator,
    HFCausalLMGenerator,
    NGramGenerator,
    make_generator,
)
from stages.synthetic.ngram import NGramLM, detokenize

__all__ = [
    "GENERATORS", "PROVENANCE_COLUMNS", "SCHEDULES", "ExternalGenerator", "Generations", "Generator",
    "HFCausalLMGenerator", "NGramGenerator", "NGramLM", "detokenize", "make_generator",
]
