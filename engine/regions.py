"""Connected regions of a boolean mask (numpy only: the clinic app ships without scipy).

- :func:`label_regions`: 4-connected labelling through the mask's row runs and a union-find.
- :func:`largest_region`: the largest region, its holes filled (the fetal head: a stray blob or a
  dark hole inside the skull must not bend the ellipse fitted to the outline).
"""
from __future__ import annotations

import numpy as np


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, start and end (exclusive) of every horizontal run of True, row-major."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)
    rows, starts = np.nonzero(step == 1)
    _, ends = np.nonzero(step == -1)
    return rows, starts, ends


def label_regions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """(labels, n): 4-connected regions of ``mask`` numbered 1..n, 0 outside."""
    mask = np.asarray(mask, bool)
    rows, starts, ends = _runs(mask)
    parent = list(range(len(rows)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first = np.searchsorted(rows, np.arange(mask.shape[0] + 1))  # runs of row r: first[r]:first[r + 1]
    for r in range(mask.shape[0] - 1):
        i, j, i_end, j_end = first[r], first[r + 1], first[r + 1], first[r + 2]
        while i < i_end and j < j_end:  # two pointers over the runs of rows r and r + 1
            if starts[i] < ends[j] and starts[j] < ends[i]:
                a, b = root(i), root(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            if ends[i] <= ends[j]:
                i += 1
            else:
                j += 1
    roots = np.array([root(i) for i in range(len(rows))], np.int64)
    unique, numbered = np.unique(roots, return_inverse=True)
    labels = np.zeros(mask.shape, np.int32)
    for r, s, e, n in zip(rows, starts, ends, numbered + 1):
        labels[r, s:e] = n
    return labels, len(unique)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with every background region that does not touch the border filled."""
    mask = np.asarray(mask, bool)
    labels, _ = label_regions(~mask)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return mask | ~np.isin(labels, border)


def largest_region(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected region of ``mask``, holes filled (all False for an empty mask)."""
    labels, n = label_regions(mask)
    if n == 0:
        return np.zeros(labels.shape, bool)
    sizes = np.bincount(labels.ravel())[1:]
    return fill_holes(labels == int(np.argmax(sizes)) + 1)
