import os
import threading

import pytest

from explorer.atomic import atomic_write


def test_writes_text_bytes_and_callables(tmp_path):
    assert atomic_write(tmp_path / "a.txt", "hello").read_text() == "hello"
    assert atomic_write(tmp_path / "sub" / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    atomic_write(tmp_path / "c.txt", lambda p: p.write_text("via path"))
    assert (tmp_path / "c.txt").read_text() == "via path"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.txt", "b.bin", "c.txt"]


def test_failed_writer_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = atomic_write(tmp_path / "t.txt", "old")

    def boom(p):
        p.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, boom)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["t.txt"]


def test_concurrent_writers_never_expose_a_partial_file(tmp_path):
    target = tmp_path / "shared.txt"
    payloads = [str(i) * 100_000 for i in range(6)]
    seen, stop = set(), threading.Event()

    def read():
        while not stop.is_set():
            if target.exists():
                seen.add(target.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    writers = [
        threading.Thread(target=lambda p=p: [atomic_write(target, p) for _ in range(5)])
        for p in payloads
    ]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    reader.join()
    assert seen <= set(payloads)
    assert target.read_text() in payloads
