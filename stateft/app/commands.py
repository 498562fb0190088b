"""Commands printed for the user to copy (evaluate, resume, the full run after a sweep), quoted so they run as printed.

A value goes through two parsers: the shell, then Hydra's override grammar, where ``=``, ``,``, brackets, braces,
quotes, spaces and ``${`` mean something. A value Hydra would not read back as the same string is put in Hydra's
double quotes (``adapter="outputs/.../3_optim.lr=0.1/adapter"``, with ``\\${`` for a literal ``${``), and every
argument is then shell-quoted (shlex.quote). The scripts are named by their path from the working directory (the
repository's ``train.py`` and ``eval.py``), so a command runs from the folder where it was printed.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def script(name: str) -> str:
    """``train.py`` / ``eval.py`` of this checkout, relative to the working directory when it lies inside it."""
    path = REPO / name
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _reads_back(key: str, text: str) -> bool:
    """Hydra parses ``key=text`` to the string ``text`` itself."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        override = OverridesParser.create().parse_override(f"{key}={text}")
    except HydraException:
        return False
    value = override.value()
    return isinstance(value, str) and value == text and not override.is_sweep_override()


def hydra_value(key: str, value: str) -> str:
    """``value`` as Hydra's override grammar must see it to read back exactly ``value`` (a string)."""
    if "${" not in value and _reads_back(key, value):
        return value
    from hydra.core.override_parser.types import Quote, QuotedString

    # OmegaConf reads "\${" as a literal "${", and 2n backslashes before "${" as n backslashes and an interpolation
    literal = re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", value)
    return QuotedString(text=literal, quote=Quote.double).with_quotes()


def hydra_arg(key: str, value: str | Path) -> str:
    """``key=value`` as one Hydra override (not yet shell-quoted)."""
    return f"{key}={hydra_value(key.lstrip('+~'), str(value))}"


def command(name: str, overrides: Sequence[str]) -> str:
    """``python <script> <overrides...>``, each argument shell-quoted; ``overrides`` are Hydra overrides already."""
    return shlex.join(["python", script(name), *overrides])


def job_overrides() -> list[str]:
    """The running Hydra job's command-line overrides (a sweep job's own values), without a previous resume."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    overrides = [str(o) for o in HydraConfig.get().overrides.task]  # Hydra's name for the command line's overrides
    return [o for o in overrides if o.lstrip("+~").split("=", 1)[0] not in ("resume", "ckpt_path")]


def resume_command(run_dir: Path) -> str:
    """Continue the run in ``run_dir`` from its last checkpoint, with the overrides it was started with."""
    return command("train.py", [*job_overrides(), hydra_arg("+resume", run_dir)])


def eval_command(adapter: Path) -> str:
    """Evaluate the adapter in ``adapter`` on its dataset's test split."""
    return command("eval.py", [hydra_arg("adapter", adapter)])
