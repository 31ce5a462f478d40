"""Strip noise from executed notebooks before committing them.

- Removes progress-bar widget outputs and widget state (GitHub cannot render them, and JupyterLab
  shows "model not found" for them after a reopen) and the per-cell execution timestamps nbconvert
  records.
- Merges consecutive stream outputs and applies their carriage returns, with nbconvert's own
  ``CoalesceStreamsPreprocessor``, as JupyterLab does when it saves: a text progress bar leaves its
  last state (or nothing) instead of hundreds of updates. Stream outputs left empty are dropped.
- Writes the kernelspec exactly as JupyterLab does, so a notebook does not open already modified.

Outputs of the run are otherwise kept as they are.

    python tools/clean_notebooks.py notebooks/*.ipynb
"""

from __future__ import annotations

import sys

import nbformat
from nbconvert.preprocessors import CoalesceStreamsPreprocessor

WIDGET = "application/vnd.jupyter.widget-view+json"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def clean(path: str) -> None:
    """Rewrite one notebook in place, cleaned as the module docstring describes."""
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb, _ = CoalesceStreamsPreprocessor().preprocess(nb, {})
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = [
                o
                for o in cell.outputs
                if WIDGET not in o.get("data", {})
                and not (o.output_type == "stream" and not o.text.strip())
            ]
    nbformat.write(nb, path)


if __name__ == "__main__":
    for notebook in sys.argv[1:]:
        clean(notebook)
