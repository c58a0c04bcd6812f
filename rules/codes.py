"""Alarm codes, stored only as a salted scrypt hash.

The stored form is ``scrypt$N$r$p$SALT$HASH`` (salt and hash in hex). Make one
with ``python -m rules.codes``. Codes are compared in constant time and never
logged.
"""

from __future__ import annotations

import hmac
import os
import sys

_N, _R, _P = 2**14, 8, 1

MAX_MEMORY = 32 * 1024 * 1024
"""Bytes scrypt may use to check a code (OpenSSL's default limit, passed explicitly): about 16 MiB with the
default parameters. A hash that needs more could never be verified: every arm and disarm would fail."""

MAX_WORK = 2**18
"""The largest ``N * r * p``: twice the default cost (on a Raspberry Pi 3 the default takes about 0.3 s),
so that checking a code from the hub stays well under a couple of seconds on the board."""

MIN_DIGEST, MAX_DIGEST = 16, 64
"""Bytes of the stored hash: a shorter one would let wrong codes match by chance."""

FORMAT = "expected 'scrypt$N$r$p$salt$hash' as printed by `python -m rules.codes`"


def _scrypt(password: bytes, *, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    """``hashlib.scrypt``, which exists only where hashlib was imported on OpenSSL: ``gateway run`` imports it
    on CPython's built-in hashes (:mod:`core.lean_imports`), so there OpenSSL is loaded at the first check."""
    try:
        from hashlib import scrypt
    except ImportError:
        from _hashlib import scrypt
    digest: bytes = scrypt(password, salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=MAX_MEMORY)
    return digest


def hash_code(code: str, *, salt: bytes | None = None, n: int = _N) -> str:
    salt = salt if salt is not None else os.urandom(16)
    digest = _scrypt(code.encode(), salt=salt, n=n, r=_R, p=_P, dklen=32)
    return f"scrypt${n}${_R}${_P}${salt.hex()}${digest.hex()}"


def scrypt_memory(n: int, r: int, p: int) -> int:
    """Bytes OpenSSL's scrypt needs for these parameters (and compares with its ``maxmem``)."""
    return 128 * r * p + 128 * r * (n + 2)


def check_hash_format(stored: str) -> tuple[int, int, int, bytes, bytes]:
    """``(N, r, p, salt, hash)`` of a stored code hash, or ValueError saying why it cannot be used.

    Only parameters :func:`verify_code` can verify on the board pass: ``N`` a power of two above 1
    (and below ``2**(16 r)``, OpenSSL's own limit), the memory within :data:`MAX_MEMORY`, the cost
    within :data:`MAX_WORK`, a salt of 8 to 64 bytes and a hash of 16 to 64.
    """
    parts = stored.split("$")
    try:
        if len(parts) != 6 or parts[0] != "scrypt":
            raise ValueError
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
    except ValueError:
        raise ValueError(FORMAT) from None
    if n < 2 or n & (n - 1):
        raise ValueError(f"scrypt N = {n} is not a power of two above 1; {FORMAT}")
    if not 1 <= r <= 32 or not 1 <= p <= 16:
        raise ValueError(f"scrypt r = {r} and p = {p} must be within 1..32 and 1..16; {FORMAT}")
    if 16 * r < 64 and n >= 1 << (16 * r):
        raise ValueError(f"scrypt N = {n} is too large for r = {r} (N must be below 2**{16 * r})")
    if (memory := scrypt_memory(n, r, p)) > MAX_MEMORY:
        raise ValueError(f"scrypt N = {n}, r = {r}, p = {p} would need {memory / 2**20:.1f} MiB to check a code, "
                         f"more than the {MAX_MEMORY // 2**20} MiB allowed: no code could ever be verified; "
                         "make a new hash with `python -m rules.codes`")
    if n * r * p > MAX_WORK:
        raise ValueError(f"scrypt N = {n}, r = {r}, p = {p} would make every code check take too long on the "
                         f"board (N*r*p above {MAX_WORK}); make a new hash with `python -m rules.codes`")
    if not 8 <= len(salt) <= 64:
        raise ValueError(f"the salt is {len(salt)} bytes; 8 to 64 are needed; {FORMAT}")
    if not MIN_DIGEST <= len(digest) <= MAX_DIGEST:
        raise ValueError(f"the hash is {len(digest)} bytes; {MIN_DIGEST} to {MAX_DIGEST} are needed "
                         f"(a short one lets wrong codes match); {FORMAT}")
    return n, r, p, salt, digest


def verify_code(code: str, stored: str) -> bool:
    n, r, p, salt, digest = check_hash_format(stored)
    candidate = _scrypt(code.encode(), salt=salt, n=n, r=r, p=p, dklen=len(digest))
    return hmac.compare_digest(candidate, digest)


def main() -> int:
    import getpass  # the command line only (``python -m rules.codes``), never a running gateway

    code = getpass.getpass("alarm code: ")
    if not code or code != getpass.getpass("again: "):
        print("codes differ or empty", file=sys.stderr)
        return 1
    print(hash_code(code))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
