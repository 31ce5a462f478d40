"""Run each notebook's code cells as one plain Python script, in order, and time it.

For machines without Jupyter, such as the lent GPU machine: it gives a notebook's run time (the
"Run time on a GPU" row of each header) and proves its GPU branches run. The code runs in the
notebooks folder, as the notebook would; its output goes to stdout.

    python tools/run_notebook_code.py notebooks/0*.ipynb
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path


def notebook_code(path: Path) -> str:
    """The code cells of ``path``, joined; refuses IPython magics, which plain Python cannot run,
    except a cell that starts with ``%%writefile NAME``, which becomes a write of NAME.

    A cell tagged ``raises-exception`` (a lesson showing an error on purpose) runs inside
    ``try``, and the error it raises is printed, as the notebook shows it.
    """
    code = []
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        first, _, body = source.partition("\n")
        if first.startswith("%%writefile "):  # lesson 07 writes its DDP script this way
            target = first.removeprefix("%%writefile ").strip()
            code.append(f"from pathlib import Path\nPath({target!r}).write_text({body!r})")
            continue
        for line in source.splitlines():
            if line.lstrip().startswith(("%", "!")):
                raise SystemExit(f"{path}: cannot run the IPython line {line!r} as plain Python")
        if "raises-exception" in cell.get("metadata", {}).get("tags", []):
            source = (
                "try:\n"
                + textwrap.indent(source, "    ")
                + "\nexcept Exception as error:\n"
                + "    print(f'{type(error).__name__} (shown on purpose): {error}')"
            )
        code.append(source)
    return "\n\n".join(code) + "\n"


def main(paths: list[str]) -> int:
    results = []
    for name in paths:
        path = Path(name).resolve()
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(notebook_code(path))
        began = time.perf_counter()
        rc = subprocess.run([sys.executable, f.name], cwd=path.parent).returncode
        seconds = time.perf_counter() - began
        Path(f.name).unlink()
        results.append((path.name, seconds, rc))
        print(f"== {path.name}: {seconds:.1f} s, exit code {rc}", flush=True)
    print("\nnotebook                          seconds  exit")
    for name, seconds, rc in results:
        print(f"{name:<34}{seconds:>7.1f}{rc:>6}")
    return max((rc for _, _, rc in results), default=0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
