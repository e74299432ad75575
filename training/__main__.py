import sys

from training.cli import main
from training.distributed import exit_without_teardown

code = main()
# Under torchrun, leave without the interpreter's teardown once the run is on disk: gloo's
# threads can still drop tensors then, and taking the GIL during finalisation aborts the rank
# (SIGABRT after "finished", about 1 run in 20) and fails a run that had finished.
exit_without_teardown(code)
sys.exit(code)
