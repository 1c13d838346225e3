"""The Streamlit app: sidebar, pages, figures and the cached services they use."""
