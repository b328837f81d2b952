"""Thousands of predictions in one task: items, pacing under the API's caps, a journal that makes
retries and restarts pay nothing twice, and the loop that runs a batch on a worker or in the
triggerer. The operators are in ``operators.batch``; nothing here is imported at DAG parse time."""
