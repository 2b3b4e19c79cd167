"""Paraphrase evidence (issue #13) for `python -m bench.run_all --only paraphrase`: its speed against the
static-only semantic pass. The recall/FPR study is `python -m bench.bench_leakage --paraphrase` (see
bench/leakage_paraphrase.py): it needs third-party rephrasings that are not in this repository."""

from __future__ import annotations

import sys

from bench.leakage_paraphrase import run

if __name__ == "__main__":
    from bench.common import print_rows

    print_rows(run("quick" if "--quick" in sys.argv else "full"))
