"""What the chaos upstream answers each question: the same text every time (``answer_for``), so every stored
answer can be compared with it, or, as a model that samples, new words on every request (``sampled_answer``), so
a stored answer can only be checked against what was actually sent (chaos/joins.py).

Some answers repeat themselves on purpose (a table of identical rows, "ha ha ha", code with braces): a join that
cuts what merely looks repeated shows up as a wrong answer.
"""

import hashlib
import random
import re

PROSE = (
    "Lyon sits where the Rhone meets the Saone and its old town keeps Renaissance courtyards hidden passages "
    "called traboules and small restaurants known as bouchons that serve quenelles sausages and pralines"
)
WORDS = re.findall(r"\S+", PROSE)
ROWS = ("| Lyon | Rhone |\n", "| Lyon | Saone |\n", "| Paris | Seine |\n", "| Bordeaux | Garonne |\n")
LAUGHS = ("ha ", "ha ", "ha ", "he ")
CALLS = ("run();", "stop();", "go();")


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


def sampled_answer(question: str, chance: random.Random) -> str:
    """An answer to ``question`` as a sampling model writes it: of the kind and size ``answer_for`` gives it, in
    words drawn anew on every call; still repetitive (a row repeated, mostly "ha", the same block), so that a
    join cutting what looks repeated is still caught."""
    seed = int(hashlib.sha256(question.encode()).hexdigest(), 16)
    kind, size = seed % 4, 6 + seed % 7
    if kind == 0:
        return " ".join(chance.choice(WORDS) for _ in range(size * 10)) + "."
    if kind == 1:
        return "| city | river |\n|---|---|\n" + chance.choice(ROWS) * (size * 2)
    if kind == 2:
        return "".join(chance.choice(LAUGHS) for _ in range(size * 12)) + "!"
    block = "if (a) {\n  if (b) {\n    " + chance.choice(CALLS) + "\n  }\n}\n"
    return block * size
