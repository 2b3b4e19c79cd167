"""Native thread counts: every core, unless OMP_NUM_THREADS (Ray sets it to an actor's num_cpus) says how many."""

import os

import pytest


@pytest.fixture
def thread_counts():
    """Put torch's and FAISS's thread counts back after the test (they are process-wide)."""
    import faiss
    import torch

    before = torch.get_num_threads(), faiss.omp_get_max_threads()
    yield torch, faiss
    torch.set_num_threads(before[0])
    faiss.omp_set_num_threads(before[1])


def test_an_omp_num_threads_setting_is_kept_by_faiss_and_by_the_model_loader(thread_counts, monkeypatch):
    # A Ray actor of num_cpus 1 gets OMP_NUM_THREADS=1; loading the model set torch to every core of the node, so n
    # such actors ran n x cores threads. The k-NN estimators' FAISS ignored it the same way.
    from stages._threads import load_faiss
    from stages.embedding import models

    torch, faiss = thread_counts
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    monkeypatch.setattr(models, "_models", {})  # load again in this process
    models.load_sentence_transformer()
    assert torch.get_num_threads() == 1
    load_faiss()
    assert faiss.omp_get_max_threads() == 1


def test_without_the_setting_every_core_is_used(thread_counts, monkeypatch):
    from stages._threads import load_faiss, use_all_cores

    torch, faiss = thread_counts
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    use_all_cores(torch.set_num_threads)
    load_faiss()
    assert torch.get_num_threads() == faiss.omp_get_max_threads() == os.cpu_count()
