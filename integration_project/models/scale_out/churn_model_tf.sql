-- churn_model trained with tf.distribute.MultiWorkerMirroredStrategy on two worker processes on
-- loopback ports; in production, tf_cluster={'worker': ['host1:12345', 'host2:12345']} with
-- tf_launcher='ssh {host}' (or the profile's defaults). Each worker reads its own shard.
{{ config(materialized='ml_train', model_type='logistic_regression', label='churned', key='customer',
          learning_rate=0.05, epochs=30, batch_size=512, l2=0.0001, validation_split=0.2, seed=7,
          class_weight='balanced', engine='tf_multiworker', tf_cluster='local[2]') }}
select * from {{ ref('churn_training') }}
