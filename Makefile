# Two commands do all the set-up:  `make train`  and  `make test`.
# Both create (or reuse) the virtual environment in .venv and install the package into it.
# `make lab` opens the lessons in JupyterLab with that environment's programs on PATH.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: train test check site lab clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/python -c "import cifar_course, torch, torchvision, nbval, xdist, myst_nb, playwright, jieba"
	touch $(STAMP)

## The main job: train the lesson net with the lecture's recipe (10 epochs, SGD lr 1e-2, batch 64).
train: $(STAMP)
	$(BIN)/cifar-course data
	$(BIN)/cifar-course train $(ARGS)

## The whole test suite: lint, unit tests, and every notebook run once in smoke mode: each lesson
## alone in an empty folder under nbval, with only the built wheel (tests/test_lessons.py), and
## the exercise notebooks, reading what each check printed (tests/test_exercises.py).
## Two pytest-xdist workers, one torch thread each (tests/conftest.py): 564 s against 767 s in one
## process on the 2-core machine (benchmarks/README.md). --durations shows where the time went.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	CIFAR_COURSE_SMOKE=1 $(BIN)/pytest tests -n 2 --dist loadgroup --durations=25

## A contributor's quick loop (under 2 minutes): lint, the unit tests and the static checks of the
## notebooks, without the tests marked slow (no notebook runs, no torchrun, no long training).
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	CIFAR_COURSE_SMOKE=1 $(BIN)/pytest tests -q -m "not slow" --durations=10

## The website: every lesson page with its stored outputs (no cell runs), the exercises, their
## solutions, the measurement record and the credits, into _build/site/ (tools/build_site.py).
## Read it locally: python3 -m http.server -d _build/site 8000, then open http://localhost:8000
site: $(STAMP)
	$(BIN)/python tools/build_site.py

## JupyterLab on the lessons. The venv's bin/ goes first on PATH, so that notebooks and JupyterLab's
## terminals find its programs (`%tensorboard` runs `tensorboard`) without activating the venv.
## JupyterLab on the whole repository, opened at notebooks/, so that a lesson's links to
## ../benchmarks/ and ../cifar_course/ open in it. The server runs in notebooks/, where its
## terminals start. Their shell is named, so it is not a login shell, which JupyterLab starts when
## it has no terminal attached and which would reset PATH and lose the virtual environment.
lab: $(STAMP)
	cd notebooks && PATH="$(abspath $(BIN)):$$PATH" $(abspath $(BIN))/jupyter lab \
	  --ServerApp.root_dir=.. --LabApp.default_url=/lab/tree/notebooks \
	  --ServerApp.terminado_settings=shell_command="$${SHELL:-/bin/bash}" $(LAB_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache _build
