"""stateft.atomic: a target is replaced whole or not at all, under the temporary names a resumed run cleans up."""

from __future__ import annotations

import os

import pytest

from stateft.atomic import TEMP_NAME, replace_symlink, replacing, replacing_dir, temp_path


def _write_and_fail(context, name: str) -> None:
    """Write ``name`` into what ``context`` yields, then fail before the block ends (a crash mid-write)."""
    with context as tmp:
        (tmp / name if tmp.is_dir() else tmp).write_text("half")
        raise RuntimeError("killed")


def test_replacing_writes_under_the_temp_name_then_renames(tmp_path):
    target = tmp_path / "sub" / "metrics.json"
    with replacing(target) as tmp:
        assert tmp == temp_path(target)
        assert TEMP_NAME.match(tmp.name)
        assert tmp.read_bytes() == b""  # created empty, for writers that open an existing file
        tmp.write_text("new")
        assert not target.exists()
    assert target.read_text() == "new"
    assert os.listdir(target.parent) == ["metrics.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "entry.npz"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="killed"):
        _write_and_fail(replacing(target), "")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["entry.npz"]


def test_new_files_get_the_umask_mode_not_a_private_one(tmp_path):
    umask = os.umask(0o022)
    try:
        with replacing(tmp_path / "shared.sqlite") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(umask)
    assert (tmp_path / "shared.sqlite").stat().st_mode & 0o777 == 0o644


def test_a_temp_left_under_our_pid_is_replaced(tmp_path):
    target = tmp_path / "a.json"
    stale = temp_path(target)
    stale.write_text("left by a killed process with the same pid")
    stale.chmod(0o444)
    with replacing(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert os.listdir(tmp_path) == ["a.json"]


def test_replacing_dir_swaps_a_whole_folder(tmp_path):
    target = tmp_path / "wordnet"
    target.mkdir()
    (target / "old").write_text("old")
    with pytest.raises(RuntimeError, match="killed"):
        _write_and_fail(replacing_dir(target), "half")
    assert os.listdir(target) == ["old"]
    assert os.listdir(tmp_path) == ["wordnet"]
    with replacing_dir(target) as tmp:
        (tmp / "new").write_text("new")
    assert os.listdir(target) == ["new"]
    assert os.listdir(tmp_path) == ["wordnet"]


def test_replace_symlink_repoints_a_link(tmp_path):
    link = tmp_path / "db" / "x.sqlite"
    replace_symlink(link, tmp_path / "a")
    replace_symlink(link, tmp_path / "b")
    assert os.readlink(link) == str(tmp_path / "b")
    assert os.listdir(link.parent) == ["x.sqlite"]
