"""Config tooling for the command line: field listings with comments, the run's saved config, read tracking.

- `describe_config`: `--list_config` output (every field with its value and source comment, and the variants).
- `save_run_config` / `check_resume_config`: a workdir remembers its full config (`config.json`); a resume whose
  config changes the run's meaning is refused, field by field.
- `track_reads`: which leaves of a ConfigDict a piece of code read (tests check that every field does something).
- `flag_error_line`: one line for a bad `--config.x=y` flag, instead of absl's chained tracebacks.
"""
from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
from collections.abc import Iterator
from typing import Any

import ml_collections

from phenolip_jax import config_lib

CONFIG_FILE = "config.json"

# Fields a resumed run may change: they decide how long and how verbosely it runs, where it evaluates, how it is
# laid out on devices, not what it computes. Entries ending in '.' cover a whole section.
SAFE_TO_CHANGE = ("total_steps", "eval_only", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
                  "max_nonfinite_steps", "export_table", "mesh.", "sharding_rules", "data.workers", "data.prefetch",
                  "data.demo_dir", "eval.")


class ConfigMismatchError(ValueError):
    """A resume whose config differs from the saved one in fields that change the run's meaning."""


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'a.b.c': leaf} of a nested dict / ConfigDict (tuples and lists are leaves)."""
    items = tree.items() if hasattr(tree, "items") else []
    out: dict[str, Any] = {}
    for key, value in items:
        path = f"{prefix}{key}"
        if isinstance(value, (dict, ml_collections.ConfigDict)) and len(value):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def config_as_json(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as plain JSON values (tuples become lists), as saved in the workdir."""
    return json.loads(cfg.to_json_best_effort(sort_keys=True))


def save_run_config(cfg: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes the full config to `workdir/config.json` (atomically); returns the path."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, CONFIG_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(config_as_json(cfg), f, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return path


def _safe(field: str, safe: tuple[str, ...]) -> bool:
    return any(field == s or (s.endswith(".") and field.startswith(s)) for s in safe)


def config_changes(saved: dict[str, Any], new: dict[str, Any], safe: tuple[str, ...] = SAFE_TO_CHANGE
                   ) -> list[tuple[str, Any, Any]]:
    """(field, saved value, new value) for every leaf that differs and is not in `safe`; sorted."""
    old_flat, new_flat = flatten(saved), flatten(new)
    missing = "(absent)"
    return [(k, old_flat.get(k, missing), new_flat.get(k, missing)) for k in sorted(set(old_flat) | set(new_flat))
            if old_flat.get(k, missing) != new_flat.get(k, missing) and not _safe(k, safe)]


def has_checkpoint(workdir: str) -> bool:
    """True when `workdir/checkpoints` holds a saved step (so the run would resume)."""
    ckpt = os.path.join(workdir, "checkpoints")
    return os.path.isdir(ckpt) and any(d.isdigit() for d in os.listdir(ckpt))


def finished_step(workdir: str, total_steps: int) -> int | None:
    """The last checkpointed step of a finished run in `workdir` (results written, checkpoint at total_steps)."""
    ckpt = os.path.join(workdir, "checkpoints")
    steps = [int(d) for d in os.listdir(ckpt) if d.isdigit()] if os.path.isdir(ckpt) else []
    if steps and max(steps) >= total_steps and os.path.exists(os.path.join(workdir, "eval.json")):
        return max(steps)
    return None


def check_resume_config(cfg: ml_collections.ConfigDict, workdir: str, *, allow_changes: bool = False
                        ) -> list[tuple[str, Any, Any]]:
    """Compares `cfg` with the config saved by the run being resumed; raises ConfigMismatchError on changes.

    Only a workdir with a checkpoint is a resume. With `allow_changes` the changes are returned (and the caller
    says so) instead of raised.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not (has_checkpoint(workdir) and os.path.exists(path)):
        return []
    with open(path) as f:
        saved = json.load(f)
    changes = config_changes(saved, config_as_json(cfg))
    if changes and not allow_changes:
        listed = "; ".join(f"config.{k}: {old!r} -> {new!r}" for k, old, new in changes)
        raise ConfigMismatchError(
            f"resuming {workdir} with a config that changes the run ({len(changes)} fields): {listed}. "
            f"Use the saved config ({path}), a new --workdir, or --allow_config_change to resume anyway")
    return changes


# --- --list_config ------------------------------------------------------------------------------------------

_ASSIGN = re.compile(r"^\s*(?:(?:c|cfg|config)\.)?([A-Za-z_][\w.]*)\s*=(?!=)")
_OPENS_SECTION = re.compile(r"^\s*(?:(?:c|cfg|config)\.)?([A-Za-z_][\w.]*)\s*=\s*(?:ml_collections\.ConfigDict\()?dict\(")
_SECTION_FUNCTION = re.compile(r"^\s*def (\w+)_section\(")


def field_comments(sources: list[str]) -> dict[str, str]:
    """Comments of config fields found in Python sources, keyed by dotted path (as far as the source tells it).

    A field is `c.a.b = value  # comment`, or `b=value,  # comment` inside `a = dict(` / `ConfigDict(dict(`, or
    inside a `def a_section(` helper of config_lib.
    """
    out: dict[str, str] = {}
    for source in sources:
        sections: list[tuple[int, str]] = []  # (indentation, dotted section) of the open dict(...) blocks
        for line in source.splitlines():
            if not line.strip():
                continue
            indent = len(line) - len(line.lstrip())
            while sections and indent <= sections[-1][0] and not line.strip().startswith(")"):
                sections.pop()
            fn = _SECTION_FUNCTION.match(line)
            if fn:
                sections = [(indent, "" if fn.group(1) == "run" else fn.group(1))]
                continue
            opened = _OPENS_SECTION.match(line)
            if opened:
                parent = sections[-1][1] if sections and "." not in opened.group(1) else ""
                sections.append((indent, ".".join(p for p in (parent, opened.group(1)) if p)))
            code, _, comment = line.partition("  # ")
            assign = _ASSIGN.match(code)
            if comment and assign and not opened:
                name = assign.group(1)
                parent = sections[-1][1] if sections and "." not in name and indent > sections[-1][0] else ""
                out.setdefault(".".join(p for p in (parent, name) if p), comment.strip())
    return out


def _comment_for(path: str, comments: dict[str, str]) -> str:
    parts = path.split(".")
    for n in range(len(parts), 0, -1):  # the full path, then ever shorter tails ('hierarchy.max_hops', ...)
        tail = ".".join(parts[-n:])
        if tail in comments:
            return comments[tail]
    return ""


def describe_config(config_file: str, cfg: ml_collections.ConfigDict) -> str:
    """`--list_config`: the config file's docstring (its variants), then every field = value  # comment."""
    if not os.path.exists(config_file):  # 'configs/eval.py:VARIANT': the file is the part before the variant
        config_file = config_file.rsplit(":", 1)[0]
    with open(config_file) as f:
        source = f.read()
    doc = ""
    match = re.match(r'\s*"""(.*?)"""', source, re.S)
    if match:
        doc = match.group(1).strip()
    comments = field_comments([source, inspect.getsource(config_lib)])
    lines = [f"{config_file}", "", doc, "", "Fields (override with --config.FIELD=VALUE):"]
    for path, value in flatten(cfg).items():
        comment = _comment_for(path, comments)
        lines.append(f"  {path} = {value!r}" + (f"  # {comment}" if comment else ""))
    return "\n".join(lines)


# --- read tracking ------------------------------------------------------------------------------------------

@contextlib.contextmanager
def track_reads(cfg: ml_collections.ConfigDict) -> Iterator[set[str]]:
    """Yields a set that fills with the dotted paths of `cfg`'s leaves read inside the block.

    Patches ConfigDict item access (attribute access, `get`, `dict(...)` and `items()` go through it) and
    `to_dict` (every leaf below counts as read) for the duration of the block.
    """
    paths: dict[int, str] = {}

    def index(node: ml_collections.ConfigDict, prefix: str) -> None:
        paths[id(node)] = prefix
        for key, value in node._fields.items():  # noqa: SLF001 (no public iteration without reading)
            if isinstance(value, ml_collections.ConfigDict):
                index(value, f"{prefix}{key}.")

    index(cfg, "")
    read: set[str] = set()
    original_get, original_to_dict = ml_collections.ConfigDict.__getitem__, ml_collections.ConfigDict.to_dict

    def getitem(self, key):
        value = original_get(self, key)
        prefix = paths.get(id(self))
        if prefix is not None and isinstance(key, str) and not isinstance(value, ml_collections.ConfigDict):
            read.add(prefix + key)
        return value

    def to_dict(self, *args, **kwargs):
        prefix = paths.get(id(self))
        if prefix is not None:
            read.update(prefix + k for k in flatten(original_to_dict(self)))
        return original_to_dict(self, *args, **kwargs)

    ml_collections.ConfigDict.__getitem__ = getitem
    ml_collections.ConfigDict.to_dict = to_dict
    try:
        yield read
    finally:
        ml_collections.ConfigDict.__getitem__ = original_get
        ml_collections.ConfigDict.to_dict = original_to_dict


# --- flag errors ------------------------------------------------------------------------------------------

def _chain(exc: BaseException) -> list[str]:
    """Messages of an exception and its causes, outermost first, with the quoting absl/KeyError add undone."""
    out = []
    while exc is not None:
        text = str(exc.args[0]) if exc.args else str(exc)
        for _ in range(3):  # KeyError inside AttributeError inside KeyError: each adds a repr layer
            text = text.strip()
            if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
                text = text[1:-1]
            text = text.replace("\\n", "\n").replace("\\'", "'")
        out.append(text)
        exc = exc.__cause__ or exc.__context__
    return out


def _config_arg(argv: list[str]) -> tuple[str, str | None] | None:
    for arg in argv[1:]:
        if arg.startswith("--config="):
            path, _, variant = arg[len("--config="):].partition(":")
            return path, variant or None
    return None


def flag_error_line(exc: BaseException, argv: list[str]) -> str:
    """One line for a failed command-line parse, naming the `--config.FIELD` (and its section's fields)."""
    messages = _chain(exc)
    key = hint = None
    for message in messages:
        flag = re.search(r"Unknown command line flag 'config\.([\w.]+)'", message)
        mean = re.match(r"(\w+)'?\s+Did you mean \"(\w+)\"", message)
        if flag or mean or re.fullmatch(r"\w+", message):
            key = key or (flag.group(1).split(".")[-1] if flag else mean.group(1) if mean else message)
            hint = hint or (mean.group(2) if mean else None)
    if key is not None:
        for arg in argv[1:]:
            parts = arg.split("=", 1)[0][2:].split(".")
            if parts[0] != "config" or key not in parts[1:]:
                continue
            section = ".".join(parts[1:parts.index(key, 1)])
            line = f"{'.'.join(parts)}: no such config field" + (f" (did you mean {hint!r}?)" if hint else "")
            known = _section_fields(_config_arg(argv), section)
            return line + (f"; config.{section + '.' if section else ''}* fields: {known}" if known else "")
    first = messages[0].splitlines()[0]
    if first.startswith("flag --") and "Traceback" not in messages[0]:
        return first[len("flag --"):]  # 'config.data.batch_size=abc: invalid literal for int() ...'
    return messages[-1].splitlines()[-1] if messages[-1].strip() else first


def _section_fields(config_arg: tuple[str, str | None] | None, section: str) -> str:
    if config_arg is None:
        return ""
    try:
        cfg = config_lib.load_config(*config_arg)
        node = cfg.get(section) if section else cfg
    except Exception:  # noqa: BLE001 (only an embellishment of an error line)
        return ""
    return ", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else ""
