"""`dbt parse`, `dbt debug` and `dbt ls` must not pay for TensorFlow, scikit-learn or matplotlib."""
import json
import subprocess
import sys

import pytest

HEAVY = ["tensorflow", "keras", "sklearn", "scipy", "pandas", "matplotlib"]

CHECK = """
import json, sys
from dbt.cli.main import dbtRunner
result = dbtRunner().invoke(sys.argv[1:])
print(json.dumps({"ok": result.success, "loaded": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


class TestLazyImports:
    @pytest.fixture(scope="class")
    def models(self):
        return {"plain.sql": "select 1 as id"}

    @pytest.mark.parametrize("command", ["parse", "debug", "ls"])
    def test_no_heavy_imports(self, project, command):
        args = [command, "--project-dir", project.project_root, "--profiles-dir", project.profiles_dir]
        out = subprocess.run([sys.executable, "-c", CHECK, *args], capture_output=True, text=True,
                             timeout=300, cwd=project.project_root)
        report = json.loads(out.stdout.strip().splitlines()[-1])
        assert report["ok"], out.stdout + out.stderr
        assert report["loaded"] == []
