{{ config(materialized='cluster', model_type='dec', n_clusters=5, key='user_id', predict_only=['planted_group'],
          pretrained_model='user_autoencoder', run_pretrain=false, epochs=5, batch_size=256, seed=1,
          output_probabilities=true) }}
-- depends_on: {{ ref('user_autoencoder') }}
-- SQLFlow: SELECT * FROM users TO TRAIN clusterModel WITH model.encode_units = [100, 7],
--          model.n_clusters = 5, model.run_pretrain = false USING user_autoencoder INTO user_groups
select * from {{ ref('users') }}
