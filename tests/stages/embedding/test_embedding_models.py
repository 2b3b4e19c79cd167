"""Finding and loading models (stages/embedding/models.py): bad paths say what is wrong; the packaged alias resolves offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ParamError
from stages.embedding import (
    Embed,
    encode_texts,
)


def test_model_path_that_does_not_exist():
    with pytest.raises(ParamError, match="does not exist") as err:
        Embed.from_params({"model": "/nonexistent/minilm"})
    assert err.value.param == "model"


def test_model_path_that_is_not_a_sentence_transformer(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ParamError, match="not a sentence-transformers model"):
        encode_texts(["x"], model=str(tmp_path))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "modules.json").write_text("[]")
    with pytest.raises(ParamError, match="could not be loaded"):
        encode_texts(["x"], model=str(broken))


def test_packaged_model_alias_resolves_offline():
    from stages.embedding import packaged_model_path, resolve_model_path

    assert resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == packaged_model_path()
    assert Path(packaged_model_path(), "modules.json").is_file()
