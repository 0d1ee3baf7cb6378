"""neurocli: a single ReLU neuron, its hand-derived gradients, and the tools to trust them."""

import os

__version__ = "0.1.0"

# Idle OpenBLAS threads would spin and take cores from the engine's workers: make them sleep
# at once, unless the user chose (docs/design.md). Only takes effect before numpy loads.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
