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
    """Answer in ``language``: ``"en"`` (the default) or ``"zh"`` (Simplified Chinese; also
    written ``"zh-CN"``, ``"zh_CN"`` or ``"zh-Hans"``)."""
    global _current
    code = str(language).strip().lower().replace("_", "-")
    code = {"zh-cn": "zh", "zh-hans": "zh", "zh-sg": "zh", "en-us": "en", "en-gb": "en"}.get(
        code, code
    )
    if code not in LANGUAGES:
        raise ValueError(
            f"set_language({language!r}): the course speaks 'en' or 'zh' "
            "（课程只有英文 'en' 和中文 'zh' 两种语言）"
        )
    _current = code


def language() -> str:
    """The language set with ``set_language``: ``"en"`` or ``"zh"``."""
    return _current


def say(english: str, chinese: str, language: str | None = None) -> str:
    """The message in ``language`` (by default the one that is set): ``english``, or ``chinese``
    under ``"zh"``."""
    return chinese if (language or _current) == "zh" else english
