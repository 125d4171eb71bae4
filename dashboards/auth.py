"""Dashboard accounts and roles: the users file (TOML, salted scrypt hashes), which role opens which page,
and `python -m dashboards.auth hash` to make a password hash. No Streamlit here (see `dashboards.access`).

The users file is `RECOUP_DASHBOARD_USERS` (default: the example file next to this module, refused when
RECOUP_ENV=production). Passwords are never logged, stored or compared in clear.
"""

from __future__ import annotations

import argparse
import base64
import functools
import getpass
import hashlib
import hmac
import json
import os
import secrets
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROLES = ("analyst", "merchandiser", "operations", "admin")
ADMIN = "admin"
USERS_ENV = "RECOUP_DASHBOARD_USERS"
AUTOLOGIN_ENV = "RECOUP_DASHBOARD_AUTOLOGIN"
EXAMPLE_USERS_FILE = Path(__file__).with_name("users.example.toml")

# Which roles open each page (admin opens every page). The users file may override it under [pages].
PAGE_ROLES: dict[str, tuple[str, ...]] = {
    "review_queue": ("analyst",),
    "return_rates": ("merchandiser",),
    "operations": ("operations",),
    "models": ("analyst",),
}

# scrypt cost: about 50 ms and 16 MiB per check; parameters read back from a hash are bounded so that a
# tampered users file cannot make a sign-in attempt eat the machine.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MAX_SCRYPT_N, MAX_SCRYPT_R, MAX_SCRYPT_P = 2**20, 32, 16
PBKDF2_MIN_ITERATIONS, PBKDF2_MAX_ITERATIONS = 100_000, 10_000_000


class UsersFileError(ValueError):
    """The users file cannot be used; the message names the file and the key."""


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """`scrypt$N$r$p$<salt>$<key>` (base64) with a fresh 16-byte salt per call."""
    if not password:
        raise ValueError("the password is empty")
    salt = salt if salt is not None else secrets.token_bytes(16)
    key = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=2**26, dklen=32
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(key)}"


def check_hash_format(encoded: str) -> None:
    """Raise ValueError unless `encoded` is a scrypt or pbkdf2_sha256 hash this module can verify."""
    parts = encoded.split("$")
    try:
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = (int(v) for v in parts[1:4])
            if not (
                1 < n <= MAX_SCRYPT_N and n & (n - 1) == 0 and 0 < r <= MAX_SCRYPT_R and 0 < p <= MAX_SCRYPT_P
            ):
                raise ValueError("scrypt parameters out of range")
            _unb64(parts[4]), _unb64(parts[5])
            return
        if parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            if not PBKDF2_MIN_ITERATIONS <= int(parts[1]) <= PBKDF2_MAX_ITERATIONS:
                raise ValueError("pbkdf2 iterations out of range")
            _unb64(parts[2]), _unb64(parts[3])
            return
    except (ValueError, TypeError) as exc:
        raise ValueError(f"malformed password hash ({exc})") from None
    raise ValueError(
        "not a scrypt$... or pbkdf2_sha256$... hash (make one with `python -m dashboards.auth hash`)"
    )


def verify_password(password: str, encoded: str) -> bool:
    """True if `password` matches `encoded`; constant-time comparison, False for malformed hashes."""
    try:
        check_hash_format(encoded)
    except ValueError:
        return False
    parts = encoded.split("$")
    secret = password.encode("utf-8")
    if parts[0] == "scrypt":
        n, r, p = (int(v) for v in parts[1:4])
        expected = _unb64(parts[5])
        actual = hashlib.scrypt(
            secret, salt=_unb64(parts[4]), n=n, r=r, p=p, maxmem=2**31 - 1, dklen=len(expected)
        )
    else:
        expected = _unb64(parts[3])
        actual = hashlib.pbkdf2_hmac("sha256", secret, _unb64(parts[2]), int(parts[1]), len(expected))
    return hmac.compare_digest(actual, expected)


# A hash of nothing anyone knows: unknown user names cost as much as wrong passwords (no user enumeration).
_DECOY_HASH = hash_password(secrets.token_urlsafe(24))


@dataclass(frozen=True)
class User:
    """Who is signed in: `name` is what decisions are attributed to."""

    name: str
    roles: frozenset[str]
    display_name: str = ""
    via: str = "password"  # password | oidc | autologin

    def may(self, roles: tuple[str, ...] | list[str]) -> bool:
        return ADMIN in self.roles or bool(self.roles & set(roles))

    @property
    def label(self) -> str:
        return self.display_name or self.name


@dataclass(frozen=True)
class Account:
    username: str
    roles: frozenset[str]
    password_hash: str | None = None
    display_name: str = ""
    email: str | None = None


@dataclass(frozen=True)
class Directory:
    """The parsed users file."""

    accounts: dict[str, Account]
    page_roles: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(PAGE_ROLES))
    oidc_default_roles: frozenset[str] = frozenset()
    source: str = ""

    def authenticate(self, username: str, password: str) -> User | None:
        """The user if the password matches; None otherwise (same cost whether or not the name exists)."""
        account = self.accounts.get(username.strip())
        encoded = account.password_hash if account is not None and account.password_hash else _DECOY_HASH
        matches = verify_password(password, encoded)
        if account is None or account.password_hash is None or not matches:
            return None
        return User(account.username, account.roles, account.display_name, "password")

    def oidc_user(self, email: str | None, name: str | None) -> User | None:
        """The roles of an OIDC identity: the account with that email, else `[oidc] default_roles`."""
        if not email:
            return None
        for account in self.accounts.values():
            if account.email and account.email.lower() == email.lower():
                return User(email, account.roles, name or account.display_name, "oidc")
        return User(email, self.oidc_default_roles, name or "", "oidc")

    def roles_for(self, page: str) -> tuple[str, ...]:
        return self.page_roles.get(page, (ADMIN,))


def users_file() -> Path:
    configured = os.environ.get(USERS_ENV, "").strip()
    return Path(configured) if configured else EXAMPLE_USERS_FILE


def _roles(value: object, where: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsersFileError(f"{where}: must be a list of role names ({', '.join(ROLES)})")
    unknown = [v for v in value if v not in ROLES]
    if unknown:
        raise UsersFileError(f"{where}: unknown role {unknown[0]!r} (roles are {', '.join(ROLES)})")
    return frozenset(value)


def parse_users(text: str, source: str = "<users>") -> Directory:
    """Parse a users file; one `UsersFileError` naming the file and key on any problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsersFileError(f"{source}: not valid TOML ({exc})") from None
    unknown = set(data) - {"users", "pages", "oidc"}
    if unknown:
        raise UsersFileError(
            f"{source}: unknown section {sorted(unknown)[0]!r} (expected users, pages, oidc)"
        )
    accounts: dict[str, Account] = {}
    users = data.get("users", {})
    if not isinstance(users, dict):
        raise UsersFileError(f"{source}: [users] must be a table of [users.<name>] tables")
    for username, entry in users.items():
        where = f"{source}: users.{username}"
        if not isinstance(entry, dict):
            raise UsersFileError(f"{where}: must be a table")
        extra = set(entry) - {"roles", "password_hash", "name", "email"}
        if extra:
            raise UsersFileError(
                f"{where}.{sorted(extra)[0]}: unknown key (roles, password_hash, name, email)"
            )
        roles = _roles(entry.get("roles"), f"{where}.roles")
        password_hash = entry.get("password_hash")
        if password_hash is not None:
            if not isinstance(password_hash, str):
                raise UsersFileError(f"{where}.password_hash: must be a string")
            try:
                check_hash_format(password_hash)
            except ValueError as exc:
                raise UsersFileError(f"{where}.password_hash: {exc}") from None
        email = entry.get("email")
        if password_hash is None and not email:
            raise UsersFileError(f"{where}: needs a password_hash or an email (for OIDC sign-in)")
        accounts[username] = Account(
            username=username,
            roles=roles,
            password_hash=password_hash,
            display_name=str(entry.get("name", "")),
            email=str(email) if email else None,
        )
    page_roles = dict(PAGE_ROLES)
    for page, roles in data.get("pages", {}).items():
        if page not in PAGE_ROLES:
            raise UsersFileError(f"{source}: pages.{page}: unknown page (pages are {', '.join(PAGE_ROLES)})")
        page_roles[page] = tuple(sorted(_roles(roles, f"{source}: pages.{page}")))
    oidc = data.get("oidc", {})
    default_roles = _roles(oidc.get("default_roles", []), f"{source}: oidc.default_roles")
    return Directory(accounts, page_roles, default_roles, source)


def load_users(path: Path | None = None, *, production: bool = False) -> Directory:
    """The users file; in production, one that signs anyone in with an example user's published
    password (the example file itself, a copy of it, or one user copied from it) is refused."""
    path = path or users_file()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsersFileError(f"{path}: cannot read the users file ({exc.strerror or exc})") from None
    directory = parse_users(text, str(path))
    if production:
        published = _example_hashes()
        for account in directory.accounts.values():
            if account.password_hash in published:
                raise UsersFileError(
                    f"{path}: users.{account.username} has the published password of an example user "
                    f"(from {EXAMPLE_USERS_FILE.name}); give every user their own password "
                    "(python -m dashboards.auth hash) when RECOUP_ENV=production"
                )
    return directory


@functools.cache
def _example_hashes() -> frozenset[str]:
    example = parse_users(EXAMPLE_USERS_FILE.read_text(encoding="utf-8"), str(EXAMPLE_USERS_FILE))
    return frozenset(a.password_hash for a in example.accounts.values() if a.password_hash)


def autologin_user(value: str | None, *, production: bool) -> User | None:
    """The test-only bypass: RECOUP_DASHBOARD_AUTOLOGIN=admin (or a comma-separated list of roles) signs
    every session in as `autologin` with those roles. Refused when RECOUP_ENV=production."""
    if not value or not value.strip():
        return None
    if production:
        raise UsersFileError(f"{AUTOLOGIN_ENV} is set but RECOUP_ENV=production: refusing to sign anyone in")
    roles = _roles([v.strip() for v in value.split(",") if v.strip()], AUTOLOGIN_ENV)
    return User("autologin", roles, "autologin (test bypass)", "autologin")


# --- sessions that survive a reload ----------------------------------------------------------------
# A browser signed in with a password keeps a cookie `recoup_session` = base64url(JSON claims) "." base64url(HMAC-SHA256).
# The claims name the user, how they signed in, when the session expires, a random id (sign-out revokes
# it) and a digest of the account's password hash (a new password ends old sessions). OIDC sign-ins live
# in Streamlit's own identity cookie (st.user).

SESSION_COOKIE = "recoup_session"
SESSION_HOURS = 12.0


def _session_key(secret: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), b"recoup dashboard session", hashlib.sha256).digest()


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _credential_digest(account: Account | None) -> str:
    if account is None or not account.password_hash:
        return ""
    return hashlib.sha256(account.password_hash.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Session:
    """What a session cookie says once its signature and expiry have been checked."""

    token_id: str
    username: str
    via: str
    expires: float
    credential: str


def issue_session(
    user: User, directory: Directory, secret: str, *, now: float, hours: float = SESSION_HOURS
) -> tuple[str, Session]:
    """A signed cookie value for `user`, valid for `hours`; also its claims."""
    session = Session(
        token_id=secrets.token_urlsafe(12),
        username=user.name,
        via=user.via,
        expires=now + hours * 3600.0,
        credential=_credential_digest(directory.accounts.get(user.name)),
    )
    claims = {"i": session.token_id, "u": session.username, "v": session.via, "e": session.expires}
    if session.credential:
        claims["c"] = session.credential
    body = _b64url(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode("utf-8"))
    signature = _b64url(hmac.new(_session_key(secret), body.encode("ascii"), hashlib.sha256).digest())
    return f"{body}.{signature}", session


def read_session(token: str | None, secret: str, *, now: float) -> Session | None:
    """The claims of a cookie value if it is well formed, signed with `secret` and not expired; else None."""
    if not token or token.count(".") != 1:
        return None
    body, signature = token.split(".")
    expected = _b64url(hmac.new(_session_key(secret), body.encode("ascii"), hashlib.sha256).digest())
    if not hmac.compare_digest(signature, expected):
        return None
    try:
        claims = json.loads(_unb64url(body))
        session = Session(
            str(claims["i"]), str(claims["u"]), str(claims["v"]), float(claims["e"]), str(claims.get("c", ""))
        )
    except (ValueError, KeyError, TypeError):
        return None
    return session if session.expires > now and session.via == "password" else None


def session_user(session: Session, directory: Directory) -> User | None:
    """The user a valid session stands for, with the roles the users file gives now; None when the account
    is gone, has no role, or (password accounts) its password changed since the session began."""
    account = directory.accounts.get(session.username)
    if account is None or not account.password_hash or _credential_digest(account) != session.credential:
        return None
    return User(account.username, account.roles, account.display_name, "password") if account.roles else None


# --- command line ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.auth", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    hashing = commands.add_parser(
        "hash", help="print a password hash for the users file (asks twice; or reads one line from stdin)"
    )
    hashing.add_argument("--stdin", action="store_true", help="read the password from standard input")
    checking = commands.add_parser("check", help="validate a users file and list its users and roles")
    checking.add_argument("path", nargs="?", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.command == "hash":
        if args.stdin or not sys.stdin.isatty():
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = getpass.getpass("password: ")
            if getpass.getpass("again: ") != password:
                print("the two passwords differ", file=sys.stderr)
                return 1
        if len(password) < 8:
            print("refusing a password shorter than 8 characters", file=sys.stderr)
            return 1
        print(hash_password(password))
        return 0
    try:
        directory = load_users(args.path)
    except UsersFileError as exc:
        print(exc, file=sys.stderr)
        return 1
    for account in directory.accounts.values():
        how = "password" if account.password_hash else "oidc"
        print(f"{account.username}: {', '.join(sorted(account.roles))} ({how})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
