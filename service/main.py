"""Builds the FastAPI app: settings -> metrics, registry, middleware, routes."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from gancore.devices import resolve_device
from service.auth import Guard, describe_security, digest
from service.errors import install_error_handlers
from service.inference import resolve_dtype, set_tf32
from service.metrics import ServiceMetrics, forget_dead_workers, multiprocess_dir
from service.middleware import BodyDeadline, ServiceFront
from service.pacing import RetryPacer
from service.ratelimit import TokenBuckets
from service.registry import Registry
from service.reload import Reloader
from service.routes import admin, docs, generate, health, interpolate, metrics, models, page
from service.settings import Settings, unknown_variables

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Resolve the device (a bad GAN_DEVICE stops start-up), then load and warm up the models in
    the background so /healthz answers at once and /readyz says 503 until they are ready."""
    settings: Settings = app.state.settings
    device = resolve_device(settings.device, flag="GAN_DEVICE")
    dtype = resolve_dtype(settings.dtype, device)
    if device.type == "cuda":  # stated, not inherited (each Runner, in-process or in an engine, states it too)
        set_tf32(settings.tf32)
    forget_dead_workers()
    if settings.queue_size < max(settings.max_n, settings.max_steps):  # allowed: a small queue caps requests too
        log.warning("GAN_QUEUE_SIZE=%d is below GAN_MAX_N=%d or GAN_MAX_STEPS=%d: requests of more images than "
                    "the queue holds get 422", settings.queue_size, settings.max_n, settings.max_steps)
    if settings.rate_limit_images_per_s:  # buckets every worker shares (one file), or this process's
        app.state.limiter = TokenBuckets.shared(settings.rate_limit_images_per_s, multiprocess_dir())

    def device_failed(model: str, exc: BaseException) -> None:
        app.state.unhealthy = f"model {model!r}: device error: {exc}"
        if app.state.on_fatal is not None:
            app.state.on_fatal(app.state.unhealthy)

    registry = Registry(settings, app.state.metrics, device, dtype, on_device_error=device_failed)
    app.state.registry = registry
    app.state.metrics.watch_device(device, registry.engines_memory_bytes)
    watcher = None
    if settings.admin_token is not None:  # POST /admin/reload; made before the first scan of the folder
        app.state.reloader = Reloader(registry, multiprocess_dir(), settings.worker_processes)
    app.state.loading = asyncio.create_task(registry.load_all(), name="load-models")
    if settings.admin_token is not None and multiprocess_dir() is not None:  # other workers' reloads reach this one
        watcher = asyncio.create_task(app.state.reloader.watch(app.state.loading), name="reload-watcher")
    if app.state.own_process:  # never renice or take signals of a host process (tests run apps in pytest)
        app.state.loading.add_done_callback(lambda _: _settle_http_thread(settings))
        _drain_on_signals(registry)
    refresher = asyncio.create_task(_refresh_metrics(app.state.metrics), name="refresh-metrics")
    sweeper = asyncio.create_task(app.state.body_deadline.sweep(), name="body-deadline")
    if app.state.own_process and settings.worker_processes > 1:
        # Workers share one listening socket, and a worker takes connections once its start-up
        # ends: a worker still loading (at start, or replacing one that died) must not take
        # requests it would answer 503 while its siblings could serve them.
        await asyncio.shield(app.state.loading)
    try:
        yield
    finally:
        refresher.cancel()
        sweeper.cancel()
        if watcher is not None:
            watcher.cancel()
        if app.state.reloader is not None:
            app.state.reloader.close()
        try:
            await app.state.loading
        except Exception:
            log.exception("loading models failed")
        await registry.close()  # answers everything already queued before the process exits
        limiter, app.state.limiter = app.state.limiter, None
        if limiter is not None:
            limiter.close()


def _drain_on_signals(registry: Registry) -> None:
    """uvicorn's SIGTERM handler stops the listener, then waits for open connections before the
    lifespan shutdown that closes the batchers; a request held for GAN_MAX_WAIT_MS would make
    that wait last the whole timer. So the batchers are told first, then uvicorn's handler runs."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: object, previous: Callable[..., object] = previous) -> None:
            loop.call_soon_threadsafe(registry.hurry)
            previous(signum, frame)

        signal.signal(sig, handler)


def freeze_start_up_objects() -> None:
    """Collect once, then move every object start-up made (modules, the app, the models' Python
    objects) out of the garbage collector's sight: without it a full collection walks about
    210,000 objects, a 60 ms pause of the event loop (bench.front, 2026-12-01)."""
    gc.collect()
    gc.freeze()


def _settle_http_thread(settings: Settings) -> None:
    """Once the engines run: with one pinned worker, keep the event loop's thread off the engines'
    cores and below their priority (several workers share the cores, and a niced loop then
    answers rejections slowly: BENCHMARKS.md); in any case move everything start-up made out of
    the garbage collector's sight (gc.freeze), so its full collections walk only what requests make."""
    freeze_start_up_objects()
    split = settings.cpu_split()
    if split is not None:  # one worker, engines on their own cores: the loop keeps one, below them
        try:
            os.sched_setaffinity(0, split[0])  # on Linux, pid 0 = this thread only
        except OSError as exc:
            log.warning("could not pin the event loop to cores %s: %s", sorted(split[0]), exc)
        _lower_http_priority(settings.http_nice)


def _lower_http_priority(nice: int) -> None:
    """Lower this thread's (the event loop's) scheduling priority by `nice`, after the engine
    processes and model threads were started at the normal one. On Linux the nice value is per
    thread; a process may always lower its own priority, never raise it back, so it is done once.
    Under a retry storm the event loop can use a whole core answering 503s; this way it does not
    take it from the forwards."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as exc:
        log.warning("could not lower the event loop's priority: %s", exc)


async def _refresh_metrics(metrics: ServiceMetrics, every_s: float = 5.0) -> None:
    """Keep this process's gauges current for a scrape answered by another worker."""
    while True:
        await asyncio.sleep(every_s)
        metrics.refresh()


def telemetry_options(settings: Settings) -> dict[str, Any]:
    """FastAPI's native OpenTelemetry off unless GAN_OPENTELEMETRY (FastAPI before 0.165 has none:
    nothing to pass)."""
    if settings.opentelemetry or "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def create_app(settings: Settings | None = None, on_fatal: Callable[[str], None] | None = None,
               own_process: bool = False) -> FastAPI:
    """The app. `on_fatal(reason)` is called once a device error has made the process unfit to
    serve (python -m service passes one that shuts the process down so it is restarted);
    `own_process` says the app owns its process (python -m service), so it may lower the event
    loop's priority (GAN_HTTP_NICE)."""
    if settings is None:  # an ASGI server's factory (python -m service checks, and exits 2, itself)
        settings = Settings()
        for line in unknown_variables(os.environ):  # a misspelt GAN_API_KEYS would leave it open
            log.warning("%s", line)
    logging.getLogger("service").setLevel(settings.log_level.upper())
    app = FastAPI(
        title="Conditional GAN image service",
        description="Class-conditional image generation with micro-batching. See GET /models for labels.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc come from routes/docs.py, without a CDN
        redoc_url=None,
        **telemetry_options(settings),
    )
    app.state.settings = settings
    app.state.unhealthy = None  # the reason this process must be restarted, once it must
    app.state.on_fatal = on_fatal
    app.state.own_process = own_process
    app.state.metrics = ServiceMetrics()
    app.state.body_deadline = BodyDeadline(settings.body_timeout_s)  # swept in the lifespan (service/middleware.py)
    app.state.limiter = None  # the per-key token buckets (GAN_RATE_LIMIT_IMAGES_PER_S), made in the lifespan
    app.state.reloader = None  # POST /admin/reload in this worker and the others, made in the lifespan
    install_error_handlers(app)
    for module in (generate, interpolate, models, health, metrics, page, docs):
        app.include_router(module.router)
    if settings.admin_token is not None:  # without the token the route does not exist (404)
        app.state.admin_digest = digest(settings.admin_token.get_secret_value())
        app.include_router(admin.router)
    guard = Guard.from_settings(settings)
    describe_security(app, guard)
    _wrap_outside(app, settings, guard)
    return app


def _wrap_outside(app: FastAPI, settings: Settings, guard: Guard | None) -> None:
    """Put the front (request ids, metrics, body limit, the fast /generate path) outside the whole
    FastAPI stack, and CORS, when asked for, outside the front, so that the fast path's answers
    carry its headers too. Added with add_middleware, the front ran inside FastAPI's
    ServerErrorMiddleware, so the 500 answer to an error escaping a route went out without the
    request's X-Request-ID. Inside the front, that 500 carries it and is counted like any answer.
    (Throughput is the same either way: four alternating bench.serve runs, BENCHMARKS.md.)"""
    build_stack = app.build_middleware_stack

    def build_wrapped() -> ASGIApp:
        app.state.routes = list(_plain_routes(app.routes))  # every router is included by now
        stack: ASGIApp = ServiceFront(build_stack(), state=app.state, max_bytes=settings.max_body_bytes,
                                      fast_routes={("POST", "/generate"): generate.handle_generate,
                                                   ("GET", "/generate"): generate.handle_generate_query}, guard=guard,
                                      pacer=RetryPacer(settings.refusal_pause_ms / 1000, settings.refusal_eager_ms / 1000,
                                                       settings.refusal_max_pause_ms / 1000),
                                      paths=frozenset(r.path for r in app.state.routes if "{" not in r.path))
        if settings.cors_origin_list:
            stack = CORSMiddleware(
                stack,
                allow_origins=settings.cors_origin_list,
                allow_methods=["GET", "POST"],
                allow_headers=["Content-Type", "If-None-Match", "X-Request-ID", "Authorization"],
                expose_headers=["X-Seed", "X-Seed-To", "X-Truncation", "X-Model", "X-Label", "X-Label-To", "ETag",
                                "X-Request-ID", "Retry-After", "WWW-Authenticate"],
            )
        return stack

    app.build_middleware_stack = build_wrapped  # type: ignore[method-assign]


def _plain_routes(routes: Iterable[Any]) -> Iterator[Any]:
    """The app's routes, each with a path and methods: FastAPI 0.165 keeps an included router as
    one entry (its original_router holds the routes; this app includes none with a prefix),
    older versions copy its routes in."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _plain_routes(inner.routes)
        elif hasattr(route, "path"):
            yield route
