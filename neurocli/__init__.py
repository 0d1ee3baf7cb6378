"""neurocli: a single ReLU neuron, its hand-derived gradients, and the tools to trust them."""

import os

__version__ = "0.1.0"

# OpenBLAS keeps its idle threads spinning for about 0.1 s after every threaded call, and a
# spinning thread takes a core from the kernel's own workers (engines/memory.py), which hold the
# BLAS to one thread each: measured here, a full-batch gradient right after a threaded
# X @ w took 1.5x as long. 2**4 cycles makes them sleep at once; waking them costs
# microseconds against calls of milliseconds. Only takes effect if numpy is not loaded yet
# (the command line), and a value the user set wins.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
