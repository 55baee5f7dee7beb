"""Writes seeds/diabetes.csv from scikit-learn's bundled diabetes data (run once; the CSV is committed)."""
import os

from sklearn.datasets import load_diabetes

data = load_diabetes()
path = os.path.join(os.path.dirname(__file__), "..", "seeds", "diabetes.csv")
with open(path, "w") as f:
    f.write("patient_id," + ",".join(data.feature_names) + ",progression\n")
    for i, (row, y) in enumerate(zip(data.data, data.target)):
        f.write(f"{i}," + ",".join(f"{v:.8f}" for v in row) + f",{y:.1f}\n")
