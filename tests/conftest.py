import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))

import plugin_stages  # noqa: E402,F401  - registers the test-only stages in this process

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Library calls cache under CORPUSFORGE_CACHE; keep each test session's cache out of $HOME."""
    monkeypatch.setenv("CORPUSFORGE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the `pipeline` CLI in a subprocess with the test-only stages loaded."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO), env.get("PYTHONPATH", "")])
    env["CORPUSFORGE_PLUGINS"] = "plugin_stages"
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
