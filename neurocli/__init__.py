"""neurocli: a single ReLU neuron, its hand-derived gradients, and the tools to trust them."""

__version__ = "0.1.0"
