"""Put this folder first on PYTHONPATH to give every Python process started with
BENCH_STAND_IN_FORWARD_S set the stand-in forward of bench/standin.py (a benchmark only)."""

import os
import sys

if os.environ.get("BENCH_STAND_IN_FORWARD_S"):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from bench.standin import install

    install()
