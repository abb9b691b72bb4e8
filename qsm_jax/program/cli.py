"""Command-line flags generated from the config dataclasses (``RunConfig`` and every algorithm's
config), so a setting is declared once: its name, type and default in the dataclass, its help in
the dataclass docstring's ``Attributes:`` section.

Agent flags default to "the chosen algorithm's default" (``None``); a flag given on the command line
(or in a ``--flagfile``) that is not a setting of ``--algo`` is refused with one line.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
from typing import Any

from absl import flags

from qsm_jax.algorithms import ALGORITHMS, get_algorithm
from qsm_jax.program.run_config import RunConfig

_RUN_FIELDS = [f for f in dataclasses.fields(RunConfig) if f.name not in ("agent", "algo")]


def field_docs(cls: type) -> dict[str, str]:
    """Each field's text in the ``Attributes:`` sections of ``cls``'s docstring and its bases'
    (entries may name several fields: ``gamma, tau: ...``)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        text = inspect.cleandoc(klass.__dict__.get("__doc__") or "")
        if "Attributes:" not in text:
            continue
        names: list[str] = []
        for line in text.split("Attributes:", 1)[1].splitlines():
            entry = re.match(r"^ {2}([\w][\w, ]*): (.*)$", line)
            if entry:
                names = [n.strip() for n in entry.group(1).split(",")]
                for n in names:
                    docs[n] = entry.group(2).strip()
            elif line.startswith("    ") and names:
                for n in names:
                    docs[n] += " " + line.strip()
            elif line.strip() and not line.startswith(" "):
                break  # the next section
    return docs


def _kind(field: dataclasses.Field) -> str:
    kind = str(field.type)
    return "list" if kind.startswith("tuple") else kind


def _define(name: str, kind: str, default: Any, help_text: str, flag_values: flags.FlagValues, module: str) -> None:
    define = {"int": flags.DEFINE_integer, "float": flags.DEFINE_float, "bool": flags.DEFINE_bool}
    where = {"flag_values": flag_values, "module_name": module}
    if kind == "list":
        flags.DEFINE_list(name, None if default is None else [str(d) for d in default], help_text, **where)
    elif kind in define:
        define[kind](name, default, help_text, **where)
    else:
        flags.DEFINE_string(name, default, help_text, **where)


def agent_fields() -> dict[str, dict[str, dataclasses.Field]]:
    """Field name -> {algorithm name: its field}, over every registered algorithm's config."""
    out: dict[str, dict[str, dataclasses.Field]] = {}
    for name, algorithm in ALGORITHMS.items():
        for f in dataclasses.fields(algorithm.config_cls):
            out.setdefault(f.name, {})[name] = f
    return out


def define_flags(flag_values: flags.FlagValues = flags.FLAGS, module: str | None = None) -> None:
    """One flag per ``RunConfig`` field (its default), ``--algo``, and one per agent setting of any
    algorithm (default: the chosen algorithm's own; the help lists each algorithm's default).

    ``module``: the module the flags are listed under in ``--help`` (default: the program run,
    ``sys.argv[0]``, so that ``--help`` shows them)."""
    module = module or sys.argv[0]
    run_docs = field_docs(RunConfig)
    flags.DEFINE_enum("algo", RunConfig.algo, sorted(ALGORITHMS), run_docs["algo"], flag_values, module)
    for f in _RUN_FIELDS:
        _define(f.name, _kind(f), getattr(RunConfig(), f.name), run_docs[f.name], flag_values, module)
    docs = {name: field_docs(a.config_cls) for name, a in ALGORITHMS.items()}
    for field_name, per_algo in agent_fields().items():
        first = next(iter(per_algo))
        defaults = {a: getattr(ALGORITHMS[a].config_cls(), field_name) for a in per_algo}
        shown = {a: ",".join(map(str, v)) if isinstance(v, tuple) else str(v) for a, v in defaults.items()}
        if len(set(shown.values())) == 1:
            default_text = f"{'/'.join(per_algo)}; default {next(iter(shown.values()))}"
        else:
            default_text = "; ".join(f"{a}: {v}" for a, v in shown.items())
        help_text = f"{docs[first][field_name]} [{default_text}]"
        _define(field_name, _kind(per_algo[first]), None, help_text, flag_values, module)


def config_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> RunConfig:
    """The ``RunConfig`` the parsed flags describe.

    Raises:
      ValueError: an agent flag given that ``--algo`` does not have, or a bad value (one line).
    """
    algorithm = get_algorithm(flag_values.algo)
    own = {f.name: f for f in dataclasses.fields(algorithm.config_cls)}
    given = [n for n in agent_fields() if flag_values[n].present or flag_values[n].value is not None]
    foreign = sorted(n for n in given if n not in own)
    if foreign:
        names = ", ".join(f"--{n}" for n in foreign)
        raise ValueError(f"{names}: not settings of --algo={algorithm.name}; drop them")
    agent = {}
    for name in given:
        value = flag_values[name].value
        if _kind(own[name]) == "list":
            try:
                value = tuple(int(v) for v in value)
            except ValueError:
                raise ValueError(f"{name} must be comma-separated integers, got {','.join(value)!r}") from None
        agent[name] = value
    run = {f.name: flag_values[f.name].value for f in _RUN_FIELDS}
    return RunConfig(**run, algo=algorithm.name, agent=algorithm.config_cls(**agent))


def stray_argument_error(stray: list[str], argv: list[str] | None = None) -> str:
    """The one-line error for ``stray``, arguments that are not flags (absl hands a flagfile's lines
    that are not flags to the program as arguments): the flagfile and line it came from, else the
    argument itself.

    Args:
      stray: the arguments left after flag parsing (``argv[1:]`` of ``main``).
      argv: the command line (default ``sys.argv``), whose ``--flagfile``s are searched.
    """
    first = stray[0]
    for path in _flagfiles(sys.argv if argv is None else argv):
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for number, line in enumerate(lines, 1):
            if line.strip() == first:
                return (
                    f"{path}, line {number}: {first!r} is not a flag (flags read --name=value); fix or delete that line"
                )
    return f"unexpected argument {first!r}: flags read --name=value (--help lists them)"


def parse_flags(argv: list[str], flag_values: flags.FlagValues = flags.FLAGS, program: str = "run.py") -> list[str]:
    """``absl.app.run``'s ``flags_parser``: parses ``argv`` into ``flag_values`` and returns what is left,
    but an unknown flag, a value absl cannot read or a flagfile that cannot be opened exits with one
    line naming what to change (absl's own message is two lines and points at ``--helpshort``)."""
    try:
        return flag_values(argv)
    except flags.CantOpenFlagFileError as e:
        path = re.search(r"'([^']*)'", str(e))
        named = path[1] if path else str(e)
        sys.exit(f"{program}: error: cannot open the flagfile {named}: fix --flagfile (named configurations: configs/)")
    except flags.Error as e:
        sys.exit(f"{program}: error: {e} (--help lists the flags)")


def _flagfiles(args: list[str], depth: int = 0) -> list[str]:
    """The ``--flagfile`` paths of ``args``, and of the flagfiles they name (nested up to 5 deep)."""
    paths = [a.split("=", 1)[1] for a in args if a.startswith(("--flagfile=", "-flagfile="))]
    nested = []
    for path in paths if depth < 5 else []:
        try:
            with open(path) as f:
                nested += _flagfiles([line.strip() for line in f], depth + 1)
        except OSError:
            continue
    return paths + nested
