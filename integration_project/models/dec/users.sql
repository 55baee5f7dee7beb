{{ config(materialized='table') }}
-- SQLFlow's cluster-model scenario: 5,000 users with ten behaviour features m1..m10 in five planted
-- behaviour groups (user_id % 5), deterministic (sums of sines stand in for noise).
select
    u as user_id,
    u % 5 as planted_group,
    {% for i in range(1, 11) -%}
    (u % 5) * {{ (i * 7) % 5 + 1 }} * cos({{ i }} * 0.6 * (u % 5))
        + sin(u * {{ 12.9898 + i }}) * 0.8 + sin(u * {{ 78.233 + i }}) * 0.6 as m{{ i }}{{ "," if not loop.last }}
    {% endfor %}
from generate_series(1, 5000) u
