"""The wheel ships only our namespace folders, with the macros and the plugin's dbt_project.yml."""
import os
import subprocess
import sys
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_wheel_contents(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), REPO],
        check=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("dbt_sqlflow-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    ours = [n for n in names if ".dist-info/" not in n]
    assert ours and all(n.startswith(("dbt/adapters/sqlflow/", "dbt/include/sqlflow/")) for n in ours), ours
    assert "dbt/__init__.py" not in names and "dbt/adapters/__init__.py" not in names
    for required in ["dbt/adapters/sqlflow/__init__.py", "dbt/adapters/sqlflow/__version__.py",
                     "dbt/adapters/sqlflow/data/reader.py", "dbt/include/sqlflow/dbt_project.yml",
                     "dbt/include/sqlflow/__init__.py"]:
        assert required in names
    include = os.path.join(REPO, "dbt", "include", "sqlflow")
    shipped_macros = {n for n in names if n.startswith("dbt/include/sqlflow/macros/")}
    repo_macros = {
        os.path.relpath(os.path.join(d, f), REPO).replace(os.sep, "/")
        for d, _, files in os.walk(os.path.join(include, "macros")) for f in files if f.endswith(".sql")
    }
    assert shipped_macros == repo_macros
