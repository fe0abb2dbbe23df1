"""Integer argument checks shared by the layers, the backbones, the model and the data.

Every error names the argument, the received value and what is accepted
(`Received: filters=0`), in one wording across the package.
"""

import numpy as np


def integer(name, value, low=1, high=None):
    """Returns `value` as an int if it is an int (not a bool) in [low, high]; else ValueError."""
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, np.integer))
        or value < low
        or (high is not None and value > high)
    ):
        if high is not None:
            accepted = f"an int in [{low}, {high}]"
        else:
            accepted = {1: "a positive int", 0: "a non-negative int"}.get(low, f"an int >= {low}")
        raise ValueError(f"`{name}` must be {accepted}. Received: {name}={value!r}")
    return int(value)
