"""Make WordNet available to nltk (METEOR needs it) on a fresh, possibly offline machine.

``python -m stateft.metrics.wordnet --install`` (run by ``make install``) tries, in order:
1. nothing to do when ``nltk.data.find("corpora/wordnet")`` already works;
2. nltk's downloader, bounded by a short timeout (it hangs or fails when offline);
3. as root, Debian's ``wordnet-base`` + ``wordnet-sense-index`` (the WordNet 3.0 files nltk uses), copied into
   ``<sys.prefix>/nltk_data/corpora/wordnet/`` (a folder nltk searches) with a ``lexnames`` file written from the
   lexnames(5WN) list below, which the Debian packages do not ship.
It exits 0 with a warning when nothing works, so an install never breaks; METEOR then fails with ``require_wordnet``'s
one-line error instead of scoring 0.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

from stateft.atomic import replacing_dir
from stateft.errors import UserError

DEBIAN_DIR = Path("/usr/share/wordnet")
DEBIAN_PACKAGES = ("wordnet-base", "wordnet-sense-index")
WORDNET_FILES = (
    tuple(f"{kind}.{pos}" for kind in ("data", "index") for pos in ("noun", "verb", "adj", "adv"))
    + tuple(f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv"))
    + ("index.sense",)
)

# lexnames(5WN): lexicographer file number, name, syntactic category (1 noun, 2 verb, 3 adjective, 4 adverb).
LEXNAMES = (
    ["adj.all", "adj.pert", "adv.all"]
    + [f"noun.{n}" for n in ("Tops act animal artifact attribute body cognition communication event feeling food "
                             "group location motive object person phenomenon plant possession process quantity "
                             "relation shape state substance time").split()]
    + [f"verb.{n}" for n in ("body change cognition communication competition consumption contact creation emotion "
                             "motion perception possession social stative weather").split()]
    + ["adj.ppl"]
)  # fmt: skip
CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


def target_dir() -> Path:
    """``<sys.prefix>/nltk_data/corpora/wordnet``: inside the venv, on nltk's default search path."""
    return Path(sys.prefix) / "nltk_data" / "corpora" / "wordnet"


def lexnames_text() -> str:
    """The ``lexnames`` file: ``NN<TAB>name<TAB>category`` for the 45 lexicographer files."""
    return "".join(f"{i:02d}\t{name}\t{CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def have_wordnet() -> bool:
    """True when nltk can find and open WordNet."""
    import nltk

    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        return False
    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        return bool(wordnet.synsets("dog"))
    except Exception:  # a corrupt or partial folder is as good as none
        return False


def require_wordnet() -> None:
    """Raise a one-line UserError when WordNet is missing (METEOR would otherwise fail deep inside nltk)."""
    if not have_wordnet():
        raise UserError(
            "METEOR needs WordNet for nltk and it is missing: run `python -m stateft.metrics.wordnet --install` "
            "(or `make install`)"
        )


def _download() -> None:
    """Child process body: nltk's downloader, its noise sent to /dev/null (failure is the expected offline case)."""
    import nltk

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        ok = nltk.download("wordnet", download_dir=str(target_dir().parents[1]), quiet=True, raise_on_error=True)
    except Exception:
        ok = False
    sys.exit(0 if ok else 1)


def try_downloader(timeout: float = 20.0) -> bool:
    """nltk's downloader in a child process killed after ``timeout`` seconds (offline it may hang on DNS)."""
    proc = multiprocessing.get_context("spawn").Process(target=_download, daemon=True)
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return False
    return proc.exitcode == 0 and have_wordnet()


def install_from_debian(run_apt: bool = True) -> bool:
    """Install the Debian packages when missing (root only) and copy their files into ``target_dir()``."""
    if not all((DEBIAN_DIR / name).is_file() for name in WORDNET_FILES):
        if not run_apt or not shutil.which("apt-get") or os.geteuid() != 0:
            return False
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *DEBIAN_PACKAGES]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)  # a stale package list
            if subprocess.run(install, env=env, capture_output=True).returncode != 0:
                return False
    copy_debian_files(DEBIAN_DIR, target_dir())
    return have_wordnet()


def copy_debian_files(source: Path, dest: Path) -> None:
    """Copy the WordNet 3.0 database files from ``source`` and write ``lexnames``: the layout nltk reads.

    The folder is filled under a temporary name and swapped into place under a lock (``stateft.atomic``), so two
    installs at once, or one interrupted, never leave nltk a partial folder."""
    from filelock import FileLock

    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"), replacing_dir(dest) as tmp:
        for name in WORDNET_FILES:
            shutil.copyfile(source / name, tmp / name)
        (tmp / "lexnames").write_text(lexnames_text(), encoding="ascii")


def install(timeout: float = 20.0) -> str:
    """Make WordNet available; returns how (``present``, ``nltk``, ``debian``) or ``missing``."""
    if have_wordnet():
        return "present"
    if try_downloader(timeout):
        return "nltk"
    if install_from_debian():
        return "debian"
    return "missing"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--install", action="store_true", help="install WordNet for nltk if missing")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds allowed for nltk's downloader")
    args = parser.parse_args(argv)
    if not args.install:
        print("wordnet: " + ("available" if have_wordnet() else "missing"))
        return 0
    how = install(args.timeout)
    if how == "missing":
        print(
            "warning: WordNet could not be installed (no network for nltk's downloader, and apt-get is unavailable "
            "or not root): METEOR will raise until it is; see stateft/metrics/wordnet.py",
            file=sys.stderr,
        )
    else:
        print(f"wordnet: {how} ({target_dir() if how != 'present' else 'found by nltk'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
