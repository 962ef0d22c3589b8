"""A crash in the middle of a write leaves the store before or after it, never in between."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

from ryu_overlay.store import SqliteStore

WRITER = r"""
import sys
from ryu_overlay.model import Network
from ryu_overlay.store import Put, SqliteStore
store = SqliteStore(sys.argv[1])
generation = 0
print("ready", flush=True)
while True:
    generation += 1
    # one transaction: ten networks that all carry the same generation in their MTU
    store.apply([Put(Network(f"n{i}", 1000 + i, f"g{generation}", (), 1280 + generation % 1000)) for i in range(10)])
"""


def test_killing_the_writer_mid_transaction_never_leaves_a_half_write(tmp_path):
    db = str(tmp_path / "crash.db")
    rng = random.Random(7)
    generations = set()
    for _ in range(15):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, db], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            time.sleep(rng.uniform(0.01, 0.15))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        _, networks, _, _ = SqliteStore(db).load()
        tenants = {n.tenant for n in networks}
        assert len(networks) in (0, 10) and len(tenants) <= 1, tenants
        generations |= tenants
    assert len(generations) > 1  # the writer did commit between kills: the test exercised something
