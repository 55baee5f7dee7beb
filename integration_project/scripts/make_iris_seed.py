"""Writes seeds/iris.csv from scikit-learn's bundled iris data, with SQLFlow's column names (its iris
example reads iris.train and iris.test); run once, the CSV is committed."""
import os

from sklearn.datasets import load_iris

data = load_iris()
path = os.path.join(os.path.dirname(__file__), "..", "seeds", "iris.csv")
with open(path, "w") as f:
    f.write("id,sepal_length,sepal_width,petal_length,petal_width,class\n")
    for i, (row, y) in enumerate(zip(data.data, data.target)):
        f.write(f"{i}," + ",".join(f"{v:.1f}" for v in row) + f",{y}\n")
