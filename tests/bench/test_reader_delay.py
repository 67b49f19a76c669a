"""The reader delay's arithmetic (bench/reader_delay.py), without processes: a token counts from the arrival that
completes its word, whatever the relay's cuts."""

import pytest

from bench.reader_delay import ReaderDelay, percentile, token_delays, word_ends

ANSWER = "w0 w1 w2 w10 "


def test_word_ends_are_where_each_word_is_whole() -> None:
    assert word_ends(ANSWER) == [2, 5, 8, 12]
    assert word_ends("w0 w1") == [2, 5]


def test_a_token_is_received_when_its_word_is_whole() -> None:
    sent = [0.0, 1.0, 2.0, 3.0]
    # The relay's cuts: "w0 w" / "1 w2 w1" / "0 ": w1 and w2 together, w10 split in two.
    arrivals = [(0.5, 4), (2.25, 11), (3.75, 13)]
    assert token_delays(sent, arrivals, word_ends(ANSWER)) == [0.5, 1.25, 0.25, 0.75]


def test_one_chunk_per_token() -> None:
    sent = [10.0, 10.02, 10.04, 10.06]
    arrivals = [(10.001, 3), (10.023, 6), (10.045, 9), (10.061, 13)]
    assert token_delays(sent, arrivals, word_ends(ANSWER)) == pytest.approx([0.001, 0.003, 0.005, 0.001])


def test_missing_tokens_or_stamps_are_errors_not_figures() -> None:
    with pytest.raises(ValueError, match="only 2 of 4"):
        token_delays([0.0, 1.0, 2.0, 3.0], [(1.5, 6)], word_ends(ANSWER))
    with pytest.raises(ValueError, match="3 send times"):
        token_delays([0.0, 1.0, 2.0], [(5.0, 13)], word_ends(ANSWER))


def test_percentiles_pool_every_token() -> None:
    delays = [i / 1000 for i in range(1, 101)]  # 1 to 100 ms
    assert percentile(delays, 50) == pytest.approx(0.0505)
    assert percentile(delays, 99) == pytest.approx(0.09901)
    figure = ReaderDelay.of(delays, streams=2, concurrency=2, tokens_per_second=50)
    assert figure.tokens == 100
    assert [figure.p50_ms, figure.p99_ms, figure.max_ms] == pytest.approx([50.5, 99.01, 100])
