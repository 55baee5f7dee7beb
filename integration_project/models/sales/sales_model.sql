{{ config(materialized='ml_train', model_type='sql',
          weights={'w': ['feature'], 'b': []}, prediction='predictions', key='obs_id',
          optimizer='adam', learning_rate=0.1, epochs=300, batch_size=0, seed=0) }}
-- A linear regression written in SQL, after the sql4ml paper: the prediction and the objective are
-- SQL; w and b are declared above and learned by TensorFlow. Observations of January to October train.
with features as (
    select f.obs_id, f.feature, f.value
    from {{ ref('sales_features') }} f
    join {{ ref('sales_observations') }} o on o.obs_id = f.obs_id
    where extract(month from o.sale_date::date) <= 10
), targets as (
    select obs_id, unit_sales as value from {{ ref('sales_observations') }}
    where extract(month from sale_date::date) <= 10
), predictions as (
    select f.obs_id, sum(f.value * w.value) + (select value from b) as value
    from features f join w on w.feature = f.feature
    group by f.obs_id
)
select avg(power(p.value - t.value, 2)) + 0.0001 * (select sum(power(value, 2)) from w)
from predictions p join targets t on t.obs_id = p.obs_id
