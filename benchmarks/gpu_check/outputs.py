"""Reading what the GPU check's commands printed or wrote (JSON, junit, pytest -v, the sweep's run
folders, worker logs), and choosing among the measured figures (aggregate img/s, the best k).
"""

from __future__ import annotations

import contextlib
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from .runner import StepFailed


def read_junit(path: Path) -> dict[str, Any]:
    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", None
        for kind in ("failure", "error", "skipped"):
            node = case.find(kind)
            if node is not None:
                outcome = {"failure": "failed"}.get(kind, kind)
                message = (node.get("message") or "")[:500]
                break
        module = (case.get("classname") or "").replace(".", "/")
        tests.append(
            {
                "id": f"{module}.py::{case.get('name')}",
                "outcome": outcome,
                "seconds": float(case.get("time") or 0),
                "message": message,
            }
        )
    counts = {o: sum(t["outcome"] == o for t in tests) for o in ("passed", "failed", "error", "skipped")}
    return {**counts, "collected": len(tests), "tests": tests}


def read_verbose(text: str) -> dict[str, Any]:
    """The outcomes `pytest -v` printed, for a run stopped before it wrote its junit file."""
    tests = [
        {
            "id": test,
            "outcome": {"PASSED": "passed", "FAILED": "failed", "ERROR": "error"}.get(word, "skipped"),
        }
        for test, word in re.findall(
            r"^(tests/\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL)", text, re.MULTILINE
        )
    ]
    counts = {o: sum(t["outcome"] == o for t in tests) for o in ("passed", "failed", "error", "skipped")}
    return {**counts, "collected": len(tests), "tests": tests}


def last_json(text: str) -> dict[str, Any]:
    """The JSON object a command printed (its last one; log lines may come before it)."""
    with contextlib.suppress(ValueError):
        return json.loads(text)
    starts = [m.start() for m in re.finditer(r"^\{", text, flags=re.MULTILINE)]
    for start in reversed(starts):
        with contextlib.suppress(ValueError):
            return json.loads(text[start:])
    raise StepFailed(f"no JSON in the output: {text[-300:]!r}")


def aggregate(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """k concurrent windows -> their total img/s (each job's images over its own window)."""
    rates = [w["images"] / w["seconds"] for w in windows]
    return {
        "img_per_s": sum(rates),
        "per_job_img_per_s": rates,
        "steps": [w["steps"] for w in windows],
        "seconds": [w["seconds"] for w in windows],
        "peak_memory_mb": max((w.get("peak_memory_mb") or 0) for w in windows),
    }


def best_k(measured: dict[str, Any], tolerance: float = 0.03) -> dict[str, Any] | None:
    """The fewest jobs per GPU within ``tolerance`` of the best aggregate img/s (fewer jobs: less
    memory, and a win inside the noise is no win)."""
    phases = {int(k): v for k, v in (measured.get("k") or {}).items() if "img_per_s" in v}
    if not phases:
        return None
    top = max(v["img_per_s"] for v in phases.values())
    k = min(k for k, v in phases.items() if v["img_per_s"] >= top * (1 - tolerance))
    return {
        "jobs_per_gpu": k,
        "img_per_s": phases[k]["img_per_s"],
        "speedup_vs_one": phases[k].get("speedup_vs_one"),
    }


def best_sharing(result: dict[str, Any]) -> dict[str, Any] | None:
    """The fastest way to share the GPU among the measured mechanisms (processes, MPS, streams)."""
    options = [
        (mechanism, best_k(result.get(mechanism) or {})) for mechanism in ("processes", "mps", "streams")
    ]
    options = [(m, b) for m, b in options if b is not None]
    if not options:
        return None
    mechanism, best = max(options, key=lambda item: item[1]["img_per_s"])
    return {"mechanism": mechanism, **best}


def read_sweep(sweep: Path) -> list[dict[str, Any]]:
    jobs = []
    for metrics_path in sorted(sweep.rglob("metrics.json")):
        with contextlib.suppress(OSError, ValueError):
            metrics = json.loads(metrics_path.read_text())
            env_path = metrics_path.with_name("env.json")
            env = json.loads(env_path.read_text()) if env_path.is_file() else {}
            jobs.append(
                {
                    "job": str(metrics_path.parent.relative_to(sweep)),
                    **{
                        k: metrics.get(k)
                        for k in ("status", "iteration", "train_error", "test_error", "elapsed_seconds")
                    },
                    "device": env.get("device"),
                    "fast_path": env.get("fast_path"),
                    "gpu_sharing": env.get("gpu_sharing"),
                }
            )
    return jobs


def tail_of(path: Path, lines: int) -> list[str]:
    try:
        return [line.strip()[:300] for line in path.read_text(errors="replace").splitlines() if line.strip()][
            -lines:
        ]
    except OSError:
        return []
