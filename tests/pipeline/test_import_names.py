"""A training repository with its own top-level `pipeline.py` or `stages.py` gets a message that says what to do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run `code` as a training script in `cwd` would: its folder first on sys.path, corpusforge after it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(cwd), str(REPO)])
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_own_pipeline_py_names_the_file_and_the_fix(tmp_path):
    (tmp_path / "pipeline.py").write_text("STEPS = ['tokenise', 'train']\n")
    done = _python("from stages.noise import LabelNoise", tmp_path)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "is not a package" not in done.stderr
    assert str(tmp_path / "pipeline.py") in last
    assert "Rename that file" in last and "mylab.pipeline" in last


def test_own_stages_py_names_the_file_and_the_fix(tmp_path):
    (tmp_path / "stages.py").write_text("STAGES = ['pretrain', 'finetune']\n")
    done = _python("import pipeline", tmp_path)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert str(tmp_path / "stages.py") in last and "mylab.stages" in last


def test_pipeline_module_inside_the_users_package_is_fine(tmp_path):
    (tmp_path / "mylab").mkdir()
    (tmp_path / "mylab" / "__init__.py").write_text("")
    (tmp_path / "mylab" / "pipeline.py").write_text("STEPS = ['train']\n")
    done = _python(
        "import mylab.pipeline, pipeline\n"
        "from stages.noise import LabelNoise\n"
        "import polars as pl\n"
        "df = pl.DataFrame({'id': [str(i) for i in range(10)], 'label': [i % 2 for i in range(10)]})\n"
        "out = LabelNoise(mode='flip', rate=0.2).apply(df, seed=0)\n"
        "print(mylab.pipeline.STEPS, int(out['is_noisy'].sum()))",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['train']", "2"]
