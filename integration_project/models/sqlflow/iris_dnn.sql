-- SQLFlow's iris example, as written for SQLFlow; only INTO names this file and FROM is a ref().
SELECT * FROM {{ ref('iris_train') }}
TO TRAIN DNNClassifier
WITH model.n_classes = 3, model.hidden_units = [10, 20], train.epoch = 100, train.batch_size = 16,
     optimizer.learning_rate = 0.01
COLUMN sepal_length, sepal_width, petal_length, petal_width
LABEL class
INTO iris_dnn;
