"""A real Label Studio server for tests: the `label-studio` command that `scripts/bootstrap.sh`
installs into its own virtual environment (it pins Django and many packages), started on a free
loopback port with a throwaway data folder and a known API token, and stopped afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from miko_assets.devtools.serving import free_port

VENV_ENV = "MIKO_LABEL_STUDIO_VENV"
DEFAULT_VENV = Path.home() / ".venvs" / "label-studio"
CLIENT = Path(__file__).with_name("label_studio_client.py")
ADMIN = "admin@miko.test"
TOKEN = "miko0test0token0000000000000000000000000"
# No look-up of the newest release on PyPI, no analytics, no error reports: the test runs offline.
OFFLINE = {"LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": ""}


def label_studio_venv() -> Path:
    return Path(os.environ.get(VENV_ENV) or DEFAULT_VENV)


@dataclass(frozen=True)
class LabelStudioServer:
    base_url: str
    token: str

    def run_client(self, order: dict) -> dict:
        """Run `label_studio_client.py` under Label Studio's Python with `order`; its JSON answer."""
        done = subprocess.run(
            [str(label_studio_venv() / "bin" / "python"), str(CLIENT)],
            input=json.dumps({"base_url": self.base_url, "token": self.token, **order}),
            capture_output=True, text=True, timeout=300, check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)


@contextmanager
def label_studio(data_dir: Path, timeout_s: float = 300) -> Iterator[LabelStudioServer]:
    command = label_studio_venv() / "bin" / "label-studio"
    if not command.exists():
        raise FileNotFoundError(f"no {command}: run scripts/bootstrap.sh (it installs Label Studio there)")
    port = free_port()
    log = open(data_dir.parent / "label_studio.log", "w")
    # Recent versions refuse legacy tokens unless enabled; the SDK authenticates with one.
    proc = subprocess.Popen(
        [str(command), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(data_dir), "--username", ADMIN, "--password", "miko-admin-pass",
         "--user-token", TOKEN, "--enable-legacy-api-token"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **OFFLINE},
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while not _healthy(base_url):
            if proc.poll() is not None:
                raise RuntimeError(f"label-studio exited: {(data_dir.parent / 'label_studio.log').read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError("label-studio did not answer /health")
            time.sleep(1)
        yield LabelStudioServer(base_url, TOKEN)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _healthy(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
