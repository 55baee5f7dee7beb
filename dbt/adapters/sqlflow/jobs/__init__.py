"""What one ML node does, end to end, on a psycopg2 connection: SELECT -> arrays -> estimator -> tables.

The jobs know nothing of dbt either; the adapter hands them the connection, the compiled SQL, the
resolved options and the relation names, and turns their errors into dbt errors.
"""
