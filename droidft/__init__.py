"""droidft: a local-first LLM fine-tuning studio over MLX.

The engine (this package) holds no Streamlit; the dashboard in app/ calls it.
"""

__version__ = "0.1.0"
