"""Ellipses from masks, and the fetal head measurements taken from them (numpy only).

- :func:`boundary_points`: sub-pixel points where a probability map crosses its threshold
  (linear interpolation between each pair of neighbouring pixels on either side of it).
- :func:`head_outline`: those points on the outline of the largest region only, holes filled
  (a second blob or a dark hole inside the skull does not bend the fit).
- :func:`fit_ellipse`: Fitzgibbon, Pilu & Fisher's direct least-squares ellipse fit (PAMI 1999),
  in the numerically stable form of Halir & Flusser (1998), refitted without outlying points.
- :func:`ramanujan_perimeter`: Ramanujan's second approximation (relative error < 1e-7 up to
  an axis ratio of 10:3, far flatter than a fetal head).
- :func:`hadlock_ga_weeks`: gestational age from head circumference, Hadlock et al. 1984.

Conventions: HC18 (van den Heuvel et al. 2018) defines the head circumference as the perimeter
of the ellipse drawn on the outline of the skull; so do we. The biparietal diameter (BPD) is
reported as the fitted ellipse's minor axis and the occipito-frontal diameter (OFD) as its major
axis, both outer edge to outer edge: the clinical BPD (outer-to-inner calliper placement) is a
few millimetres shorter.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import InvalidInputError
from .regions import largest_region

# Hadlock FP, Deter RL, Harrist RB, Park SK. Estimating fetal age: computer-assisted analysis of
# multiple fetal growth parameters. Radiology 1984;152:497-501. GA(weeks) = 8.96 + 0.540 HC +
# 0.0003 HC^3, HC in cm. Derived from 361 fetuses of 14-42 menstrual weeks; we use it for HC
# within 8.5-36.0 cm (GA 13.7-42.4 weeks; checked against Hadlock's HC table: 17.7 cm -> 20 weeks,
# 34.6 cm -> 40 weeks) and refuse it outside.
HADLOCK_HC_CM = (8.5, 36.0)
HADLOCK_REFERENCE = "Hadlock et al., Radiology 1984;152:497-501"


@dataclass(frozen=True)
class Ellipse:
    """An ellipse on a pixel grid: centre (x, y), semi-axes (major >= minor) and the angle of the
    major axis from the +x axis (image columns), in degrees in [0, 180), y pointing down."""

    cx: float
    cy: float
    semi_major: float
    semi_minor: float
    angle_deg: float

    @property
    def centre(self) -> tuple:
        return (self.cx, self.cy)

    @property
    def axes(self) -> tuple:
        """Full axis lengths (major, minor)."""
        return (2 * self.semi_major, 2 * self.semi_minor)

    def perimeter(self) -> float:
        return ramanujan_perimeter(self.semi_major, self.semi_minor)

    def points(self, n: int = 360) -> np.ndarray:
        """(n, 2) points (x, y) along the ellipse, for drawing."""
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        th = math.radians(self.angle_deg)
        x, y = self.semi_major * np.cos(t), self.semi_minor * np.sin(t)
        return np.stack([self.cx + x * math.cos(th) - y * math.sin(th),
                         self.cy + x * math.sin(th) + y * math.cos(th)], 1)

    def to_dict(self) -> dict:
        return {"centre_xy": [round(self.cx, 2), round(self.cy, 2)],
                "axes": [round(2 * self.semi_major, 2), round(2 * self.semi_minor, 2)],
                "angle_deg": round(self.angle_deg, 2)}


def boundary_points(probability: np.ndarray, threshold: float = 0.5, inside: np.ndarray | None = None) -> np.ndarray:
    """(N, 2) points (x, y) where ``probability`` crosses ``threshold`` between neighbouring pixels;
    with ``inside`` (a bool mask within ``probability >= threshold``), only on that region's edge."""
    p = np.asarray(probability, np.float64)
    inside = p >= threshold if inside is None else np.asarray(inside, bool)
    out = []
    for axis in (1, 0):  # across columns (x), then across rows (y)
        a = p[:, :-1] if axis == 1 else p[:-1]
        b = p[:, 1:] if axis == 1 else p[1:]
        ia = inside[:, :-1] if axis == 1 else inside[:-1]
        ib = inside[:, 1:] if axis == 1 else inside[1:]
        ys, xs = np.nonzero(ia != ib)
        pa, pb = a[ys, xs], b[ys, xs]
        t = np.clip((threshold - pa) / np.where(pb != pa, pb - pa, 1.0), 0.0, 1.0)
        if axis == 1:
            out.append(np.stack([xs + t, ys.astype(np.float64)], 1))
        else:
            out.append(np.stack([xs.astype(np.float64), ys + t], 1))
    return np.concatenate(out)


def head_outline(probability: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Outline points of the largest region of ``probability >= threshold``, its holes filled."""
    return boundary_points(probability, threshold, largest_region(np.asarray(probability) >= threshold))


def _direct_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Conic coefficients (a, b, c, d, e, f) of a x^2 + b xy + c y^2 + d x + e y + f = 0 with
    4ac - b^2 = 1 (Halir & Flusser's stable form of Fitzgibbon's direct fit)."""
    d1 = np.stack([x * x, x * y, y * y], 1)
    d2 = np.stack([x, y, np.ones_like(x)], 1)
    s1, s2, s3 = d1.T @ d1, d1.T @ d2, d2.T @ d2
    try:
        t = -np.linalg.solve(s3, s2.T)
    except np.linalg.LinAlgError:
        raise InvalidInputError("the outline's points lie on a line", expected="an outline that encloses an area") from None
    m = s1 + s2 @ t
    m = np.array([m[2] / 2, -m[1], m[0] / 2])
    vals, vecs = np.linalg.eig(m)
    vecs = np.real(vecs)
    cond = 4 * vecs[0] * vecs[2] - vecs[1] ** 2
    ok = np.flatnonzero(cond > 0)
    if not len(ok):
        raise InvalidInputError("no ellipse fits the outline", expected="a closed, roughly elliptical outline")
    a1 = vecs[:, ok[0]]
    return np.concatenate([a1, t @ a1])


def _conic_to_ellipse(coef: np.ndarray) -> Ellipse:
    a, b, c, d, e, f = coef if coef[0] + coef[2] > 0 else -coef  # a positive definite quadratic part
    den = b * b - 4 * a * c
    if den >= 0:
        raise InvalidInputError("the fitted conic is not an ellipse", expected="a closed outline")
    cx = (2 * c * d - b * e) / den
    cy = (2 * a * e - b * d) / den
    num = 2 * (a * e * e + c * d * d - b * d * e + den * f)
    root = math.sqrt((a - c) ** 2 + b * b)
    big, small = num * (a + c + root), num * (a + c - root)
    if big <= 0 or small <= 0:
        raise InvalidInputError("the fitted conic is not a real ellipse", expected="a closed outline")
    major, minor = -math.sqrt(big) / den, -math.sqrt(small) / den
    # direction of the major axis: eigenvector of [[a, b/2], [b/2, c]] with the smaller eigenvalue
    _, vecs = np.linalg.eigh(np.array([[a, b / 2], [b / 2, c]]))
    angle = math.degrees(math.atan2(vecs[1, 0], vecs[0, 0])) % 180.0
    if minor > major:
        major, minor, angle = minor, major, (angle + 90.0) % 180.0
    return Ellipse(float(cx), float(cy), float(major), float(minor), float(angle))


def fit_ellipse(points: np.ndarray, *, refits: int = 2, keep: float = 3.0) -> Ellipse:
    """Direct least-squares ellipse through (N, 2) points (x, y); points further from the first
    fit than ``keep`` times the median distance (at least 1 unit) are dropped and it is refitted
    ``refits`` times (stray blobs and holes of a predicted mask)."""
    pts = np.asarray(points, np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 6:
        raise InvalidInputError(f"{len(pts)} outline points", expected="at least 6 points to fit an ellipse",
                                fix="check that the mask holds the structure")
    for i in range(refits + 1):
        centre = pts.mean(0)
        scale = max(float(np.abs(pts - centre).max()), 1e-9)
        q = (pts - centre) / scale
        coef = _direct_fit(q[:, 0], q[:, 1])
        ell = _conic_to_ellipse(coef)
        ell = Ellipse(float(ell.cx * scale + centre[0]), float(ell.cy * scale + centre[1]), ell.semi_major * scale,
                      ell.semi_minor * scale, ell.angle_deg)
        if i == refits:
            return ell
        dist = np.abs(radial_distance(ell, pts))
        cut = max(keep * float(np.median(dist)), 1.0 if scale > 10 else 1e-6)
        kept = pts[dist <= cut]
        if len(kept) == len(pts) or len(kept) < 6:
            return ell
        pts = kept
    return ell


def radial_distance(ell: Ellipse, points: np.ndarray) -> np.ndarray:
    """Approximate signed distance of points from the ellipse along the ray from its centre."""
    th = math.radians(ell.angle_deg)
    dx, dy = points[:, 0] - ell.cx, points[:, 1] - ell.cy
    u = dx * math.cos(th) + dy * math.sin(th)
    v = -dx * math.sin(th) + dy * math.cos(th)
    r = np.hypot(u, v)
    phi = np.arctan2(v, u)
    edge = ell.semi_major * ell.semi_minor / np.hypot(ell.semi_minor * np.cos(phi), ell.semi_major * np.sin(phi))
    return r - edge


def ramanujan_perimeter(a: float, b: float) -> float:
    """Perimeter of an ellipse with semi-axes a and b (Ramanujan's second approximation)."""
    h = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))


def hadlock_ga_weeks(hc_mm: float) -> float | None:
    """Gestational age in weeks from HC in mm (Hadlock 1984); None outside ``HADLOCK_HC_CM``."""
    hc = hc_mm / 10.0
    if not HADLOCK_HC_CM[0] <= hc <= HADLOCK_HC_CM[1]:
        return None
    return 8.96 + 0.540 * hc + 0.0003 * hc ** 3


def head_measurements(points: np.ndarray, spacing_mm: tuple | None) -> dict:
    """HC, BPD and OFD of the ellipse through outline ``points`` (x, y), and GA from HC.

    With ``spacing_mm`` (row, column) the ellipse is fitted in millimetres (anisotropic pixels
    included) and the values are in mm; without it they are in pixels (``*_px``) and there is no
    gestational age: a length in pixels is never turned into weeks."""
    if spacing_mm is None:
        ell = fit_ellipse(points)
        return {"head_circumference_px": round(ell.perimeter(), 2), "biparietal_diameter_px": round(ell.axes[1], 2),
                "occipitofrontal_diameter_px": round(ell.axes[0], 2)}
    row, col = spacing_mm
    ell = fit_ellipse(np.asarray(points, np.float64) * [col, row])
    hc = ell.perimeter()
    ga = hadlock_ga_weeks(hc)
    return {"head_circumference_mm": round(hc, 2), "biparietal_diameter_mm": round(ell.axes[1], 2),
            "occipitofrontal_diameter_mm": round(ell.axes[0], 2),
            "gestational_age_weeks": None if ga is None else round(ga, 2)}
