{{ config(materialized='table') }}
-- Generated store sales in the shape of TPCx-BB's store_sales: one row per item sold.
-- 20,000 customers in four planted behaviour groups (customer_sk % 4); fixed hashes, no random().
with customers as (
    select c as customer_sk, c % 4 as planted_group,
           3 + abs(hashtext('tickets' || c)) % (case c % 4 when 3 then 12 else 5 end) as tickets
    from generate_series(1, {{ var('customers', 20000) }}) c
), tickets as (
    select customer_sk, planted_group, customer_sk * 100 + t as ticket_number
    from customers, generate_series(1, tickets) t
)
select
    customer_sk as ss_customer_sk,
    ticket_number as ss_ticket_number,
    -- heavy returners (group 1) mostly stop buying after August: the churn example learns that
    date '2026-01-01' + abs(hashtext('day' || ticket_number)) % (case planted_group when 1 then 240 else 365 end)
        as ss_sold_date,
    1 + abs(hashtext('item' || ticket_number || '-' || i)) % 5000 as ss_item_sk,
    round((5 + abs(hashtext('paid' || ticket_number || '-' || i)) % 9500 / 100.0)::numeric, 2) as ss_net_paid,
    planted_group
from tickets, generate_series(1, 1 + abs(hashtext('items' || ticket_number)) % 4) i
