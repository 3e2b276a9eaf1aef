"""The docs cannot rot: what README.md and docs/*.md name exists.

- every ``cnnbench <command> [<subcommand>] ... --option`` in a code block or inline code names a real
  command and real options of it (walked from the Typer app);
- every config key written as ``group.key=...`` (or as inline code ``trainer.xyz``) is in the config
  composed with some option of its group (``model.shortcut`` needs ``model=resnet``), and every
  ``hydra.*`` key is in Hydra's config with some launcher;
- every ``group=option`` names a conf file (``experiment=degradation_quick``,
  ``hydra/launcher=joblib``);
- every relative link and image resolves to a file.

Each check also runs on a made-up name, so a walker that finds nothing cannot pass. The slow test at the
end runs README's two commands from a clean clone.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
GROUPS = ("model", "data", "augment", "optimizer", "schedule", "trainer", "numerics", "experiment")
# Hydra's flags that `train`, `config` and `bench` pass through (they take OVERRIDES).
HYDRA_FLAGS = {"--cfg", "-c", "--info", "--hydra-help", "--resolve", "-p", "--package", "--config-dir"}
HELP_FLAGS = {"--help", "-h"}
# hydra/launcher options that come from installed plugins rather than conf/hydra/launcher/.
PLUGIN_LAUNCHERS = {"basic", "joblib", "submitit_slurm", "submitit_local"}


# --- reading the docs ----------------------------------------------------------------------------------


def _code(text: str) -> list[str]:
    """The code of a Markdown text: each line of a fenced block, and each inline code span."""
    pieces: list[str] = []
    prose: list[str] = []
    in_block = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        (pieces if in_block else prose).append(line)
    # Inline spans, possibly across a line break inside a paragraph.
    joined = "\n".join(prose)
    pieces += [m.group(1).replace("\n", " ") for m in re.finditer(r"`([^`]+)`", joined)]
    return pieces


def _joined_lines(pieces: list[str]) -> list[str]:
    """Shell continuation lines (ending in a backslash) joined into one."""
    out: list[str] = []
    carry = ""
    for piece in pieces:
        if piece.rstrip().endswith("\\"):
            carry += piece.rstrip()[:-1] + " "
            continue
        out.append(carry + piece)
        carry = ""
    if carry:
        out.append(carry)
    return out


@functools.cache
def _doc_code() -> dict[str, list[str]]:
    return {str(p.relative_to(ROOT)): _joined_lines(_code(p.read_text())) for p in DOCS}


# --- commands and options ------------------------------------------------------------------------------


@functools.cache
def _cli_tree() -> dict[str, dict]:
    """{"train": {"options": {...}, "overrides": True, "sub": {}}, "data": {"sub": {"download": ...}}}."""
    import typer.main

    from cnnbench.cli import app

    def node(command) -> dict:
        options = {o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")}
        takes_overrides = any(p.name == "overrides" for p in command.params)
        sub = {name: node(c) for name, c in (getattr(command, "commands", None) or {}).items()}
        return {"options": options | HELP_FLAGS | (HYDRA_FLAGS if takes_overrides else set()), "sub": sub}

    return node(typer.main.get_command(app))


_CNNBENCH = re.compile(r"(?:^|(?<=[\s(\"'$]))cnnbench((?:[ \t]+[^\s#|;&`)]+)*)")


def command_problems(code: str) -> list[str]:
    """What is wrong with every ``cnnbench ...`` invocation in ``code`` (one line of shell or a span)."""
    problems = []
    code = code.replace("\\|", "/")  # `--split test\\|val` in a Markdown table: alternatives
    for match in _CNNBENCH.finditer(code):
        tokens = match.group(1).split()
        if not tokens or tokens[0] == "..." or tokens[0].isupper():  # `python -m cnnbench ...`, `COMMAND`
            continue
        node, name = _cli_tree(), "cnnbench"
        if tokens[0].startswith("-"):
            rest = tokens
        else:
            if tokens[0] not in node["sub"]:
                problems.append(f"`{name} {tokens[0]}`: no such command")
                continue
            node, name, rest = node["sub"][tokens[0]], f"{name} {tokens[0]}", tokens[1:]
            if node["sub"] and rest and not rest[0].startswith("-") and rest[0].islower():
                words = rest[0].split("/")  # `data download|verify|list`
                for word in words:
                    if word not in node["sub"]:
                        problems.append(f"`{name} {word}`: no such command")
                if all(w in node["sub"] for w in words):
                    node = node["sub"][words[0]]
                    name, rest = f"{name} {words[0]}", rest[1:]
        for token in rest:
            for option in re.findall(r"(?:^|[\[|])(--?[A-Za-z][\w-]*)", token):
                if option not in node["options"]:
                    problems.append(f"`{name} {option}`: no such option")
    return problems


def test_command_walker_sees_a_made_up_option_and_command():
    assert command_problems("cnnbench report DIR --no-such-option") == [
        "`cnnbench report --no-such-option`: no such option"
    ]
    assert command_problems("cnnbench frobnicate DIR") == ["`cnnbench frobnicate`: no such command"]
    assert command_problems("cnnbench data fetch cifar10") == ["`cnnbench data fetch`: no such command"]
    assert command_problems("cnnbench data verify cifar10 --root /d --json") == [
        "`cnnbench data verify --json`: no such option"
    ]
    assert command_problems("python -m cnnbench eval RUN --weights best [--tta flip]") == []
    assert command_problems("cnnbench train --cfg job model=plain") == []
    assert command_problems("cnnbench.report(sweep) cnnbench[onnx]") == []


def test_every_command_and_option_in_the_docs_exists():
    problems = [
        f"{doc}: {p}" for doc, lines in _doc_code().items() for line in lines for p in command_problems(line)
    ]
    assert not problems, "\n".join(problems)


# --- config keys and group options ---------------------------------------------------------------------


def _options(group: str) -> set[str]:
    folder = ROOT / "conf" / group
    found = {p.stem for p in folder.glob("*.yaml")}
    return found | PLUGIN_LAUNCHERS if group == "hydra/launcher" else found


def _walk(node, prefix: str, keys: set[str]) -> None:
    from omegaconf import DictConfig

    for key in node:
        path = f"{prefix}{key}"
        keys.add(path)
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _walk(child, path + ".", keys)


@functools.cache
def _keys_with(override: str | None) -> frozenset[str]:
    """Every dotted key of the task config composed with ``override`` (a group option or None)."""
    from cnnbench.core.overrides import compose

    keys: set[str] = set()
    _walk(compose([override] if override else []), "", keys)
    return frozenset(keys)


@functools.cache
def _hydra_keys_with(launcher: str) -> frozenset[str]:
    """Every dotted key of Hydra's own config (``hydra.*``) with ``hydra/launcher=launcher``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from cnnbench.core.overrides import conf_dir

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name="cnnbench"):
            cfg = hydra_compose("config", [f"hydra/launcher={launcher}"], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    keys: set[str] = set()
    _walk(cfg.hydra, "hydra.", keys)
    return frozenset(keys)


def key_exists(key: str) -> bool:
    group = key.split(".")[0]
    if group == "hydra":
        return any(key in _hydra_keys_with(launcher) for launcher in sorted(_options("hydra/launcher")))
    overrides = [None, *(f"{group}={option}" for option in sorted(_options(group)))]
    return any(key in _keys_with(override) for override in overrides)


_KEY = r"(?:{})(?:\.[a-z_][a-z0-9_]*)+".format("|".join((*GROUPS, "hydra")))
_KEY_SET = re.compile(rf"(?<![\w./-])({_KEY})=")
_KEY_ALONE = re.compile(rf"^({_KEY})$")
_GROUP_OPTION = re.compile(
    r"(?<![\w./-])({}|hydra/launcher)=([a-z][\w]*(?:,[a-z][\w]*)*)(?![\w=])".format("|".join(GROUPS))
)


FILE_SUFFIXES = {"py", "yaml", "json", "png", "csv", "md", "pt", "log"}


def key_problems(code: str, declared: frozenset[str] = frozenset()) -> list[str]:
    """Config keys and group options named in ``code`` that do not exist (``declared``: ``group/option``
    pairs whose conf file the same page tells the reader to write)."""
    problems = []
    keys = {m.group(1) for m in _KEY_SET.finditer(code)}
    if _KEY_ALONE.match(code.strip()) and code.strip().rsplit(".", 1)[1] not in FILE_SUFFIXES:
        keys.add(code.strip())
    problems += [f"`{key}`: no such config key" for key in sorted(keys) if not key_exists(key)]
    for match in _GROUP_OPTION.finditer(code):
        group = match.group(1)
        for option in match.group(2).split(","):
            if option not in _options(group) and f"{group}/{option}" not in declared:
                problems.append(f"`{group}={option}`: no such option (conf/{group}/{option}.yaml)")
    return problems


def test_key_walker_sees_made_up_keys_and_options():
    assert key_problems("cnnbench train trainer.no_such_key=1") == [
        "`trainer.no_such_key`: no such config key"
    ]
    assert key_problems("trainer.no_such_key") == ["`trainer.no_such_key`: no such config key"]
    assert key_problems("experiment=no_such_experiment") == [
        "`experiment=no_such_experiment`: no such option (conf/experiment/no_such_experiment.yaml)"
    ]
    # A key of one group option (model.shortcut: model=resnet), Hydra's keys with their launcher.
    assert (
        key_problems("model=plain,resnet model.shortcut=B hydra/launcher=joblib hydra.launcher.n_jobs=4")
        == []
    )
    assert key_problems("hydra.launcher.no_such_key=4") == [
        "`hydra.launcher.no_such_key`: no such config key"
    ]
    # File names and Python are not keys; a sweep's job folder names are options.
    assert key_problems("report.png metrics.json model.ts.pt depth=20,model=plain") == []
    assert key_problems("trainer.py") == []
    assert key_problems("hydra/launcher=mine", frozenset({"hydra/launcher/mine"})) == []


def test_every_config_key_and_group_option_in_the_docs_exists():
    problems = []
    for doc, lines in _doc_code().items():
        declared = frozenset(re.findall(r"conf/([\w/]+/\w+)\.yaml", (ROOT / doc).read_text()))
        problems += [f"{doc}: {p}" for line in lines for p in key_problems(line, declared)]
    assert not problems, "\n".join(sorted(set(problems)))


# --- links ---------------------------------------------------------------------------------------------


def link_problems(doc: Path, text: str) -> list[str]:
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a URL or an anchor on the same page
        path = target.split("#")[0]
        if not (doc.parent / path).exists():
            problems.append(f"{doc.relative_to(ROOT)}: link to {target}: no such file")
    return problems


def test_link_walker_sees_a_missing_file():
    assert link_problems(ROOT / "README.md", "[a](docs/no-such-page.md) [b](#x) [c](https://x.org)") == [
        "README.md: link to docs/no-such-page.md: no such file"
    ]


def test_every_relative_link_and_image_resolves():
    problems = [p for doc in DOCS for p in link_problems(doc, doc.read_text())]
    assert not problems, "\n".join(problems)


# --- README's two commands from a clean clone ----------------------------------------------------------


def _readme_block(heading: str) -> str:
    """The first ```bash block after ``heading`` in README.md, continuation lines joined."""
    text = (ROOT / "README.md").read_text()
    after = text[text.index(heading) :]
    block = re.search(r"```bash\n(.*?)```", after, re.S).group(1)
    return " ".join(line.rstrip("\\").strip() for line in block.splitlines() if line.strip())


@pytest.mark.slow
def test_readme_commands_from_a_clean_clone(tmp_path):
    """README's two set-up commands, as a new user copies them, in a clean clone and a fresh venv.

    The first (install, then the quick sweep) runs with ``trainer.max_iters=40`` and a fixed sweep folder
    appended, to stay within minutes; it must leave the sweep's report files. The second (install, then
    ``pytest``) runs ``pytest tests/test_docs.py -q -m 'not slow'`` instead of the whole suite, which
    takes far longer than a test should. The install (``pip install -e ".[dev]"``) resolves its
    dependencies from what this machine already has.
    """
    clone = tmp_path / "cnnbench"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    for path in ["README.md", "tests/test_docs.py", ".ci/run"]:  # the docs as they are now, committed or not
        (clone / path).write_text((ROOT / path).read_text())
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    python = (
        sys.executable if sys.base_prefix == sys.prefix else str(Path(sys.base_prefix) / "bin" / "python3")
    )
    env["PATH"] = str(Path(python).parent) + os.pathsep + env["PATH"]

    run, test = _readme_block("## Try it"), _readme_block("Run the tests")
    sweep = tmp_path / "sweep"
    run += f" trainer.max_iters=40 schedule.milestones=[20,30] hydra.sweep.dir={shlex.quote(str(sweep))}"
    test = test.replace("pytest", "pytest tests/test_docs.py -q -m 'not slow'")
    for command in (run, test):
        done = subprocess.run(["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    for name in ("report.png", "report.md", "report.csv"):
        assert (sweep / name).is_file(), f"{name} not written by the sweep"
    assert "passed" in done.stdout
