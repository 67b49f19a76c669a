"""What the chaos upstream answers each question: known in advance, so every stored answer can be checked.

Some answers repeat themselves on purpose (a table of identical rows, "ha ha ha", code with braces): a join that
cuts what merely looks repeated shows up as a wrong answer.
"""

import hashlib
import re

PROSE = (
    "Lyon sits where the Rhone meets the Saone and its old town keeps Renaissance courtyards hidden passages "
    "called traboules and small restaurants known as bouchons that serve quenelles sausages and pralines"
)
WORDS = re.findall(r"\S+", PROSE)


def tokens(text: str) -> list[str]:
    """How the upstream sends a text: a word and the spaces after it per chunk."""
    return re.findall(r"\S+\s*|\s+", text)


def key_of(question: str) -> str:
    """The chat a question belongs to: every chaos question starts with ``chat-<key>:``."""
    match = re.match(r"chat-([\w-]+):", question)
    return match.group(1) if match else question[:40]


def answer_for(question: str) -> str:
    """The answer to ``question``: one of four kinds, 200 to 1,000 characters, chosen by its hash."""
    seed = int(hashlib.sha256(question.encode()).hexdigest(), 16)
    kind, size = seed % 4, 6 + seed % 7
    if kind == 0:
        return " ".join(WORDS[(seed >> 8 + i) % len(WORDS)] for i in range(size * 10)) + "."
    if kind == 1:
        return "| city | river |\n|---|---|\n" + "| Lyon | Rhone |\n" * (size * 2)
    if kind == 2:
        return "ha " * (size * 12) + "!"
    return "if (a) {\n  if (b) {\n    run();\n  }\n}\n" * size
