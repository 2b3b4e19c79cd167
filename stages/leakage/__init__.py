"""Test-set leakage: which test items (or parts of them) also sit in the training corpus, and removing them.

- `audit.py`: the `leakage_audit` stage: streams the training corpus once past a list of evidence kinds;
- `judging.py`: each test item's verdict and shown evidence from what the kinds found, and the run's stats;
- `evidence.py`: the evidence protocol and registry (a new kind = one class + `register_evidence`);
- `ngram.py`, `chunks.py`: the built-in kinds (exact n-grams; RETRO chunk overlap; semantic similarity);
- `rescore.py`: `paraphrase`, two-stage evidence (static candidates, MiniLM re-scoring, a null-calibrated threshold);
- `variants.py`: eval-aware items (question / question + answer / prompt variants from named fields);
- `spans.py`: token positions to character spans and readable evidence;
- `report.py`: report.html / report.md, drawn from the columns the kinds declare;
- `decontaminate.py`: the `decontaminate` stage (cut or drop what the audit matched);
- `planting.py`: planted leaks for studies and threshold calibration; `plant_stage.py`: the
  `plant_leakage` stage (plants a test set into a training corpus, with truth labels);
- `cli.py`: `pipeline audit TRAIN TEST` (registered with the CLI on import).
"""

from stages.leakage.audit import LeakageAudit
from stages.leakage.chunks import SIMILARITY_DEFAULTS, ChunkEvidence, ChunkNeighbours, SemanticEvidence
from stages.leakage.decontaminate import Decontaminate, merge_spans
from stages.leakage.evidence import (
    EVIDENCE_KINDS,
    VERDICTS,
    Evidence,
    Resolved,
    Score,
    TestSide,
    TrainBatch,
    match_kinds,
    register_evidence,
)
from stages.leakage.ngram import NgramEvidence
from stages.leakage.plant_stage import PlantLeakage
from stages.leakage.planting import HEAVY_KINDS, PLANT_KINDS, plant
from stages.leakage.rescore import ParaphraseEvidence
from stages.text import Tokens, longest_common_run, ngram_hashes, token_offsets, tokenize

__all__ = [
    "EVIDENCE_KINDS", "PLANT_KINDS", "SIMILARITY_DEFAULTS", "VERDICTS", "ChunkEvidence", "ChunkNeighbours",
    "Decontaminate", "Evidence", "HEAVY_KINDS", "LeakageAudit", "NgramEvidence", "ParaphraseEvidence", "PlantLeakage", "Resolved", "Score", "SemanticEvidence",
    "TestSide", "Tokens", "TrainBatch", "longest_common_run", "match_kinds", "merge_spans",
    "ngram_hashes", "plant", "register_evidence", "token_offsets", "tokenize",
]

from stages.leakage import cli as _cli  # noqa: E402,F401  (registers `pipeline audit` with the CLI)
