"""`make lab`: JupyterLab started the README's way gives its kernels the course's programs.

The test starts the real JupyterLab server with `make lab`, from a shell whose PATH lacks the
virtual environment (as when it is not activated), starts a kernel through the server's REST API,
and runs in it what the lessons tell learners to run: `%tensorboard`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from jupyter_client import BlockingKernelClient

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
    names = {item["name"] for item in api(port, "contents")["content"]}
    assert "01_sequential_model.ipynb" in names  # the lessons are the server's root

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
