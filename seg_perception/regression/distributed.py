"""The offline run on Ray: each recording a task on a worker that loaded the model once.

A fleet's regression set is hundreds of recordings; ``run_offline`` replays them one
after another in one process. Here the same ``run_offline`` runs on Ray workers (one
actor per worker: the model is loaded once per worker, not per recording), one
recording per task, and the driver writes every recording's outputs through the one
``RunWriter`` in the order of the command line, so the run directory is byte for byte
the one the serial run writes:

- a worker runs ``run_offline([recording], ...)`` into a ``CapturedRecording`` (the
  writer calls, kept in memory) and returns it; the driver replays the calls into the
  real writer as soon as every earlier recording is written;
- recordings are whole units: with tracking on, a recording's tracker state runs from
  its first frame to its last (``run_offline`` gives each recording a tracker of its
  own), so a recording is never split across workers; the scheduler hands out the
  longest recordings first to keep workers busy;
- a worker process that dies is restarted by Ray (the model is loaded again) and its
  recording rerun from the start (``max_restarts``/``max_task_retries``); the result is
  the same, since a recording depends on nothing else;
- a recording that cannot be read (truncated, missing topic, undecodable frame) fails
  alone: the worker returns the error, the other recordings finish and are written,
  and the driver raises the first failure in command-line order (what the serial run
  would have stopped at);
- Ctrl-C cancels the queued and running tasks and kills this run's actors, so nothing
  keeps running on a shared cluster.

Every worker reads the recordings and the model at the paths the driver was given:
on a cluster they must be on storage every node mounts at the same path.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from seg_perception.regression.records import FrameResult
from seg_perception.regression.sources import BagSource

INSTALL_HINT = "pip install 'seg_perception[fleet]' (or: pip install 'ray>=2.9')"
# Fault drill: a path; the first worker to process a frame while the file does not exist
# creates it and ends its own process at once (as an OOM kill would), so a run shows
# that Ray restarts the worker and the recording's result does not change.
FAULT_DRILL_ENV = "SEG_PERCEPTION_RAY_FAULT_DRILL"
_PROGRESS_INTERVAL_S = 0.25
_NICENESS_ENV = "RAY_worker_niceness"


class DistributedRunError(RuntimeError):
    """Ray is missing or cannot start, or a worker died more often than it is restarted."""


def import_ray() -> Any:
    """The ``ray`` module, or DistributedRunError saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise DistributedRunError(f"--ray needs Ray, which is not installed ({exc}); install it with "
                                  f"{INSTALL_HINT}") from None
    return ray


@dataclass
class CapturedRecording:
    """Stands in for ``RunWriter`` on a worker: the calls ``run_offline`` makes, kept in order.

    ``replay`` makes the same calls on the driver's real writer, so the bytes on disk
    are those of the serial run whatever worker produced them.
    """

    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)

    def add_bag(self, key: str, info: dict[str, Any]) -> None:
        self.calls.append(("add_bag", (key, info), {}))

    def set_bag_info(self, **info: Any) -> None:
        self.calls.append(("set_bag_info", (), info))

    def write_message(self, topic: str, msgtype: str, timestamp_ns: int, cdr: bytes) -> None:
        self.calls.append(("write_message", (topic, msgtype, int(timestamp_ns), bytes(cdr)), {}))

    def write_frame(self, frame: FrameResult) -> None:
        self.calls.append(("write_frame", (frame,), {}))

    def replay(self, writer: Any) -> None:
        for name, args, kwargs in self.calls:
            getattr(writer, name)(*args, **kwargs)


@dataclass
class RecordingResult:
    """What a worker sends back for one recording: its outputs, or the error it failed with."""

    index: int
    key: str
    output: CapturedRecording | None
    error: BaseException | None
    worker: str
    seconds: float


class ProgressBoard:
    """A Ray actor the workers report to: frames done per recording, model loads.

    Frames per recording are kept as the most any attempt reached, so a rerun after a
    worker died does not count its frames twice and the bar never goes backwards.
    """

    def __init__(self) -> None:
        self.frames: dict[int, int] = {}
        self.loads: list[str] = []

    def report(self, index: int, frames: int) -> None:
        self.frames[index] = max(self.frames.get(index, 0), frames)

    def model_loaded(self, worker: str) -> None:
        self.loads.append(worker)

    def snapshot(self) -> tuple[int, list[str]]:
        return sum(self.frames.values()), list(self.loads)


class RecordingWorker:
    """A Ray actor: loads the model once, then runs whole recordings with ``run_offline``.

    A model that does not load is kept as an error and returned for every recording
    (raising in ``__init__`` would make Ray restart the actor over and over).
    """

    def __init__(self, values: Mapping[str, Any], board_name: str) -> None:
        import ray

        from seg_perception.pipeline import load_pipeline

        self.values = dict(values)
        # Looked up by name: an actor handle among the constructor's arguments would live in
        # the object store, which Ray warns makes restarting this actor fragile.
        self.board = ray.get_actor(board_name)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.pipeline: Any = None
        self.load_error: BaseException | None = None
        try:
            self.pipeline = load_pipeline(self.values)
        except Exception as exc:  # reported by describe()/run(), as the serial run reports it
            self.load_error = exc
        self.board.model_loaded.remote(self.name)

    def describe(self) -> tuple[dict[str, Any], dict[str, Any]] | BaseException:
        """The manifest's ``model`` and ``backend`` entries, as the serial run writes them."""
        from seg_perception.regression.offline import backend_description, model_description

        if self.load_error is not None:
            return self.load_error
        return (model_description(self.pipeline, Path(self.values["model_path"])),
                backend_description(self.pipeline, self.values))

    def run(self, index: int, source: BagSource) -> RecordingResult:
        from seg_perception.regression.offline import run_offline

        t0 = time.monotonic()
        if self.load_error is not None:
            return RecordingResult(index, source.key, None, self.load_error, self.name, 0.0)
        captured = CapturedRecording()
        done, last = 0, 0.0
        drill = os.environ.get(FAULT_DRILL_ENV)

        def progress(n: int) -> None:
            nonlocal done, last
            done += n
            if drill and _claim_drill(drill, f"worker {self.name} ended itself at recording {source.key}\n"):
                os._exit(17)
            now = time.monotonic()
            if now - last >= _PROGRESS_INTERVAL_S or done == source.frames:
                self.board.report.remote(index, done)
                last = now

        try:
            run_offline([source], self.pipeline, self.values, captured, progress=progress)
        except Exception as exc:  # a bad recording fails alone; the driver reports it as the serial run does
            return RecordingResult(index, source.key, None, exc, self.name, time.monotonic() - t0)
        return RecordingResult(index, source.key, captured, None, self.name, time.monotonic() - t0)


def _claim_drill(path: str, text: str) -> bool:
    """Create the fault drill's file unless it exists (atomically: one worker dies, not two)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return True


@dataclass
class DistributedRun:
    """What the driver learnt: the manifest entries and how the work went."""

    entries: dict[str, Any]
    workers: int
    model_loads: list[str]
    failures: list[RecordingResult]
    per_recording: list[dict[str, Any]]
    timing: dict[str, float]  # seconds: starting/joining Ray, the first model load, the recordings' tasks


def worker_values(values: Mapping[str, Any], cpus_per_worker: int) -> dict[str, Any]:
    """The parameters a worker loads the model with: ``threads`` 0 ("the backend decides")
    becomes the CPUs Ray reserved for the worker, so two workers on a 2-core machine do
    not each start a thread per core. Outputs do not depend on the thread count (the
    tests check byte equality with the serial run)."""
    out = dict(values)
    if not int(out.get("threads") or 0):
        out["threads"] = max(1, int(cpus_per_worker))
    return out


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fail fast on a cluster address nobody answers at: ``ray.init`` would retry for minutes.

    ``auto`` and addresses without a port are left to Ray.
    """
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise DistributedRunError(f"cannot reach the Ray cluster at {address} ({exc}); is its head node running "
                                  "(ray start --head) and the port open from here?") from None


def start_ray(address: str | None, workers: int | None) -> tuple[Any, bool]:
    """Connect to the cluster at ``address`` or start a local Ray; (ray, started here)."""
    import logging

    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address:
        kwargs["address"] = address  # a Ray Client address (ray://) takes no options for starting Ray
    else:
        # A local Ray is this machine's business only: loopback, not the host's network address.
        kwargs.update(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False,
                      _node_ip_address="127.0.0.1")
    # Ray runs its workers at niceness 15 so that a driver stays responsive; a local Ray
    # started for this run is the run itself, so its workers get the priority the serial
    # run has (on a machine shared with others they would otherwise get little CPU).
    # A cluster keeps its own setting; RAY_worker_niceness set by the user wins.
    if address:
        _check_reachable(address)
    saved = os.environ.get(_NICENESS_ENV)
    if not address and saved is None:
        os.environ[_NICENESS_ENV] = "0"  # read by the raylet this init starts
    try:
        ray.init(**kwargs)
    except Exception as exc:  # ConnectionError, RuntimeError, ...: one line, with the address
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        hint = ""
        if address and not os.environ.get("RAY_AUTH_MODE"):
            # Recent Ray (2.60) starts clusters with token authentication, and a driver given an
            # explicit address does not send the token unless told to.
            hint = ("; if the cluster uses token authentication, set RAY_AUTH_MODE=token and its token "
                    "(RAY_AUTH_TOKEN, or the file ~/.ray/auth_token)")
        raise DistributedRunError(f"cannot start {where}: {type(exc).__name__}: {exc}{hint}") from None
    finally:
        if saved is None:
            os.environ.pop(_NICENESS_ENV, None)
    return ray, True


def run_distributed(sources: Sequence[BagSource], values: Mapping[str, Any], writer: Any, *,
                    address: str | None = None, workers: int | None = None, cpus_per_worker: int = 1,
                    max_restarts: int = 3, progress: Callable[[int], None] | None = None,
                    note: Callable[[str], None] | None = None) -> DistributedRun:
    """Run ``sources`` on Ray workers; write their outputs through ``writer`` in order.

    ``address``: a cluster to join (``ray://host:10001`` or ``host:6379``), else a local
    Ray with ``workers`` CPUs. ``workers``: actors to start (default: one per CPU the
    cluster has, at most one per recording). ``max_restarts``: how often a worker that
    died is restarted (its recording is rerun). Raises the first failing recording's
    error (in ``sources`` order) after every other recording was written;
    DistributedRunError when Ray cannot start or a worker died too often.
    """
    t0 = time.monotonic()
    ray, started_here = start_ray(address, workers)
    t_ray = time.monotonic()
    actors: list[Any] = []
    board = None
    try:
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)) // max(1, cpus_per_worker))
        count = max(1, min(int(workers), len(sources)))
        board_name = f"seg_perception_regress_progress_{os.getpid()}_{time.time_ns()}"
        board = ray.remote(ProgressBoard).options(name=board_name, num_cpus=0).remote()
        worker_cls = ray.remote(RecordingWorker).options(num_cpus=cpus_per_worker, max_restarts=max_restarts,
                                                         max_task_retries=max_restarts)
        wvalues = worker_values(values, cpus_per_worker)
        actors = [worker_cls.remote(wvalues, board_name) for _ in range(count)]
        described = ray.get(actors[0].describe.remote())
        if isinstance(described, BaseException):
            raise described
        model, backend = described
        t_model = time.monotonic()
        results = _schedule(ray, sources, actors, board, writer, progress, max_restarts)
        t_done = time.monotonic()
        loads = ray.get(board.snapshot.remote())[1]
    except KeyboardInterrupt:
        if note is not None:
            note("interrupted: cancelling this run's Ray tasks and workers")
        raise
    except ray.exceptions.RayError as exc:  # e.g. the first worker died while loading the model
        raise DistributedRunError(f"Ray: {_first_line(exc)}") from None
    finally:
        for actor in [*actors, *([board] if board is not None else [])]:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already gone (or the cluster connection is): nothing left to stop
                pass
        if started_here:
            ray.shutdown()
    failures = [r for r in results if r.error is not None]
    per_recording = [{"key": r.key, "worker": r.worker, "seconds": round(r.seconds, 3),
                      "status": "ok" if r.error is None else "error",
                      **({"error": str(r.error)} if r.error is not None else {})} for r in results]
    timing = {"ray_start_s": round(t_ray - t0, 3), "first_model_s": round(t_model - t_ray, 3),
              "tasks_s": round(t_done - t_model, 3)}
    return DistributedRun({"model": model, "backend": backend}, count, loads, failures, per_recording, timing)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _schedule(ray: Any, sources: Sequence[BagSource], actors: list[Any], board: Any, writer: Any,
              progress: Callable[[int], None] | None, max_restarts: int) -> list[RecordingResult]:
    """Hand recordings to idle workers (longest first); replay finished ones in order."""
    queue = sorted(range(len(sources)), key=lambda i: (-sources[i].frames, i))
    inflight: dict[Any, Any] = {}
    finished: dict[int, RecordingResult] = {}
    next_to_write, shown = 0, 0

    def submit(actor: Any) -> None:
        if queue:
            i = queue.pop(0)
            inflight[actor.run.remote(i, sources[i])] = (actor, i)

    try:
        for actor in actors:
            submit(actor)
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=_PROGRESS_INTERVAL_S)
            for ref in ready:
                actor, i = inflight.pop(ref)
                try:
                    result: RecordingResult = ray.get(ref)
                except ray.exceptions.RayActorError as exc:  # the worker died more often than it is restarted
                    raise DistributedRunError(
                        f"recording {sources[i].key} ({sources[i].path}): its Ray worker died "
                        f"{max_restarts + 1} times ({_first_line(exc)}); see the Ray logs of the worker's node "
                        "(out of memory?)") from None
                except ray.exceptions.RayError as exc:  # e.g. the result could not be sent back
                    raise DistributedRunError(f"recording {sources[i].key} ({sources[i].path}): "
                                              f"{_first_line(exc)}") from None
                finished[result.index] = result
                submit(actor)
            while next_to_write in finished:  # the serial order: recording i once 0..i-1 are written
                result = finished[next_to_write]
                if result.output is not None:
                    result.output.replay(writer)
                    result.output = None  # written: free the driver's copy
                next_to_write += 1
            if progress is not None:
                frames = ray.get(board.snapshot.remote())[0]
                if frames > shown:
                    progress(frames - shown)
                    shown = frames
    except BaseException:
        for ref in inflight:
            try:
                ray.cancel(ref)
            except Exception:  # the actors are killed next anyway
                pass
        raise
    if progress is not None:  # the workers' last reports may arrive after their results
        progress(max(0, sum(sources[i].frames for i, r in finished.items() if r.error is None) - shown))
    return [finished[i] for i in range(len(sources))]
