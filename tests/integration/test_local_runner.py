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


def test_a_terminated_local_stack_takes_its_moto_server_with_it(tmp_path: Path):
    """`kill`, `timeout` and CI end a run with SIGTERM: no moto server may outlive it (ports, memory, CPU)."""
    import os
    import signal
    import subprocess
    import sys

    env_file = tmp_path / "up.env"
    children: list[str] = []
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "vlmwatch_local", "up", "--env-file", str(env_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not env_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert env_file.exists(), "the local stack did not come up"
        port = next(line.rsplit(":", 1)[1] for line in env_file.read_text().splitlines() if "AWS_ENDPOINT_URL" in line)
        wanted = "\x00".join(["vlmwatch_local.cloud.moto_server", "-H", "127.0.0.1", "-p", port])
        children = [p.name for p in Path("/proc").iterdir() if p.name.isdigit() and wanted in _cmdline(p)]
        assert children, "no moto server process found"

        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        for pid in children:
            deadline = time.monotonic() + 15
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not Path(f"/proc/{pid}").exists(), f"moto server {pid} outlived the stack"
    finally:  # whatever happened, leave nothing behind
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        for pid in children:
            if Path(f"/proc/{pid}").exists():
                os.kill(int(pid), signal.SIGKILL)


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:  # the process ended meanwhile
        return ""
