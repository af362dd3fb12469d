"""``make demo`` as a person arriving runs it: in a subprocess whose stdin stays open (so it stays
up), it leaves an expense run waiting and prints the ``wfa`` commands to see, approve and watch it,
and the approvals inbox's URL with the demo approver's sign-in. The printed ``status`` shows it
waiting; in Chromium the manager signs in with the printed sign-in, sees the expense, approves it
and sees it decided; the printed ``result`` then shows the run completed and the printed ``approve``
explains that the step no longer waits. The commands run exactly as printed from a new shell in the
repository folder (the venv not on the PATH). The README's shell example (which approves with
``wfa``) runs against the same demo, as the README says it does. Closing stdin stops the demo
cleanly. The screenshots of the demo's inbox in the README are taken here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from uuid import uuid4

import pytest

from tests.conftest import fresh_database
from tests.helpers.screenshots import screenshot_dir
from tests.test_readme import README, code_blocks, shell_lines

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
STARTUP_GUARD_S = 300.0
"""Only a guard against a hung demo (it is up in well under a minute on an idle machine)."""
COMMAND_GUARD_S = 120.0
READY = "stay up until Ctrl-C or the end of stdin"
LAST_LINE = "Stopped the dev server."


class Demo:
    """``python -m starter.demo`` in a subprocess: its output collected line by line in a thread."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "starter.demo", *argv],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.ended = False
        """Its output ended (the pipe closed)."""
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def read_until(self, marker: str) -> None:
        """Collects output until a line contains ``marker``; fails if the demo's output ends first."""
        while not self.ended:
            try:
                line = self._queue.get(timeout=STARTUP_GUARD_S)
            except queue.Empty:
                raise AssertionError(f"no {marker!r} from the demo:\n{self.output}") from None
            if line is None:
                self.ended = True
                break
            self.lines.append(line)
            if marker in line:
                return
        raise AssertionError(f"the demo's output ended before {marker!r}:\n{self.output}")

    def stop(self) -> int:
        """Ends stdin (as the demo documents) and waits for it; kills it only if that does not work."""
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout=COMMAND_GUARD_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        # Up to its last line, not to the end of the pipe: a server it started may outlive it
        # (the embedded PostgreSQL stays up while another process uses it) and hold the pipe open.
        # The test asserts on the output; an error here would hide the one that ended the test.
        with contextlib.suppress(AssertionError):
            self.read_until(LAST_LINE)
        return code

    def printed(self, label: str) -> str:
        """The command printed under the ``# label`` line."""
        index = next(i for i, line in enumerate(self.lines) if line.strip() == f"# {label}")
        return self.lines[index + 1].strip()


def new_shell_env(**extra: str) -> dict[str, str]:
    """A new shell's environment: the PATH without this venv, nothing of the test's settings.

    ``PYTHONPATH`` is this checkout: the venv running the tests may be an editable install of another
    checkout, and a clone's own ``.venv`` runs the clone's code, which this reproduces.
    """
    path = os.pathsep.join(
        entry for entry in os.environ.get("PATH", os.defpath).split(os.pathsep) if Path(entry) != VENV_BIN
    )
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/"), "LANG": "C.UTF-8", "PYTHONPATH": str(ROOT)}
    return env | extra


def sh(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Runs one command line as a shell would, in the repository folder."""
    return subprocess.run(
        ["sh", "-c", command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_GUARD_S,
        check=False,
    )


def _explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def readme_shell_example() -> list[str]:
    """The first ``sh`` block of "From a shell: ``wfa``", the one the README says runs as written."""
    section = README.read_text().split("### From a shell: `wfa`", 1)[1]
    return [line for line in shell_lines(code_blocks(section, "sh")[0]) if line.strip()]


async def test_the_demo_leaves_an_approval_its_printed_commands_decide(tmp_path: Path) -> None:
    state = tmp_path / "state"
    task_queue = f"demo-{uuid4()}"
    configured = os.environ.get("DATABASE_URL")
    async with contextlib.AsyncExitStack() as stack:
        database = {}
        if configured:  # that server, with a database of this test's own
            url = await stack.enter_async_context(fresh_database(configured, "wfa_demo"))
            database = {"DATABASE_URL": url}
        env = {k: v for k, v in os.environ.items() if k not in ("WFA_STATE_DIR", "DATABASE_URL")}
        argv = ["--port", "0", "--services-port", "0", "--inbox-port", "0", "--state-dir", str(state)]
        argv += ["--task-queue", task_queue]
        demo = Demo(argv, env | database)
        try:
            await asyncio.to_thread(demo.read_until, READY)
            shell = new_shell_env(**database)
            await asyncio.to_thread(_printed_status_shows_it_waiting, demo, shell)
            await asyncio.to_thread(_approve_it_in_the_inbox, demo)
            await asyncio.to_thread(_printed_commands_after_the_browser, demo, shell)
            await asyncio.to_thread(_run_the_readme_example, demo, state, task_queue, database)
        finally:
            code = await asyncio.to_thread(demo.stop)
    assert code == 0, demo.output
    # Decision proof is on for the demo's own runs: a forged token is refused, a minted one accepted.
    assert (
        "mallory approves as manager with a forged token -> refused: decision token refused: token signature is not valid"
        in demo.output
    )
    assert "Closed the store." in demo.output
    assert LAST_LINE in demo.output


SCREENSHOTS = screenshot_dir()
"""docs/screenshots with WFA_UPDATE_SCREENSHOTS=1 (the README's), else a temporary directory."""
TITLE = "kim claims 980 for team offsite catering"


def _printed(demo: Demo) -> tuple[str, str, str, str]:
    """The waiting run's key and the printed status, approve and result commands."""
    waiting = re.search(
        r"^(expense-EXP-8-\S+) is awaiting_approval on expense-approval v1", demo.output, re.M
    )
    assert waiting, demo.output
    key = waiting.group(1)
    status, approve, result = (
        demo.printed(label)
        for label in (
            "see it wait for the manager",
            "approve it as the manager",
            "watch it finish (exit code 0 once it completed)",
        )
    )
    # The path to wfa is one a new shell can run; the tenant is the demo's.
    assert all(" --tenant demo " in command and key in command for command in (status, approve, result))
    return key, status, approve, result


def _printed_status_shows_it_waiting(demo: Demo, env: dict[str, str]) -> None:
    _, status, _, _ = _printed(demo)
    seen = sh(status, env)
    assert seen.returncode == 0, _explain(seen)
    assert re.search(r"^State +awaiting_approval$", seen.stdout, re.M), seen.stdout
    assert "manager_approval: approvers manager" in seen.stdout


def _approve_it_in_the_inbox(demo: Demo) -> None:
    """The printed inbox and sign-in: the manager sees the waiting expense in Chromium, approves it
    and sees it decided."""
    from playwright.sync_api import expect, sync_playwright

    from tests.helpers.browser import CHROMIUM, CHROMIUM_ARGS

    key = _printed(demo)[0]
    url = re.search(r"approvals inbox: (http://\S+)$", demo.output, re.M)
    signin = re.search(r"organisation '(\S+)', user '(\S+)', password '(\S+)'", demo.output)
    assert url, demo.output
    assert signin, demo.output
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.set_default_timeout(COMMAND_GUARD_S * 1000)  # a busy machine; not a timed assertion
            page.goto(url.group(1))
            page.get_by_label("Organisation").fill(signin.group(1))
            page.get_by_label("User name").fill(signin.group(2))
            page.get_by_label("Password").fill(signin.group(3))
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", name="Waiting for you")).to_be_visible()
            guard = time.monotonic() + COMMAND_GUARD_S  # against a hang, not a timed assertion
            while page.get_by_role("link", name=TITLE).count() == 0:  # visibility catches up
                assert time.monotonic() < guard, page.content()
                page.reload()
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "demo-inbox.png"), full_page=True)
            page.get_by_role("link", name=TITLE).click()
            expect(page.get_by_role("heading", name=TITLE)).to_be_visible()
            page.screenshot(path=str(SCREENSHOTS / "demo-expense.png"), full_page=True)
            page.get_by_label("Comment (optional)").fill("Fine for the offsite")
            page.get_by_role("button", name="Approve").click()
            expect(page.get_by_role("status")).to_contain_text(f"Approved: {key}")
            page.screenshot(path=str(SCREENSHOTS / "demo-approved.png"), full_page=True)
            # Opened again, the step says who decided it.
            page.goto(f"{url.group(1).rstrip('/')}/item?run={key}&step=manager_approval")
            expect(page.get_by_role("heading", name="Already decided")).to_be_visible()
            expect(page.get_by_role("status")).to_contain_text("approved by manager")
        finally:
            browser.close()


def _printed_commands_after_the_browser(demo: Demo, env: dict[str, str]) -> None:
    key, _, approve, result = _printed(demo)
    finished = sh(result, env)
    assert finished.returncode == 0, _explain(finished)
    assert re.search(r"^State +completed$", finished.stdout, re.M), finished.stdout
    assert '"status": "approved"' in finished.stdout
    assert '"approved_by": "manager"' in finished.stdout  # the person who signed in to the inbox

    late = sh(approve, env)
    assert late.returncode != 0, _explain(late)
    assert "Traceback" not in late.stdout + late.stderr
    assert key in late.stdout + late.stderr, _explain(late)

    # What the README shows of this output is what the demo prints (ids and connection options aside).
    def shape(command: str) -> str:
        return re.sub(r"expense-EXP-8-\S+", "ID", command.split(" --tenant demo ", 1)[1])

    printed = _printed(demo)[1:]
    shown = [
        shape(line.strip())
        for block in code_blocks(README.read_text(), "text")
        for line in block.splitlines()
        if line.strip().startswith(".venv/bin/wfa ")
    ]
    assert shown, "the README shows no demo output"
    assert set(shown) <= {shape(c) for c in printed}, shown


def _run_the_readme_example(demo: Demo, state: Path, task_queue: str, database: dict[str, str]) -> None:
    """The README's example with ``wfa`` on the PATH (``. .venv/bin/activate``) against the demo.

    The test's demo listens on free ports rather than the fixed ones (tests run side by side), so the
    environment says where the server is and the services' URL is put in place of the documented one.
    """
    address = re.search(r"^Temporal (\S+), Web UI", demo.output, re.M)
    services = re.search(r"^Fake services .* at (http://\S+)$", demo.output, re.M)
    assert address, demo.output
    assert services, demo.output
    env = new_shell_env(
        PATH=f"{VENV_BIN}{os.pathsep}{new_shell_env()['PATH']}",
        TEMPORAL_ADDRESS=address.group(1),
        TEMPORAL_TASK_QUEUE=task_queue,
        WFA_STATE_DIR=str(state),
        **database,
    )
    lines = readme_shell_example()
    story = ["start", "status", "approve", "result"]  # other lines may stand between; all must work
    assert [line.split()[1] for line in lines if line.split()[1] in story] == story, lines
    for line in lines:
        command = line.replace("http://127.0.0.1:8700", services.group(1))
        argv = shlex.split(line, comments=True)
        if argv[1] == "status":  # as a person would, until the approval is pending
            guard = time.monotonic() + COMMAND_GUARD_S  # against a hang, not a timed assertion
            while "awaiting_approval" not in (seen := sh(command, env)).stdout:
                assert seen.returncode == 0, _explain(seen)
                assert re.search(r"^State +running$", seen.stdout, re.M), seen.stdout
                assert time.monotonic() < guard, "the run never waited for its approval"
            continue
        done = sh(command, env)
        assert done.returncode == 0, f"{line}\n{_explain(done)}"
        if argv[1] == "validate" and "--json" not in argv:  # its comment is its output
            assert done.stdout.strip() == line.split("# ", 1)[1].strip(), done.stdout
        if argv[1] == "result" and "--json" in argv:
            outcome = json.loads(done.stdout)
            assert outcome["state"] == "completed", outcome
            assert outcome["output"]["status"] == "approved", outcome
    assert any(line.split()[1] == "result" and "--json" in line for line in lines), lines


def test_the_printed_wfa_is_the_repository_venv_relative_to_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As ``make demo`` runs it (``.venv/bin/python`` in the repository folder, default server and
    state): ``.venv/bin/wfa --tenant demo``, a path a new shell there can run, nothing else needed."""
    from starter import demo

    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").touch()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    assert demo.wfa_command() == [".venv/bin/python", "-m", "starter"]  # no script installed
    (bin_dir / "wfa").touch()
    assert demo.wfa_command() == [".venv/bin/wfa"]
    default = ("127.0.0.1:7233", "default", Path(".state"), "workflow-automation", "demo")
    assert demo.cli_prefix(*default) == ".venv/bin/wfa --tenant demo"
    elsewhere = ("127.0.0.1:7300", "default", tmp_path / "other state", "q", "demo")
    assert demo.cli_prefix(*elsewhere) == (
        f"WFA_STATE_DIR='{tmp_path}/other state' .venv/bin/wfa --address 127.0.0.1:7300"
        " --task-queue q --tenant demo"
    )
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # a venv outside the folder: its absolute path
    assert demo.wfa_command() == [str(bin_dir / "wfa")]
