"""The language the exercises answer in: English, or Simplified Chinese for the Chinese edition.

The Chinese notebooks' setup cell turns Chinese on, and every check, hint and solution then
answers in it::

    import cifar_course
    cifar_course.set_language("zh")

Each message is written once in both languages, side by side, with ``say(english, chinese)``:
a message cannot be added in one language only (tests/test_zh.py reads the exercise modules and
fails on an English message outside ``say``).
"""

from __future__ import annotations

LANGUAGES = ("en", "zh")
_current = "en"


def set_language(language: str) -> None:
    """Answer in ``language``: ``"en"`` (the default) or ``"zh"`` (Simplified Chinese)."""
    global _current
    if language not in LANGUAGES:
        raise ValueError(
            f"set_language({language!r}): the course speaks {' or '.join(map(repr, LANGUAGES))}"
        )
    _current = language


def language() -> str:
    """The language set with ``set_language``: ``"en"`` or ``"zh"``."""
    return _current


def say(english: str, chinese: str) -> str:
    """The message in the language that is set: ``english``, or ``chinese`` under ``"zh"``."""
    return chinese if _current == "zh" else english
