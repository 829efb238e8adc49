"""YAML as users write it: safe loading, with ``2e-4`` read as a number (YAML 1.1 wants ``2.0e-4``)."""

from __future__ import annotations

import re

import yaml

__all__ = ["Loader", "Dumper"]


class Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``2e-4`` as a float.

    YAML 1.1 requires a dot in a float (``2.0e-4``), so plain safe_load returns the string '2e-4' for the
    way everyone writes a learning rate.
    """


_EXP_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    _EXP_FLOAT,
    list("-+0123456789"),
)


class Dumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that quotes strings ``Loader`` would read as floats ('1e5'), so to_yaml round-trips."""


Dumper.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    _EXP_FLOAT,
    list("-+0123456789"),
)
