"""Part of airflow-provider-eachlabs."""
