"""The Chinese edition (notebooks/zh/, README.zh-CN.md): every English notebook has a Chinese
twin with the same code (comments aside) and the same stored outputs, every translation is of
the English as it is now, nothing is left in English, the glossary's terms are used, and the
exercises answer in Chinese. The guards themselves are tested on small made-up notebooks."""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

import cifar_course
from cifar_course import REPO_URL
from cifar_course.exercises import Exercise

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import zh  # noqa: E402  (tools/zh.py)

sys.path.remove(str(ROOT / "tools"))

CHINESE = sorted(zh.chinese_notebooks())
LESSON_MODULES = sorted((ROOT / "cifar_course" / "exercises").glob("*.py"))
README_ZH = ROOT / "README.zh-CN.md"
DECIMAL = re.compile(r"\d+\.\d+")  # a measured time in a check's line: 4.01 ms


def name(path: Path) -> str:
    return path.relative_to(zh.ZH).as_posix().removesuffix(".ipynb")


@pytest.fixture
def chinese():
    """Chinese answers for the test, English again afterwards."""
    cifar_course.set_language("zh")
    yield
    cifar_course.set_language("en")


# ---------------------------------------------------------------------------------------------
# The notebooks


def test_every_english_notebook_has_a_chinese_twin_and_no_other():
    assert zh.missing() == []
    assert len(zh.english_notebooks()) == 24  # 8 lessons, 8 exercise and 8 solution notebooks
    assert [zh.zh_path(p) for p in zh.english_notebooks()] == sorted(CHINESE, key=CHINESE.index)
    assert {zh.zh_path(p) for p in zh.english_notebooks()} == set(CHINESE)


@pytest.mark.parametrize("path", CHINESE, ids=name)
def test_the_chinese_notebook_is_the_english_one_translated(path):
    """Same cells, same code without comments, same outputs; every cell translated from the
    English as it is now (else the English diff is shown), in the glossary's terms."""
    found = zh.problems(path)
    assert not found, "\n".join(found) + "\n(see tools/zh.py: status, export, import)"


@pytest.mark.parametrize("path", CHINESE, ids=name)
def test_the_colab_badge_and_the_setup_cell_are_the_chinese_notebooks_own(path):
    nb = nbformat.read(path, as_version=4)
    badge = f"colab.research.google.com/github/{REPO_URL.removeprefix('https://github.com/')}"
    assert f"{badge}/blob/main/{path.relative_to(ROOT).as_posix()})" in nb.cells[0].source
    setup = nb.cells[1].source
    assert f'REPO_URL = "{REPO_URL}"' in setup
    speaks = 'cifar_course.set_language("zh")' in setup
    assert speaks == ("exercises" in path.relative_to(zh.ZH).parts)


def test_the_lesson_headers_are_translated_with_their_figures():
    for path in CHINESE:
        if "exercises" in path.relative_to(zh.ZH).parts:
            continue
        header = nbformat.read(path, as_version=4).cells[0].source
        for needed in ("你将学到", "CPU 上的运行时间", "GPU 上的运行时间", "存储的输出"):
            assert needed in header, (path.name, needed)


def test_code_is_compared_without_its_comments_but_token_by_token():
    code = 'x = 1  # one\n%time y = f(x, "a b")\n!ls -l\n'
    assert zh.same_code(code, 'x = 1  # 一\n%time y = f(x, "a b")\n!ls -l\n', False)
    assert zh.same_code(code, '# 先赋值\nx = 1\n\n%time y = f(x, "a b")\n!ls -l\n', False)
    assert not zh.same_code(code, 'x = 1\n%time y = f(x, "a c")\n!ls -l\n', False)
    assert not zh.same_code(code, 'x = 2\n%time y = f(x, "a b")\n!ls -l\n', False)
    assert not zh.same_code(code, 'x = 1\n%time y = f(x, "a b")\n!ls -la\n', False)
    script = "%%writefile run.py\nimport torch  # the library\nprint(torch.ones(2))\n"
    assert zh.comments(script) == ["the library"]
    assert zh.same_code(script, script.replace("the library", "这个库"), False)
    assert not zh.same_code(script, script.replace("ones", "zeros"), False)
    assert not zh.same_code(script, script.replace("run.py", "go.py"), False)
    setup = 'import sys\nif "google.colab" in sys.modules:\n    pass\n'
    assert zh.same_code(setup, setup + zh.LANGUAGE_LINES, True)
    assert not zh.same_code(setup, setup + zh.LANGUAGE_LINES, False)
    assert not zh.same_code(setup, setup, True)


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A repository of one English notebook and its synced twin, for the guards' own tests."""
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    for attribute, value in {
        "ROOT": tmp_path,
        "NOTEBOOKS": notebooks,
        "ZH": notebooks / "zh",
        "LECTURE_NOTE": tmp_path / "note.md",
    }.items():
        monkeypatch.setattr(zh, attribute, value)
    (tmp_path / "note.md").write_text("# 保存方式1\n一般保存方式2比保存方式1所占的内存小\n")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Lesson 01 · Saving\n\nThe model is saved every epoch."),
        nbformat.v4.new_code_cell("x = 1  # the first value of the run\nprint(x)"),
        nbformat.v4.new_markdown_cell("A checkpoint holds 1,024 numbers."),
    ]
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="1\n")]
    english = notebooks / "01_saving.ipynb"
    nbformat.write(nb, english)
    zh.sync()
    chinese = zh.zh_path(english)
    assert not zh.import_text(
        block(english, 0, "# 第 01 课 · 保存\n\n每轮都保存模型。")
        + block(english, 1, "x = 1  # 这次运行的第一个值\nprint(x)")
        + block(english, 2, "一个检查点保存 1,024 个数。")
    )
    assert zh.problems(chinese) == []
    return english, chinese


def block(english: Path, index: int, text: str) -> str:
    """An export file's block for cell ``index`` of the English notebook, translated as ``text``."""
    cell = nbformat.read(english, as_version=4).cells[index]
    where = zh.rel(zh.zh_path(english))
    head = f"=== {cell.id} {cell.cell_type} {where} en={zh.sha(cell.source)[:12]} ==="
    return f"{head}\n{text}\n"


def edit(path: Path, index: int, **changes) -> None:
    nb = nbformat.read(path, as_version=4)
    for key, value in changes.items():
        nb.cells[index][key] = value
    nbformat.write(nb, path)


def test_a_changed_english_cell_makes_its_translation_stale_with_the_diff(tiny):
    english, chinese = tiny
    edit(english, 2, source="A checkpoint holds 2,048 numbers.")
    found = [line for line in zh.problems(chinese) if "stale" in line]
    cell = nbformat.read(chinese, as_version=4).cells[2].id
    assert len(found) == 1 and found[0].startswith(f"notebooks/zh/01_saving.ipynb, cell {cell}")
    assert "-A checkpoint holds 1,024 numbers." in found[0]
    assert "+A checkpoint holds 2,048 numbers." in found[0]
    zh.sync()  # sync keeps the stale translation and the tool still names it
    assert any("stale" in line for line in zh.problems(chinese))
    assert f"=== {cell} markdown" in zh.export(chinese, everything=False)


def test_sync_brings_new_code_and_outputs_and_new_cells_in_english(tiny):
    english, chinese = tiny
    nb = nbformat.read(english, as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="2\n")]
    nb.cells.append(nbformat.v4.new_markdown_cell("Next, the model is loaded again."))
    nbformat.write(nb, english)
    new_id = nb.cells[-1].id
    assert zh.problems(chinese) == [
        "notebooks/zh/01_saving.ipynb: its cells are not the English notebook's "
        f"(new in English: {new_id}; run tools/zh.py sync)"
    ]
    zh.sync()
    twin = nbformat.read(chinese, as_version=4)
    assert twin.cells[1].outputs[0]["text"] == "2\n"
    assert "这次运行的第一个值" in twin.cells[1].source  # the translated comment is kept
    found = zh.problems(chinese)
    assert len(found) == 1 and "not translated: Next, the model is loaded again." in found[0]


def test_code_that_differs_beyond_its_comments_or_outputs_that_differ_are_caught(tiny):
    english, chinese = tiny
    edit(chinese, 1, source="x = 2  # 这次运行的第一个值\nprint(x)")
    assert "the code differs from the English beyond its comments" in zh.problems(chinese)[0]
    edit(chinese, 1, source="x = 1  # 这次运行的第一个值\nprint(x)", outputs=[])
    assert "the outputs differ from the English" in zh.problems(chinese)[0]
    nb = nbformat.read(chinese, as_version=4)
    nb.cells[1].source = "x = 1  # the first value of the run\nprint(x)"
    del nb.cells[1].metadata["translation"]
    nbformat.write(nb, chinese)
    zh.sync()
    assert "comment not translated: # the first value of the run" in zh.problems(chinese)[0]


def test_english_left_in_a_translation_is_caught_but_code_and_numbers_are_not_english():
    assert zh.untranslated("The model is saved after every epoch.") != []
    assert zh.untranslated("每轮之后保存模型（`torch.save(model.state_dict(), path)`）。") == []
    assert zh.untranslated("| 批量大小 | 512 | 1024 |\n|---|---|---|\n| 94.17 % | 10 min |") == []
    mixed = "每轮保存一次模型。\n\n- 第二项还是英文：the model is saved after every epoch"
    assert zh.untranslated(mixed) == ["- 第二项还是英文：the model is saved after every epoch"]
    assert (
        zh.untranslated("见 [the PyTorch tutorial on saving models](https://pytorch.org/a/b)") != []
    )
    assert zh.untranslated("PyTorch 自带的 `torchrun` 与 DeepSpeed、FSDP 都能做到。") == []


def test_the_glossary_numbers_and_the_lectures_words_are_checked(tiny):
    english, chinese = tiny
    edit(chinese, 0, source="# 第 01 课 · 保存\n\n每个周期都保存模型，纪元结束时也保存。")
    found = "\n".join(zh.problems(chinese))
    assert "writes '纪元'; the glossary (notebooks/zh/TERMS.md) says 轮" in found
    assert "the English says 'epoch', the translation lacks '轮'" in found
    edit(chinese, 2, source="一个检查点保存 1024 个数。")
    assert "the English says 1,024, the translation does not" in "\n".join(zh.problems(chinese))
    edit(chinese, 2, source="一个存档点保存 1,024 个数。")
    assert "writes '存档点'" in "\n".join(zh.problems(chinese))
    edit(chinese, 0, source="# 第 01 课 · 保存\n\n每轮都保存模型。")
    edit(
        chinese,
        2,
        source="讲义说「一般保存方式2比保存方式1所占的内存小」，一个检查点保存 1,024 个数。",
    )
    assert zh.problems(chinese) == []
    edit(chinese, 2, source="讲义说「保存方式2总是更小」，一个检查点保存 1,024 个数。")
    assert (
        "「保存方式2总是更小」 is not in the lecture note word for word" in zh.problems(chinese)[0]
    )


def test_the_glossary_has_the_course_s_terms():
    terms = {
        zh_term: (english, core)
        for english, chinese, _, core in zh.load_terms()
        for zh_term in chinese
    }
    for needed in (
        "张量",
        "卷积层",
        "池化",
        "全连接",
        "损失函数",
        "优化器",
        "学习率",
        "批量大小",
        "轮",
        "检查点",
        "状态字典",
        "推理",
        "方式1",
        "方式2",
        "正确率",
    ):
        assert needed in terms and terms[needed][1], needed
    assert terms["轮"][0] == ["epoch"]


# ---------------------------------------------------------------------------------------------
# The exercises answer in Chinese


@pytest.mark.parametrize("path", LESSON_MODULES, ids=lambda p: p.stem)
def test_every_exercise_message_is_written_in_both_languages(path):
    found = zh.messages_outside_say(path)
    assert not found, "\n".join(found)
    text = path.read_text(encoding="utf-8")
    chinese = " ".join(re.findall(r"[\u4e00-\u9fff][^\"\n]*", text))
    assert zh.avoided(chinese, path.name) == []


def test_the_message_guard_catches_a_message_in_one_language(tmp_path, monkeypatch):
    monkeypatch.setattr(zh, "ROOT", tmp_path)
    module = tmp_path / "lesson99.py"
    module.write_text(
        textwrap.dedent('''
        """A docstring is not a message."""
        def check(x):
            if x.startswith("Some PyTorch text"):
                raise NotYet(say(f"you gave {x}, not a word", f"你给的是 {x}"))
            raise NotYet(f"the value {x} is not right")
        q1 = Exercise(("q1: a name", "q1：名字"), check, hint=("a hint here", "no chinese"),
                      solution="x = 1  # the answer")
        q2 = Exercise(("q2: a name", "q2：名字"), check, hint=("a hint", "提示"),
                      solution="def answer(values): return sorted(values)")  # no comment
        ''')
    )
    found = zh.messages_outside_say(module)
    assert [line.split(": ", 1)[1][:40] for line in found] == [
        "the Chinese side holds no Chinese",
        "a message outside say()",
        "English text outside say(): 'the value  ",
        "English text outside say(): 'x = 1  # th",
    ]


def all_exercises() -> list[tuple[str, str, Exercise]]:
    found = []
    for path in LESSON_MODULES:
        if path.stem.startswith("lesson"):
            module = importlib.import_module(f"cifar_course.exercises.{path.stem}")
            found += [(path.stem, n, q) for n, q in vars(module).items() if isinstance(q, Exercise)]
    return found


@pytest.mark.parametrize(
    "lesson, number, exercise", all_exercises(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_the_two_solutions_are_the_same_code_and_the_hint_is_chinese(
    lesson, number, exercise, chinese
):
    english, translated = exercise._solutions
    assert zh.code_tokens(english) == zh.code_tokens(translated)
    assert [c for c in zh.comments(translated) if zh.is_prose(c)] == []
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exercise.hint()
        exercise.solution()
    shown = out.getvalue()
    assert shown.startswith(f"提示（{number}：") and "一种解法" in shown
    assert translated in shown
    assert zh.untranslated(shown.split("\n")[0]) == []


@pytest.mark.parametrize(
    "path", [p for p in CHINESE if p.name.endswith("_exercises.ipynb")], ids=name
)
def test_the_chinese_exercise_notebooks_answer_in_chinese(path):
    """The notebook's own setup cell turns Chinese on: the blanks get 还不对, the Chinese
    solutions 正确; the solutions notebook shows those solutions."""
    from exercise_cases import check_cells, exercises_in, module_for, run_checks

    nb = nbformat.read(path, as_version=4)
    scope: dict = {}
    try:
        exec(nb.cells[1].source, scope)  # the setup cell (installs nothing off Colab)
        exec(nb.cells[2].source, scope)  # the imports
        assert cifar_course.language() == "zh"
        checks = check_cells(nb)
        for i, cell in enumerate(nb.cells[3:], start=3):  # the answers, blanks and all
            if cell.cell_type == "code" and i not in checks and i - 1 not in checks:
                exec(cell.source, scope)
        blanks = run_checks(path, scope)
        exercises = exercises_in(module_for(path))
        for exercise in exercises.values():
            exec(exercise.solution_code, scope)
        solved = run_checks(path, scope)
        assert list(blanks) == list(solved) == list(exercises)
        for number in exercises:
            assert str(blanks[number]).startswith("还不对："), blanks[number]
            assert str(solved[number]).startswith("正确："), solved[number]
            for feedback in (blanks[number], solved[number]):
                assert zh.untranslated(feedback.message) == [], feedback.message
        solutions = path.parent / "solutions" / path.name.replace("_exercises", "_solutions")
        answers = nbformat.read(solutions, as_version=4)
        shown = [answers.cells[i - 1].source for i in check_cells(answers)]
        assert shown == [q.solution_code for q in exercises.values()]
        # its stored lines are what its checks print now, in Chinese (a timing's digits aside)
        stored = [
            "".join(o["text"] for o in answers.cells[i].outputs) for i in check_cells(answers)
        ]
        now = [f"{solved[number]}\n" for number in exercises]
        assert [DECIMAL.sub("#", t) for t in stored] == [DECIMAL.sub("#", t) for t in now]
    finally:
        cifar_course.set_language("en")


def test_set_language_takes_the_usual_spellings_and_refuses_what_it_does_not_speak():
    with pytest.raises(ValueError, match="'en' or 'zh'.*中文"):
        cifar_course.set_language("fr")
    assert cifar_course.language() == "en"
    try:
        for spelling in ("zh-CN", "zh_CN", "zh-Hans", "ZH"):
            cifar_course.set_language("en")
            cifar_course.set_language(spelling)
            assert cifar_course.language() == "zh"
    finally:
        cifar_course.set_language("en")


def test_feedback_keeps_the_language_it_was_checked_in(chinese):
    from cifar_course.exercises.lesson01 import q4

    feedback = q4.evaluate(lambda c_in, c_out, kernel_size, bias=True: 0)
    cifar_course.set_language("en")
    assert str(feedback).startswith("还不对：")


# ---------------------------------------------------------------------------------------------
# The Chinese README


def commands(text: str) -> list[str]:
    """The lines of a README's shell blocks without their comments: what a learner types."""
    blocks = re.findall(r"```(?:bash|sh|console|shell)\n(.*?)```", text, flags=re.S)
    lines = [re.sub(r"\s+#.*$", "", line).strip() for b in blocks for line in b.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_the_chinese_readme_gives_the_same_commands_and_is_linked_from_the_english_one():
    english = (ROOT / "README.md").read_text(encoding="utf-8")
    chinese = README_ZH.read_text(encoding="utf-8")
    assert "(README.zh-CN.md)" in "\n".join(english.splitlines()[:5])
    assert "(README.md)" in "\n".join(chinese.splitlines()[:5])
    assert commands(chinese) == commands(english)
    assert zh.avoided(chinese, "README.zh-CN.md") == []
    assert zh.join_chinese_lines(chinese) == chinese, "a break or space between Chinese characters"
    for unit in zh.untranslated(chinese):
        pytest.fail(f"README.zh-CN.md: not translated: {unit[:100]}")
    for path in zh.english_notebooks():
        twin = zh.zh_path(path).relative_to(ROOT).as_posix()
        if "solutions" not in twin:
            assert f"({twin})" in chinese, twin


def test_the_lectures_words_are_quoted_as_the_note_wrote_them():
    """Where a Chinese lesson quotes the lecture note, in 「」, it quotes it word for word."""
    if not zh.LECTURE_NOTE.exists():
        pytest.skip(f"the lecture note is not beside this checkout ({zh.LECTURE_NOTE})")
    note = zh.LECTURE_NOTE.read_text(encoding="utf-8")
    quotes, wrong = 0, []
    for path in CHINESE:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "markdown":
                quotes += len(re.findall(r"「[^」]*」", cell.source))
                wrong += zh.quotes_not_in(note, cell.source, f"{name(path)}, cell {cell.id}")
    assert not wrong, "\n".join(wrong)
    assert quotes >= 5  # lessons 02, 03, 04 and 07 quote the note


def test_a_code_change_keeps_the_translated_comments_of_the_lines_it_left_alone(tiny):
    english, chinese = tiny
    edit(english, 1, source="x = 2  # the first value of the run\nprint(x)")
    zh.sync()
    twin = nbformat.read(chinese, as_version=4)
    assert twin.cells[1].source == "x = 2  # 这次运行的第一个值\nprint(x)"
    assert zh.problems(chinese) == []


def test_a_search_and_replace_over_every_notebook_is_not_a_stale_translation(tiny):
    """The README's recipe for a fork rewrites the repository's address in every notebook, the
    English text recorded in the translations too: sync refreshes their hashes."""
    english, chinese = tiny
    for path in (english, chinese):
        path.write_text(path.read_text(encoding="utf-8").replace("1,024", "1,025"))
    assert "replaced in both languages since it was recorded (run sync)" in zh.problems(chinese)[0]
    zh.sync()
    assert zh.problems(chinese) == []


def test_code_links_and_length_are_kept_by_a_translation(tiny):
    english, chinese = tiny
    edit(
        english,
        2,
        source="A checkpoint holds 1,024 numbers; load it with `weights_only=True` "
        "as [the tutorial](https://pytorch.org/tutorials/) says. It loads on any machine, and "
        "no code from the file runs.",
    )
    good = (
        "一个检查点保存 1,024 个数；按[教程](https://pytorch.org/tutorials/)所说，"
        "用 `weights_only=True` 加载它。它在任何机器上都能加载，而且文件里的代码都不会运行。"
    )
    edit(chinese, 2, source=good)
    nb = nbformat.read(chinese, as_version=4)
    zh.mark(nb.cells[2], nbformat.read(english, as_version=4).cells[2].source)
    nbformat.write(nb, chinese)
    assert zh.problems(chinese) == []
    edit(chinese, 2, source=good.replace("True", "False"))
    assert "the English has the code `weights_only=True`" in zh.problems(chinese)[0]
    edit(chinese, 2, source=good.replace("pytorch.org/tutorials/", "example.com/"))
    assert "https://pytorch.org/tutorials/, the translation does not" in zh.problems(chinese)[0]
    edit(
        chinese,
        2,
        source="检查点：`weights_only=True` [教程](https://pytorch.org/tutorials/) 1,024",
    )
    assert "is a sentence missing?" in zh.problems(chinese)[0]


def test_import_refuses_bad_blocks_and_writes_nothing_then(tiny):
    english, chinese = tiny
    before = chinese.read_bytes()
    nb = nbformat.read(chinese, as_version=4)
    path = zh.rel(chinese)
    en_hash = zh.sha(nbformat.read(english, as_version=4).cells[0].source)[:12]
    head = f"=== {nb.cells[0].id} markdown {path} en={en_hash} ==="
    fine = f"{head}\n# 第 01 课 · 保存\n\n每轮都保存一次模型。\n"
    cases = {
        f"{fine}{block(english, 2, '')}\n": "the block is empty",
        f"{fine}=== {nb.cells[2].id} markdown {path}\n一个。\n": "looks like a block's first",
        f"{fine}=== {nb.cells[2].id} markdown notebooks/01_saving.ipynb en=0 ===\n一个。\n": (
            "not a Chinese notebook"
        ),
        f"{fine}=== nosuchid markdown {path} en=0 ===\n一个。\n": "no markdown cell nosuchid",
        f"{fine}=== {nb.cells[2].id} markdown {path} ===\n一个。\n": "does not say which English",
        f"{head.replace('en=', 'en=0')}\n每轮。\n": "the English changed since this file",
        "no block here\n": "the file must start with a === line",
        "": "the file holds no block",
    }
    for text, said in cases.items():
        try:
            refused = zh.import_text(text)
        except zh.Refused as why:
            refused = [str(why)]
        assert any(said in line for line in refused), (said, refused)
        assert chinese.read_bytes() == before  # nothing half-written
    assert zh.import_text("\ufeff" + fine) == []  # a byte-order mark is no harm


def test_the_tool_answers_bad_input_in_one_line(tmp_path, capsys, monkeypatch):
    for argv in (
        ["export", str(tmp_path / "missing.ipynb")],
        ["export", str(zh.english_notebooks()[0])],
        ["import", str(tmp_path / "missing.txt")],
    ):
        monkeypatch.setattr(sys, "argv", ["tools/zh.py", *argv])
        assert zh.main() == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("tools/zh.py: "), err
    gbk = tmp_path / "gbk.txt"
    gbk.write_bytes("=== 翻译 ===".encode("gbk"))
    monkeypatch.setattr(sys, "argv", ["tools/zh.py", "import", str(gbk)])
    assert zh.main() == 2 and "not UTF-8" in capsys.readouterr().err


def test_the_message_guard_knows_every_way_to_write_a_message(tmp_path, monkeypatch):
    monkeypatch.setattr(zh, "ROOT", tmp_path)
    module = tmp_path / "lesson98.py"
    module.write_text(
        textwrap.dedent("""
        def check(a, b):
            if a:
                raise NotYet("expected %s got %s" % (a, b))
            if b:
                raise NotYet("wrong")
            raise NotYet(say("right on all cases", "全部正确 but the rest is in English"))
        def fine(a):
            raise NotYet(say(english=f"{a} is wrong", chinese=f"{a} 不对"))
        """)
    )
    found = [line.split(": ", 1)[1] for line in zh.messages_outside_say(module)]
    assert sorted(found) == sorted(
        [
            "a message outside say()",
            "a message outside say()",
            "the Chinese side is still partly English",
            "English text outside say(): 'expected %s got %s'",
        ]
    ), found


def test_an_export_file_hides_no_stale_translation(tiny):
    """A block without the English's hash, or one still carrying its stale note, is refused."""
    english, chinese = tiny
    edit(english, 2, source="A checkpoint holds 2,048 numbers.")
    exported = zh.export(chinese, everything=False)
    assert "#| stale" in exported and "+A checkpoint holds 2,048 numbers." in exported
    refused = zh.import_text(exported)
    assert refused and "still marked stale" in refused[0]
    without_hash = re.sub(r" en=[0-9a-f]+ ===", " ===", exported.replace("#| stale", "#| note"))
    assert "does not say which English" in zh.import_text(without_hash)[0]
    assert zh.import_text(block(english, 2, "一个检查点保存 2,048 个数。")) == []
    assert zh.problems(chinese) == []


def test_sync_keeps_what_was_translated_in_jupyter_and_follows_a_cell_to_its_new_id(tiny):
    english, chinese = tiny
    nb = nbformat.read(english, as_version=4)
    nb.cells.insert(3, nbformat.v4.new_markdown_cell("Load it back with the same network."))
    nbformat.write(nb, english)
    zh.sync()
    edit(chinese, 3, source="用同一个网络把它加载回来。")  # typed in JupyterLab, not imported
    zh.sync()
    assert nbformat.read(chinese, as_version=4).cells[3].source == "用同一个网络把它加载回来。"
    assert "translated, but not marked" in zh.problems(chinese)[0]
    nb = nbformat.read(english, as_version=4)
    nb.cells[2].id = "pasted1"  # cut and pasted in JupyterLab: a new id, the same text
    nbformat.write(nb, english)
    zh.sync()
    assert nbformat.read(chinese, as_version=4).cells[2].source == "一个检查点保存 1,024 个数。"


def test_a_replacement_in_the_english_alone_is_not_taken_for_a_search_and_replace(tiny):
    english, chinese = tiny
    for path in (english, chinese):  # the English and its record, not the Chinese
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace("holds 1,024 numbers", "holds no numbers"))
    assert "the recorded English was edited" in "\n".join(zh.problems(chinese))
    zh.sync()
    assert "the recorded English was edited" in "\n".join(zh.problems(chinese))


def test_english_words_left_in_a_chinese_sentence_or_heading_are_caught():
    assert zh.untranslated("每轮保存一次。Train for 10 epochs at a 0.1 learning rate.") != []
    assert zh.untranslated("## Results", "## Curves") != []
    assert zh.untranslated("## TensorBoard", "## TensorBoard") == []
    assert zh.untranslated("### torch.compile", "### `torch.compile`") == []
    assert zh.untranslated("A checkpoint holds numbers.", "A checkpoint holds numbers.") != []
    assert (
        zh.untranslated("分布式数据并行（Distributed Data Parallel, DDP）让每个进程各算一份。")
        == []
    )
    assert zh.untranslated("见 <https://example.com/a>，所以这个固定的顺序是按类别排好的。") == []
    assert zh.join_chinese_lines("## 结果\n一个检查点。") == "## 结果\n一个检查点。"
