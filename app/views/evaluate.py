"""evaluate (placeholder until its engine lands)."""

import streamlit as st

from common import coming

st.title("Evaluate")
coming("This page", "Meanwhile, train and watch runs from Home, SFT setup and Monitor.")
