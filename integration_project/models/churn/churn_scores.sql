{{ config(materialized='ml_predict', model='churn_model', output_probabilities=true) }}
-- depends_on: {{ ref('churn_model') }}
-- The later period: second-half behaviour, scored with the model trained on the first half.
select customer, orders, items, revenue, return_rate
from {{ ref('customer_features') }}
where period = 'h2'
