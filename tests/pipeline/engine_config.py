"""A small five-step pipeline over the Python docs, shared by the runner, loading and CLI tests."""

CONFIG = """
name: eng
seed: 7
steps:
  - id: docs
    stage: python_docs
    params: {granularity: paragraph, min_chars: 100}
  - id: long
    stage: length_filter
    inputs: docs
    params: {min_words: 20}
  - id: sample
    stage: sample
    inputs: long
    params: {n: 50}
  - id: split
    stage: split
    inputs: sample
    params: {fractions: {train: 0.8, test: 0.2}}
  - id: test_only
    stage: select
    inputs: "split:test"
    params: {columns: [id, text]}
"""

