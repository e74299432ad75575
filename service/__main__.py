"""`python -m service`: run the app with uvicorn on GAN_HOST:GAN_PORT."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

from service.main import create_app
from service.settings import Settings


def load_settings() -> Settings:
    """Settings from GAN_* variables; a bad value ends the process with one line per problem."""
    try:
        return Settings()
    except ValidationError as exc:
        for err in exc.errors():
            name = "GAN_" + str(err["loc"][0]).upper() if err["loc"] else "GAN_*"
            print(f"error: {name}: {err['msg']}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
