{{ config(materialized='table') }}
-- One row per observation and feature: the observations joined once to the precomputed item and
-- store features, plus the observation's own promotion flag.
select o.obs_id, i.feature, i.value
from {{ ref('sales_observations') }} o join {{ ref('item_features') }} i on i.item_id = o.item_id
union all
select o.obs_id, s.feature, s.value
from {{ ref('sales_observations') }} o join {{ ref('store_features') }} s on s.store_id = o.store_id
union all
select obs_id, 'onpromotion', onpromotion::float8 from {{ ref('sales_observations') }}
