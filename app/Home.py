"""droidft dashboard: `streamlit run app/Home.py`.

The entry point only sets up the page and the navigation; every page is a thin file in
app/views/ that calls the droidft engine.
(Not `pages/`: Streamlit treats a `pages/` folder as the old directory-based navigation
and, on a freshly started server, runs a deep-linked page without this script.)
"""

import streamlit as st

from common import PAGES, presence_beacon, role, show_error, sign_in_gate, sign_out_button

st.set_page_config(page_title="droidft", page_icon=":material/model_training:", layout="wide")


def _page(key: str, **extra) -> st.Page:
    path, title, icon = PAGES[key]
    return st.Page(path, title=title, icon=icon, url_path=key if key != "home" else None, **extra)


# Navigation is declared before the LAN sign-in gate (hidden until signed in), so a shared
# deep link such as /monitor?run=ID still opens that page once the visitor has signed in.
navigation = st.navigation({
    "": [_page("home", default=True)],
    "Train": [_page("models"), _page("data"), _page("sft"), _page("rl"), _page("monitor")],
    "Results": [_page("sessions"), _page("sweep"), _page("compare"), _page("fusion"), _page("evaluate")],
}, position="sidebar" if role() else "hidden")
sign_in_gate()
if role() == "viewer":
    st.sidebar.caption("Signed in as a viewer: watch runs, compare answers.")
sign_out_button()
with st.sidebar:
    presence_beacon(navigation.url_path or "home", st.query_params.get("run"))
try:
    navigation.run()
except Exception as exc:  # noqa: BLE001 - the last net: a message with the cause, never a traceback
    show_error(exc, "show this page")
