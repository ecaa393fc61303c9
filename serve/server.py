"""Running `hearth serve`: bind, answer /health while the model loads, serve, stop on a signal.

Order of events:
1. bind the socket (a port in use fails here, before any loading);
2. uvicorn serves the app from a thread of its own (/health says 503 "loading");
3. the model loads in the main thread, then the generation service starts: /health says 200
   and `on_ready(url)` reports the address;
4. SIGINT or SIGTERM: intake stops (new requests get 503), queued and running requests are
   cancelled (their clients get an error), uvicorn closes its connections, the model is freed,
   and `serve` returns. The main thread owns the signals: uvicorn, off the main thread, installs
   no handlers of its own (it would re-raise the signal after its shutdown).
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from typing import Callable

from ..errors import RuntimeFailure, UsageError

STARTUP_TIMEOUT_S = 30
SHUTDOWN_TIMEOUT_S = 10


@dataclass
class ServeSettings:
    model: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    parallel: int | None = None
    ctx: int | None = None
    threads: int | None = None
    gpu_layers: int | None = None
    queue: int | None = None
    api_key: str | None = None
    lookup: bool = False  # prompt-lookup drafts for every request of one answer (unless it says "off")
    verbose: int = 0


@dataclass
class Reporter:
    """Where the face's messages go (the CLI prints them on stderr)."""

    info: Callable[[str], None]
    warn: Callable[[str], None]
    detail: Callable[[str], None]


class _Stop(Exception):
    """A signal arrived while the model was loading."""


def serve(settings: ServeSettings, report: Reporter) -> None:
    """Serve until SIGINT or SIGTERM; raises a HearthError if it cannot start."""
    sock, url = bind(settings.host, settings.port)
    if not _is_loopback(sock) and not settings.api_key:
        report.warn(f"listening on {settings.host}, beyond this machine, without an API key: "
                    "anyone who can reach it can use it (set --api-key or HEARTH_API_KEY)")
    stop = threading.Event()
    phase = {"loading": True}

    def on_signal(signum, _frame) -> None:
        if stop.is_set():
            http.force_exit()  # a second signal: stop waiting for connections
        stop.set()
        if phase["loading"]:
            raise _Stop()

    state, http = _start_http(sock, settings, report)
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    model = service = None
    try:
        model, service = _load(settings, state, report)
        phase["loading"] = False
        report.info(f"listening on {url}")
        while not stop.wait(0.5):
            if not http.alive():
                raise RuntimeFailure("the HTTP server stopped unexpectedly")
    except _Stop:
        pass
    finally:
        phase["loading"] = False
        state.stopping = True
        if service is not None:
            service.stop(SHUTDOWN_TIMEOUT_S)
        http.stop(SHUTDOWN_TIMEOUT_S)
        if model is not None:
            model.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    report.detail("stopped")


def bind(host: str, port: int) -> tuple[socket.socket, str]:
    """A listening socket on host:port (port 0: any free port) and the API's URL."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError, OverflowError) as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise RuntimeFailure(f"cannot listen on {host}:{port}: {exc.strerror}",
                             hint="choose another --port (0 picks a free one)") from None
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if family == socket.AF_INET6 else bound_host
    return sock, f"http://{shown}:{bound_port}/v1"


def _is_loopback(sock: socket.socket) -> bool:
    return ipaddress.ip_address(sock.getsockname()[0].split("%")[0]).is_loopback


def _start_http(sock: socket.socket, settings: ServeSettings, report: Reporter):
    from .app import ServerState, create_app

    state = ServerState(model_id="", model_names=set(), api_key=settings.api_key,
                        log=report.detail if settings.verbose else None, report_error=report.warn)
    http = _HttpThread(create_app(state), sock, settings.verbose)
    http.start()
    return state, http


def _load(settings: ServeSettings, state, report: Reporter):
    """Load the model and start the service; the routes see it from here on."""
    from ..api import load
    from ..runtime.options import GenerationOptions

    model = load(settings.model, ctx=None, threads=settings.threads, gpu_layers=settings.gpu_layers,
                 options=GenerationOptions(lookup=settings.lookup), verbose=settings.verbose >= 2)
    try:
        service = model.service(settings.parallel, ctx=settings.ctx, queue=settings.queue, on_layout=report.detail)
    except BaseException:
        model.close()
        raise
    for reason in model.plan.reasons:
        report.detail(f"plan: {reason}")
    report.detail(f"{service.slots} requests decode together, {service.context_per_request} tokens each; "
                  f"{service.queue_limit} more may wait")
    state.model_id, state.model_names = model_names(model)
    state.service = service
    return model, service


def model_names(model) -> tuple[str, set[str]]:
    """The id /v1/models lists (the file's name without .gguf, or the store/registry reference),
    and every name a request may use for it (also what was typed after -m, and `default`)."""
    model_id = model.path.stem if model.source in ("default", "file") else model.reference
    names = {model_id, model.reference, model.path.name}
    if model.source == "default":
        names.add("default")
    return model_id, names


class _HttpThread:
    """uvicorn in a thread of its own, on a socket bound already."""

    def __init__(self, app, sock: socket.socket, verbose: int):
        import uvicorn

        _configure_logging(verbose)
        config = uvicorn.Config(app, log_config=None, log_level="info" if verbose else "warning",
                                access_log=bool(verbose), lifespan="off", ws="none", http="h11",
                                server_header=False, timeout_graceful_shutdown=SHUTDOWN_TIMEOUT_S // 2)
        self.server = uvicorn.Server(config)
        self.sock = sock
        self.thread = threading.Thread(target=self._run, name="hearth-http", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except BaseException as exc:  # SystemExit from uvicorn's startup included
            self.error = exc

    def start(self) -> None:
        self.thread.start()
        self.thread.join(0)
        for _ in range(STARTUP_TIMEOUT_S * 20):
            if self.server.started or not self.thread.is_alive():
                break
            self.thread.join(0.05)
        if not self.server.started:
            raise RuntimeFailure(f"the HTTP server did not start: {self.error!r}")

    def alive(self) -> bool:
        return self.thread.is_alive()

    def force_exit(self) -> None:
        self.server.force_exit = True

    def stop(self, timeout: float) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()


def _configure_logging(verbose: int) -> None:
    """uvicorn's log on stderr (stdout is for data): warnings, and with -v each request line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = [handler] if name == "uvicorn" else []
        logger.propagate = name != "uvicorn"
        logger.setLevel(logging.INFO if verbose else logging.WARNING)
