"""`python -m service`: run the app with uvicorn on GAN_HOST:GAN_PORT."""

from __future__ import annotations

import logging

import uvicorn

from service.main import create_app
from service.settings import Settings


def main() -> None:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
