"""Dashboard accounts: salted password hashes, the users file, roles per page, the test-only bypass and
the `python -m dashboards.auth` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dashboards import auth
from dashboards.auth import User, UsersFileError

ROOT = Path(__file__).resolve().parents[2]


def test_hashes_are_salted_and_verify() -> None:
    first, second = auth.hash_password("correct horse"), auth.hash_password("correct horse")
    assert first != second and first.startswith("scrypt$16384$8$1$")
    assert "correct horse" not in first
    assert auth.verify_password("correct horse", first) and auth.verify_password("correct horse", second)
    assert not auth.verify_password("correct horsE", first)
    assert not auth.verify_password("correct horse", "not-a-hash")
    tampered = first.replace("scrypt$16384$", "scrypt$1073741824$")  # parameters are bounded
    assert not auth.verify_password("correct horse", tampered)


def test_pbkdf2_hashes_are_accepted() -> None:
    import base64
    import hashlib

    salt = b"0123456789abcdef"
    key = hashlib.pbkdf2_hmac("sha256", b"s3cret-pass", salt, 200_000)
    encoded = f"pbkdf2_sha256$200000${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"
    assert auth.verify_password("s3cret-pass", encoded)
    assert not auth.verify_password("s3cret-pasS", encoded)


def test_users_file_and_roles() -> None:
    directory = auth.parse_users(
        f"""
[users.alice]
roles = ["analyst"]
password_hash = "{auth.hash_password("alice-password")}"
[users.sso]
roles = ["admin", "merchandiser"]
email = "SSO@example.com"
[pages]
models = ["admin"]
[oidc]
default_roles = ["operations"]
""",
        "users.toml",
    )
    alice = directory.authenticate("alice", "alice-password")
    assert alice == User("alice", frozenset({"analyst"}), "", "password")
    assert directory.authenticate("alice", "wrong") is None
    assert directory.authenticate("nobody", "alice-password") is None
    assert directory.authenticate("sso", "") is None  # an OIDC-only account has no password
    assert directory.roles_for("models") == ("admin",)
    assert directory.roles_for("review_queue") == ("analyst",)
    assert alice.may(directory.roles_for("review_queue")) and not alice.may(directory.roles_for("models"))
    assert directory.oidc_user("sso@example.com", "Sam").roles == {"admin", "merchandiser"}
    assert directory.oidc_user("new@example.com", None).roles == {"operations"}
    assert User("root", frozenset({"admin"})).may(("merchandiser",))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[users.a]\nroles = ["analyst"]\npassword_hash = "plain"', "users.a.password_hash"),
        ('[users.a]\nroles = ["boss"]\npassword_hash = "x"', "users.a.roles: unknown role 'boss'"),
        ('[users.a]\nroles = ["analyst"]', "needs a password_hash or an email"),
        ('[users.a]\nroles = ["analyst"]\nemail = "a@b"\npassword = "x"', "users.a.password: unknown key"),
        ('[pages]\nhome = ["admin"]', "pages.home: unknown page"),
        ("[users", "not valid TOML"),
    ],
)
def test_broken_users_files_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(UsersFileError, match=r"users\.toml") as caught:
        auth.parse_users(text, "users.toml")
    assert problem in str(caught.value)


def test_example_users_file_works_but_not_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(auth.USERS_ENV, raising=False)
    directory = auth.load_users()
    assert directory.authenticate("alice", "demo-alice").roles == {"analyst"}
    assert directory.authenticate("admin", "demo-admin").roles == {"admin"}
    with pytest.raises(UsersFileError, match="published password of an example user"):
        auth.load_users(production=True)


def test_a_copy_of_the_example_users_or_one_of_them_is_refused_in_production(tmp_path: Path) -> None:
    example = auth.EXAMPLE_USERS_FILE.read_text(encoding="utf-8")
    copy = tmp_path / "users.toml"
    copy.write_text(example, encoding="utf-8")
    with pytest.raises(UsersFileError, match=r"users\.toml: users\.\w+ has the published password"):
        auth.load_users(copy, production=True)
    own = auth.hash_password("a-password-of-our-own")
    alice = next(line for line in example.splitlines() if line.startswith("password_hash"))
    mixed = tmp_path / "mixed.toml"
    mixed.write_text(
        f'[users.zoe]\nroles = ["admin"]\npassword_hash = "{own}"\n\n[users.eve]\nroles = ["analyst"]\n{alice}\n',
        encoding="utf-8",
    )
    with pytest.raises(UsersFileError, match=r"users\.eve has the published password"):
        auth.load_users(mixed, production=True)
    mine = tmp_path / "mine.toml"
    mine.write_text(f'[users.zoe]\nroles = ["admin"]\npassword_hash = "{own}"\n', encoding="utf-8")
    assert auth.load_users(mine, production=True).authenticate("zoe", "a-password-of-our-own").roles == {
        "admin"
    }


def test_autologin_is_a_test_only_bypass() -> None:
    assert auth.autologin_user(None, production=False) is None
    user = auth.autologin_user("admin", production=False)
    assert user is not None and user.roles == {"admin"} and user.via == "autologin"
    assert auth.autologin_user("analyst, operations", production=False).roles == {"analyst", "operations"}
    with pytest.raises(UsersFileError, match="production"):
        auth.autologin_user("admin", production=True)
    with pytest.raises(UsersFileError, match="unknown role"):
        auth.autologin_user("root", production=False)


def test_hash_command(tmp_path: Path) -> None:
    made = subprocess.run(
        [sys.executable, "-m", "dashboards.auth", "hash", "--stdin"],
        input="a long enough password\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    encoded = made.stdout.strip()
    assert auth.verify_password("a long enough password", encoded)
    assert "a long enough password" not in made.stdout + made.stderr
    short = subprocess.run(
        [sys.executable, "-m", "dashboards.auth", "hash", "--stdin"],
        input="short\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert short.returncode == 1 and "shorter than 8" in short.stderr
    users = tmp_path / "users.toml"
    users.write_text(f'[users.zoe]\nroles = ["operations"]\npassword_hash = "{encoded}"\n')
    checked = subprocess.run(
        [sys.executable, "-m", "dashboards.auth", "check", str(users)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert checked.stdout.strip() == "zoe: operations (password)"


def _directory(password_hash: str) -> auth.Directory:
    return auth.parse_users(f'[users.ann]\nroles = ["analyst"]\npassword_hash = "{password_hash}"\n')


def test_a_session_cookie_is_signed_expires_and_ends_with_the_password() -> None:
    users = _directory(auth.hash_password("ann-password"))
    ann = users.authenticate("ann", "ann-password")
    assert ann is not None
    token, issued = auth.issue_session(ann, users, "secret", now=1_000.0, hours=2)
    assert issued.expires == 1_000.0 + 7_200
    session = auth.read_session(token, "secret", now=1_500.0)
    assert session == issued and auth.session_user(session, users) == ann
    assert "ann-password" not in token
    # another key, a changed byte, an expired cookie, garbage: no session
    assert auth.read_session(token, "other secret", now=1_500.0) is None
    body, signature = token.split(".")
    forged = auth._b64url(auth._unb64url(body).replace(b'"ann"', b'"bob"')) + "." + signature
    assert auth.read_session(forged, "secret", now=1_500.0) is None
    assert auth.read_session(token, "secret", now=1_000.0 + 7_200) is None
    for junk in ("", "abc", "a.b.c", "....", None):
        assert auth.read_session(junk, "secret", now=1_500.0) is None
    # a new password, a removed role or a removed account ends the session
    assert auth.session_user(session, _directory(auth.hash_password("new-password"))) is None
    assert (
        auth.session_user(session, auth.parse_users('[users.bob]\nroles = ["admin"]\nemail = "b@x"\n'))
        is None
    )
    no_role = auth.parse_users(
        f'[users.ann]\nroles = []\npassword_hash = "{users.accounts["ann"].password_hash}"\n'
    )
    assert auth.session_user(session, no_role) is None
