{{ config(materialized='ml_predict', model='diabetes_model') }}
-- depends_on: {{ ref('diabetes_model') }}
-- Scored inside PostgreSQL from the weights (in_database='auto'): no rows leave the database.
select * from {{ ref('diabetes') }}
