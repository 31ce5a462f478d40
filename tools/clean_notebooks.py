"""Strip noise from executed notebooks before committing them.

Removes progress-bar widget outputs and widget state (GitHub cannot render them), and the
per-cell execution timestamps nbconvert records. Outputs of the run are otherwise kept as they are.

    python tools/clean_notebooks.py notebooks/*.ipynb
"""

from __future__ import annotations

import sys

import nbformat

WIDGET = "application/vnd.jupyter.widget-view+json"


def clean(path: str) -> None:
    """Rewrite one notebook in place without widget outputs, widget state or timing metadata."""
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if WIDGET not in o.get("data", {})]
    nbformat.write(nb, path)


if __name__ == "__main__":
    for notebook in sys.argv[1:]:
        clean(notebook)
