"""Which model wrote which part of an answer (chat_gateway/answers/parts.py): a part begun per attempt, one that
wrote nothing replaced, each part's usage what the answer's grew by while it wrote, a claimed answer's earlier parts
counted for nothing in this run."""

from chat_gateway.answers.parts import NOTHING, AnswerParts
from shared.resources import AnswerPart
from tests.chat_gateway.conftest import stored_message

FIGURES = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


def test_a_model_that_fails_before_its_first_word_leaves_no_part() -> None:
    parts = AnswerParts(stored_message(model="alpha"), 0)
    assert not parts.begin("alpha", 0, {})
    assert not parts.begin("gamma", 0, {})  # alpha wrote nothing: gamma's part takes its place
    assert [(part.model, part.offset) for part in parts.parts] == [("gamma", 0)]
    assert not parts.several
    # Its clients were told alpha: its first delta names gamma, and the answer is gamma's.
    assert (parts.renamed, parts.model, parts.model_at(0)) == (True, "gamma", "gamma")


def test_each_part_has_the_usage_spent_while_it_wrote() -> None:
    parts = AnswerParts(stored_message(model="alpha"), 0)
    parts.begin("alpha", 0, {})
    assert not parts.begin("alpha", 6, {})  # a retry on the same model: the same part
    assert parts.begin("gamma", 12, {})  # alpha's streams broke off: no figures
    assert parts.begin("beta", 12, FIGURES)  # gamma wrote nothing: beta's part takes its place
    assert (parts.next_boundary(0, 20), parts.model_at(12), parts.model_at(0)) == (12, "beta", None)
    doubled = {key: 2 * value for key, value in FIGURES.items()}
    assert parts.stored(doubled, 20) == [
        AnswerPart(model="alpha", offset=0, usage=None),  # left to persistence to estimate from its text
        AnswerPart(model="beta", offset=12, usage=doubled),  # with what gamma's attempt spent: nothing is lost
    ]


def test_a_claimed_answers_earlier_parts_spent_nothing_in_this_run() -> None:
    stored = [AnswerPart(model="alpha", offset=0), AnswerPart(model="gamma", offset=4)]
    parts = AnswerParts(stored_message(model="alpha", content="abcdefgh", answer_parts=stored), 8)
    assert not parts.begin("gamma", 8, {})  # it goes on on its last part's model
    assert parts.stored(FIGURES, 12) == [
        AnswerPart(model="alpha", offset=0, usage=NOTHING),
        AnswerPart(model="gamma", offset=4, usage=FIGURES),
    ]
