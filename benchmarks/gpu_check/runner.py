"""The GPU check's machinery: steps with time budgets inside one total budget, each command in a process
group of its own within its step's time, logged to check.log; the summary written whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .profiles import LOG_NAME, ROOT, SUMMARY_JSON, SUMMARY_MD, TAIL_LINES, Profile
from .summary import build_summary, summary_markdown


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[], dict[str, Any]]
    cap_s: float  # at most this long
    floor_s: float  # not started with less than this; later required steps keep theirs
    needs: tuple[str, ...] = ()
    optional: bool = False  # later steps reserve no time for an optional one


@dataclass
class StepResult:
    name: str
    status: str = "skipped"
    seconds: float = 0.0
    budget_s: float = 0.0
    reason: str | None = None
    commands: list[str] = field(default_factory=list)


class StepFailed(Exception):
    """The step ran and failed; the message says why (it goes to the summary)."""


class StepSkipped(Exception):
    """The step had nothing to do here; the message says why."""


@dataclass
class Finished:
    command: list[str]
    returncode: int | None  # None: killed at its time limit
    seconds: float
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def why(self) -> str:
        if self.returncode is None:
            return f"timed out after {self.seconds:.0f} s"
        last = [line for line in (self.stderr or self.stdout).splitlines() if line.strip()][-3:]
        return f"exit code {self.returncode}: " + " | ".join(line.strip()[:300] for line in last)


# ----- the check ------------------------------------------------------------------------------------
class CheckRunner:
    """Runs the plan of a subclass (``steps_plan``) step by step, then writes the summary."""

    def __init__(
        self,
        profile: Profile,
        out: Path,
        work: Path,
        python: str,
        install: dict[str, Any],
        only: Sequence[str] | None = None,
    ):
        self.profile = profile
        self.only = None if only is None else tuple(only)  # --steps: None runs every step
        self.out, self.work, self.python = out, work, python
        for folder in (out, work):
            folder.mkdir(parents=True, exist_ok=True)
        self.install = install
        self.started = time.monotonic() - float(install.get("seconds") or 0.0)
        self.deadline = self.started + profile.total_budget_s - 10.0  # 10 s to write the summary
        self.results: dict[str, Any] = {}
        self.steps: list[StepResult] = []
        self.current: StepResult | None = None
        self.step_deadline = self.deadline
        if profile.name == "dry-run":
            # The dry run's own cache (its jobs-per-GPU answer must not become a real machine's), seeded
            # with this machine's fast-path probe so that it is not measured again. This process writes
            # the jobs-per-GPU answer, its commands read it: both use it.
            os.environ["CNNBENCH_CACHE"] = str(seed_cache(work / "cache"))
        self.env = {**os.environ, **profile.env, "PYTHONUNBUFFERED": "1"}
        self.log = (out / LOG_NAME).open("a", encoding="utf-8")

    # ----- running commands ----------------------------------------------------------------------------
    def left(self) -> float:
        return self.step_deadline - time.monotonic()

    def command(self, args: Sequence[str], env: dict[str, str] | None = None, timeout: float | None = None):
        """Run ``args`` (from the checkout) within the current step's time; its output goes to a file."""
        args = [str(a) for a in args]
        limit = max(min(timeout if timeout is not None else math.inf, self.left()), 1.0)
        if self.current is not None:
            self.current.commands.append(shlex.join(args))
        number = sum(len(s.commands) for s in self.steps) + (
            len(self.current.commands) if self.current else 0
        )
        stem = self.work / "logs" / f"{number:02d}-{self.current.name if self.current else 'cmd'}"
        stem.parent.mkdir(parents=True, exist_ok=True)
        self._log(f"$ {shlex.join(args)}")
        finished = run_command(args, {**self.env, **(env or {})}, limit, stem)
        self._log(
            f"  -> {'timed out' if finished.returncode is None else f'exit {finished.returncode}'} "
            f"in {finished.seconds:.1f} s"
        )
        tail = (finished.stdout.splitlines() + finished.stderr.splitlines())[-TAIL_LINES:]
        if not finished.ok:
            tail = finished.stderr.splitlines()[-TAIL_LINES:] or tail
        for line in tail:
            self._log(f"  | {line[:400]}")
        return finished

    def python_command(self, args: Sequence[str], **kwargs: Any) -> Finished:
        return self.command([self.python, *args], **kwargs)

    def _log(self, line: str) -> None:
        self.log.write(line + "\n")
        self.log.flush()

    def run(self) -> int:
        self._log(f"# cnnbench GPU check ({self.profile.name}), {datetime.now(timezone.utc).isoformat()}")
        self.steps.append(
            StepResult(
                "install",
                self.install.get("status", "skipped"),
                float(self.install.get("seconds") or 0),
                0.0,
                self.install.get("reason"),
                list(self.install.get("commands") or []),
            )
        )
        plan = self.steps_plan()
        unknown = sorted(set(self.only or ()) - {s.name for s in plan})
        if unknown:
            raise SystemExit(
                f"gpu_check: no step {', '.join(unknown)}; the steps: {' '.join(s.name for s in plan)}"
            )
        for i, step in enumerate(plan):
            if not self.selected(step):
                self.steps.append(StepResult(step.name, reason="not selected (--steps)"))
                self._log(f"\n## {step.name}: skipped (not selected)")
                continue
            reserved = sum(s.floor_s for s in plan[i + 1 :] if not s.optional and self.selected(s))
            self.run_step(step, reserved)
        self.write_summary()
        self.log.close()
        return 0

    def selected(self, step: Step) -> bool:
        return self.only is None or step.name in self.only

    def run_step(self, step: Step, reserved: float) -> None:
        result = StepResult(step.name)
        self.steps.append(result)
        statuses = {s.name: s.status for s in self.steps}
        missing = [n for n in step.needs if statuses.get(n) != "ok"]
        budget = min(step.cap_s, self.deadline - time.monotonic() - reserved)
        if missing:
            result.reason = f"needs {', '.join(missing)}, which did not succeed"
        elif budget < step.floor_s:
            result.reason = f"the total budget ({self.profile.total_budget_s:.0f} s) is spent"
        if result.reason:
            self._log(f"\n## {step.name}: skipped ({result.reason})")
            return
        result.budget_s = round(budget, 1)
        self._log(f"\n## {step.name} (budget {budget:.0f} s)")
        self.current, self.step_deadline = result, time.monotonic() + budget
        start = time.monotonic()
        try:
            self.results[step.name] = step.run()
            result.status = "ok"
        except StepSkipped as exc:
            result.status, result.reason = "skipped", str(exc)
        except StepFailed as exc:
            result.status, result.reason = "failed", str(exc)
        except Exception as exc:  # a bug in a step must not cost the summary
            result.status, result.reason = "failed", f"{type(exc).__name__}: {exc}"
        result.seconds = round(time.monotonic() - start, 1)
        self.current, self.step_deadline = None, self.deadline
        self._log(
            f"## {step.name}: {result.status} in {result.seconds:.1f} s"
            + (f" ({result.reason})" if result.reason else "")
        )

    # ----- the summary ------------------------------------------------------------------------------------
    def write_summary(self) -> None:
        total = time.monotonic() - self.started
        summary = build_summary(self.profile, self.steps, self.results, self.install, total)
        (self.out / SUMMARY_JSON).write_text(json.dumps(summary, indent=1, default=str) + "\n")
        try:
            text = summary_markdown(summary)
        except Exception as exc:  # the JSON is written: a markdown bug must not hide it
            text = f"# cnnbench GPU check\n\nNo markdown ({type(exc).__name__}: {exc}); see {SUMMARY_JSON}.\n"
        (self.out / SUMMARY_MD).write_text(text)
        self._log(f"\n# done in {total:.1f} s: " + ", ".join(f"{s.name} {s.status}" for s in self.steps))


def run_command(args: list[str], env: dict[str, str], timeout: float, stem: Path) -> Finished:
    """``args`` in a process group of its own (a timeout ends its children too: joblib workers,
    compile workers); stdout and stderr to ``stem``.out/.err."""
    start = time.monotonic()
    with open(f"{stem}.out", "w") as out, open(f"{stem}.err", "w") as err:
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
        )
        try:
            code: int | None = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_process(proc)
            code = None
    read = lambda suffix: Path(f"{stem}.{suffix}").read_text(errors="replace")  # noqa: E731
    return Finished(args, code, time.monotonic() - start, read("out"), read("err"))


def stop_process(proc: subprocess.Popen) -> None:
    """End ``proc`` and its process group: SIGTERM (cnnbench checkpoints), then SIGKILL."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def seed_cache(folder: Path) -> Path:
    """A fresh cnnbench cache holding a copy of the current one's fast-path probe (fastpath.json)."""
    from_env = os.environ.get("CNNBENCH_CACHE")
    current = (
        Path(from_env).expanduser()
        if from_env
        else Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "cnnbench"
    )
    folder.mkdir(parents=True, exist_ok=True)
    if (current / "fastpath.json").is_file():
        shutil.copy2(current / "fastpath.json", folder / "fastpath.json")
    return folder
