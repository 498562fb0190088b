"""Adapters on the Hugging Face hub: push an adapter folder with a model card, pull one by repo id.

    python -m stateft.hub push outputs/.../adapter me/mamba-130m-rte-state-offset [--private] [--revision BRANCH]
    python -m stateft.hub pull hf://me/mamba-130m-rte-state-offset@<commit>   (prints the local folder)
    python eval.py adapter=hf://me/mamba-130m-rte-state-offset

Push uploads the files of an adapter folder that stateft reads (``*.json``, ``*.safetensors``: the adapter, its config,
``run_config.json``, and for a Transformer peft's files and ``stateft_adapter.json``) and a generated ``README.md``
(``stateft.hub_card``), after checking that the folder is an adapter. Nothing else in the folder is uploaded.

Pull (``resolve_adapter``: what ``eval.py adapter=`` and ``stateft.hub.pull`` accept) takes ``hf://<owner>/<name>``
with an optional ``@<revision>`` (branch, tag or commit: a commit pins the exact files), or a plain
``<owner>/<name>[@<revision>]`` when no local folder of that name exists. ``huggingface_hub.snapshot_download``
fetches only ``ALLOWED`` files of the repository's top level into the HF cache (``HF_HUB_CACHE``; with
``HF_HUB_OFFLINE=1`` a snapshot already there is used). The snapshot is then checked as a shared folder: every
entry must be one of those files (a pickle, ``.bin``, ``.pt``, ``.py`` or a folder, which an earlier download by
another tool may have left in the same cache snapshot, is refused and nothing is loaded), and a cache link must
point into the repository's own ``blobs/``. The files are then hard-linked (copied across file systems) into
``$STATEFT_CACHE_DIR/hub/<owner>--<name>/<commit>/``, a folder of regular files, because the adapter reader refuses
symbolic links inside a shared folder and the HF cache is made of them. That folder is then read by
``stateft.adapters.read_adapter`` like any local adapter: strict JSON, bounds, digests (docs/security.md).

Every failure is one ``UserError`` line: a malformed id, a repository or revision that does not exist, no network
or ``HF_HUB_OFFLINE=1`` without a cached copy (with what to do), a folder that is not an adapter, a hostile file.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stateft import __version__
from stateft.errors import UserError

PREFIX = "hf://"
ALLOWED = ("*.json", "*.safetensors", "README.md")  # what is downloaded and uploaded; all of it is read as data
HARMLESS = (".gitattributes",)  # in every hub repository; never read, never copied
NESTED = "*/*"  # an adapter is the repository's top level; files in folders are neither downloaded nor uploaded
MAX_FILES = 64
CARD_NAME = "README.md"
METRICS_NAME = "metrics.json"
RUN_CONFIG_NAME = "run_config.json"
MAX_METRICS_BYTES = 16 << 20
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
REPO_ID = re.compile(rf"{_NAME}/{_NAME}")
REVISION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,199}")
LICENSE = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}")


@dataclass(frozen=True)
class HubRef:
    """A model repository on the hub and, optionally, a revision (branch, tag or commit hash)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


def _parse(text: str, spec: str) -> HubRef:
    repo_id, _, revision = text.partition("@")
    if not REPO_ID.fullmatch(repo_id) or "--" in repo_id or ".." in repo_id:
        raise UserError(
            f"{spec[:120]!r} is not a hub adapter: expected hf://<owner>/<name>[@<revision>] (letters, digits, "
            "'-', '_', '.')"
        )
    if revision and (not REVISION.fullmatch(revision) or ".." in revision):
        raise UserError(f"{spec[:120]!r}: {revision[:60]!r} is not a branch, tag or commit name")
    if "@" in text and not revision:
        raise UserError(f"{spec[:120]!r}: nothing after '@'; give a branch, tag or commit, or leave out the '@'")
    return HubRef(repo_id, revision or None)


def parse_ref(spec: str) -> HubRef | None:
    """The hub repository ``spec`` names, or None for a local path: ``hf://owner/name[@rev]`` always names one (a
    malformed one is a UserError); a plain ``owner/name[@rev]`` only when no file or folder of that name exists."""
    if spec.startswith(PREFIX):
        return _parse(spec[len(PREFIX) :], spec)
    if Path(spec).expanduser().exists() or spec.startswith((".", "/", "~")):
        return None
    repo_id, _, revision = spec.partition("@")
    if REPO_ID.fullmatch(repo_id) and (not revision or REVISION.fullmatch(revision)):
        return _parse(spec, spec)
    return None


# -- pull -----------------------------------------------------------------------------------------------------------
def _hub_error(err: BaseException, ref: HubRef, what: str) -> UserError:
    """One line for a failed hub call: what happened and what to do."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    local = "or pass a local adapter folder (adapter=/path/to/adapter)" if what == "download" else "or create it"
    if isinstance(err, RevisionNotFoundError):
        return UserError(f"{ref}: the repository has no revision {ref.revision!r} (a branch, tag or commit)")
    if isinstance(err, GatedRepoError):
        return UserError(f"{ref} is gated: accept its terms on the hub and log in (hf auth login or HF_TOKEN)")
    if isinstance(err, RepositoryNotFoundError):
        return UserError(
            f"{ref}: no such repository on the hub, or it is private (log in: hf auth login or HF_TOKEN); "
            f"check the id, {local}"
        )
    if isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled)) and constants.HF_HUB_OFFLINE:
        if what != "download":
            return UserError(f"cannot {what} {ref}: HF_HUB_OFFLINE=1; unset it on a machine with network access")
        return UserError(
            f"cannot download {ref}: HF_HUB_OFFLINE=1 and it is not in the HF cache ({constants.HF_HUB_CACHE}); "
            f"unset HF_HUB_OFFLINE on a machine with network access, {local}"
        )
    if isinstance(err, HFValidationError):
        return UserError(f"{ref}: {str(err).splitlines()[0][:160]}")
    if isinstance(err, HfHubHTTPError) and err.response is not None and err.response.status_code in (401, 403):
        may = "read" if what == "download" else "write to"
        code = err.response.status_code
        return UserError(f"cannot {what} {ref}: not allowed ({code}); log in (hf auth login or HF_TOKEN) with a "
                         f"token that may {may} it")  # fmt: skip
    reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
    if what != "download":
        return UserError(f"cannot {what} {ref}: {reason}; check the network (HF_ENDPOINT, proxy) and the token")
    return UserError(
        f"cannot download {ref}: the hub cannot be reached and it is not in the HF cache ({reason}); check the "
        f"network (HF_ENDPOINT, proxy), {local}"
    )


def _hub_exceptions() -> tuple[type[BaseException], ...]:
    """What a failed hub call raises: huggingface_hub's errors (OSError, ValueError) and its HTTP client's."""
    try:
        import httpx2
    except ImportError:  # another huggingface_hub's client: its errors are wrapped in OSError
        return (OSError, ValueError)
    return (OSError, ValueError, httpx2.HTTPError)


def download(ref: HubRef) -> Path:
    """The HF cache's snapshot folder of ``ref``: only ``ALLOWED`` top-level files are fetched."""
    import huggingface_hub

    try:
        folder = huggingface_hub.snapshot_download(
            ref.repo_id,
            revision=ref.revision,
            allow_patterns=list(ALLOWED),
            ignore_patterns=[NESTED],
            library_name="stateft",
            library_version=__version__,
        )
    except _hub_exceptions() as err:
        raise _hub_error(err, ref, "download") from None
    return Path(folder)


def _allowed(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in ALLOWED)


def check_snapshot(snapshot: Path, ref: HubRef) -> dict[str, Path]:
    """``{file name: the regular file holding it}`` of a downloaded snapshot; UserError for anything but ``ALLOWED``
    files at the top level (a pickle, ``.bin``, ``.py``, a folder), a link out of the repository's cached blobs or
    a file that is not a regular file."""
    blobs = (snapshot.parent.parent / "blobs").resolve()
    entries = sorted(snapshot.iterdir(), key=lambda p: p.name)
    if len(entries) > MAX_FILES:
        raise UserError(f"{ref}: the download holds {len(entries)} files; an adapter has a handful")
    files = {}
    for entry in entries:
        if entry.name in HARMLESS:
            continue
        if entry.is_dir() or not _allowed(entry.name):
            raise UserError(
                f"{ref}: the download holds {entry.name[:80]!r}, which stateft never loads (only "
                f"{', '.join(ALLOWED)}: a pickle, .bin or .py can run code); nothing was loaded. Remove it from "
                f"the repository or from the cache ({snapshot})"
            )
        real = entry
        if entry.is_symlink():  # the HF cache: snapshots/<commit>/<file> -> ../../blobs/<hash>
            real = entry.resolve()
            if real.parent != blobs:
                raise UserError(f"{ref}: {entry.name} in the cache links outside the repository's blobs ({real})")
        try:
            mode = os.stat(real, follow_symlinks=False).st_mode
        except OSError:
            mode = 0
        if not stat.S_ISREG(mode):
            raise UserError(f"{ref}: {entry.name} in the cache is not a regular file; delete {snapshot} and retry")
        files[entry.name] = real
    return files


def stateft_cache() -> Path:
    """stateft's cache folder (``$STATEFT_CACHE_DIR``, default ``~/.cache/stateft``), as the dataset configs use it."""
    return Path(os.environ.get("STATEFT_CACHE_DIR") or "~/.cache/stateft").expanduser()


def _same_files(folder: Path, files: dict[str, Path]) -> bool:
    import filecmp

    if not folder.is_dir() or sorted(p.name for p in folder.iterdir()) != sorted(files):
        return False
    for name, source in files.items():
        mine = folder / name
        if mine.is_symlink() or not mine.is_file():
            return False
        if not os.path.samefile(mine, source) and not filecmp.cmp(mine, source, shallow=False):
            return False
    return True


def materialise(files: dict[str, Path], ref: HubRef, commit: str) -> Path:
    """A folder of regular files with ``files`` (hard links, copies across file systems) under
    ``$STATEFT_CACHE_DIR/hub/<owner>--<name>/<commit>/``, written atomically and reused when it holds the same."""
    from stateft.atomic import replacing_dir

    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", commit) or commit.startswith("."):
        raise UserError(f"{ref}: the HF cache gave an unexpected snapshot name {commit[:80]!r}")
    target = stateft_cache() / "hub" / ref.repo_id.replace("/", "--") / commit
    if _same_files(target, files):
        return target
    with replacing_dir(target) as tmp:
        for name, source in files.items():
            try:
                os.link(source, tmp / name)
            except OSError:
                shutil.copyfile(source, tmp / name)
    return target


def pull(spec: str | HubRef) -> Path:
    """Download the adapter ``spec`` names (``hf://owner/name[@rev]`` or ``owner/name[@rev]``) and return a local
    folder of checked regular files that ``stateft.adapters.load_adapter`` reads like any adapter folder."""
    ref = spec if isinstance(spec, HubRef) else parse_ref(str(spec))
    if ref is None:
        raise UserError(f"{str(spec)[:120]!r} is not a hub adapter: pass hf://<owner>/<name>[@<revision>]")
    snapshot = download(ref)
    files = check_snapshot(snapshot, ref)
    if "adapter_config.json" not in files or "adapter_model.safetensors" not in files:
        raise UserError(
            f"{ref} is not an adapter repository (no adapter_config.json and adapter_model.safetensors at its top "
            "level); push one with python -m stateft.hub push <adapter folder> <repo>"
        )
    return materialise(files, ref, snapshot.name)


def resolve_adapter(spec: str) -> tuple[Path, str]:
    """``(local folder, what to record)`` of an adapter argument: a local path as given (``~`` expanded), or a hub
    adapter pulled (``pull``) and recorded as ``hf://owner/name@<commit>``."""
    ref = parse_ref(spec)
    if ref is None:
        path = Path(spec).expanduser()
        return path, str(path)
    try:
        folder = pull(ref)
    except UserError as err:
        if spec.startswith(PREFIX):
            raise
        raise UserError(f"{spec[:120]} is no local folder; read as a hub adapter: {err}") from None
    return folder, f"{PREFIX}{ref.repo_id}@{folder.name}"


def resolve_adapter_dir(spec: str) -> tuple[Path, str]:
    """``resolve_adapter``, refusing in one line a folder that holds no adapter (answered before torch is needed)."""
    adapter, source = resolve_adapter(spec)
    config = adapter / "adapter_config.json"
    if not config.exists() and not config.is_symlink():
        raise UserError(f"{adapter} is not an adapter directory (no adapter_config.json): pass <run>/adapter")
    return adapter, source


# -- push -----------------------------------------------------------------------------------------------------------
def _header_count(path: Path) -> tuple[list[str], int]:
    """(names, parameters) of a safetensors file, from its header only."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            names = list(handle.keys())
            count = 0
            for name in names:
                shape = handle.get_slice(name).get_shape()
                size = 1
                for dim in shape:
                    size *= dim
                count += size
    except (OSError, ValueError, RuntimeError) as err:
        raise UserError(f"{path} is not a readable safetensors file ({str(err)[:120]}); re-save the adapter") from None
    return names, count


def _read_optional_json(path: Path, what: str) -> Any:
    from stateft.foreign import read_json

    if not path.exists() and not path.is_symlink():
        return None
    return read_json(path, what, MAX_METRICS_BYTES)


def describe_adapter(folder: Path, repo_id: str, license: str) -> tuple[Any, list[Path]]:
    """(card facts, files to upload) of an adapter folder, checked as ``eval.py`` would check its config (strict
    JSON, method options, architecture); its tensors are counted from the safetensors header."""
    from stateft.adapters import CONFIG_NAME, WEIGHTS_NAME, read_adapter_config
    from stateft.hub_card import CardFacts, pick_metrics, train_command
    from stateft.methods.peft_adapters import is_peft_adapter

    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; pass the adapter folder train.py wrote (<run>/adapter)")
    meta = read_adapter_config(folder)  # a folder that is not an adapter: one line, from the reader itself
    weights = folder / WEIGHTS_NAME
    if not weights.is_file() or weights.is_symlink():
        raise UserError(f"{folder} has no {WEIGHTS_NAME} (a regular file); pass the adapter folder train.py wrote")
    names, count = _header_count(weights)
    peft = is_peft_adapter(folder)
    if not peft and meta.get("trainable") is not None and sorted(names) != sorted(meta["trainable"]):
        raise UserError(f"{folder}: {WEIGHTS_NAME} does not hold the tensors {CONFIG_NAME} lists; re-save it")
    run_config = _read_optional_json(folder / RUN_CONFIG_NAME, "run config")
    metrics = _read_optional_json(folder.parent / METRICS_NAME, "metrics")
    dataset = run_config.get("dataset") if isinstance(run_config, dict) else None
    dataset = dataset if isinstance(dataset, dict) else {}
    total = metrics.get("params/total") if isinstance(metrics, dict) else None
    facts = CardFacts(
        repo_id=repo_id,
        method=dict(meta["method"]),
        base_model=dict(meta.get("base_model") or {}),
        trainable=count,
        peft_format=peft,
        stateft_version=str(meta.get("stateft_version") or __version__),
        license=license,
        total=total if isinstance(total, int) and not isinstance(total, bool) and total >= count else None,
        dataset=dataset.get("name") if isinstance(dataset.get("name"), str) else None,
        dataset_hub_id=dataset.get("hub_id") if isinstance(dataset.get("hub_id"), str) else None,
        command=train_command(run_config) if isinstance(run_config, dict) else None,
        metrics=pick_metrics(metrics),
    )
    files = []
    for entry in sorted(folder.iterdir()):
        if entry.name != CARD_NAME and _allowed(entry.name) and entry.is_file() and not entry.is_symlink():
            files.append(entry)
    return facts, files


@dataclass
class Pushed:
    """Where an adapter went: the repository, the commit, its address."""

    repo_id: str
    commit: str
    url: str

    def lines(self) -> list[str]:
        return [
            f"pushed to:       {self.url}",
            f"evaluate with:   python eval.py adapter=hf://{self.repo_id}@{self.commit}",
        ]


def push(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    license: str = "apache-2.0",
    message: str | None = None,
) -> Pushed:
    """Upload the adapter in ``folder`` with a generated model card to the hub repository ``repo_id`` (created if
    missing; ``private`` only applies then), on branch ``revision`` (created from main if missing; default main).
    Files of an earlier push that this one lacks (``ALLOWED`` kinds) are deleted, so the repository holds one adapter.
    The token is huggingface_hub's own (``hf auth login`` or ``HF_TOKEN``)."""
    import huggingface_hub

    from stateft.hub_card import model_card

    ref = _parse(repo_id, repo_id)
    if ref.revision:
        raise UserError(f"{repo_id!r}: give the branch with --revision, not '@'")
    if revision is not None and (not REVISION.fullmatch(revision) or ".." in revision):
        raise UserError(f"--revision {revision[:60]!r} is not a branch name")
    if not LICENSE.fullmatch(license):
        raise UserError(f"--license {license[:60]!r} is not a license id (e.g. apache-2.0, mit, other)")
    ref = HubRef(repo_id, revision)
    facts, files = describe_adapter(Path(folder).expanduser(), repo_id, license)
    api = huggingface_hub.HfApi(library_name="stateft", library_version=__version__)
    with tempfile.TemporaryDirectory(prefix="stateft-push-") as staging:
        for path in files:
            shutil.copyfile(path, Path(staging) / path.name)
        (Path(staging) / CARD_NAME).write_text(model_card(facts), encoding="utf-8")
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            if revision is not None:
                api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=staging,
                revision=revision,
                repo_type="model",
                commit_message=message or f"stateft {facts.method.get('name')} adapter",
                allow_patterns=list(ALLOWED),
                delete_patterns=list(ALLOWED),
            )
        except _hub_exceptions() as err:
            raise _hub_error(err, ref, "push to") from None
    return Pushed(repo_id, str(info.oid), str(info.commit_url))


# -- train.py: hub.push_to ------------------------------------------------------------------------------------------
def check_push_config(cfg: Any) -> None:
    """``hub.push_to`` / ``hub.revision`` / ``hub.private`` / ``hub.license`` of a training config, checked at
    start-up so that a typo ends the run before training, not after it."""
    hub = cfg.get("hub") if hasattr(cfg, "get") else None
    if hub is None or hub.get("push_to") is None:
        return
    target = hub.get("push_to")
    if not isinstance(target, str):
        raise UserError(f"hub.push_to must be a repo id owner/name, got {str(target)[:60]!r}")
    if _parse(target, target).revision:
        raise UserError(f"hub.push_to={target!r}: set the branch with hub.revision, not '@'")
    revision = hub.get("revision")
    if revision is not None and (not isinstance(revision, str) or not REVISION.fullmatch(revision)):
        raise UserError(f"hub.revision must be a branch name or null, got {str(revision)[:60]!r}")
    if not isinstance(hub.get("private"), bool):
        raise UserError(f"hub.private must be true or false, got {hub.get('private')!r}")
    if not isinstance(hub.get("license"), str) or not LICENSE.fullmatch(hub.get("license")):
        raise UserError(f"hub.license must be a license id (apache-2.0, mit, other...), got {hub.get('license')!r}")


def push_run(cfg: Any, adapter: Path) -> list[str]:
    """Push a finished run's best adapter to ``hub.push_to`` (nothing when it is null); the lines to print. A failure
    is one UserError saying the run's files are safe and how to push them again."""
    hub = cfg.get("hub")
    if hub is None or hub.get("push_to") is None:
        return []
    try:
        pushed = push(adapter, hub.push_to, private=hub.private, revision=hub.revision, license=hub.license)
    except UserError as err:
        raise UserError(
            f"the run finished and its files are in {adapter.parent}, but the push failed: {err}; push again with: "
            f"python -m stateft.hub push {adapter} {hub.push_to}"
        ) from None
    return pushed.lines()


# -- command line ---------------------------------------------------------------------------------------------------
def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stateft.hub", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    push_cmd = commands.add_parser("push", help="upload an adapter folder with a model card")
    push_cmd.add_argument("adapter", help="the adapter folder (a run's adapter/)")
    push_cmd.add_argument("repo_id", help="owner/name on the hub")
    push_cmd.add_argument("--private", action="store_true", help="create the repository private")
    push_cmd.add_argument("--revision", default=None, help="branch to push to (created if missing); default main")
    push_cmd.add_argument("--license", default="apache-2.0", help="license id for the card (default apache-2.0)")
    push_cmd.add_argument("--message", default=None, help="commit message")
    pull_cmd = commands.add_parser("pull", help="download and check an adapter; print its local folder")
    pull_cmd.add_argument("spec", help="hf://owner/name[@revision] or owner/name[@revision]")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _arguments(sys.argv[1:] if argv is None else argv)
    if args.command == "push":
        pushed = push(
            args.adapter,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            license=args.license,
            message=args.message,
        )
        print("\n".join(pushed.lines()))
    else:
        print(pull(args.spec if args.spec.startswith(PREFIX) else PREFIX + args.spec))


__all__ = ["ALLOWED", "HubRef", "check_push_config", "parse_ref", "pull", "push", "push_run", "resolve_adapter"]

if __name__ == "__main__":
    from stateft.app.entry import run_main

    run_main(main)
