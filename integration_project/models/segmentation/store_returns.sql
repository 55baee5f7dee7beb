{{ config(materialized='table') }}
-- Generated returns of some of those items, in the shape of TPCx-BB's store_returns.
-- Group 0 hardly returns, group 1 returns single cheap items often, group 2 returns whole
-- expensive tickets now and then, group 3 (frequent shoppers) returns a little of everything.
select
    ss_customer_sk as sr_customer_sk,
    ss_ticket_number as sr_ticket_number,
    ss_item_sk as sr_item_sk,
    case planted_group when 1 then round(ss_net_paid * 0.5, 2) else ss_net_paid end as sr_return_amt
from {{ ref('store_sales') }}
where abs(hashtext('return' || ss_ticket_number || '-' || ss_item_sk)) % 1000 <
      case planted_group
          when 0 then 5
          when 1 then 450
          when 2 then case when ss_ticket_number % 3 = 0 then 950 else 10 end
          else 150
      end
