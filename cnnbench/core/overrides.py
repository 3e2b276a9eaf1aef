"""Hydra overrides as the user typed them: the flags each command takes, the config groups and their
choices, and one clear message for an override Hydra cannot use (a typo in a group's option or a key).

Hydra's own messages for these list its search path and internal paths, and advise ``+key=value`` for a
mistyped key; cnnbench names the override, the valid choices and the closest match instead.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path

from cnnbench.core.config import conf_dir
from cnnbench.errors import CnnbenchError

# Hydra's command-line flags (hydra/_internal/utils.py get_args_parser): which take a value.
HYDRA_FLAGS_WITH_VALUE = {
    "--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
    "--config-dir", "-cd", "--experimental-rerun", "--shell-completion", "-sc",
}  # fmt: skip
HYDRA_FLAGS = HYDRA_FLAGS_WITH_VALUE | {"--resolve", "--info", "-i", "--hydra-help", "--run", "-r"}
# The groups whose options live outside conf/ (Hydra and its plugins provide more): not checked here.
_UNCHECKED_GROUP_PREFIX = "hydra/"


def split_flags(args: Iterable[str]) -> tuple[list[str], list[str]]:
    """(overrides, flags): Hydra's flags with their values apart from the key=value overrides."""
    overrides: list[str] = []
    flags: list[str] = []
    items = iter(args)
    for arg in items:
        if arg.startswith("-"):
            flags.append(arg)
            name = arg.split("=", 1)[0]
            if name in HYDRA_FLAGS_WITH_VALUE and "=" not in arg:
                flags.append(next(items, ""))
        else:
            overrides.append(arg)
    return overrides, flags


def unknown_flags(args: Iterable[str], known: Iterable[str]) -> list[str]:
    """The options in ``args`` that neither cnnbench's command nor Hydra takes."""
    known = set(known)
    _, flags = split_flags(args)
    return [f for f in flags if f.startswith("-") and f.split("=", 1)[0] not in known]


@lru_cache(maxsize=8)
def config_groups(extra_dirs: tuple[str, ...] = ()) -> dict[str, tuple[str, ...]]:
    """Every config group of conf/ (and of ``extra_dirs``, the user's hydra.searchpath) and its options,
    e.g. {"model": ("alexnet", ..., "wide_resnet")}."""
    options: dict[str, set[str]] = {}
    for root in (conf_dir(), *map(Path, extra_dirs)):
        if not root.is_dir():
            continue
        for folder in (p for p in root.iterdir() if p.is_dir() and not p.name.startswith("__")):
            if folder.name != "hydra":  # hydra/launcher etc.: plugins add options
                options.setdefault(folder.name, set()).update(f.stem for f in folder.glob("*.yaml"))
    return {group: tuple(sorted(names)) for group, names in sorted(options.items()) if names}


def _search_dirs(overrides: Iterable[str], flags: Iterable[str]) -> tuple[str, ...]:
    """The local folders a command adds to Hydra's search path (hydra.searchpath, --config-dir)."""
    found = []
    for override in overrides:
        if override.startswith("hydra.searchpath="):
            items = override.split("=", 1)[1].strip("[]").split(",")
            found += [i.strip().strip("'\"").removeprefix("file://") for i in items]
    flags = list(flags)
    for i, flag in enumerate(flags[:-1]):
        if flag in ("--config-dir", "-cd"):
            found.append(flags[i + 1])
    return tuple(found)


def groups_help() -> str:
    """The groups and their choices, one line each, for the commands' help."""
    lines = [f"{group}: {', '.join(options)}" for group, options in config_groups().items()]
    return "\n\n".join(lines)


def hydra_value(text: str) -> str:
    """``text`` (a folder, say) as one override value that Hydra reads back as exactly ``text``.

    Plain ASCII words stay as they are; anything else is single-quoted (Hydra's unquoted values take no
    spaces, ``=``, ``,``, brackets or non-ASCII letters). Inside quotes Hydra keeps backslashes, except a
    run of them before a quote (or the closing quote), which it halves. ``${`` is refused: Hydra resolves
    its output folders more than once, so no escape survives.
    """
    if "${" in text:
        raise CnnbenchError(
            f"{text!r} holds '${{', which Hydra reads as an interpolation in a folder name, however it is "
            f"quoted. Choose (or rename) a folder without '${{'."
        )
    if text and re.fullmatch(r"[\w./:~+-]*", text, flags=re.ASCII):
        return text
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return f"'{escaped}'"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` Did you mean X?`` for a close choice, else ``""``."""
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=2, cutoff=0.6)
    tail = word.rsplit(".", 1)[-1]
    close += [c for c in choices if c.rsplit(".", 1)[-1] == tail and c not in close]
    if not close:
        return ""
    return " Did you mean " + " or ".join(close[:3]) + "?"


def explain_override_problem(args: list[str], command: str = "train") -> str | None:
    """One paragraph for the first override of ``args`` that cannot work, or None if none is found."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    overrides, flags = split_flags(args)
    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed.append((text, parser.parse_override(text)))
        except HydraException as exc:  # OverrideParseException, or the lexer's own
            reason = str(exc).splitlines()[0]
            return (
                f"The override {text!r} cannot be read ({reason}). Overrides are key=value (depth=56), "
                f"group=option (model=plain) or, with -m, a sweep (depth=20,56); quote a value that holds "
                f"spaces or brackets, e.g. 'schedule.milestones=[32000,48000]'."
            )
    groups = config_groups(_search_dirs(overrides, flags))
    for text, override in parsed:
        problem = _bad_group_choice(text, override, groups, command)
        if problem:
            return problem
    keys = None
    for text, override in parsed:
        key = override.key_or_group
        if override.is_add() or override.is_force_add() or override.is_delete() or key in groups:
            continue
        if key.startswith("hydra.") or key.startswith(_UNCHECKED_GROUP_PREFIX):
            continue
        if keys is None:
            keys = _config_keys(_chosen_groups(parsed, groups))
            if keys is None:
                return None
        if key not in keys:
            return (
                f"{text}: cnnbench's config has no key {key!r}.{did_you_mean(key, keys)} "
                f"`cnnbench config` prints every key with its value; `cnnbench {command} -h` lists the "
                f"config groups and their choices."
            )
    return None


def _bad_group_choice(text: str, override, groups: Mapping[str, tuple[str, ...]], command: str) -> str | None:
    group = override.key_or_group
    if group not in groups:
        return None
    values = _values(override)
    for value in values:
        if value is None or (group == "experiment" and value == "null"):
            continue
        if str(value) not in groups[group]:
            return (
                f"{text}: there is no {group} {str(value)!r}.{did_you_mean(str(value), groups[group])} "
                f"The {group} choices: {', '.join(groups[group])}. `cnnbench {command} -h` lists every "
                f"group's choices."
            )
    return None


def _values(override) -> list:
    """An override's value, or each value of a sweep (model=plain,resnet)."""
    if override.is_sweep_override():
        try:
            return list(override.sweep_string_iterator())
        except Exception:  # range/interval sweeps of a group make no sense; Hydra says why
            return []
    value = override.value()
    return [value] if isinstance(value, (str, int, float)) or value is None else [str(value)]


def _chosen_groups(parsed, groups: Mapping[str, tuple[str, ...]]) -> list[str]:
    """The group overrides, each with its first value: enough to compose the keys a key override needs."""
    chosen = []
    for _, override in parsed:
        if override.key_or_group in groups:
            values = [v for v in _values(override) if v is not None]
            if values:
                chosen.append(f"{override.key_or_group}={values[0]}")
    return chosen


def compose(overrides: list[str], job_name: str = "cnnbench"):
    """cnnbench's config composed with ``overrides`` by Hydra's compose API (raises Hydra's errors).

    A Hydra app that ran earlier in this process may have left Hydra initialized: it is set aside and
    restored.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    global_hydra = GlobalHydra.instance()
    previous = global_hydra.hydra if global_hydra.is_initialized() else None
    global_hydra.clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name=job_name):
            return hydra_compose(config_name="config", overrides=overrides)
    finally:
        global_hydra.clear()
        if previous is not None:
            global_hydra.initialize(previous)


def _config_keys(group_overrides: list[str]) -> set[str] | None:
    """Every dotted key of the config composed with ``group_overrides`` (None if it does not compose)."""
    from omegaconf import DictConfig

    try:
        cfg = compose(group_overrides)
    except Exception:
        return None
    keys: set[str] = set()

    def walk(node: DictConfig, prefix: str) -> None:
        for key in node:
            path = f"{prefix}{key}"
            keys.add(path)
            child = node._get_node(key)
            if isinstance(child, DictConfig):
                walk(child, path + ".")

    walk(cfg, "")
    return keys


def clean_hydra_message(exc: BaseException) -> str:
    """Hydra's message without its config search path, internal paths and object dumps."""
    text = str(exc)
    if exc.__cause__ is not None and str(exc.__cause__) not in text:
        text += f" ({exc.__cause__})"
    kept = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Config search path") or "provider=" in stripped:
            break
        if stripped.startswith(("full_key:", "object_type=", "reference_type=")):
            continue
        kept.append(stripped)
    return " ".join(k for k in kept if k)


def experiment_sweep(overrides: Iterable[str]) -> dict[str, str]:
    """The sweep an ``experiment=NAME`` override carries (its hydra.sweeper.params), read from its file."""
    from omegaconf import OmegaConf

    name = next((o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")), None)
    path = Path(conf_dir(), "experiment", f"{name}.yaml") if name else None
    if path is None or not path.is_file():
        return {}
    params = OmegaConf.select(OmegaConf.load(path), "hydra.sweeper.params", default=None) or {}
    return {str(k): str(v) for k, v in params.items()}
