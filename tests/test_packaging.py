"""environment.yml must install what pyproject.toml declares."""

import os
import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}


def requirement(spec: str) -> tuple[str, str]:
    name, version = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", spec.split(";")[0]).groups()
    return CONDA_NAMES.get(name.lower(), name.lower()), version.replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(requirement(s) for s in project["dependencies"])
    wanted |= dict(requirement(s) for s in project["optional-dependencies"]["dev"])
    lines = (ROOT / "environment.yml").read_text().splitlines()
    conda = {}
    for line in lines[lines.index("dependencies:") :]:
        match = re.match(r"  - ([A-Za-z][A-Za-z0-9_.-]*)(.*)$", line)
        if match and match.group(1) not in ("python", "pip"):
            conda[match.group(1).lower()] = match.group(2).strip()
    assert conda == wanted
    assert "      - -e ." in lines  # the package itself comes from pip


def test_the_website_needs_what_the_dev_extra_installs():
    """The GitHub Pages workflow installs site/requirements.txt alone: the same lines as the dev
    extra's, so that what make test builds is what gets published."""
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    lines = (ROOT / "site" / "requirements.txt").read_text().splitlines()
    needed = [line for line in lines if line and not line.startswith("#")]
    assert needed and set(needed) <= set(dev["dev"])
    workflow = (ROOT / ".github" / "workflows" / "pages.yml").read_text()
    assert "pip install -r site/requirements.txt" in workflow
    assert "python tools/build_site.py" in workflow and "path: _build/site" in workflow


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make train" in readme
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")


def test_readme_has_no_placeholder_left_unfilled():
    # measured figures go into the README as @NAME@ while a run is pending
    assert not re.findall(r"@[A-Z_]+@", (ROOT / "README.md").read_text())


def test_readme_is_for_learners_and_links_the_measurement_record():
    readme = (ROOT / "README.md").read_text()
    assert len(readme) <= 16_000, len(readme)  # measurement history goes to benchmarks/README.md
    assert "(benchmarks/README.md" in readme and (ROOT / "benchmarks" / "README.md").is_file()
    assert "make lab" in readme


@pytest.mark.slow
def test_collecting_the_tests_neither_downloads_nor_writes(tmp_path):
    """``pytest --collect-only`` in a checkout without CIFAR-10 beside it: no ``data/`` appears
    (the data is found when the first test starts), and nothing of the course's is written.
    (Hypothesis keeps a cache of its own in ``.hypothesis/``, ignored by git.)"""
    import shutil
    import subprocess

    checkout = tmp_path / "checkout"  # no shared/ beside it, no CIFAR_COURSE_DATA
    shutil.copytree(
        ROOT / "tests", checkout / "tests", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", checkout)
    (checkout / "notebooks").symlink_to(ROOT / "notebooks")  # the tests made for each notebook
    (checkout / "tools").symlink_to(ROOT / "tools")  # tests/test_zh.py reads tools/zh.py
    before = sorted(p.relative_to(checkout) for p in checkout.rglob("*"))
    env = {k: v for k, v in os.environ.items() if k != "CIFAR_COURSE_DATA"}
    env = {k: v for k, v in env.items() if not k.startswith("PYTEST_")}  # this run's, not ours
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert " tests collected" in done.stdout and "no tests ran" not in done.stdout
    after = sorted(p.relative_to(checkout) for p in checkout.rglob("*"))
    assert [p for p in after if p.parts[0] != ".hypothesis"] == before


def test_a_long_test_without_the_slow_marker_fails_and_names_the_fix(tmp_path):
    """The guard in conftest.py: past the limit, an unmarked test fails with the fix in one
    line; the same test marked slow passes (a nested pytest, with a limit of 0.2 s)."""
    import shutil
    import subprocess

    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path)
    (tmp_path / "test_sleepy.py").write_text(
        "import time\n\nimport pytest\n\n\n"
        "def test_unmarked():\n    time.sleep(0.5)\n\n\n"
        "@pytest.mark.slow\ndef test_marked():\n    time.sleep(0.5)\n\n\n"
        "def test_quick():\n    pass\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(CIFAR_COURSE_UNMARKED_LIMIT_S="0.2", CIFAR_COURSE_DATA=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert "1 failed, 2 passed" in done.stdout, done.stdout[-2000:]
    assert "test_sleepy.py::test_unmarked took 0.5 s but is not marked slow" in done.stdout
    assert "add @pytest.mark.slow" in done.stdout


def test_no_torch_with_the_weights_only_flaw_can_install_with_the_course():
    """CVE-2026-24747: in torch < 2.10.0 a crafted file can corrupt memory through
    ``torch.load(weights_only=True)`` and so run code. The course promises that the lecture's
    files load without running any code, so neither pip nor conda may give it an older torch
    (nor a torchvision built for one); conda takes both from conda-forge alone."""
    from packaging.specifiers import SpecifierSet

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_specs = dict(requirement(s) for s in project["dependencies"])
    lines = (ROOT / "environment.yml").read_text().splitlines()
    conda_specs = {}
    for line in lines:
        match = re.match(r"  - (pytorch|torchvision)(.*)$", line)
        if match:
            conda_specs[match.group(1)] = match.group(2).strip()
    for specs in (pip_specs, conda_specs):
        torch_ok, vision_ok = SpecifierSet(specs["pytorch"]), SpecifierSet(specs["torchvision"])
        assert "2.9.1" not in torch_ok and "2.10.0" in torch_ok and "2.14.1" in torch_ok
        assert "0.24.1" not in vision_ok and "0.25.0" in vision_ok
    floor = re.search(r">=(\d+\.\d+)", pip_specs["pytorch"])[1]
    lesson = (ROOT / "notebooks" / "02_save_and_load.ipynb").read_text()
    assert f"the course requires PyTorch ≥ {floor}" in lesson  # where lesson 02 teaches it
    channels = lines[lines.index("channels:") + 1 : lines.index("dependencies:")]
    assert [c.split("#")[0].strip() for c in channels] == ["- conda-forge"]


def test_the_wheel_lists_every_package_folder():
    """A folder of the package missing from pyproject.toml's list would be left out of the wheel
    that learners install (and that tests/test_lessons.py installs)."""
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    folders = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "cifar_course").rglob("__init__.py")
    }
    assert sorted(listed) == sorted(folders)
