"""Execute notebooks top to bottom in a real Jupyter kernel with nbclient, and time each one.

    python tools/run_notebooks_kernel.py notebooks/0*.ipynb --workdir /tmp/lessons --out DIR

For the lent GPU machine, which has no Jupyter of its own: with nbclient, ipykernel and their
dependencies carried there as wheels, the lessons run as a learner's kernel runs them (IPython
magics, ``%%writefile``, inline figures, a cell that raises on purpose where it is tagged
``raises-exception``). All notebooks run in order in one empty working folder, as a learner who
opens them one after the other in one folder (lesson 05 finds lesson 03's checkpoint there).

Each executed notebook goes to ``DIR/`` with its outputs, for reading only: outputs are stored in
the repository's notebooks only from a full run of that lesson on the machine its header names.
``DIR/times.md`` gets one row per notebook: its run time, from the kernel's start to the end of
its last cell, and whether it ran through.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError


def run(path: Path, workdir: Path, out: Path, timeout: int) -> tuple[float, str]:
    """Execute ``path`` in ``workdir``; save it to ``out``; return (seconds, outcome)."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    began = time.perf_counter()
    try:
        client.execute()
        outcome = "ran through"
    except CellExecutionError as error:
        last = re.sub(r"\x1b\[[0-9;]*m", "", str(error).strip().splitlines()[-1])
        outcome = "error: " + last[:200]  # the error's last line, without its colour codes
    except (CellTimeoutError, DeadKernelError) as error:
        outcome = f"{type(error).__name__}: {str(error)[:200]}"
    seconds = time.perf_counter() - began
    nbformat.write(notebook, out / path.name)
    return seconds, outcome


def main() -> int:
    """Run each notebook given, in order; 1 if any did not run through."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", type=Path, nargs="+")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = ["| notebook | seconds | outcome |", "|---|---|---|"]
    failed = 0
    for path in args.notebooks:
        seconds, outcome = run(path.resolve(), args.workdir, args.out, args.timeout)
        failed += outcome != "ran through"
        rows.append(f"| {path.name} | {seconds:.1f} | {outcome} |")
        print(rows[-1], flush=True)
        (args.out / "times.md").write_text("\n".join(rows) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
