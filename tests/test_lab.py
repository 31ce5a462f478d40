"""`make lab`: JupyterLab started the README's way gives its kernels and terminals the course's
programs, and serves every file a lesson links to.

The tests start the real JupyterLab server with `make lab`, from a shell whose PATH lacks the
virtual environment (as when it is not activated) and with no terminal attached (as from a
desktop launcher), and use it through its REST API and its terminal websocket as JupyterLab's
page does: a kernel runs what the lessons tell learners to run (`%tensorboard`); a terminal
starts in notebooks/ and finds `tensorboard`; every relative link of every notebook opens.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from jupyter_client import BlockingKernelClient
from test_notebooks import relative_links

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)
TOKEN = "cifar-course-test"
BARE_PATH = "/usr/local/bin:/usr/bin:/bin"  # no virtual environment on it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(port: int, route: str, method: str = "GET", body: dict | None = None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/{route}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read()
    return json.loads(text) if text else None


def run_in_kernel(client: BlockingKernelClient, code: str) -> tuple[str, list[dict]]:
    """Run ``code``; return its printed text and its rich outputs."""
    printed, rich = [], []

    def hook(message: dict) -> None:
        kind, content = message["msg_type"], message["content"]
        if kind == "stream":
            printed.append(content["text"])
        elif kind in ("display_data", "update_display_data", "execute_result"):
            rich.append(content["data"])
        elif kind == "error":
            printed.append("\n".join(content["traceback"]))

    client.execute_interactive(code, output_hook=hook, timeout=120)
    return "".join(printed), rich


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server started with `make lab` without the venv on PATH; yields its port."""
    if not (VENV / ".installed").is_file():
        pytest.skip(f"{VENV} was not set up by make; run the tests with `make test`")
    port = free_port()
    env = dict(os.environ, PATH=BARE_PATH, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    args = f"--no-browser --port={port} --IdentityProvider.token={TOKEN} --ServerApp.ip=127.0.0.1"
    if os.geteuid() == 0:  # CI runs as root, which JupyterLab refuses unless told
        args += " --allow-root"
    server = subprocess.Popen(
        ["make", "-s", "-C", str(ROOT), "lab", f"VENV={VENV}", f"LAB_ARGS={args}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                api(port, "status")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("`make lab` did not start a JupyterLab server within 90 s")
                time.sleep(0.5)
        yield port, tmp_path / "runtime"
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


@pytest.mark.notebooks
@pytest.mark.slow
def test_make_lab_serves_the_lessons_and_its_kernels_find_tensorboard(lab, tmp_path):
    port, runtime = lab
    names = {item["name"] for item in api(port, "contents/notebooks")["content"]}
    assert "01_sequential_model.ipynb" in names  # the server's root is the repository

    kernel = api(port, "kernels", "POST", {"name": "python3"})
    client = BlockingKernelClient()
    client.load_connection_file(str(runtime / f"kernel-{kernel['id']}.json"))
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        printed, _ = run_in_kernel(client, "import shutil; print(shutil.which('tensorboard'))")
        assert Path(printed.strip()) == VENV / "bin" / "tensorboard", printed

        logdir = tmp_path / "runs"
        logdir.mkdir()
        board = free_port()
        printed, rich = run_in_kernel(
            client, f"%load_ext tensorboard\n%tensorboard --logdir {logdir} --port {board}"
        )
        assert "ERROR" not in printed, printed  # "Could not find `tensorboard`" before `make lab`
        assert any("text/html" in data or "application/javascript" in data for data in rich), rich
        run_in_kernel(
            client,
            "import os, signal\nfrom tensorboard import manager\n"
            f"[os.kill(i.pid, signal.SIGTERM) for i in manager.get_all() if i.port == {board}]",
        )
    finally:
        client.stop_channels()
        api(port, f"kernels/{kernel['id']}", "DELETE")


@pytest.mark.notebooks
@pytest.mark.slow
def test_make_lab_opens_every_link_of_every_notebook_and_its_terminals_start_in_notebooks(lab):
    """A link that leaves the folder JupyterLab serves does nothing when clicked (the server
    answers 404), so the server must hold every file the notebooks link to; and a terminal
    opened there must start where the README says and find the course's programs."""
    import asyncio

    from tornado.websocket import websocket_connect

    port, _ = lab
    notebooks = sorted((ROOT / "notebooks").rglob("*.ipynb"))
    checked = 0
    for notebook in notebooks:
        for target in relative_links(notebook):  # tests/test_notebooks.py's reading of them
            path = (notebook.parent / target.partition("#")[0]).resolve().relative_to(ROOT)
            api(port, f"contents/{urllib.parse.quote(path.as_posix())}?content=0")  # 404 raises
            checked += 1
    assert checked > 50, checked  # the lessons link to benchmarks/, exercises and each other

    terminal = api(port, "terminals", "POST", {})

    async def ask(command: str) -> str:
        url = f"ws://127.0.0.1:{port}/terminals/websocket/{terminal['name']}?token={TOKEN}"
        socket = await websocket_connect(url)
        socket.write_message(json.dumps(["stdin", command + "\r"]))
        seen = ""
        deadline = time.monotonic() + 30
        while "END-OF-ANSWER" not in seen.split(command)[-1] and time.monotonic() < deadline:
            message = await asyncio.wait_for(socket.read_message(), timeout=30)
            kind, *content = json.loads(message)
            if kind == "stdout":
                seen += content[0]
        socket.close()
        return seen

    try:
        answer = asyncio.run(ask("pwd; command -v tensorboard; echo END-OF-ANSWER"))
    finally:
        api(port, f"terminals/{terminal['name']}", "DELETE")
    answer = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", answer)  # the shell's terminal codes
    lines = [line.strip() for line in answer.replace("\r", "").splitlines()]
    assert str(ROOT / "notebooks") in lines, answer
    assert str(VENV / "bin" / "tensorboard") in lines, answer
