"""Tars and tables every stage shares: deterministic bytes that tarfile and webdataset read,
and readers that refuse members which could escape a directory."""

from __future__ import annotations

import io
import tarfile

import pytest

from gpic.store import read_tar, ustar_header, write_tar


@pytest.mark.parametrize("name,size", [("a.jpg", 0), ("0123456789abcdef0123.json", 1), ("k" * 100, 12345678),
                                       ("dir/ünï.png", 8**11 - 1)])
def test_header_is_what_tarfile_writes(name, size):
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = size, 0, 0o644, 0, 0, "", ""
    assert ustar_header(name, size) == info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")


@pytest.mark.parametrize("name,size", [("k" * 101, 1), ("", 1), ("a.jpg", 8**11)])
def test_header_refuses_what_ustar_cannot_hold(name, size):
    with pytest.raises(ValueError, match="USTAR"):
        ustar_header(name, size)


def test_tar_round_trips_with_offsets_and_is_deterministic(tmp_path):
    members = [("b.json", b'{"k": 1}'), ("a.jpg", bytes(range(256)) * 3), ("c.txt", b"")]
    offsets = write_tar(tmp_path / "x.tar", members)
    write_tar(tmp_path / "y.tar", reversed(members))
    blob = (tmp_path / "x.tar").read_bytes()
    assert blob == (tmp_path / "y.tar").read_bytes() and len(blob) % tarfile.RECORDSIZE == 0
    with tarfile.open(tmp_path / "x.tar") as tar:
        assert tar.getnames() == ["a.jpg", "b.json", "c.txt"]
        for info in tar:
            assert offsets[info.name] == (info.offset_data, info.size)
            assert tar.extractfile(info).read() == dict(members)[info.name]
    assert read_tar(tmp_path / "x.tar") == dict(members)
    with pytest.raises(ValueError, match="given twice"):
        write_tar(tmp_path / "z.tar", [("a", b"1"), ("a", b"2")])
    assert not (tmp_path / "z.tar").exists()


@pytest.mark.parametrize("name", ["../escape.jpg", "/etc/passwd", "a/../../b"])
def test_read_tar_refuses_escaping_names(tmp_path, name):
    with tarfile.open(tmp_path / "evil.tar", "w") as tar:
        info = tarfile.TarInfo(name)
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(ValueError, match="refusing tar member"):
        read_tar(tmp_path / "evil.tar")


def test_read_tar_refuses_links(tmp_path):
    with tarfile.open(tmp_path / "link.tar", "w") as tar:
        info = tarfile.TarInfo("a.jpg")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(ValueError, match="refusing tar member"):
        read_tar(tmp_path / "link.tar")
