"""sql4ml (issue #10, in progress): models whose prediction and objective are SQL over data relations
and declared weights. `program` parses and splits the SQL (data CTEs run in PostgreSQL, the rest is
translated); `tensors` and `translate` evaluate the translated part over named-axis tensors, with
numpy or TensorFlow as the backend. Nothing here imports dbt or holds a connection."""
