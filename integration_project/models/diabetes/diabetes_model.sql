{{ config(materialized='ml_train', model_type='linear_regression', label='progression', key='patient_id',
          learning_rate=0.1, epochs=200, batch_size=442, seed=1) }}
select * from {{ ref('diabetes') }}
