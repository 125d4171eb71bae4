"""Sign-in for the Streamlit app: the password form (users file), OIDC through `st.login` when
`.streamlit/secrets.toml` has an [auth] section, the test-only autologin, and the per-page role guard."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from dashboards import auth
from dashboards.auth import Directory, User, UsersFileError

# The pages (key in auth.PAGE_ROLES, file in app_pages/, title, icon, what it is for), in menu order.
PAGES = (
    (
        "review_queue",
        "review_queue.py",
        "Review queue",
        ":material/policy:",
        "Flagged returns by expected loss; the evidence; decide fraud, abuse or legitimate.",
    ),
    (
        "return_rates",
        "return_rates.py",
        "Return rates",
        ":material/assignment_return:",
        "Return rates by product, size, channel and store; abnormal items and their excess cost; fit.",
    ),
    (
        "operations",
        "operations.py",
        "Operations",
        ":material/warehouse:",
        "Returns by status, limbo by location and age, dispositions, recovered value, BORIS, cycle times.",
    ),
    (
        "models",
        "models.py",
        "Models",
        ":material/monitoring:",
        "The champion model, score and feature drift, serving skew, and the review-policy backtest.",
    ),
)
SESSION_KEY = "dashboard_user"
COOKIE_KEY = "dashboard_session_cookie"  # the cookie this browser should hold: a token, "" to clear it
TOKEN_KEY = "dashboard_session_token"
FAILURES_KEY = "dashboard_sign_in_failures"
MAX_FAILURES = 5  # per user name within FAILURE_WINDOW seconds, across sessions; then locked for as long
FAILURE_WINDOW = 300.0

logger = logging.getLogger("recoup.dashboards")


def _production() -> bool:
    from oms.settings import get_settings

    return get_settings().env == "production"


def _secret() -> str:
    from oms.settings import get_settings

    return get_settings().secret_key


def _session_hours() -> float:
    from oms.settings import get_settings

    return get_settings().dashboard_session_hours


@st.cache_resource(show_spinner=False)
def _revoked() -> tuple[threading.Lock, dict[str, float]]:
    """Session ids signed out on this server, with their expiry (kept until then)."""
    return threading.Lock(), {}


def _revoke(token_id: str, expires: float) -> None:
    lock, revoked = _revoked()
    now = time.time()
    with lock:
        for ident in [i for i, until in revoked.items() if until <= now]:
            del revoked[ident]
        revoked[token_id] = expires


def _is_revoked(token_id: str) -> bool:
    lock, revoked = _revoked()
    with lock:
        return token_id in revoked


def _cookie_user(users: Directory) -> User | None:
    """The user of this browser's session cookie, if it is signed, unexpired, not signed out and the
    account still matches."""
    try:
        token = st.context.cookies.get(auth.SESSION_COOKIE)
    except Exception:  # no browser context (AppTest, bare script run)
        return None
    session = auth.read_session(token, _secret(), now=time.time())
    if session is None or _is_revoked(session.token_id):
        return None
    user = auth.session_user(session, users)
    if user is not None:
        st.session_state[TOKEN_KEY] = session
    return user


def remember(user: User, users: Directory) -> None:
    """Give this browser a signed session cookie for `user` (written by `session_cookie_script`)."""
    token, session = auth.issue_session(user, users, _secret(), now=time.time(), hours=_session_hours())
    st.session_state[TOKEN_KEY] = session
    st.session_state[COOKIE_KEY] = (token, session.expires)


def session_cookie_script() -> None:
    """Write (or clear) the session cookie in the browser: the one place a script runs in the page."""
    pending = st.session_state.pop(COOKIE_KEY, None)
    if pending is None:
        return
    if pending == "":
        assignment = f"{auth.SESSION_COOKIE}=; Path=/; Max-Age=0; SameSite=Strict"
    else:
        token, expires = pending
        max_age = max(int(expires - time.time()), 0)
        assignment = f"{auth.SESSION_COOKIE}={token}; Path=/; Max-Age={max_age}; SameSite=Strict"
    st.html(
        "<script>document.cookie = "
        + json.dumps(assignment)
        + " + (location.protocol === 'https:' ? '; Secure' : '');</script>",
        unsafe_allow_javascript=True,
        width="content",
    )


@st.cache_resource(show_spinner=False)
def _failures() -> tuple[threading.Lock, dict[str, list[float]]]:
    """Recent failed sign-ins per user name, shared by every session of this server process."""
    return threading.Lock(), {}


@contextmanager
def _failure_log() -> Iterator[dict[str, list[float]]]:
    lock, log = _failures()
    with lock:
        now = time.monotonic()
        for name in list(log):
            log[name] = [t for t in log[name] if now - t < FAILURE_WINDOW]
            if not log[name]:
                del log[name]
        yield log


def directory() -> Directory:
    """The users file (read on every call: edits apply without a restart; it is small)."""
    return auth.load_users(production=_production())


def oidc_providers() -> list[str] | None:
    """None when OIDC is not configured; else the named providers ([] means the single default one)."""
    try:
        if not st.secrets.load_if_toml_exists() or "auth" not in st.secrets:
            return None
        section = st.secrets["auth"]
    except Exception:  # a broken secrets file must not lock everyone out of the password form
        return None
    return [name for name, value in section.items() if hasattr(value, "items")]


def current_user() -> User | None:
    user = st.session_state.get(SESSION_KEY)
    return user if isinstance(user, User) else None


def sign_out() -> None:
    user = current_user()
    st.session_state.pop(SESSION_KEY, None)
    session = st.session_state.pop(TOKEN_KEY, None)
    if isinstance(session, auth.Session):
        _revoke(session.token_id, session.expires)
    st.session_state[COOKIE_KEY] = ""
    if user is not None:
        logger.info("dashboard sign-out: %s", user.name)
        if user.via == "oidc":
            st.logout()


def _password_form(users: Directory) -> None:
    with st.form("sign_in", clear_on_submit=True):
        username = st.text_input("User name", key="sign_in_username")
        password = st.text_input("Password", type="password", key="sign_in_password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if not submitted:
        return
    name = username.strip()
    with _failure_log() as log:
        locked = len(log.get(name, [])) >= MAX_FAILURES
    if locked:
        logger.warning(
            "dashboard sign-in refused (too many failures): %r",
            name if name in users.accounts else "(unknown)",
        )
        st.error("Too many failed sign-ins for this user name. Try again in a few minutes.")
        return
    user = users.authenticate(name, password) if name and password else None
    if user is None:
        with _failure_log() as log:
            log.setdefault(name, []).append(time.monotonic())
        # an unknown "name" may be a password typed in the wrong field: never log it
        logger.warning(
            "dashboard sign-in failed: %r", name if name in users.accounts else "(unknown user name)"
        )
        st.error("Unknown user name or wrong password.")
        return
    with _failure_log() as log:
        log.pop(name, None)
    logger.info("dashboard sign-in: %s (%s)", user.name, ", ".join(sorted(user.roles)))
    st.session_state[SESSION_KEY] = user
    remember(user, users)
    st.rerun()


def _still_valid(user: User) -> User | None:
    """The session's user with the roles the users file (or the identity provider) gives now: removing a
    user or a role takes effect at their next click, not at their next sign-in."""
    if user.via == "autologin":
        return user
    session = st.session_state.get(TOKEN_KEY)
    if isinstance(session, auth.Session) and (
        session.expires <= time.time() or _is_revoked(session.token_id)
    ):
        return None
    try:
        users = directory()
    except UsersFileError:
        return None
    if user.via == "oidc":
        if not st.user.get("is_logged_in") or st.user.get("email") != user.name:
            return None
        return users.oidc_user(user.name, user.display_name)
    account = users.accounts.get(user.name)
    if account is None or account.password_hash is None:
        return None
    return User(account.username, account.roles, account.display_name, "password")


def signed_in_user() -> User:
    """The signed-in user; otherwise renders the sign-in screen and stops the script run."""
    user = current_user()
    if user is not None:
        refreshed = _still_valid(user)
        if refreshed is not None and refreshed.roles:
            st.session_state[SESSION_KEY] = refreshed
            return refreshed
        logger.info("dashboard session ended (account or roles removed): %s", user.name)
        st.session_state.pop(SESSION_KEY, None)
    try:
        bypass = auth.autologin_user(os.environ.get(auth.AUTOLOGIN_ENV), production=_production())
        users = None if bypass else directory()
    except UsersFileError as exc:
        st.error(f"Dashboard sign-in is misconfigured: {exc}")
        st.stop()
    if bypass is not None:
        st.session_state[SESSION_KEY] = bypass
        return bypass
    assert users is not None
    remembered = _cookie_user(users)
    if remembered is not None:
        logger.info("dashboard session resumed from its cookie: %s", remembered.name)
        st.session_state[SESSION_KEY] = remembered
        return remembered
    providers = oidc_providers()
    if providers is not None and st.user.get("is_logged_in"):
        oidc = users.oidc_user(st.user.get("email"), st.user.get("name"))
        if oidc is not None and oidc.roles:
            logger.info("dashboard sign-in via OIDC: %s", oidc.name)
            st.session_state[SESSION_KEY] = oidc
            return oidc
        st.error(
            f"You are signed in as {st.user.get('email') or 'an unknown identity'}, who has no dashboard "
            "role. Ask an administrator to add your email to the users file."
        )
        if st.button("Sign out", key="oidc_sign_out"):
            st.logout()
        st.stop()
    st.title("Recoup")
    st.caption("Returns intelligence: sign in to continue.")
    if providers is not None:
        for provider in providers or [None]:
            label = f"Sign in with {provider}" if provider else "Sign in with single sign-on"
            if st.button(label, key=f"oidc_{provider or 'default'}"):
                st.login(provider) if provider else st.login()
        st.divider()
    _password_form(users)
    session_cookie_script()
    st.stop()
    raise AssertionError("unreachable")  # st.stop() ends the script run


def page_roles(user: User) -> dict[str, tuple[str, ...]]:
    """The roles that open each page (the users file may override the defaults)."""
    if user.via == "autologin":
        return dict(auth.PAGE_ROLES)
    try:
        users = directory()
    except UsersFileError as exc:
        st.error(f"Dashboard sign-in is misconfigured: {exc}")
        st.stop()
    return {page: users.roles_for(page) for page in auth.PAGE_ROLES}


def allowed_pages(user: User) -> list[tuple[str, str, str, str, str]]:
    roles = page_roles(user)
    return [page for page in PAGES if user.may(roles[page[0]])]


def require(page: str) -> User:
    """Stop the page unless the signed-in user has one of the page's roles (admin opens everything)."""
    user = signed_in_user()
    roles = page_roles(user)[page]
    if not user.may(roles):
        st.error(
            f"This page needs the role {' or '.join(roles)} (you have {', '.join(sorted(user.roles)) or 'none'})."
        )
        st.stop()
    return user
