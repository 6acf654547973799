"""The web console inside `quorumdb up`: a live picture of the cluster, charts, events, chaos buttons.

Theory of operation
-------------------
`quorumdb up` runs it beside its supervisor, on 127.0.0.1:<base port + 55> (quorumdb/config.py):

* `Watcher`, a thread with its own event loop, polls every node (tools/observe.py: Status over
  gRPC, /metrics over HTTP, each with a deadline) every CONSOLE_POLL_S while a page has asked for
  data within CONSOLE_WATCHED_S, and every CONSOLE_IDLE_POLL_S otherwise, so a console nobody
  looks at costs the cluster almost nothing. Each poll becomes a `View` (roles, epochs, health,
  lag, CPU; commits/s, aborts/s, commit latency p50/p99) kept in `ConsoleState` with a bounded
  history for the charts, and what changed between polls (a node down or back, a new leader,
  health) goes to the event timeline, beside every line `up` prints (chaos actions, exits).
* `ConsoleServer`, an HTTP server with a bounded pool of threads, serves the page (plain HTML, CSS
  and JavaScript from tools/console/static: no build step, no library from the network; the
  charts are drawn as SVG by the page itself), `GET /api/state` (JSON) and `POST /api/chaos`.
* A chaos action calls the same `Supervisor` as `quorumdb chaos`, and only with a valid token: the
  same signed token as the PostgreSQL endpoint's password (`quorumdb token --user NAME`, checked
  with quorumdb.tokens against the cluster's secret), sent as `Authorization: Bearer <token>` with
  the user in `X-QuorumDB-User`. A request without one, or with an expired or forged one, is
  refused (401, a JSON error) before anything is done. Watching (the page, `GET /api/state`) stays
  open: it changes nothing, and the console listens on 127.0.0.1 only. A cluster started with
  `--insecure` (plaintext, no authentication anywhere) needs no token here either, and the page
  says so.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import http.server
import json
import logging
import pathlib
import socketserver
import threading
import time
from typing import Any, Callable

from quorumdb import config as config_mod
from quorumdb import limits, netfault, tokens
from tools import observe, toolcreds

log = logging.getLogger("tools.console")

STATIC_DIR = pathlib.Path(__file__).resolve().parent / "static"
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
HOST = "127.0.0.1"

# action -> (what it takes: "node", "az" or None, Supervisor method name)
ACTIONS: dict[str, tuple[str | None, str]] = {
    "kill": ("node", "kill"),
    "restart": ("node", "restart"),
    "pause": ("node", "pause"),
    "resume": ("node", "resume"),
    "stop": ("node", "stop"),
    "kill-az": ("az", "kill_az"),
    "restart-az": ("az", "restart_az"),
    "partition": ("az", "partition"),
    "heal": (None, "heal"),
    "kill-leader": (None, "kill_leader"),
}


def address(cluster: config_mod.ClusterConfig) -> tuple[str, int]:
    return HOST, cluster.base_port + config_mod.CONSOLE_PORT_OFFSET


class ConsoleState:
    """What the page shows; written by the watcher and `up`'s output, read by requests (one lock)."""

    def __init__(self, cluster: config_mod.ClusterConfig, clock: Callable[[], float] = time.time) -> None:
        self.cluster = cluster
        self.clock = clock
        self._lock = threading.Lock()
        self.view: observe.View | None = None
        self.history: collections.deque[dict[str, Any]] = collections.deque(maxlen=limits.CONSOLE_HISTORY_POINTS)
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=limits.CONSOLE_EVENTS_MAX)
        self.last_request_monotonic = float("-inf")
        self.polls = 0

    def event(self, kind: str, text: str) -> None:
        with self._lock:
            self.events.append({"time": self.clock(), "kind": kind, "text": text})

    def record(self, view: observe.View) -> None:
        """A new poll: its events (what changed since the last one) and a point of history."""
        events = observe.changes(self.view, view)
        point = {
            "time": view.wall, "commits_per_s": view.commits_per_s, "aborts_per_s": view.aborts_per_s,
            "commit_p50_ms": view.commit_p50_ms, "commit_p99_ms": view.commit_p99_ms,
            "storage_lag": {n.name: n.lag_entries for n in view.nodes if n.service == "storage"},
        }
        with self._lock:
            self.view = view
            self.polls += 1
            if view.interval_s is not None:
                self.history.append(point)
            for kind, text in events:
                self.events.append({"time": view.wall, "kind": kind, "text": text})

    def watched(self) -> bool:
        return time.monotonic() - self.last_request_monotonic < limits.CONSOLE_WATCHED_S

    def as_json(self, cuts: list[str], rules_version: int) -> dict[str, Any]:
        with self._lock:
            view = self.view
            return {
                "cluster": {"data_dir": str(self.cluster.data_dir), "base_port": self.cluster.base_port,
                            "auth": "insecure" if self.cluster.insecure else "token", "polls": self.polls,
                            "azs": sorted({node.az for node in self.cluster.nodes})},
                "view": observe.view_json(view) if view is not None else None,
                "history": list(self.history),
                "events": list(self.events)[-100:],
                "cuts": cuts,
                "rules_version": rules_version,
            }


class Watcher(threading.Thread):
    """Polls the cluster into a ConsoleState until stop() (see the module docstring)."""

    def __init__(self, state: ConsoleState, credentials, supervisor=None) -> None:
        super().__init__(name="console-watcher", daemon=True)
        self.state = state
        self.credentials = credentials  # made by the console before the thread starts
        self.supervisor = supervisor
        self._stop_event = threading.Event()
        self.wake = threading.Event()  # a request for a page nobody watched: poll now

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        observer = observe.Observer(self.state.cluster, credentials=self.credentials)
        previous: observe.Snapshot | None = None
        try:
            while not self._stop_event.is_set():
                try:
                    snapshot = await observer.poll()
                    states = {}
                    if self.supervisor is not None:
                        states = {node.name: node.state for node in self.supervisor.nodes()}
                    self.state.record(observe.summarize(self.state.cluster, snapshot, previous, states))
                    previous = snapshot
                except Exception:  # noqa: BLE001 - keep watching; the next poll may work
                    log.exception("console poll failed")
                interval_s = limits.CONSOLE_POLL_S if self.state.watched() else limits.CONSOLE_IDLE_POLL_S
                await asyncio.to_thread(self._sleep, interval_s)
        finally:
            await observer.close()

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop_event.is_set() and time.monotonic() < deadline:
            if self.wake.wait(min(0.2, max(0.0, deadline - time.monotonic()))):
                self.wake.clear()
                return

    def stop(self, timeout_s: float = limits.CONSOLE_HTTP_TIMEOUT_S) -> None:
        self._stop_event.set()
        self.wake.set()
        self.join(timeout_s)


class _BoundedServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """An HTTP server handling each request on a bounded pool (excess connections are closed)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, server_address, handler, console) -> None:
        self.console = console
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=limits.CONSOLE_HTTP_WORKERS,
                                                           thread_name_prefix="console-http")
        self._slots = threading.BoundedSemaphore(4 * limits.CONSOLE_HTTP_WORKERS)
        super().__init__(server_address, handler)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        self._pool.submit(self._handle, request, client_address)

    def _handle(self, request, client_address) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - one broken request must not stop the server
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self._slots.release()

    def server_close(self) -> None:
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _BoundedServer
    timeout = limits.CONSOLE_HTTP_TIMEOUT_S  # every socket read and write of a request
    server_version = "QuorumDB-console"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        console: Console = self.server.console
        path = self.path.split("?", 1)[0]
        if path == "/api/state":
            console.state.last_request_monotonic = time.monotonic()
            if console.state.polls == 0 or not console.watcher_recent():
                console.watcher.wake.set()
            self._json(200, console.state_json())
            return
        name = "index.html" if path in ("/", "/index.html") else path.removeprefix("/static/")
        file = STATIC_DIR / name
        if "/" in name or file.suffix not in STATIC_TYPES or not file.is_file():
            self._json(404, {"error": f"not found: {path}"})
            return
        self._send(200, STATIC_TYPES[file.suffix], file.read_bytes())

    def do_POST(self) -> None:  # noqa: N802
        console: Console = self.server.console
        if self.path.split("?", 1)[0] != "/api/chaos":
            self._json(404, {"error": f"not found: {self.path}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > limits.CONSOLE_REQUEST_BYTES_MAX:
            self._json(413, {"error": "request too large"})
            return
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._json(400, {"error": "the body must be JSON: {\"action\": ..., \"target\": ...}"})
            return
        status, answer = console.chaos(self.headers.get("Authorization", ""), self.headers.get("X-QuorumDB-User", ""),
                                       body if isinstance(body, dict) else {})
        # RFC 6750: a 401 names the scheme the client must use.
        self._json(status, answer, {"WWW-Authenticate": 'Bearer realm="quorumdb"'} if status == 401 else None)

    def _json(self, status: int, answer: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send(status, "application/json", json.dumps(answer).encode(), headers)

    def _send(self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


class Console:
    """The console of one `quorumdb up`: state, watcher, HTTP server. start(), then close()."""

    def __init__(self, cluster: config_mod.ClusterConfig, supervisor=None, listen: tuple[str, int] | None = None,
                 now: Callable[[], float] = time.time) -> None:
        self.cluster = cluster
        self.supervisor = supervisor
        self.now = now
        self.state = ConsoleState(cluster)
        # Made here, not in the watcher's thread: a cluster without its CA or token secret stops
        # the console before it starts, loudly, instead of leaving a page that never fills in.
        self.watcher = Watcher(self.state, toolcreds.for_cluster(cluster), supervisor)
        self._server = _BoundedServer(listen or address(cluster), _Handler, self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="console-http", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> None:
        self.watcher.start()
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.watcher.stop()
        self._thread.join(limits.CONSOLE_HTTP_TIMEOUT_S)

    def watcher_recent(self) -> bool:
        view = self.state.view
        return view is not None and self.now() - view.wall < 2 * limits.CONSOLE_POLL_S

    def state_json(self) -> dict[str, Any]:
        try:
            rules = netfault.read_rules(self.cluster)
            cuts, version = sorted("-".join(sorted(pair)) for pair in rules.cuts), rules.version
        except (netfault.RulesError, OSError):
            cuts, version = [], 0
        return self.state.as_json(cuts, version)

    # --- chaos ------------------------------------------------------------------------------------
    def authorize(self, authorization: str, user: str) -> str | None:
        """None when the request may act; else why not."""
        if self.cluster.insecure:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "a token is needed: `quorumdb token --user NAME`, sent as Authorization: Bearer <token>"
        if not user:
            return "the token's user is needed (X-QuorumDB-User)"
        try:
            # A region of a Global Database signs with the global directory's secret.
            secret = tokens.load_secret(tokens.secret_dir(self.cluster.data_dir))
        except tokens.TokenError as error:
            return str(error)
        if secret is None:
            return "the cluster has no token secret yet"
        verdict = tokens.verify(secret, user, token.strip(), self.now())
        return None if verdict.ok else f"token refused: {verdict.reason}"

    def chaos(self, authorization: str, user: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON answer) of one chaos request; nothing is done unless authorized."""
        from tools.supervisor import SupervisorError

        refused = self.authorize(authorization, user)
        if refused is not None:
            log.warning("console: chaos request refused: %s", refused)
            return 401, {"error": refused}
        action, target = str(body.get("action", "")), str(body.get("target", "") or "")
        if action not in ACTIONS:
            return 400, {"error": f"unknown action {action!r}; one of {', '.join(ACTIONS)}"}
        takes, method = ACTIONS[action]
        if (takes is None) != (not target):
            return 400, {"error": f"{action} takes {'a ' + takes if takes else 'no target'}"}
        if self.supervisor is None:
            return 503, {"error": "this console has no supervisor"}
        self.state.event("chaos", f"console ({user or 'insecure'}): {action}{' ' + target if target else ''}")
        try:
            result = getattr(self.supervisor, method)(*([target] if takes else []))
        except SupervisorError as error:
            return 409, {"error": error.message}
        self.watcher.wake.set()  # show the effect at once
        return 200, {"message": result.message}
