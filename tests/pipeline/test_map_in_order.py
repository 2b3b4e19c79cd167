import random
import threading
import time

import pytest

from pipeline.io import map_in_order


def _slow_square(i: int) -> int:
    time.sleep(random.Random(i).random() / 200)  # later items often finish first
    return i * i


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_results_come_in_input_order(workers):
    assert list(map_in_order(_slow_square, iter(range(40)), workers)) == [i * i for i in range(40)]
    assert list(map_in_order(_slow_square, iter([]), workers)) == []


def test_one_worker_runs_inline_on_the_callers_thread():
    seen = set()
    list(map_in_order(lambda i: seen.add(threading.get_ident()), range(5), 1))
    assert seen == {threading.get_ident()}


def test_calls_overlap_but_never_exceed_the_workers():
    running, most, lock = [0], [0], threading.Lock()

    def work(i):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return i

    assert list(map_in_order(work, range(12), 3)) == list(range(12))
    assert most[0] == 3


def test_an_error_is_raised_at_its_items_turn():
    def work(i):
        if i == 3:
            raise ValueError("bad batch 3")
        return i

    got = []
    with pytest.raises(ValueError, match="bad batch 3"):
        for value in map_in_order(work, range(10), 2):
            got.append(value)
    assert got == [0, 1, 2]


def test_stopping_early_reads_no_further_items():
    read = []

    def items():
        for i in range(1000):
            read.append(i)
            yield i

    stream = map_in_order(lambda i: i, items(), 2)
    assert next(stream) == 0
    stream.close()
    assert len(read) <= 3
