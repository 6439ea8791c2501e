"""SQL engines' user-defined functions: ``ai_query`` in DuckDB and in Spark.

Both take the same six arguments as Databricks and return text: the answer for string results,
JSON for typed ones (the SQL layer wraps those calls so the query gets the declared type).
:mod:`ai_query.udf.rows` holds the logic both share.
"""
