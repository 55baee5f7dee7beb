"""A `sqlflow` node without a SQLFlow clause: its SELECT as an ordinary table (swapped in as the ML
nodes' tables are, with their hooks, grants and docs)."""

from dbt.adapters.sqlflow.jobs.context import JobContext, Outcome


class TableJob:
    def read(self, ctx: JobContext) -> None:
        return None

    def fit_and_write(self, ctx: JobContext, state) -> Outcome:
        with ctx.conn.cursor() as cur:
            cur.execute(f"create table {ctx.targets.main} as\n{ctx.sql.strip().rstrip(';')}")
            rows = max(cur.rowcount, 0)
        return Outcome(rows, 0, f"SELECT {rows}")

    def close(self, state) -> None:
        pass
