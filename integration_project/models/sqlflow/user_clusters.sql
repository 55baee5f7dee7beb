-- The SQLFlow cluster design's statement: DEC on the encoder of a pretrained autoencoder, used as it
-- is (run_pretrain = false). USING is a ref(), so dbt trains user_autoencoder first.
SELECT * FROM {{ ref('users') }}
TO TRAIN clusterModel
WITH model.encode_units = [100, 7], model.n_clusters = 5, model.run_pretrain = false, train.epoch = 5
COLUMN m1, m2, m3, m4, m5, m6, m7, m8, m9, m10
USING {{ ref('user_autoencoder') }}
INTO user_clusters;
