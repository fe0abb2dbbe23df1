"""Autoregressive orderings of an image grid: the views of the method.

Ouali, Hudelot, Tami, "Autoregressive Unsupervised Image Segmentation", ECCV 2020,
section 3.2 and the talk's "Orderings as views". An ordering is a bijection from
pixel positions to ranks; a network run under ordering `o` is causal when its
output at pixel p depends only on input pixels q with `rank_o(q) <= rank_o(p)`
(the current pixel is visible, as in the paper).

Ordering ids (`NUM_ORDERINGS = 16`):

* 0-7, `RASTER`: 0-3 row-major scans starting at the top-left, top-right,
  bottom-left and bottom-right corner; 4-7 column-major scans from the same
  corners in the same order.
* 8-15, `ZIGZAG`: the JPEG-style diagonal snake from the same four corners;
  8-11 make their first move horizontally, 12-15 vertically.

Every ordering is a flip of the grid (towards the start corner) followed,
for column-major and first-vertical scans, by a transpose, then one of two
canonical scans in that frame. Masks and shifts are derived in the canonical
frame, so all 16 share one piece of code.

This module is pure NumPy: the layers turn its tables into constants.
"""

import numpy as np

from tf_autoseg import arguments

NUM_ORDERINGS = 16
RASTER = range(0, 8)
ZIGZAG = range(8, 16)

_CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
NAMES = tuple(
    [f"raster_rows_from_{c}" for c in _CORNERS]
    + [f"raster_cols_from_{c}" for c in _CORNERS]
    + [f"zigzag_from_{c}_first_horizontal" for c in _CORNERS]
    + [f"zigzag_from_{c}_first_vertical" for c in _CORNERS]
)


def validate(ordering, allowed=range(NUM_ORDERINGS), argument="ordering"):
    """Returns `ordering` as a Python int, or raises a `ValueError` naming it.

    Args:
        ordering: an ordering id (a Python or NumPy integer).
        allowed: the ids accepted here (a `range`).
        argument: the argument's name, for the error message.
    """
    if isinstance(ordering, (bool, np.bool_)) or not isinstance(ordering, (int, np.integer)):
        raise ValueError(
            f"`{argument}` must be an integer ordering id in "
            f"[{allowed.start}, {allowed.stop - 1}] or None. Received: "
            f"{argument}={ordering!r} of type {type(ordering).__name__}"
        )
    if int(ordering) not in allowed:
        raise ValueError(
            f"`{argument}` must be an ordering id in [{allowed.start}, "
            f"{allowed.stop - 1}]. Received: {argument}={ordering}"
        )
    return int(ordering)


def name(ordering):
    """The readable name of an ordering id, e.g. `raster_rows_from_top_left`."""
    return NAMES[validate(ordering)]


def _frame(ordering):
    """(flip_rows, flip_cols, transpose) that maps the grid to the canonical frame."""
    corner = ordering % 4
    return bool(corner // 2), bool(corner % 2), bool((ordering // 4) % 2)


def _to_canonical(ordering, rows, cols):
    """Maps row/column offsets or coordinates to the canonical frame's."""
    flip_rows, flip_cols, transpose = _frame(ordering)
    rows = -rows if flip_rows else rows
    cols = -cols if flip_cols else cols
    return (cols, rows) if transpose else (rows, cols)


def rank(ordering, height, width):
    """Each pixel's position in the scan.

    Args:
        ordering: an ordering id in [0, 16).
        height, width: the grid's size (positive ints).

    Returns:
        An int64 array of shape (height, width) holding a permutation of
        `range(height * width)`: `rank[r, c]` is the step at which the scan
        visits pixel (r, c).
    """
    ordering = validate(ordering)
    height, width = arguments.integer("height", height), arguments.integer("width", width)
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    flip_rows, flip_cols, transpose = _frame(ordering)
    rows = height - 1 - rows if flip_rows else rows
    cols = width - 1 - cols if flip_cols else cols
    size_cols = width
    if transpose:
        rows, cols, size_cols = cols, rows, height
    if ordering in RASTER:
        return (rows * size_cols + cols).astype(np.int64)
    # Zigzag, first move horizontal: anti-diagonal d = r + c in turn; odd
    # diagonals are walked down-left (r increasing), even ones up-right.
    diagonal = rows + cols
    within = np.where(diagonal % 2 == 1, rows, -rows)
    visit = np.lexsort((within.ravel(), diagonal.ravel()))
    ranks = np.empty(height * width, np.int64)
    ranks[visit] = np.arange(height * width)
    return ranks.reshape(height, width)


def _allowed_canonical(ordering, rows, cols):
    """Whether an offset (in the canonical frame) precedes the centre everywhere."""
    centre = (rows == 0) & (cols == 0)
    if ordering in RASTER:
        return (rows < 0) | ((rows == 0) & (cols <= 0))
    # Zigzag: within one anti-diagonal the direction alternates, so only
    # strictly earlier anti-diagonals (and the centre) are earlier everywhere.
    return (rows + cols < 0) | centre


def validate_kernel_size(kernel_size):
    """Returns `kernel_size` as an int if it is an odd positive int; else a `ValueError`.

    The masks and shifts here are defined for a square, odd kernel `k` centred
    on the current pixel; the layers check their `kernel_size` with this.
    """
    if (
        isinstance(kernel_size, bool)
        or not isinstance(kernel_size, (int, np.integer))
        or kernel_size < 1
        or kernel_size % 2 == 0
    ):
        raise ValueError(
            "`kernel_size` must be an odd positive int (1, 3, 5, ...). "
            f"Received: kernel_size={kernel_size!r}"
        )
    return int(kernel_size)


def conv_padding(ordering, kernel_size):
    """The input padding ((top, bottom), (left, right)) for a VALID convolution.

    The paper's shift (footnote 2): the input is padded by `kernel_size - 1`
    on the start side of the scan's slow axis and not at all on the other, so
    the kernel's last row (towards the scan's end) lands on the current row;
    the fast axis is padded symmetrically. Padding rather than a pad-and-crop
    shift keeps the last line's own pixels. For zigzag scans the slow axis is
    the canonical frame's rows too. `ordering=None` is the plain SAME padding.
    """
    k = validate_kernel_size(kernel_size)
    half = (k - 1) // 2
    if ordering is None:
        return ((half, half), (half, half))
    ordering = validate(ordering)
    flip_rows, flip_cols, transpose = _frame(ordering)
    slow = (0, k - 1) if (flip_cols if transpose else flip_rows) else (k - 1, 0)
    return ((half, half), slow) if transpose else (slow, (half, half))


def conv_mask(ordering, kernel_size):
    """The (k, k) float32 kernel mask (1 = kept) used with `conv_padding`.

    Raster scans mask exactly `(k - 1) // 2` weights: those of the current
    row that lie after the current pixel. Zigzag scans keep the offsets on
    strictly earlier anti-diagonals plus the centre (2 masked for k=3).
    `ordering=None` keeps every weight.
    """
    k = validate_kernel_size(kernel_size)
    if ordering is None:
        return np.ones((k, k), np.float32)
    ordering = validate(ordering)
    (top, _), (left, _) = conv_padding(ordering, k)
    taps_r, taps_c = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    rows, cols = _to_canonical(ordering, taps_r - top, taps_c - left)
    return _allowed_canonical(ordering, rows, cols).astype(np.float32)


def attention_mask(ordering, height, width):
    """The (HW, HW) boolean mask `M[p, q] = rank(q) <= rank(p)`.

    Rows (queries) and columns (keys) are indexed by row-major *position*
    `r * width + c`, the order in which a (B, H, W, C) feature map is
    flattened, never by rank. `ordering=None` allows every pair.
    """
    if ordering is None:
        return np.ones((height * width, height * width), bool)
    ranks = rank(ordering, height, width).ravel()
    return ranks[None, :] <= ranks[:, None]


def ranks_table(height, width):
    """All 16 rank maps flattened by position: an int32 array (16, H * W)."""
    return np.stack([rank(o, height, width).ravel() for o in range(NUM_ORDERINGS)]).astype(np.int32)


_PREFERRED = {
    # Opposite scans first: the views then disagree most about what is "past".
    "raster": (0, 3, 4, 7, 1, 2, 5, 6),
    "zigzag": (8, 11, 12, 15, 9, 10, 13, 14),
    "both": (0, 3, 8, 11, 4, 7, 12, 15, 1, 2, 9, 10, 5, 6, 13, 14),
}
TYPES = tuple(_PREFERRED)


def default_set(types, count):
    """A set O of `count` ordering ids of the given `types` ("raster", "zigzag", "both").

    Example: `default_set("raster", 2) == (0, 3)`: row-major from opposite corners.
    """
    arguments.choice("types", types, TYPES)
    count = arguments.integer("count", count, 2, len(_PREFERRED[types]))
    return tuple(sorted(_PREFERRED[types][:count]))
