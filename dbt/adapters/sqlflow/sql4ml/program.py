"""A sql4ml program: CTEs and a final SELECT of one scalar, over data relations and declared weights."""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

from dbt.adapters.sqlflow.errors import SqlflowError


class ProgramError(SqlflowError, ValueError):
    """The program cannot be translated; the message names the construct, where it is and what works."""


@dataclass(frozen=True)
class WeightSpec:
    """A declared weight: a relation (index columns..., value) that does not exist and is learned."""

    name: str
    index: Tuple[str, ...]
    size: Mapping[str, int] = field(default_factory=dict)  # index columns no data provides: 0..n-1
    init: str = "normal"
    scale: float = 0.01


def weight_specs(config: Mapping[str, Any]) -> Dict[str, WeightSpec]:
    """`weights={'w': ['feature'], 'b': [], 'v': {'index': ['feature', 'factor'], 'size': {'factor': 8}}}`."""
    specs = {}
    for name, spec in config.items():
        if isinstance(spec, (list, tuple)):
            spec = {"index": list(spec)}
        if not isinstance(spec, dict) or not isinstance(spec.get("index", []), (list, tuple)):
            raise ProgramError(
                f"weights['{name}'] must be a list of index columns or "
                f"{{'index': [...], 'size': {{...}}}}; got {spec!r}."
            )
        unknown = set(spec) - {"index", "size", "init", "scale"}
        if unknown:
            raise ProgramError(
                f"weights['{name}'] has unknown key(s) {sorted(unknown)}; use index, size, "
                f"init, scale."
            )
        specs[name.lower()] = WeightSpec(
            name.lower(),
            tuple(c.lower() for c in spec.get("index", [])),
            {k.lower(): int(v) for k, v in (spec.get("size") or {}).items()},
            spec.get("init", "normal"),
            float(spec.get("scale", 0.01)),
        )
    return specs


def _arg(node, name: str):
    """sqlglot renamed `from`/`with` to `from_`/`with_`; read either."""
    return (
        node.args.get(name + "_") if node.args.get(name + "_") is not None else node.args.get(name)
    )


def position(text: str, node) -> str:
    """`line L, column C` where a node starts in the program text, from the parser's token offsets."""
    starts = [n.meta["start"] for n in node.walk() if "start" in getattr(n, "meta", {})]
    if starts:
        at = min(starts)
    else:  # a node built without tokens: its first occurrence in the text
        at = text.lower().find(node.sql(dialect="postgres").lower()[:40])
        if at < 0:
            return "position unknown"
    line = text.count("\n", 0, at) + 1
    return f"line {line}, column {at - (text.rfind(chr(10), 0, at) + 1) + 1}"


def referenced_tables(select) -> Set[str]:
    """Relation names a SELECT reads, in its FROM, joins and subqueries (not set-returning functions
    such as generate_series, which name no relation)."""
    return {t.name.lower() for t in named_tables(select)}


def named_tables(select) -> List[Any]:
    from sqlglot import exp

    return [t for t in select.find_all(exp.Table) if isinstance(t.this, exp.Identifier)]


@dataclass
class Program:
    text: str
    ctes: Dict[str, Any]  # name -> sqlglot Select, in program order
    final: Any
    weights: Dict[str, WeightSpec]
    model: List[str]  # CTEs that depend on a weight (translated), in order
    data: List[str]  # CTEs that do not (run in PostgreSQL)
    unused: List[str] = field(default_factory=list)  # declared weights nothing reads (left out)

    @classmethod
    def parse(cls, text: str, weights: Mapping[str, WeightSpec]) -> "Program":
        import sqlglot
        from sqlglot import exp

        try:
            tree = sqlglot.parse_one(text, read="postgres")
        except sqlglot.errors.ParseError as error:
            raise ProgramError(f"the program is not valid PostgreSQL SQL: {error}") from None
        if not isinstance(tree, exp.Select):
            raise ProgramError(
                "the program must be one SELECT (with CTEs) ending in the objective."
            )
        with_ = _arg(tree, "with")
        ctes = {c.alias.lower(): c.this for c in (with_.expressions if with_ else [])}
        final = tree.copy()
        final.set("with_" if "with_" in final.args else "with", None)
        model = cls._weight_dependent(ctes, weights)
        program = cls(text, ctes, final, dict(weights), model, [n for n in ctes if n not in model])
        program._check()
        return program

    @staticmethod
    def _weight_dependent(ctes: Mapping[str, Any], weights: Mapping[str, WeightSpec]) -> List[str]:
        dependent: Set[str] = set()
        for name, select in ctes.items():  # a CTE reads only CTEs before it
            if referenced_tables(select) & (set(weights) | dependent):
                dependent.add(name)
        return [n for n in ctes if n in dependent]

    def _check(self) -> None:
        for name in self.ctes:
            if name in self.weights:
                raise ProgramError(
                    f"'{name}' is both a CTE and a declared weight; rename one of them."
                )
        used = set().union(
            *(referenced_tables(self.ctes[n]) for n in self.model), referenced_tables(self.final)
        )
        self.unused = [w for w in self.weights if w not in used]
        for (
            name
        ) in self.unused:  # a warning, not an error: it is left out of training and the table
            del self.weights[name]
        if len(self.final.expressions) != 1 or _arg(self.final, "group") is not None:
            raise ProgramError(
                f"the objective ({position(self.text, self.final.expressions[0])}) must be one "
                f"scalar: the final SELECT returns one aggregate (e.g. avg(...)) with no GROUP BY; "
                f"it returns {len(self.final.expressions)} column(s)"
                + (" per group" if _arg(self.final, "group") is not None else "")
                + "."
            )
        known = set(self.ctes) | set(self.weights)
        for scope, select in [(n, self.ctes[n]) for n in self.model] + [
            ("the objective", self.final)
        ]:
            strangers = sorted(referenced_tables(select) - known)
            if strangers:
                from sqlglot import exp

                first = next(
                    t for t in select.find_all(exp.Table) if t.name.lower() == strangers[0]
                )
                raise ProgramError(
                    f"{scope} ({position(self.text, first)}) reads "
                    f"{', '.join(repr(s) for s in strangers)}, which is neither a CTE of the program nor "
                    f"a declared weight: read tables in a data CTE (one that uses no weight), or declare the "
                    f"weight in config(weights={{...}})."
                )

    def data_sql(self, name: str) -> str:
        """A data CTE as a SELECT PostgreSQL can run alone, with the data CTEs it reads."""
        needed, stack = [], [name]
        while stack:
            current = stack.pop()
            if current in needed:
                continue
            needed.append(current)
            stack += [
                t for t in referenced_tables(self.ctes[current]) if t in self.ctes and t != current
            ]
        order = [n for n in self.data if n in needed and n != name]
        prefix = ", ".join(f"{n} as ({self.ctes[n].sql(dialect='postgres')})" for n in order)
        body = self.ctes[name].sql(dialect="postgres")
        return f"with {prefix} {body}" if prefix else body

    def scopes(self) -> List[Tuple[str, Any]]:
        """The translated SELECTs: model CTEs in order, then the objective."""
        return [(n, self.ctes[n]) for n in self.model] + [("the objective", self.final)]


def columns_of(select) -> Optional[List[str]]:
    """Output column names of a SELECT (alias or column name), or None where one has no name."""
    names = []
    for e in select.expressions:
        names.append(e.alias_or_name.lower() if e.alias_or_name else None)
    return names if all(names) else None
