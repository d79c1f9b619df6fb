"""The Streamlit workbench app: `workbench app` or `streamlit run apps/workbench_app.py`."""
