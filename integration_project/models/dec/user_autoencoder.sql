{{ config(materialized='ml_train', model_type='autoencoder', key='user_id', exclude=['planted_group'],
          encode_units=[100, 7], epochs=20, batch_size=256, learning_rate=0.005, seed=1) }}
select * from {{ ref('users') }}
