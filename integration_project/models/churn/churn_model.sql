{{ config(materialized='ml_train', model_type='logistic_regression', label='churned', key='customer',
          learning_rate=0.05, epochs=30, batch_size=512, l2=0.0001, validation_split=0.2, seed=7,
          class_weight='balanced') }}
select * from {{ ref('churn_training') }}
