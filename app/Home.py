"""droidft dashboard entry point (the full dashboard lands with its own issue)."""

import streamlit as st

st.set_page_config(page_title="droidft", page_icon="🤖", layout="wide")
st.title("droidft")
st.write("A local-first LLM fine-tuning studio over MLX. Use the `droidft` CLI while the dashboard is built.")
