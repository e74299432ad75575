"""`python -m service`: run the app with uvicorn on GAN_HOST:GAN_PORT, in GAN_WORKERS processes.

Every setting is a GAN_* environment variable (service/settings.py) and, but for the secrets, an
option too: `python -m service --port 9000 --workers 4 --no-channels-last`; `--help` lists them.
Options are written into the environment before the settings are read, so that the workers, which
read the environment, get them as well; an option wins over its variable.

One worker (the default) serves in this process. With more, uvicorn's process manager starts
that many workers on the one socket and replaces any that dies; each loads its own copy of every
model and runs its own batchers, and /metrics adds up all of them (prometheus-client's
multiprocess mode, in a fresh folder made here unless PROMETHEUS_MULTIPROC_DIR is set). The same
folder holds what the workers share: the rate limiter's buckets and the reload generation
(service/shared.py, files named gan-*).
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import inspect
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr, ValidationError, create_model
from pydantic_settings import BaseSettings, CliSettingsSource

from gancore.devices import DeviceError, resolve_device
from service.coalesce import http_protocol
from service.inference import resolve_dtype
from service.main import create_app
from service.metrics import MULTIPROC_ENV
from service.settings import Settings, unknown_variables

log = logging.getLogger("service")


ENV_PREFIX = Settings.model_config["env_prefix"]  # GAN_


def _is_secret(annotation: object) -> bool:
    return annotation is SecretStr or SecretStr in getattr(annotation, "__args__", ())


# the settings that are environment variables only (API keys, tokens): never options
SECRET_SETTINGS = tuple(name for name, field in Settings.model_fields.items() if _is_secret(field.annotation))
def command_line_environment(argv: list[str]) -> dict[str, str]:
    """The GAN_* variables that the options in `argv` set (`--max-batch 32` -> GAN_MAX_BATCH=32,
    `--no-tf32` -> GAN_TF32=false), read with pydantic-settings' own command-line source from the
    Settings fields and their docstrings. Values are checked later, with the environment's. The
    secrets (API keys, tokens) are not options: a command line shows in `ps` and shell history.
    `--help` prints the options and exits; an unknown option ends the process with status 2."""
    fields = {name: (field.annotation, field) for name, field in Settings.model_fields.items()
              if name not in SECRET_SETTINGS}
    options = create_model("ServiceOptions", __base__=BaseSettings, **fields)  # type: ignore[call-overload]
    parser = argparse.ArgumentParser(
        prog="python -m service", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve the conditional GAN generators in GAN_WEIGHTS_DIR over HTTP (uvicorn).",
        epilog="Each option is also the environment variable GAN_<OPTION> (--max-batch: GAN_MAX_BATCH); "
               "an option wins.\n" + ", ".join(ENV_PREFIX + name.upper() for name in SECRET_SETTINGS)
               + " are read from the environment only.\nSettings and defaults explained: docs/service.md.")
    source: CliSettingsSource[object] = CliSettingsSource(
        options, cli_parse_args=argv, root_parser=parser, cli_kebab_case=True, cli_implicit_flags=True,
        cli_exit_on_error=True, cli_hide_none_type=True, cli_avoid_json=True)
    return {ENV_PREFIX + name.upper(): _environment_text(value) for name, value in source().items()}


def _environment_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def load_settings(argv: list[str] | None = None) -> Settings:
    """Settings from the command line's options and GAN_* variables; a bad value ends the process
    with one line per problem.

    The device and dtype are checked here too (GAN_DEVICE=cuda on a machine without a GPU):
    raised later, in the app's start-up, they would reach the user as uvicorn's traceback.
    """
    given = command_line_environment(argv) if argv else {}
    os.environ.update(given)
    unknown = unknown_variables(os.environ)
    if unknown:
        print("\n".join(f"error: {line}" for line in unknown), file=sys.stderr)
        sys.exit(2)
    try:
        settings = Settings()
    except ValidationError as exc:
        for err in exc.errors():
            name = ENV_PREFIX + str(err["loc"][0]).upper() if err["loc"] else ENV_PREFIX + "*"
            if name in given:
                name = f"--{str(err['loc'][0]).replace('_', '-')} ({name})"
            print(f"error: {name}: {err['msg']}", file=sys.stderr)
        sys.exit(2)
    try:
        device = resolve_device(settings.device, flag="GAN_DEVICE")
        resolve_dtype(settings.dtype, device)
    except DeviceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    # auto values decided here, where the device is known, once for every worker: the settings
    # that depend on the device (workers, CPU pinning, render threads) then read the real one
    resolved = {}
    if settings.device == "auto":
        resolved["GAN_DEVICE"] = device.type
    if settings.workers == 0:
        resolved["GAN_WORKERS"] = str(settings.auto_workers(device.type))
    if resolved:
        os.environ.update(resolved)
        settings = Settings()
    return settings


def _shut_down(reason: str) -> None:
    """A device error: stop this process the graceful way (uvicorn's SIGTERM handler answers
    what is in flight), so that its supervisor starts a fresh one with a fresh CUDA context."""
    log.critical("shutting down for a restart: %s", reason)
    os.kill(os.getpid(), signal.SIGTERM)


def serving_app(settings: Settings) -> FastAPI:
    """The app of one serving process, with that process's torch threads set."""
    # workers x threads = the cores we were given; more threads than cores stalls every forward
    # at OpenMP's barriers whenever the event loop or a neighbour takes a core.
    torch.set_num_threads(settings.threads_per_worker())
    return create_app(settings, on_fatal=_shut_down if settings.exit_on_device_error else None, own_process=True)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def end_with_supervisor() -> None:
    """Have the kernel send this worker SIGTERM when its supervisor dies, so that it drains what
    it holds and exits instead of serving on, orphaned, after a `kill -9` of the supervisor on a
    bare host (in a container the supervisor is PID 1 and takes everything with it).

    Linux only. The signal comes when the thread that started the worker ends: uvicorn's
    supervisor starts and replaces workers from its main thread, which lives as long as it does.
    A supervisor that died before this call is caught by comparing the parent with the one
    multiprocessing recorded."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as exc:
        log.warning("cannot tie this worker to its supervisor's life (prctl: %s); it would outlive a "
                    "killed supervisor", exc)
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        log.warning("the supervisor (pid %d) is gone; this worker stops", parent.pid)
        os.kill(os.getpid(), signal.SIGTERM)


def worker_app() -> FastAPI:
    """Factory that uvicorn calls in each worker process (GAN_WORKERS > 1)."""
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    end_with_supervisor()
    return serving_app(settings)


# Long enough for a cold import (24 s measured), short enough that the supervisor, which waits on
# one worker's answer at a time and handles signals only between them, still takes a SIGTERM
# within the pods' 40 s grace period when a worker is truly hung
WORKER_HEALTHCHECK_S = 30
LOG_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"


def check_port_free(host: str, port: int) -> None:
    """Exit with one line, before any model loads, when the address cannot be listened on (another
    server holds it): uvicorn binds only after the app's start-up, about 10 s of model loading
    and warm-up later. The same options as uvicorn's bind (SO_REUSEADDR), so a port in TIME_WAIT
    still passes; a server that takes it in between is still caught by uvicorn."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                advice = "is another server there? Choose another GAN_PORT (--port)"
            else:  # not this machine's address, or a name that does not resolve: the host is wrong
                advice = "check GAN_HOST (--host): an address of this machine, or a name that resolves to one"
            print(f"error: cannot listen on {host}:{port} ({exc.strerror or exc}); {advice}", file=sys.stderr)
            sys.exit(3)


def main() -> None:
    settings = load_settings(sys.argv[1:])
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    check_port_free(settings.host, settings.port)
    common = dict(host=settings.host, port=settings.port, log_level=settings.log_level, access_log=settings.access_log,
                  timeout_graceful_shutdown=int(settings.request_timeout_s) + 5,
                  http=http_protocol())  # uvicorn's httptools protocol, one write per small answer
    if "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters:  # uvicorn >= 0.33
        # A spawned worker answers the supervisor's ping only once it has imported torch and the
        # app: 3 s warm, 24 s cold on 2 cores here; after uvicorn's default 5 s it would be killed
        # as hung and replaced, over and over on a slow disk (uvicorn PR #2500)
        common["timeout_worker_healthcheck"] = WORKER_HEALTHCHECK_S
    if settings.worker_processes == 1:
        uvicorn.run(serving_app(settings), **common)  # type: ignore[arg-type]
        return
    made_dir = None
    if not os.environ.get(MULTIPROC_ENV):
        try:
            made_dir = tempfile.mkdtemp(prefix="gan-metrics-")
        except OSError as exc:
            print(f"error: GAN_WORKERS={settings.workers} needs a writable folder that the workers share "
                  f"(metrics, rate limits, reloads): set {MULTIPROC_ENV} to one, or TMPDIR ({exc})", file=sys.stderr)
            sys.exit(2)
        os.environ[MULTIPROC_ENV] = made_dir  # read by prometheus-client in each worker at import
    else:  # values left by an earlier run would be added to this one's (and its buckets and reloads kept)
        for name in os.listdir(os.environ[MULTIPROC_ENV]):
            if name.endswith(".db") or name.startswith("gan-"):
                os.remove(os.path.join(os.environ[MULTIPROC_ENV], name))
    try:
        uvicorn.run("service.__main__:worker_app", factory=True, workers=settings.workers, **common)  # type: ignore[arg-type]
    finally:
        if made_dir is not None:
            shutil.rmtree(made_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
