"""neurocli: a single ReLU neuron, its hand-derived gradients, and the tools to trust them.

From Python: ``neurocli.train``, ``load_model``, ``evaluate``, ``gradcheck`` and ``derive``
(:mod:`neurocli.api`, docs/api.md), loaded on first use, so that ``import neurocli`` and
``neurocli --help`` load neither numpy nor pandas.
"""

import os
import sys
import types

__version__ = "0.1.0"

# Idle OpenBLAS threads would spin and take cores from the engine's workers: make them sleep
# at once, unless the user chose (docs/design.md). Only takes effect before numpy loads.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

_API = ("train", "load_model", "evaluate", "gradcheck", "derive", "Run", "Model")
# neurocli.train, .gradcheck and .derive are modules of the package too, and importing a module
# makes it the package's attribute of that name: each is made a module that, called, is its
# function of neurocli.api (neurocli.train(config) trains; neurocli.train.Trainer is still there).
_CALLABLE_MODULES = ("train", "gradcheck", "derive")


class _CallableModule(types.ModuleType):
    """A module of the package that, called, calls the function of neurocli.api of its name."""

    def __call__(self, *args, **kwargs):
        from neurocli import api

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(types.ModuleType):
    """The package, which makes train, gradcheck and derive callable as they are imported."""

    def __setattr__(self, name, value):
        if name in _CALLABLE_MODULES and type(value) is types.ModuleType:
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in _CALLABLE_MODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    if name in _API:
        from neurocli import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
