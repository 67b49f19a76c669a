"""The local model's chat format (scripts/local_llm.py), rendered without llama-cpp-python."""

from typing import Any

from scripts.local_llm import penalize_repeats, render


def test_a_question_opens_a_model_turn_as_gemmas_template_does() -> None:
    messages = [{"role": "user", "content": " What is Lyon? "}]
    assert render(messages) == "<start_of_turn>user\nWhat is Lyon?<end_of_turn>\n<start_of_turn>model\n"


def test_a_leading_system_message_goes_before_the_first_question() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is Lyon?"},
        {"role": "assistant", "content": "A city. "},
        {"role": "user", "content": [{"type": "text", "text": "Where?"}]},
    ]
    assert render(messages) == (
        "<start_of_turn>user\nBe brief.\n\nWhat is Lyon?<end_of_turn>\n"
        "<start_of_turn>model\nA city.<end_of_turn>\n"
        "<start_of_turn>user\nWhere?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_a_trailing_assistant_message_is_left_open_exactly_as_sent() -> None:
    for partial in ("Lyon is a ci", "Lyon is a ", "Lyon is\n\n", " Lyon"):
        messages = [{"role": "user", "content": "What is Lyon?"}, {"role": "assistant", "content": partial}]
        prompt = render(messages)
        assert prompt == f"<start_of_turn>user\nWhat is Lyon?<end_of_turn>\n<start_of_turn>model\n{partial}"
        # Exactly the uninterrupted prompt followed by the answer so far: greedy decoding goes on the same way.
        assert prompt == render(messages[:1]) + partial


def test_system_messages_anywhere_are_kept_in_the_user_turn_beside_them() -> None:
    messages = [
        {"role": "user", "content": "What is Lyon?"},
        {"role": "system", "content": "Continue the interrupted answer."},
        {"role": "assistant", "content": "Lyon is"},
    ]
    assert render(messages) == (
        "<start_of_turn>user\nWhat is Lyon?\n\nContinue the interrupted answer.<end_of_turn>\n"
        "<start_of_turn>model\nLyon is"
    )


def test_calls_and_results_fold_into_the_turns_of_their_sides() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather in Lyon?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]},
        {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
    ]
    assert render(messages) == (
        "<start_of_turn>user\nWeather in Lyon?<end_of_turn>\n"
        "<start_of_turn>model\n<end_of_turn>\n"
        "<start_of_turn>user\nsunny<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_the_repeat_penalty_counts_the_last_tokens_of_the_whole_sequence() -> None:
    scores = penalize_repeats([5, 1, 2, 1], [1.0, 2.0, -2.0, 4.0], 2.0, last_n=3)
    assert scores == [1.0, 1.0, -4.0, 4.0]  # tokens 1 and 2 are among the last three; 0 and 3 are not
