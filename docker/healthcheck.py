"""Container HEALTHCHECK: exit 0 when GET /healthz on this container's port answers 200.

Standard library only (the image has no curl). It probes 127.0.0.1 because GAN_HOST is the
bind address (0.0.0.0 in containers), not an address to connect to.
"""

from __future__ import annotations

import os
import sys
import urllib.request


def main() -> int:
    port = int(os.environ.get("GAN_PORT", "8000"))
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:  # URLError, HTTPError (non-2xx) and timeouts are all OSErrors
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
