"""A stand-in for the Hugging Face hub on the local disk, so the hub tests never touch the network.

``FakeHub.install(monkeypatch)`` replaces ``huggingface_hub.HfApi`` and ``huggingface_hub.snapshot_download`` (the two
names ``stateft.hub`` calls) with this object's versions:
- the API keeps repositories in memory as commits (``{file name: bytes}``) with branches, and records every call;
- ``snapshot_download`` filters the repository's files with huggingface_hub's own pattern matcher and writes them in
  the real cache layout (``models--<owner>--<name>/blobs/<sha256>``, ``snapshots/<commit>/<file>`` linked to the blob,
  ``refs/<branch>``), into ``huggingface_hub.constants.HF_HUB_CACHE``, which the fixture points at a test folder. A
  snapshot folder keeps files an earlier download left, as the real cache does. The real ``snapshot_download`` with
  ``HF_HUB_OFFLINE=1`` reads that same cache, which the tests use to check the layout.
Errors are huggingface_hub's own classes (repository / revision not found, no network).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import huggingface_hub
from huggingface_hub import constants
from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.utils import filter_repo_objects


def _not_found(kind: type, what: str, url: str) -> Exception:
    """huggingface_hub's error for a 404 on ``url`` (``what``: Repository, Revision)."""
    response = httpx2.Response(404, request=httpx2.Request("GET", url))
    return kind(f"404 Client Error. {what} Not Found for url: {url}.", response=response)


@dataclass
class Commit:
    oid: str
    commit_url: str


@dataclass
class Repo:
    private: bool
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> files
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit


class FakeHub:
    """The hub's state and the call log (``calls``: ``(name, kwargs)``)."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self.repos: dict[str, Repo] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.unreachable = False  # True: every call fails as a dropped connection would

    # -- installing -------------------------------------------------------------------------------------------
    def install(self, monkeypatch: Any) -> FakeHub:
        hub = self

        class HfApi:
            def __init__(self, **kwargs: Any) -> None:
                hub.calls.append(("HfApi", kwargs))

            def create_repo(self, repo_id: str, **kwargs: Any) -> str:
                return hub.create_repo(repo_id, **kwargs)

            def create_branch(self, repo_id: str, **kwargs: Any) -> None:
                hub.create_branch(repo_id, **kwargs)

            def upload_folder(self, **kwargs: Any) -> Commit:
                return hub.upload_folder(**kwargs)

        monkeypatch.setattr(huggingface_hub, "HfApi", HfApi)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", self.snapshot_download)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(self.cache))
        return self

    def called(self, name: str) -> list[dict[str, Any]]:
        return [kwargs for call, kwargs in self.calls if call == name]

    # -- the API ----------------------------------------------------------------------------------------------
    def _connect(self, url: str) -> None:
        if self.unreachable:
            raise httpx2.ConnectError(f"[Errno 111] Connection refused: {url}")

    def _repo(self, repo_id: str) -> Repo:
        if repo_id not in self.repos:
            url = f"https://huggingface.co/api/models/{repo_id}"
            raise _not_found(RepositoryNotFoundError, "Repository", url)
        return self.repos[repo_id]

    def create_repo(self, repo_id: str, *, private: bool | None = None, exist_ok: bool = False, **kw: Any) -> str:
        self.calls.append(("create_repo", {"repo_id": repo_id, "private": private, "exist_ok": exist_ok, **kw}))
        self._connect("https://huggingface.co/api/repos/create")
        if repo_id in self.repos and not exist_ok:
            raise ValueError(f"{repo_id} exists")
        if repo_id not in self.repos:
            self.repos[repo_id] = Repo(private=bool(private))
            self.commit(repo_id, {".gitattributes": b"*.safetensors filter=lfs\n"}, "main")
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id: str, *, branch: str, exist_ok: bool = False, **kw: Any) -> None:
        self.calls.append(("create_branch", {"repo_id": repo_id, "branch": branch, "exist_ok": exist_ok, **kw}))
        repo = self._repo(repo_id)
        if branch not in repo.branches:
            repo.branches[branch] = repo.branches["main"]
        elif not exist_ok:
            raise ValueError(f"branch {branch} exists")

    def commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        """A new commit on ``branch`` holding exactly ``files``; its 40-hex id."""
        repo = self.repos.setdefault(repo_id, Repo(private=False))
        digest = hashlib.sha1(f"{repo_id} {branch} {len(repo.commits)}".encode())
        for name in sorted(files):
            digest.update(name.encode() + b"\0" + files[name])
        oid = digest.hexdigest()
        repo.commits[oid] = dict(files)
        repo.branches[branch] = oid
        return oid

    def upload_folder(
        self,
        *,
        repo_id: str,
        folder_path: str | Path,
        revision: str | None = None,
        allow_patterns: Any = None,
        delete_patterns: Any = None,
        **kw: Any,
    ) -> Commit:
        folder = Path(folder_path)
        local = sorted(p.name for p in folder.iterdir() if p.is_file())
        self.calls.append(
            ("upload_folder", {"repo_id": repo_id, "files": local, "revision": revision, **kw,
                               "allow_patterns": allow_patterns, "delete_patterns": delete_patterns})
        )  # fmt: skip
        self._connect(f"https://huggingface.co/api/models/{repo_id}/commit")
        repo = self._repo(repo_id)
        branch = revision or "main"
        if branch not in repo.branches:
            url = f"https://huggingface.co/api/models/{repo_id}/commit/{branch}"
            raise _not_found(RevisionNotFoundError, "Revision", url)
        files = dict(repo.commits[repo.branches[branch]])
        uploaded = set(filter_repo_objects(local, allow_patterns=allow_patterns))
        for name in list(filter_repo_objects(list(files), allow_patterns=delete_patterns)) if delete_patterns else []:
            if name not in uploaded and name != ".gitattributes":
                del files[name]
        for name in uploaded:
            files[name] = (folder / name).read_bytes()
        oid = self.commit(repo_id, files, branch)
        return Commit(oid=oid, commit_url=f"https://huggingface.co/{repo_id}/commit/{oid}")

    # -- downloads --------------------------------------------------------------------------------------------
    def snapshot_download(
        self,
        repo_id: str,
        *,
        revision: str | None = None,
        allow_patterns: Any = None,
        ignore_patterns: Any = None,
        cache_dir: str | Path | None = None,
        **kw: Any,
    ) -> str:
        self.calls.append(
            ("snapshot_download", {"repo_id": repo_id, "revision": revision, "allow_patterns": allow_patterns,
                                   "ignore_patterns": ignore_patterns, **kw})
        )  # fmt: skip
        if self.unreachable:
            raise LocalEntryNotFoundError(
                "An error happened while trying to locate the files on the Hub, and we cannot find the appropriate "
                "snapshot folder for the specified revision on the local disk. Please check your internet connection."
            )
        repo = self._repo(repo_id)
        revision = revision or "main"
        commit = repo.branches.get(revision, revision if revision in repo.commits else None)
        if commit is None:
            url = f"https://huggingface.co/api/models/{repo_id}/revision/{revision}"
            raise _not_found(RevisionNotFoundError, "Revision", url)
        storage = Path(cache_dir or constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
        snapshot = storage / "snapshots" / commit
        snapshot.mkdir(parents=True, exist_ok=True)
        (storage / "blobs").mkdir(exist_ok=True)
        if revision != commit:
            (storage / "refs").mkdir(exist_ok=True)
            (storage / "refs" / revision).write_text(commit)
        files = repo.commits[commit]
        for name in filter_repo_objects(list(files), allow_patterns=allow_patterns, ignore_patterns=ignore_patterns):
            blob = storage / "blobs" / hashlib.sha256(files[name]).hexdigest()
            blob.write_bytes(files[name])
            link = snapshot / name
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.exists():
                link.unlink()
            os.symlink(os.path.relpath(blob, link.parent), link)
        return str(snapshot)
