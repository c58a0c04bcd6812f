"""Alarm codes, stored only as a salted scrypt hash.

The stored form is ``scrypt$N$r$p$SALT$HASH`` (salt and hash in hex). Make one
with ``python -m rules.codes``. Codes are compared in constant time and never
logged.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import os
import sys

_N, _R, _P = 2**14, 8, 1


def hash_code(code: str, *, salt: bytes | None = None, n: int = _N) -> str:
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(code.encode(), salt=salt, n=n, r=_R, p=_P, dklen=32)
    return f"scrypt${n}${_R}${_P}${salt.hex()}${digest.hex()}"


def check_hash_format(stored: str) -> tuple[int, int, int, bytes, bytes]:
    parts = stored.split("$")
    try:
        if len(parts) != 6 or parts[0] != "scrypt":
            raise ValueError
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
        if n < 2 or n & (n - 1) or n > 2**20 or not 1 <= r <= 32 or not 1 <= p <= 16 or len(salt) < 8 or not digest:
            raise ValueError
    except ValueError:
        raise ValueError("expected 'scrypt$N$r$p$salt$hash' as printed by `python -m rules.codes`") from None
    return n, r, p, salt, digest


def verify_code(code: str, stored: str) -> bool:
    n, r, p, salt, digest = check_hash_format(stored)
    candidate = hashlib.scrypt(code.encode(), salt=salt, n=n, r=r, p=p, dklen=len(digest))
    return hmac.compare_digest(candidate, digest)


def main() -> int:
    code = getpass.getpass("alarm code: ")
    if not code or code != getpass.getpass("again: "):
        print("codes differ or empty", file=sys.stderr)
        return 1
    print(hash_code(code))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
