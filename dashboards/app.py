"""The Recoup dashboards: `streamlit run dashboards/app.py`.

Signs the user in (`dashboards.access`), then offers through `st.navigation` a home page and the pages
of `dashboards/app_pages/` that the user's roles open; each page checks its role again itself. Every
page keeps its own URL (/review_queue, /return_rates, /operations, /models): the home page is the root.
A password sign-in leaves a signed session cookie (`dashboards.auth.issue_session`, 12 hours by default,
RECOUP_DASHBOARD_SESSION_HOURS), so a reload or a typed URL keeps the user signed in; signing out revokes it.
"""

from __future__ import annotations

import streamlit as st

from dashboards import access
from dashboards.auth import PAGE_ROLES

assert {key for key, *_ in access.PAGES} == set(PAGE_ROLES)

st.set_page_config(page_title="Recoup", page_icon=":material/assignment_return:", layout="wide")

user = access.signed_in_user()
pages = [
    st.Page("app_pages/home.py", title="Home", icon=":material/home:", default=True),
    *(
        st.Page(f"app_pages/{file}", title=title, icon=icon, url_path=key)
        for key, file, title, icon, _ in access.allowed_pages(user)
    ),
]

with st.sidebar:
    st.markdown(f"**{user.label}**  \n{', '.join(sorted(user.roles)) or 'no role'}")
    if user.via == "autologin":
        st.warning("Signed in by RECOUP_DASHBOARD_AUTOLOGIN (test bypass).")
    else:
        st.button("Sign out", key="sign_out", on_click=access.sign_out)
    access.session_cookie_script()

st.navigation(pages).run()
