-- Why each test flower got its class: SHAP values of the predicted class's probability
SELECT * FROM {{ ref('iris_test') }}
TO EXPLAIN {{ ref('iris_dnn') }}
WITH background = 50, key = "id"
USING PermutationExplainer;
