"""The event spool: durable appends, in-order batches, acknowledgements, files of dead processes."""
import json
import os
import signal
import subprocess
import sys

from lsp import spool as spool_mod
from lsp.spool import EventSpool


def ev(i):
    return {"completion_id": f"c{i}", "kind": "shown", "at": f"2026-01-01T00:00:{i:02d}+00:00"}


def test_batches_come_in_order_and_acknowledged_ones_do_not_come_back(tmp_path):
    spool = EventSpool(tmp_path)
    for i in range(5):
        assert spool.append(ev(i))
    first = spool.pending(3)
    assert [e["completion_id"] for e in first.events] == ["c0", "c1", "c2"]
    assert spool.pending(3).events == first.events  # not acknowledged: offered again
    spool.acknowledge(first)
    assert [e["completion_id"] for e in spool.pending(10).events] == ["c3", "c4"]
    spool.acknowledge(spool.pending(10))
    assert spool.pending(10) is None and spool.unsent_count() == 0


def test_unacknowledged_events_survive_a_restart_and_torn_lines_are_skipped(tmp_path):
    # A process appends and dies (SIGKILL) before anything is delivered, the last line half-written.
    code = (
        "import sys, os, signal; sys.path.insert(0, %r)\n"
        "from lsp.spool import EventSpool\n"
        "s = EventSpool(%r)\n"
        "for i in range(3): s.append({'completion_id': f'c{i}', 'kind': 'shown', 'at': str(i)})\n"
        "s._file.write(b'{\"completion_id\": \"torn'); s._file.flush()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    ) % (os.getcwd(), str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == -signal.SIGKILL
    spool = EventSpool(tmp_path)  # a new language server adopts the dead one's file
    batch = spool.pending(100)
    assert [e["completion_id"] for e in batch.events] == ["c0", "c1", "c2"]
    spool.acknowledge(batch)
    assert spool.pending(100) is None
    assert len(list(tmp_path.glob("events-*.jsonl"))) == 1  # the orphan is gone once delivered


def test_a_live_process_keeps_its_file(tmp_path):
    code = (
        "import sys, time; sys.path.insert(0, %r)\n"
        "from lsp.spool import EventSpool\n"
        "s = EventSpool(%r); s.append({'completion_id': 'theirs', 'kind': 'shown', 'at': '1'})\n"
        "print('ready', flush=True); time.sleep(60)\n"
    ) % (os.getcwd(), str(tmp_path))
    other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "ready"
        mine = EventSpool(tmp_path)
        mine.append(ev(1))
        batch = mine.pending(100)
        assert [e["completion_id"] for e in batch.events] == ["c1"]  # not the live process's events
    finally:
        other.kill()
        other.wait()
    mine.acknowledge(batch)
    assert [e["completion_id"] for e in mine.pending(100).events] == ["theirs"]  # now it is an orphan


def test_compaction_and_a_full_spool(tmp_path, monkeypatch):
    monkeypatch.setattr(spool_mod, "COMPACT_BYTES", 100)
    spool = EventSpool(tmp_path, max_bytes=1000)
    for i in range(5):
        spool.append(ev(i))
    spool.acknowledge(spool.pending(100))
    assert spool.path.stat().st_size == 0  # delivered and past the threshold: truncated
    spool.append(ev(9))
    assert [e["completion_id"] for e in spool.pending(100).events] == ["c9"]
    while spool.append(ev(1)):
        pass
    assert spool.dropped == 1 and spool.path.stat().st_size <= 1000
    lines = spool.path.read_text().splitlines()
    assert all(json.loads(line) for line in lines)


def test_appends_are_on_disk_at_once(tmp_path):
    spool = EventSpool(tmp_path)
    spool.append(ev(3))
    # Another reader (a crash-restarted process) sees it without any close or flush.
    assert json.loads(spool.path.read_text().splitlines()[0])["completion_id"] == "c3"
