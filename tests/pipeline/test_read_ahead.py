import threading

import pytest

from pipeline.io import read_ahead


def test_read_ahead_keeps_order_and_ends():
    assert list(read_ahead(iter(range(50)))) == list(range(50))
    assert list(read_ahead(iter([]))) == []


def test_read_ahead_raises_the_readers_error_in_the_consumer():
    def failing():
        yield 1
        raise ValueError("bad row group")

    got = []
    with pytest.raises(ValueError, match="bad row group"):
        for item in read_ahead(failing()):
            got.append(item)
    assert got == [1]


def test_closing_early_stops_the_reader_thread():
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    before = threading.active_count()
    stream = read_ahead(endless(), depth=1)
    assert next(stream) == 0
    stream.close()
    assert threading.active_count() == before
    assert len(produced) <= 4  # the reader ran at most a couple of items ahead
