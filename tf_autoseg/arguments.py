"""Argument checks shared by the layers, the backbones, the model, the data and the programs.

Every error names the argument, the received value and what is accepted
(`Received: filters=0`), in one wording across the package.
"""

import numpy as np


def _is_int_in(value, low, high):
    return (
        not isinstance(value, (bool, np.bool_))
        and isinstance(value, (int, np.integer))
        and value >= low
        and (high is None or value <= high)
    )


def _ints(low, high):
    if high is not None:
        return f"an int in [{low}, {high}]"
    return {1: "a positive int", 0: "a non-negative int"}.get(low, f"an int >= {low}")


def integer(name, value, low=1, high=None):
    """Returns `value` as an int if it is an int (not a bool) in [low, high]; else ValueError."""
    if not _is_int_in(value, low, high):
        raise ValueError(f"`{name}` must be {_ints(low, high)}. Received: {name}={value!r}")
    return int(value)


def optional_integer(name, value, low=1, high=None):
    """`None`, or `value` as an int in [low, high]: for sizes whose default is derived later."""
    if value is None:
        return None
    if not _is_int_in(value, low, high):
        raise ValueError(f"`{name}` must be None or {_ints(low, high)}. Received: {name}={value!r}")
    return int(value)


def rate(name, value):
    """Returns `value` as a float if it is a number (not a bool) in [0, 1); else ValueError.

    For dropout rates, where 1 would drop everything, and momenta.
    """
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not 0.0 <= value < 1.0
    ):
        raise ValueError(f"`{name}` must be a number in [0, 1). Received: {name}={value!r}")
    return float(value)


def positive(name, value):
    """Returns `value` as a float if it is a number (not a bool) above 0; else ValueError."""
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not value > 0
    ):
        raise ValueError(f"`{name}` must be a positive number. Received: {name}={value!r}")
    return float(value)


def choice(name, value, accepted):
    """Returns `value` if it is one of `accepted`; else ValueError."""
    if value not in accepted:
        raise ValueError(f"`{name}` must be one of {accepted}. Received: {name}={value!r}")
    return value
