"""The join chain (chaos/joins.py): a stored answer is what the upstream sent, pieced together, or it is wrong."""

from chaos.joins import Request, joins


def request(at: float, partial: str, sent: str, *, anchor: str = "", finished: bool = True) -> Request:
    return Request(at=at, partial=partial, anchor=anchor, sent=sent, finished=finished)


def test_an_answer_sent_in_one_request_joins_only_as_sent_whole() -> None:
    one = [request(1, "", "ha ha ha!")]
    assert joins("ha ha ha!", one, complete=True)
    assert not joins("ha ha!", one, complete=True), "a complete answer is all of what was sent"
    assert joins("ha ha", one, complete=False), "an unfinished one may be any start of it"
    assert not joins("ha ha ha!!", one, complete=True)
    assert not joins("ha ha ha!", [request(1, "", "ha ha ha!", finished=False)], complete=True)


def test_a_continuation_joins_where_it_was_given_the_partial_answer() -> None:
    chain = [
        request(1, "", "the quick brown fox jum", finished=False),  # dropped mid-word
        request(2, "the quick brown ", "cat sleeps."),  # only this much was durable: the rest was lost
    ]
    assert joins("the quick brown cat sleeps.", chain, complete=True)
    assert not joins("the quick brown fox jumcat sleeps.", chain, complete=True), "text kept that was not given"
    assert not joins("the quick brown fox cat sleeps.", chain, complete=True)
    assert not joins("the quick cat sleeps.", chain, complete=True), "text lost at the join"


def test_a_partial_answer_must_itself_have_been_sent() -> None:
    invented = [request(1, "", "one two three", finished=False), request(2, "one two four ", "five.")]
    assert not joins("one two four five.", invented, complete=True)
    later = [request(1, "one two ", "five."), request(2, "", "one two three", finished=False)]
    assert not joins("one two five.", later, complete=True), "a partial answer comes from an earlier request"


def test_a_restarting_upstreams_anchor_is_cut_once_and_nothing_else() -> None:
    first = request(1, "", "| a |\n| a |\n| a |\n", finished=False)
    again = request(2, "| a |\n| a |\n", "| a |\n| a |\n| b |\n", anchor="| a |\n")
    assert joins("| a |\n| a |\n| a |\n| b |\n", [first, again], complete=True)
    assert not joins("| a |\n| a |\n| b |\n", [first, again], complete=True), "a real repeat cut as the anchor"
    assert not joins("| a |\n| a |\n| a |\n| a |\n| b |\n", [first, again], complete=True), "anchor kept"
    inside = request(2, "| a |\n| a |\n", "| a", anchor="| a |\n", finished=False)
    assert joins("| a |\n| a |\n", [first, inside], complete=False), "broken off inside the anchor: nothing"


def test_a_chain_of_several_takeovers_and_a_stale_writer() -> None:
    chain = [
        request(1, "", "alpha beta gamma", finished=False),
        request(2, "alpha ", "delta epsilon zeta", finished=False),  # a paused gateway's, taken over meanwhile
        request(3, "alpha ", "eta theta iota", finished=False),
        request(4, "alpha eta theta ", "kappa."),
    ]
    assert joins("alpha eta theta kappa.", chain, complete=True)
    assert not joins("alpha delta eta theta kappa.", chain, complete=True)
    assert joins("alpha delta epsilon", chain, complete=False)
    assert not joins("anything", [], complete=False)
    assert joins("", [], complete=False)
