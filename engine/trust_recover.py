"""The signer's public key, recovered from an ECDSA signature (checked without a trust store).

``bundle.sig`` names its key only by id (SHA-256 of the public key's PEM). From a signature
(r, s) over a message hash e, the signer's key is one of Q = r⁻¹(s·R − e·G), R being a curve
point with x = r. ``cryptography`` (OpenSSL) does the scalar multiplications (``e·G`` as a
derived key, ``s·R`` by ECDH, which gives its x); only the square root and one point addition
are written here. A candidate counts only if its PEM hashes to the signature's key id AND
``cryptography`` verifies the signature with it, so an error here refuses, it never accepts.
"""
from __future__ import annotations

# field prime p (all three are 3 mod 4) and group order n (FIPS 186-4, D.1.2)
_CURVES = {
    "secp256r1": (2**256 - 2**224 + 2**192 + 2**96 - 1,
                  0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551),
    "secp384r1": (2**384 - 2**128 - 2**96 + 2**32 - 1,
                  0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973),
    "secp521r1": (2**521 - 1,
                  int("01FF" + "FFFFFFFF" * 7 + "FFFFFFFA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
                      16)),
}


def _point(curve, x: int, p: int) -> tuple[int, int] | None:
    """A point (x, y) on ``curve`` (y² = x³ − 3x + b), or None when x is on no point."""
    from cryptography.hazmat.primitives.asymmetric import ec

    g = ec.derive_private_key(1, curve).public_key().public_numbers()
    b = (g.y * g.y - g.x ** 3 + 3 * g.x) % p
    alpha = (x ** 3 - 3 * x + b) % p
    y = pow(alpha, (p + 1) // 4, p)
    return (x, y) if y * y % p == alpha else None


def _add(a: tuple[int, int], b: tuple[int, int], p: int) -> tuple[int, int] | None:
    """a + b for distinct x (None otherwise: that candidate is dropped, never guessed)."""
    if (a[0] - b[0]) % p == 0:
        return None
    slope = (b[1] - a[1]) * pow(b[0] - a[0], -1, p) % p
    x = (slope * slope - a[0] - b[0]) % p
    return x, (slope * (a[0] - x) - a[1]) % p


def candidate_keys(signature_der: bytes, message: bytes) -> list:
    """Public keys (``cryptography`` objects) that may have made ``signature_der`` over ``message``."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(signature_der)
    found = []
    for curve, hash_ in ((ec.SECP256R1(), hashes.SHA256()), (ec.SECP384R1(), hashes.SHA384()),
                         (ec.SECP521R1(), hashes.SHA512())):
        p, n = _CURVES[curve.name]
        if not (0 < r < n and 0 < s < n):
            continue
        digest = hashes.Hash(hash_)
        digest.update(message)
        e = int.from_bytes(digest.finalize(), "big")  # every hash here is no longer than its curve's n
        r_point = _point(curve, r, p)
        u1, u2 = s * pow(r, -1, n) % n, -e * pow(r, -1, n) % n
        if r_point is None or u2 == 0:
            continue
        peer = ec.EllipticCurvePublicNumbers(*r_point, curve).public_key()
        x1 = int.from_bytes(ec.derive_private_key(u1, curve).exchange(ec.ECDH(), peer), "big")  # x of u1·R
        g2 = ec.derive_private_key(u2, curve).public_key().public_numbers()  # u2·G
        y1 = _point(curve, x1, p)
        for y in (y1[1], p - y1[1]) if y1 else ():
            q = _add((x1, y), (g2.x, g2.y), p)
            if q is not None:
                try:
                    found.append(ec.EllipticCurvePublicNumbers(*q, curve).public_key())
                except ValueError:  # not on the curve: a wrong guess, dropped
                    pass
    return found
