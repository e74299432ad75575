"""`python -m service`: run the app with uvicorn on GAN_HOST:GAN_PORT."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

from gancore.devices import DeviceError, resolve_device
from service.inference import resolve_dtype
from service.main import create_app
from service.settings import Settings


def load_settings() -> Settings:
    """Settings from GAN_* variables; a bad value ends the process with one line per problem.

    The device and dtype are checked here too (GAN_DEVICE=cuda on a machine without a GPU):
    raised later, in the app's start-up, they would reach the user as uvicorn's traceback.
    """
    try:
        settings = Settings()
    except ValidationError as exc:
        for err in exc.errors():
            name = "GAN_" + str(err["loc"][0]).upper() if err["loc"] else "GAN_*"
            print(f"error: {name}: {err['msg']}", file=sys.stderr)
        sys.exit(2)
    try:
        resolve_dtype(settings.dtype, resolve_device(settings.device, flag="GAN_DEVICE"))
    except DeviceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    return settings


def main() -> None:
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
