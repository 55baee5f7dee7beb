"""More of dbt-postgres' conformance suites: hooks, aliases, the relation cache, constraints. The ML
materializations wrap dbt's table, view and incremental ones; these check nothing of dbt's broke."""
from dbt.tests.adapter.aliases.test_aliases import (BaseAliasErrors, BaseAliases,
                                                    BaseSameAliasDifferentSchemas)
from dbt.tests.adapter.caching.test_caching import (BaseCachingLowercaseModel,
                                                    BaseCachingSelectedSchemaOnly,
                                                    BaseCachingUppercaseModel, BaseNoPopulateCache)
from dbt.tests.adapter.constraints.test_constraints import (BaseConstraintsRollback,
                                                            BaseIncrementalConstraintsColumnsEqual,
                                                            BaseTableConstraintsColumnsEqual,
                                                            BaseTableContractSqlHeader,
                                                            BaseViewConstraintsColumnsEqual)
from dbt.tests.adapter.hooks.test_model_hooks import (BaseHookRefs, BasePrePostModelHooks,
                                                      BasePrePostModelHooksInConfig,
                                                      BasePrePostModelHooksOnSeeds)
from dbt.tests.adapter.hooks.test_run_hooks import BaseAfterRunHooks, BasePrePostRunHooks
import pytest


class OurTarget:
    """The suites assert dbt-postgres' CI target (database dbt, user root, type postgres); the same
    checks against this suite's target."""

    @pytest.fixture(autouse=True)
    def _target(self, dbt_profile_target):
        self.target = dbt_profile_target

    def check_hooks(self, state, project, host, count=1):
        rows = project.run_sql(f"select test_state, target_dbname, target_name, target_schema, target_type, "
                               f"target_user, target_threads, run_started_at, invocation_id, thread_id from "
                               f"{project.test_schema}.{self.hook_table} where test_state = '{state}'", fetch="all")
        assert len(rows) == count, f"{len(rows)} rows for {state}, expected {count}"
        for row in rows:
            assert row[:7] == (state, self.target["dbname"], "default", project.test_schema, "sqlflow",
                               self.target["user"], self.target["threads"])
            assert row[7] and row[8] and (row[9].startswith("Thread-") or row[9] == "MainThread")


class TestPrePostModelHooks(OurTarget, BasePrePostModelHooks):
    hook_table = "on_model_hook"


class TestHookRefs(OurTarget, BaseHookRefs):
    hook_table = "on_model_hook"


class TestPrePostModelHooksInConfig(OurTarget, BasePrePostModelHooksInConfig):
    hook_table = "on_model_hook"


class TestPrePostModelHooksOnSeeds(BasePrePostModelHooksOnSeeds):
    pass


class TestPrePostRunHooks(OurTarget, BasePrePostRunHooks):
    hook_table = "on_run_hook"

    def check_hooks(self, state, project, host, count=1):
        super().check_hooks(state, project, host, count)


class TestAfterRunHooks(BaseAfterRunHooks):
    pass


class TestAliases(BaseAliases):
    pass


class TestAliasErrors(BaseAliasErrors):
    pass


class TestSameAliasDifferentSchemas(BaseSameAliasDifferentSchemas):
    pass


class TestCachingLowercaseModel(BaseCachingLowercaseModel):
    pass


class TestCachingUppercaseModel(BaseCachingUppercaseModel):
    pass


class TestCachingSelectedSchemaOnly(BaseCachingSelectedSchemaOnly):
    pass


class TestNoPopulateCache(BaseNoPopulateCache):
    pass


class TestTableConstraintsColumnsEqual(BaseTableConstraintsColumnsEqual):
    pass


class TestViewConstraintsColumnsEqual(BaseViewConstraintsColumnsEqual):
    pass


class TestIncrementalConstraintsColumnsEqual(BaseIncrementalConstraintsColumnsEqual):
    pass


class TestTableContractSqlHeader(BaseTableContractSqlHeader):
    pass


class TestConstraintsRollback(BaseConstraintsRollback):
    @pytest.fixture(scope="class")
    def expected_error_messages(self):
        return ["null value in column", "violates not-null constraint"]
