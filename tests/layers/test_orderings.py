"""The 16 scans, their kernel masks and shifts, and attention masks."""

import itertools

import numpy as np
import pytest

from tf_autoseg.layers import orderings

SIZES = [(1, 1), (1, 5), (4, 4), (5, 7), (6, 3)]
CORNERS = {
    "top_left": (0, 0),
    "top_right": (0, -1),
    "bottom_left": (-1, 0),
    "bottom_right": (-1, -1),
}


def _scan(ordering, height, width):
    """The pixels in visiting order, from the rank map."""
    ranks = orderings.rank(ordering, height, width)
    order = np.argsort(ranks, axis=None)
    return [divmod(int(i), width) for i in order]


def _corner_name(ordering):
    return next(c for c in CORNERS if c in orderings.name(ordering))


def test_ids_names_and_ranges():
    assert orderings.NUM_ORDERINGS == 16
    assert list(orderings.RASTER) == list(range(8))
    assert list(orderings.ZIGZAG) == list(range(8, 16))
    assert len(set(orderings.NAMES)) == 16
    assert all(orderings.name(o).startswith("raster") for o in orderings.RASTER)
    assert all(orderings.name(o).startswith("zigzag") for o in orderings.ZIGZAG)


@pytest.mark.parametrize("height,width", SIZES)
@pytest.mark.parametrize("ordering", range(16))
def test_rank_is_a_permutation_starting_at_the_named_corner(ordering, height, width):
    ranks = orderings.rank(ordering, height, width)
    assert ranks.shape == (height, width)
    assert sorted(ranks.ravel().tolist()) == list(range(height * width))
    r, c = CORNERS[_corner_name(ordering)]
    assert ranks[r, c] == 0
    assert ranks[-1 - r if r == 0 else 0, -1 - c if c == 0 else 0] == height * width - 1


@pytest.mark.parametrize("height,width", [(4, 4), (5, 7), (6, 3)])
@pytest.mark.parametrize("ordering", orderings.RASTER)
def test_raster_scans_lines_one_after_another(ordering, height, width):
    scan = _scan(ordering, height, width)
    columns = "cols" in orderings.name(ordering)
    slow = [c if columns else r for r, c in scan]
    fast = [r if columns else c for r, c in scan]
    length = height if columns else width
    # The slow coordinate is constant on consecutive blocks of one line each,
    # and the fast one sweeps the whole line in the same direction every time.
    for line in range(len(scan) // length):
        block = slice(line * length, (line + 1) * length)
        assert len(set(slow[block])) == 1
        assert fast[block] == fast[:length]
    assert fast[:length] in (list(range(length)), list(range(length))[::-1])
    assert len(set(slow)) == len(scan) // length


@pytest.mark.parametrize("height,width", [(4, 4), (5, 7), (6, 3), (1, 5)])
@pytest.mark.parametrize("ordering", orderings.ZIGZAG)
def test_zigzag_is_a_diagonal_snake(ordering, height, width):
    scan = _scan(ordering, height, width)
    r0, c0 = CORNERS[_corner_name(ordering)]
    r0, c0 = r0 % height, c0 % width
    diagonal = [abs(r - r0) + abs(c - c0) for r, c in scan]
    assert diagonal == sorted(diagonal), "anti-diagonals are visited in turn"
    for (ra, ca), (rb, cb) in zip(scan, scan[1:]):
        assert max(abs(ra - rb), abs(ca - cb)) == 1, "each step goes to a neighbour"
    if height > 1 and width > 1:
        first_step = (scan[1][0] - scan[0][0], scan[1][1] - scan[0][1])
        horizontal = first_step[0] == 0
        assert horizontal == orderings.name(ordering).endswith("horizontal")
        # Directions alternate: along each diagonal the row moves monotonically,
        # up on one diagonal and down on the next.
        rows_by_diagonal = {}
        for d, (r, _) in zip(diagonal, scan):
            rows_by_diagonal.setdefault(d, []).append(r)
        steps = [np.sign(rows[1] - rows[0]) for rows in rows_by_diagonal.values() if len(rows) > 1]
        for rows in rows_by_diagonal.values():
            assert rows in (sorted(rows), sorted(rows)[::-1])
        assert all(a != b for a, b in zip(steps, steps[1:]))


@pytest.mark.parametrize("kernel_size", [3, 5, 7])
@pytest.mark.parametrize("ordering", orderings.RASTER)
def test_raster_masks_exactly_half_a_row(ordering, kernel_size):
    mask = orderings.conv_mask(ordering, kernel_size)
    assert mask.shape == (kernel_size, kernel_size)
    assert int((mask == 0).sum()) == (kernel_size - 1) // 2


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
@pytest.mark.parametrize("ordering", range(16))
def test_shift_pads_k_minus_1_on_the_start_side(ordering, kernel_size):
    (top, bottom), (left, right) = orderings.conv_padding(ordering, kernel_size)
    assert top + bottom == left + right == kernel_size - 1
    name = orderings.name(ordering)
    by_columns = "cols" in name or name.endswith("vertical")
    slow = (left, right) if by_columns else (top, bottom)
    fast = (top, bottom) if by_columns else (left, right)
    assert fast[0] == fast[1]
    start_first = ("left" in name) if by_columns else ("top" in name)
    assert slow == ((kernel_size - 1, 0) if start_first else (0, kernel_size - 1))


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("ordering", range(16))
def test_kept_taps_are_exactly_the_offsets_earlier_everywhere(ordering, kernel_size):
    """A tap is kept iff its offset precedes the centre at every grid position."""
    mask = orderings.conv_mask(ordering, kernel_size)
    (top, _), (left, _) = orderings.conv_padding(ordering, kernel_size)
    size = 9
    ranks = orderings.rank(ordering, size, size)
    for i, j in itertools.product(range(kernel_size), repeat=2):
        dr, dc = i - top, j - left
        earlier = all(
            ranks[r + dr, c + dc] <= ranks[r, c]
            for r in range(size)
            for c in range(size)
            if 0 <= r + dr < size and 0 <= c + dc < size
        )
        assert bool(mask[i, j]) == earlier, (i, j)


def test_plain_inference_has_no_shift_and_no_mask():
    assert orderings.conv_padding(None, 5) == ((2, 2), (2, 2))
    assert orderings.conv_mask(None, 3).min() == 1.0
    assert orderings.attention_mask(None, 2, 3).all()


@pytest.mark.parametrize("ordering", range(16))
def test_attention_mask_is_indexed_by_position(ordering):
    height, width = 3, 5
    mask = orderings.attention_mask(ordering, height, width)
    ranks = orderings.rank(ordering, height, width)
    assert mask.shape == (15, 15)
    for p, q in itertools.product(range(15), repeat=2):
        assert mask[p, q] == (ranks[divmod(q, width)] <= ranks[divmod(p, width)])
    assert mask.sum() == 15 * 16 // 2
    table = orderings.ranks_table(height, width)
    assert table.shape == (16, 15) and (table[ordering] == ranks.ravel()).all()


@pytest.mark.parametrize("bad", [16, -1, 2.0, "0", None, True])
def test_bad_ordering_is_named(bad):
    with pytest.raises(ValueError, match=r"`ordering`.*\[0, 15\]"):
        orderings.rank(bad, 3, 3)


@pytest.mark.parametrize("bad", [0, 2, 4, -3, 3.0, True])
def test_even_or_bad_kernel_is_named(bad):
    message = rf"`kernel_size` must be an odd positive int.*Received: kernel_size={bad!r}$"
    for check in (orderings.validate_kernel_size, lambda k: orderings.conv_mask(0, k)):
        with pytest.raises(ValueError, match=message):
            check(bad)


def test_good_kernel_size_comes_back_as_an_int():
    assert [orderings.validate_kernel_size(k) for k in (1, 3, np.int64(5))] == [1, 3, 5]
    assert type(orderings.validate_kernel_size(np.int64(5))) is int


def test_bad_grid_size_is_named():
    with pytest.raises(ValueError, match="`width` must be a positive int"):
        orderings.rank(0, 3, 0)
