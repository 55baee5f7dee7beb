{{ config(materialized='ml_predict', model='sales_model') }}
-- depends_on: {{ ref('sales_model') }}
-- November and December, scored inside PostgreSQL: the model's `predictions` CTE runs against the
-- stored weights with this SELECT in place of its `features` relation.
select f.obs_id, f.feature, f.value
from {{ ref('sales_features') }} f
join {{ ref('sales_observations') }} o on o.obs_id = f.obs_id
where extract(month from o.sale_date::date) > 10
