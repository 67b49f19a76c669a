"""`make local-llm`: llama-cpp-python's OpenAI-compatible server, with a Gemma chat format that continues.

Run with the local model's own virtualenv (``.venv-llm/bin/python scripts/local_llm.py`` and the server's
arguments). It registers ``gemma-continue`` with llama-cpp-python and starts its server, so ``--chat_format``
takes that name as well as the library's own (``chatml-function-calling``, ``gemma``...).

The library's ``gemma`` format is not what the gateway needs: it closes a trailing assistant message with
``<end_of_turn>`` and opens a new model turn, so an interrupted answer sent back to be continued gets a new
answer glued to it, and it drops system messages. ``gemma-continue`` renders Gemma's own template (as
Google publishes it with the model; this GGUF carries none: a leading system message folded into the first
user turn, each turn's text trimmed) with two differences: a trailing
assistant message is left open, exactly as sent, so the model goes on from its last character; and system
messages anywhere are kept, folded into the user turn next to them (Gemma has no system role).

It also applies a repeat penalty asked for (llama-cpp-python's server asks 1.1 unless told otherwise) to the
whole sequence, as llama.cpp's own server does, not to the tokens generated in the request alone; see
``main``. Rendering imports nothing from llama-cpp-python, so the project's tests check it without that build.
"""

from collections.abc import Iterable, Mapping
from typing import Any

FORMAT = "gemma-continue"
# Gemma writes this token to end its turn; llama.cpp stops on it as end-of-generation too.
END_OF_TURN = "<end_of_turn>"
# llama-cpp-python's window for its repeat penalty (Llama's last_n_tokens_size).
PENALTY_LAST_N = 64


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list (this model reads no images)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(str(part.get("text", "")) for part in content if part.get("type") == "text")


def _turns(messages: Iterable[Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    """The messages as Gemma's alternating turns: the model's (assistant) and the user's, into which system
    messages and tool results fold; messages of one side in a row make one turn."""
    turns: list[tuple[str, list[str]]] = []
    for message in messages:
        role = "model" if message.get("role") == "assistant" else "user"
        text = _text(message.get("content"))
        if turns and turns[-1][0] == role:
            turns[-1][1].append(text)
        else:
            turns.append((role, [text]))
    return turns


def render(messages: Iterable[Mapping[str, Any]]) -> str:
    """The prompt for ``messages`` (the tokenizer adds ``<bos>``): a new model turn opened after the user's, or,
    after an assistant message, that message's turn left open to be continued."""
    turns = _turns(messages)
    partial = turns.pop()[1] if turns and turns[-1][0] == "model" else None
    prompt = ""
    for role, texts in turns:
        # Gemma's template trims each text; a system message goes before the question, two newlines apart.
        body = "\n\n".join(stripped for text in texts if (stripped := text.strip()))
        prompt += f"<start_of_turn>{role}\n{body}{END_OF_TURN}\n"
    prompt += "<start_of_turn>model\n"
    if partial is not None:
        # Untrimmed: a partial answer cut after a space or a newline goes on after it, and from nowhere else.
        prompt += "\n\n".join(partial)
    return prompt


def penalize_repeats(input_ids: Any, scores: Any, penalty: float, last_n: int = PENALTY_LAST_N) -> Any:
    """llama.cpp's repeat penalty over the last ``last_n`` tokens of the whole sequence, the prompt's included
    (as llama.cpp's own server applies it): a token among them has its logit divided by ``penalty`` if positive,
    multiplied by it if not."""
    seen = sorted({int(token) for token in input_ids[-last_n:]} if last_n else set())
    for token in seen:
        logit = scores[token]
        scores[token] = logit / penalty if logit > 0 else logit * penalty
    return scores


def main() -> None:
    from llama_cpp import llama_chat_format
    from llama_cpp.llama import LogitsProcessorList
    from llama_cpp.server.__main__ import main as serve

    def gemma_continue(messages: list[Mapping[str, Any]], **_: Any) -> Any:
        return llama_chat_format.ChatFormatterResponse(prompt=render(messages), stop=[END_OF_TURN])

    generate = llama_chat_format.chat_formatter_to_chat_completion_handler(gemma_continue)

    def handler(*, repeat_penalty: float = 1.0, logits_processor: Any = None, **kwargs: Any) -> Any:
        # llama-cpp-python applies its repeat penalty (1.1 unless asked) to the tokens this request generated
        # only, so the same text continued from a cut is penalized differently from the uninterrupted answer and
        # soon goes another way. Over the whole sequence, as llama.cpp's server does, it depends on the text
        # alone, and greedy decoding goes on from a cut as it would have without one.
        if repeat_penalty != 1.0:
            processors = LogitsProcessorList(logits_processor or [])
            processors.append(lambda ids, scores: penalize_repeats(ids, scores, repeat_penalty))
            logits_processor = processors
        return generate(repeat_penalty=1.0, logits_processor=logits_processor, **kwargs)

    llama_chat_format.LlamaChatCompletionHandlerRegistry().register_chat_completion_handler(FORMAT, handler)
    serve()


if __name__ == "__main__":
    main()
