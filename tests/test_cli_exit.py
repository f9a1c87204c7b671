"""How `publisher` ends: publisher.cli.main exits without tearing the interpreter down (a tenth
of a second saved on every command), and must still do what an exit owes: the exit status,
every line of output, the atexit handlers, and a wait for a thread still at work."""

from __future__ import annotations

import pstats
import subprocess
import sys
import textwrap
from pathlib import Path

from .conftest import ROOT


def _main_with(prelude: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`publisher ARGS` through publisher.cli.main, after `prelude` ran in the same process."""
    code = textwrap.dedent(prelude) + textwrap.dedent(
        f"""
        sys.argv = ["publisher", *{list(args)!r}]
        from publisher.cli import main
        main()
        """
    )
    return subprocess.run(
        [sys.executable, "-c", "import sys\n" + code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_exit_runs_the_atexit_handlers_after_the_output() -> None:
    r = _main_with(
        """
        import atexit
        atexit.register(lambda: print("atexit handler ran", flush=True))
        """,
        "--version",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["publisher, version 0.1.0", "atexit handler ran"]


def test_exit_waits_for_a_thread_still_at_work() -> None:
    r = _main_with(
        """
        import threading, time
        def late():
            time.sleep(0.5)
            print("thread finished", flush=True)
        threading.Thread(target=late).start()
        """,
        "--version",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "thread finished"


def test_exit_status_of_a_usage_error_and_of_a_publisher_error() -> None:
    usage = _main_with("", "send", "--no-such-option")
    assert usage.returncode == 2, usage.stderr
    assert "Error: No such option '--no-such-option'." in usage.stderr
    missing = _main_with("", "send", "--config", "/nonexistent/config.toml")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        "error: /nonexistent/config.toml: config file not found (use --config PATH)"
    ]


def test_every_line_of_a_long_output_reaches_a_pipe() -> None:
    """Output still buffered when the command returns is flushed before the process ends."""
    r = _main_with(
        """
        sys.stdout = open(sys.stdout.fileno(), "w", buffering=1 << 20, closefd=False)
        print("x" * 100 + "\\n", end="" , file=sys.stdout)
        import atexit
        atexit.register(lambda: print("y" * 200_000, end=""))
        """,
        "--version",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith("publisher, version 0.1.0\n" + "y" * 200_000)


def test_a_profiled_command_still_writes_its_profile(tmp_path: Path) -> None:
    """`python -m cProfile -o FILE -m publisher.cli ...` writes FILE after the command
    returns: the quick exit must not cut that short."""
    out = tmp_path / "send.prof"
    r = subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "publisher.cli", "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert any(name == "main" for _, _, name in pstats.Stats(str(out)).stats)
