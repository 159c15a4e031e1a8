"""files.py: where paramem keeps files, and writes that never leave half a file behind."""

import os

import pytest

from paramem.files import cache_home, paramem_home, write_atomic, write_atomic_bytes


def test_a_write_that_fails_leaves_the_old_file_whole_and_no_temporary_behind(tmp_path, monkeypatch):
    path = tmp_path / "settings.json"
    write_atomic(path, "old")

    def power_cut(*args):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", power_cut)
    with pytest.raises(OSError, match="disk gone"):
        write_atomic(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["settings.json"]


def test_a_write_makes_its_folder_and_replaces_what_was_there(tmp_path):
    path = tmp_path / "a" / "b" / "data.bin"
    write_atomic_bytes(path, b"\x00\x01")
    write_atomic_bytes(path, b"\x02")
    assert path.read_bytes() == b"\x02" and len(list(path.parent.iterdir())) == 1


def test_homes_come_from_the_environment_else_the_usual_places(tmp_path, monkeypatch):
    monkeypatch.setenv("PARAMEM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PARAMEM_CACHE", str(tmp_path / "cache"))
    assert (paramem_home(), cache_home()) == (tmp_path / "home", tmp_path / "cache")
    monkeypatch.delenv("PARAMEM_HOME")
    monkeypatch.delenv("PARAMEM_CACHE")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert paramem_home() == tmp_path / "xdg" / "paramem"
    assert cache_home() == tmp_path / "user" / ".cache" / "paramem"
