"""The local runner (`make demo`) is safe to point at any folder and fails fast, in one line, in real mode."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from vlmwatch_local.__main__ import main

pytestmark = pytest.mark.e2e


def test_out_writes_into_a_fresh_folder_and_deletes_nothing(tmp_path: Path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("not the demo's")
    sample = tmp_path / "note.txt"
    sample.write_text("hello")

    code = main(["demo", str(sample), "--out", str(out), "--timeout", "60", "--step-seconds", "0.2"])

    assert code == 0
    assert (out / "precious.txt").read_text() == "not the demo's"
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    assert run.name.startswith("run-")
    assert list(run.rglob("result.json"))
    assert "LOST" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("env", "url", "expected"),
    [
        ({}, "https://api.vlm.run/v1", "VLMRUN_API_KEY is not set"),
        ({"VLMRUN_API_KEY": "k"}, "http://127.0.0.1:9/v1", "cannot reach VLM Run at http://127.0.0.1:9/v1"),
    ],
)
def test_real_mode_checks_the_key_and_the_service_first(monkeypatch, capsys, tmp_path, env, url, expected):
    monkeypatch.delenv("VLMRUN_API_KEY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    started = time.monotonic()

    code = main(["demo", "--vlmrun-base-url", url, "--out", str(tmp_path)])

    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0]  # one line, no traceback
    assert time.monotonic() - started < 10
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written
