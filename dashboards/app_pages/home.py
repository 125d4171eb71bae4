"""Home: who is signed in and the pages their roles open."""

from __future__ import annotations

import streamlit as st

from dashboards import access

user = access.signed_in_user()
st.title("Recoup")
st.caption(f"Returns intelligence · signed in as {user.label} ({', '.join(sorted(user.roles)) or 'no role'})")
allowed = access.allowed_pages(user)
if not allowed:
    st.error("Your account has no role that opens a dashboard page. Ask an administrator.")
for _key, file, title, icon, purpose in allowed:
    st.page_link(f"app_pages/{file}", label=title, icon=icon)
    st.caption(purpose)
