"""hearth on a Ray cluster: connecting, sizing the replicas, and the replica itself.

A replica is a Ray actor that loads the model once (in `__init__`, like Ray Data's stateful
batch-inference classes) and runs hearth's own continuous-batching job (`Model.run_batch`) on
each chunk of lines it is given, streaming the records back as they finish. The driver
(`cluster_batch.py`) owns the output. The model reaches each node through that node's Hugging
Face cache (`hearth.pull` inside the replica, under the cache's per-file lock: once per node,
sha256-checked as it downloads), never through Ray's object store.

Ray is an optional extra (`pip install 'hearth[ray]'`) and is imported only here, lazily.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import queue
import threading
from dataclasses import dataclass
from typing import Any, Iterator

from .errors import HearthError, UsageError

INSTALL_HINT = "pip install 'hearth[ray]'"
ADDRESS_HELP = "auto (the running cluster), ray://HOST:PORT (a Ray Client address) or local (a throwaway cluster here)"
LOCAL_OBJECT_STORE_BYTES = 256 << 20  # records are small; Ray's default would reserve 30% of RAM
# Ray restarts a replica whose process died (re-running __init__: the model loads again) and
# re-runs the chunk it was working on; past that the driver hands the chunk to another replica.
REPLICA_MAX_RESTARTS = 4
REPLICA_TASK_RETRIES = 1


class ClusterError(HearthError):
    """The Ray cluster could not be reached, or could not run the replicas."""


def require_ray(address: str) -> None:
    """Fail early, in one line, on an address Ray would not take or a missing Ray."""
    if address not in ("local", "auto") and not address.startswith("ray://"):
        raise UsageError(f"--ray takes {ADDRESS_HELP}; got {address!r}")
    if importlib.util.find_spec("ray") is None:
        raise UsageError("--ray needs Ray, which is not installed", hint=INSTALL_HINT)


@contextlib.contextmanager
def ray_cluster(address: str) -> Iterator[Any]:
    """Connect to (or, for `local`, start) a Ray cluster for the duration of the block; yields
    the `ray` module. `local` binds every Ray process to 127.0.0.1 and nothing else."""
    require_ray(address)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if address == "local":
        # Ray maps a node address of 127.0.0.1 to the machine's own network address unless this
        # is off; with it off the node address is loopback and Ray's servers listen on loopback
        # only. It must be set before `ray` is imported (Ray reads it at import), and the
        # cluster's processes inherit it.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import logging

    import ray

    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address == "local":
            ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1",
                     object_store_memory=LOCAL_OBJECT_STORE_BYTES, **quiet)
        else:
            ray.init(address=address, **quiet)
    except ImportError as exc:  # ray:// needs Ray Client's extra packages (grpcio)
        raise ClusterError(f"--ray {address} needs Ray Client, which is not installed ({exc.name or exc})",
                           hint="pip install 'ray[client]' (or run on the head node with --ray auto)") from None
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"cannot connect to the Ray cluster at {address}: {_first_line(exc)}",
                           hint="`ray status` on the head node shows whether it runs; --ray local tries it here") from None
    try:
        if address == "local":
            _check_loopback(ray)
        yield ray
    finally:
        ray.shutdown()


def _check_loopback(ray) -> None:
    addresses = {node["NodeManagerAddress"] for node in ray.nodes() if node.get("Alive")}
    if addresses != {"127.0.0.1"}:
        raise ClusterError(f"the local Ray cluster did not bind to 127.0.0.1 only (nodes at {sorted(addresses)})",
                           hint="import hearth's cluster support before anything else imports ray")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# -- sizing (pure) ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplicaShape:
    count: int
    cpus: int  # Ray CPUs each replica reserves (= its llama.cpp threads on a CPU node)
    gpus: int  # 0 or 1
    reason: str


def replica_shape(nodes: list[dict], cpus_per_replica: int, wanted: int | None = None) -> ReplicaShape:
    """How many replicas the cluster's live nodes hold: one per GPU where the cluster has GPUs
    (each with one CPU for its host thread), otherwise `cpus_per_replica` CPUs each, counted
    node by node (a replica runs on one node). `wanted` (--replicas) must fit.

    `nodes` are Ray's node records (`ray.nodes()`: "Alive", "Resources")."""
    live = [node.get("Resources", {}) for node in nodes if node.get("Alive", True)]
    gpus = sum(int(res.get("GPU", 0)) for res in live)
    if gpus:
        fit = sum(min(int(res.get("GPU", 0)), int(res.get("CPU", 0))) for res in live)
        cpus, gpu, unit = 1, 1, "one GPU"
    else:
        cpus, gpu = max(1, cpus_per_replica), 0
        fit = sum(int(res.get("CPU", 0)) // cpus for res in live)
        unit = f"{cpus} CPU{'s' if cpus > 1 else ''}"
    where = f"{len(live)} node{'s' if len(live) != 1 else ''}"
    if wanted is not None:
        if wanted > fit:
            raise UsageError(f"--replicas {wanted} does not fit: the cluster ({where}) has room for {fit} "
                             f"replica{'s' if fit != 1 else ''} of {unit}",
                             hint="lower --replicas or --threads, or add nodes")
        return ReplicaShape(wanted, cpus, gpu, f"{wanted} replicas of {unit} (--replicas; room for {fit} on {where})")
    if fit < 1:
        raise UsageError(f"the cluster ({where}) has no room for one replica of {unit}", hint="lower --threads")
    holds = "holds" if len(live) == 1 else "hold"
    return ReplicaShape(fit, cpus, gpu, f"{fit} replica{'s' if fit != 1 else ''} of {unit}: what {where} {holds}")


# -- the replica -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplicaConfig:
    model: str | None
    threads: int | None
    gpu_layers: int | None
    options: Any  # GenerationOptions
    system: str | None
    parallel: int | None
    ctx: int | None


class BatchReplica:
    """One loaded model on one node (used as a Ray actor: `ray.remote(...)(BatchReplica)`).

    A load failure is kept and reported by `describe()`, so the driver can show hearth's own
    one-line error instead of a remote traceback."""

    def __init__(self, config: ReplicaConfig):
        self.config = config
        self.model = None
        self.failure: dict | None = None
        self.layout = None
        try:
            from .api import load

            model_ref = fetch_model_on_node(config.model)
            self.model = load(model_ref, threads=config.threads, gpu_layers=config.gpu_layers, options=config.options)
            self.layout = self.model.batch_layout(parallel=config.parallel, ctx=config.ctx)
        except HearthError as exc:
            self.failure = {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint,
                            "exit_code": exc.exit_code}

    def describe(self) -> dict:
        import socket

        info = {"pid": os.getpid(), "host": socket.gethostname(), "failure": self.failure}
        if self.model is not None:
            info.update(model=self.model.name, threads=self.model.plan.n_threads,
                        parallel=self.layout.parallel, layout=self.layout.reason)
        return info

    def run(self, rows: list[dict]) -> Iterator[dict]:
        """Generate a chunk of rows (ids explicit); yield each record the moment it is done.

        The job runs in a thread and hands records over a queue, so that each one streams back
        to the driver (a Ray streaming generator) while the rest are still decoding."""
        handoff: queue.Queue = queue.Queue()
        finished = object()

        def work() -> None:
            try:
                self.model.run_batch(rows, handoff.put, from_json=False, system=self.config.system,
                                     parallel=self.layout.parallel, ctx=self.config.ctx)
            except HearthError as exc:
                handoff.put({"replica_failure": {"type": type(exc).__name__, "message": exc.message,
                                                 "hint": exc.hint, "exit_code": exc.exit_code}})
            finally:
                handoff.put(finished)

        thread = threading.Thread(target=work, name="hearth-batch", daemon=True)
        thread.start()
        for record in iter(handoff.get, finished):
            yield record
        thread.join()


def fetch_model_on_node(reference: str | None) -> str | None:
    """Make the model present on this node and return the reference to load.

    A hub reference (`REPO[:QUANT]`) is pulled into this node's Hugging Face cache (or found
    there; replicas on one node share one download through the cache's lock). A path, `default`
    or a converted name is used as it is: it must exist on every node."""
    from .hub import store
    from .runtime.models import resolve_local

    if reference is None or resolve_local(reference) is not None or store.parse_reference(reference) is None:
        return reference
    from .model_files import pull

    return pull(reference).reference


def replica_failure(failure: dict) -> HearthError:
    """The HearthError a replica reported, rebuilt on the driver."""
    return HearthError(failure["message"], failure.get("hint"), failure.get("exit_code"))
