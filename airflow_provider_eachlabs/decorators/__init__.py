"""TaskFlow decorators: ``@task.eachlabs`` (``decorators.eachlabs``), registered in the provider info.

Empty on purpose: Airflow imports the decorator's module by name only when a DAG file uses it.
"""
