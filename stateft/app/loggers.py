"""Experiment loggers from ``conf/logger/*``; W&B falls back to offline instead of hanging or failing the run."""

from __future__ import annotations

import netrc
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf


def wandb_credentials() -> str | None:
    """Where a W&B API key comes from (``WANDB_API_KEY`` or ~/.netrc), or None when there is none."""
    if os.environ.get("WANDB_API_KEY"):
        return "WANDB_API_KEY"
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        if path.exists() and netrc.netrc(str(path)).authenticators(host):
            return str(path)
    except (netrc.NetrcParseError, OSError):
        return None
    return None


def _wandb_logger(node: DictConfig, extra: dict[str, Any] | None = None) -> Any | None:
    """A WandbLogger whose run has started: online when possible, else offline with a note on syncing, else none.

    An unreachable server costs at most ``WANDB_INIT_TIMEOUT`` seconds (30 by default) before the offline fallback.
    ``extra``: more keyword arguments for the logger (a resumed run's id).
    """
    from hydra.utils import instantiate

    mode = os.environ.get("WANDB_MODE", "")
    offline = bool(node.get("offline")) or mode in ("offline", "dryrun")
    if not offline and mode != "disabled" and wandb_credentials() is None:
        print("W&B: no API key (set WANDB_API_KEY or run `wandb login`): logging offline", file=sys.stderr)
        offline = True
    os.environ.setdefault("WANDB_INIT_TIMEOUT", "30")
    attempts = [False, True] if not offline else [True]
    for attempt_offline in attempts:
        # mode= reaches wandb.init directly: environment variables are ignored once a wandb session has started
        mode = {"mode": "offline"} if attempt_offline else {}
        logger = instantiate(node, offline=attempt_offline, **mode, **(extra or {}))
        try:
            logger.experiment  # starts the run now, so a failure is handled here  # noqa: B018
            return logger
        except Exception as err:
            close_wandb()
            reason = f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
            fallback = "logging offline" if not attempt_offline else "W&B is off for this run"
            print(
                f"W&B: cannot start {'an offline' if attempt_offline else 'an online'} run ({reason}); {fallback}",
                file=sys.stderr,
            )
    return None


def build_loggers(cfg: DictConfig, resume: Any = None) -> list[Any]:
    """Instantiate every logger under ``cfg.logger`` (``logger=null``: none).

    ``resume`` (``stateft.app.resume.Resume``): the loggers continue the interrupted run's files and W&B run
    (``stateft.app.log_resume``); CSV logs are rewritten atomically in every run.
    """
    from hydra.utils import instantiate
    from lightning.pytorch.loggers import CSVLogger

    from stateft.app.log_resume import prepare_csv, tensorboard_kwargs, wandb_kwargs

    out = Path(str(cfg.get("output_dir") or "."))
    loggers = []
    for name, node in (cfg.get("logger") or {}).items():
        if node is None:
            continue
        if name == "wandb":
            logger = _wandb_logger(node, wandb_kwargs(resume))
        else:
            logger = instantiate(node, **tensorboard_kwargs(node, resume, out))
        if isinstance(logger, CSVLogger):
            prepare_csv(logger, resume, out)
        if logger is not None:
            loggers.append(logger)
    return loggers


def log_run_info(
    loggers: list[Any], cfg: DictConfig, counts: dict[str, float], protocol: dict[str, Any] | None = None
) -> None:
    """The resolved config, the protocol record (`stateft.app.protocol`) and the trainable-parameter counts, to
    every logger."""
    params = OmegaConf.to_container(cfg, resolve=True)
    params.pop("hydra", None)
    if protocol is not None:
        params["protocol"] = protocol
    for logger in loggers:
        try:
            logger.log_hyperparams({**params, **counts})
            if _is_wandb(logger):
                logger.experiment.summary.update(counts)
        except Exception as err:  # a logger problem must not end the run
            print(f"{type(logger).__name__}: could not log the config ({type(err).__name__}: {err})", file=sys.stderr)


def _is_wandb(logger: Any) -> bool:
    return type(logger).__name__ == "WandbLogger"


def finish_wandb(loggers: list[Any], adapter_dir: Path | None, artifact_name: str) -> list[str]:
    """Upload the adapter as a W&B artifact, close the run; returns lines to print (where it went, how to sync)."""
    lines: list[str] = []
    for logger in loggers:
        if not _is_wandb(logger):
            continue
        try:
            import wandb

            run = logger.experiment
            if adapter_dir is not None and Path(adapter_dir).exists():
                artifact = wandb.Artifact(artifact_name, type="adapter")
                artifact.add_dir(str(adapter_dir))
                run.log_artifact(artifact)
            run_dir = Path(run.dir).parent
            offline = getattr(run.settings, "_offline", False) or run.settings.mode in ("offline", "dryrun")
            lines.append(
                f"W&B: offline run in {run_dir}; upload it with: wandb sync {run_dir}" if offline else f"W&B: {run.url}"
            )
        except Exception as err:
            lines.append(f"W&B: could not finish the run ({type(err).__name__}: {err})")
    return lines


def close_wandb() -> None:
    """``wandb.finish()`` if a run is open: called in a ``finally`` so one failing job does not break a multirun."""
    if "wandb" in sys.modules:
        try:
            sys.modules["wandb"].finish()
        except Exception:  # closing is best effort
            pass
