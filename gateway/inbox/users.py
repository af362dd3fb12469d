"""``python -m gateway.inbox.users hash``: an scrypt hash for the local users file (demo and tests).

Reads the password from standard input (one line) and prints the hash to put in the file's
``password`` field. The local users file is not for production: use OpenID Connect there.
"""

from __future__ import annotations

import sys

from gateway.inbox.auth import hash_password


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 on a usage error)."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["hash"]:
        sys.stderr.write("usage: python -m gateway.inbox.users hash  (password on standard input)\n")
        return 2
    password = sys.stdin.readline().rstrip("\n")
    if not password:
        sys.stderr.write("error: empty password\n")
        return 2
    sys.stdout.write(hash_password(password) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
