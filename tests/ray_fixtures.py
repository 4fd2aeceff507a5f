"""A real 2-node Ray cluster for tests/test_ray.py, started on 127.0.0.1 and always stopped.

Both nodes run on this machine (``ray.cluster_utils.Cluster``, through the same
``rag.ray_embed.local_cluster_nodes`` that ``rag index --ray auto`` uses): a head and a worker,
2 logical CPUs each, 200 MiB object stores, no dashboard, in a temporary folder of their own
(``RAY_TMPDIR``), so nothing touches ``/tmp/ray`` or another Ray cluster on the machine. The
teardown stops it even when a test failed, then checks that no process of it is left: every
process whose command line names its temporary folder (raylets, GCS, workers); ``ray stop`` is
never used, since it kills Ray processes machine-wide by name.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.config import ClusterSettings

#: The tests' cluster: the defaults of ``--ray auto`` (2 nodes of 2 CPUs).
TEST_CLUSTER = ClusterSettings()


def processes_naming(text: str) -> list[int]:
    """Pids of the live processes whose command line contains ``text`` (our cluster's folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def node_pids(node) -> list[int]:
    """The processes Ray started for one node (raylet, object store, GCS on the head...)."""
    return [info.process.pid for infos in node.all_processes.values() for info in infos
            if info.process is not None]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator:
    """A running 2-node cluster (``ray.cluster_utils.Cluster``: ``.address``, ``.head_node``,
    ``.worker_nodes``); no process of it survives the module."""
    from rag.ray_embed import local_cluster_nodes
    folder = None
    try:
        with local_cluster_nodes(TEST_CLUSTER) as cluster:
            folder = os.environ["RAY_TMPDIR"]
            assert len(processes_naming(folder)) >= 4, "the cluster's processes were not found"
            yield cluster
    finally:
        if folder is not None:
            left = _wait_gone(folder, seconds=15)
            for pid in left:  # ours, found by our folder: never another cluster's
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            assert not left, f"Ray processes left after the cluster stopped: {left}"


def _wait_gone(folder: str, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while True:
        left = processes_naming(folder)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)
