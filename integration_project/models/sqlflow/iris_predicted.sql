-- The test flowers with class replaced by the predicted class, as SQLFlow's TO PREDICT writes it.
SELECT * FROM {{ ref('iris_test') }}
TO PREDICT iris_predicted.class
USING {{ ref('iris_dnn') }};
