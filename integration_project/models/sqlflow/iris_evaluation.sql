SELECT * FROM {{ ref('iris_test') }}
TO EVALUATE {{ ref('iris_dnn') }}
WITH validation.metrics = "Accuracy,AUC"
LABEL class
INTO iris_evaluation;
