# Two commands do all the set-up:  `make train`  and  `make test`.
# Both create (or reuse) the virtual environment in .venv and install the package into it.
# `make lab` opens the lessons in JupyterLab with that environment's programs on PATH.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: train test lab clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/python -c "import cifar_course, torch, torchvision, nbval"
	touch $(STAMP)

## The main job: train the lesson net with the lecture's recipe (10 epochs, SGD lr 1e-2, batch 64).
train: $(STAMP)
	$(BIN)/cifar-course data
	$(BIN)/cifar-course train $(ARGS)

## The whole test suite: lint, unit tests, and every notebook executed by nbval in smoke mode.
## The exercise notebooks run in tests/test_exercises.py, which reads what each check printed.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	CIFAR_COURSE_SMOKE=1 $(BIN)/pytest tests notebooks --nbval-lax --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg --ignore=notebooks/exercises

## JupyterLab on the lessons. The venv's bin/ goes first on PATH, so that notebooks and JupyterLab's
## terminals find its programs (`%tensorboard` runs `tensorboard`) without activating the venv.
lab: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/jupyter lab notebooks/ $(LAB_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
