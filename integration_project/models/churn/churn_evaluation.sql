-- Held-out accuracy, precision, recall, F1, log loss and ROC AUC of the latest churn model.
select * from {{ ml_evaluate(ref('churn_model')) }}
