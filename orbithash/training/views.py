"""The eight symmetries of a square (D4) as views of an N×C×H×W batch: cheap augmentation.

Aerial scenes have no canonical orientation, so a flipped or rotated tile is another valid
training image of the same class. numpy only: configs validate view names without torch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

View = Callable[[np.ndarray], np.ndarray]
VIEWS: dict[str, View] = {
    "orig": lambda x: x,
    "hflip": lambda x: x[..., ::-1],
    "vflip": lambda x: x[..., ::-1, :],
    "rot90": lambda x: np.rot90(x, 1, axes=(2, 3)),
    "rot180": lambda x: x[..., ::-1, ::-1],
    "rot270": lambda x: np.rot90(x, 3, axes=(2, 3)),
    "transpose": lambda x: np.swapaxes(x, 2, 3),
    "antitranspose": lambda x: np.rot90(np.swapaxes(x, 2, 3), 2, axes=(2, 3)),
}
