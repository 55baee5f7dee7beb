"""SQLFlow's extended SQL: a SELECT followed by one `TO TRAIN` / `TO PREDICT` / `TO EVALUATE` /
`TO EXPLAIN` clause (or SQLFlow's older spellings `TRAIN`, `PREDICT`, `ANALYZE`), split and parsed on
sqlglot's PostgreSQL tokens, so that keywords inside strings, comments and sub-selects never count.

SQLFlow's grammar (sql/extended_syntax_parser in sql-machine-learning/sqlflow), as we read it:

    TO TRAIN <model> [WITH attrs] [COLUMN columns] [LABEL col] [USING <model relation>] INTO <name>
    TO PREDICT <table>.<column> [WITH attrs] USING <model relation>
    TO EVALUATE <model relation> [WITH attrs] [LABEL col] [INTO <name>]
    TO EXPLAIN <model relation> [WITH attrs] [USING <explainer>] [INTO <name>]
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from dbt.adapters.sqlflow.errors import SqlflowError

VERBS = {"TRAIN": "train", "PREDICT": "predict", "EVALUATE": "evaluate", "EXPLAIN": "explain"}
BARE = {"TRAIN": "train", "PREDICT": "predict", "ANALYZE": "explain"}  # SQLFlow's older spellings
CLAUSE_WORDS = {"WITH", "COLUMN", "LABEL", "USING", "INTO"}


class StatementError(SqlflowError, ValueError):
    """The SQLFlow clause cannot be read: the message quotes where and what SQLFlow expects."""


@dataclass(frozen=True)
class Name:
    """A dotted name as written (`DNNClassifier`, `sqlflow_models.X`, a rendered `"db"."s"."t"`)."""

    parts: Tuple[str, ...]

    def __str__(self) -> str:
        return ".".join(self.parts)


class Text(str):
    """A quoted string argument of a feature column (a delimiter), printed back with its quotes."""

    def __repr__(self) -> str:
        return "'" + self.replace("'", "''") + "'"


@dataclass(frozen=True)
class ColumnSpec:
    """One COLUMN item: a plain column (`function` None, args = (name,)) or a feature column call
    such as NUMERIC(field, 3, ',') with its arguments (names, numbers, strings or nested specs)."""

    function: Optional[str]
    args: Tuple[Any, ...]

    def __str__(self) -> str:
        if self.function is None:
            return str(self.args[0])
        shown = [repr(a) if isinstance(a, Text) else str(a) for a in self.args]
        return f"{self.function}({', '.join(shown)})"


@dataclass
class Clause:
    verb: str  # train | predict | evaluate | explain
    select: str  # the SELECT before the clause
    subject: Name  # TRAIN: the model class; PREDICT: table.column; EVALUATE/EXPLAIN: the model
    attributes: Dict[str, Any] = field(default_factory=dict)
    columns: List[ColumnSpec] = field(default_factory=list)
    label: Optional[str] = None
    using: Optional[Name] = None
    into: Optional[Name] = None


def split(sql: str) -> Optional[Clause]:
    """The statement's SQLFlow clause, or None for a plain SELECT (an ordinary table)."""
    from sqlglot.dialects.dialect import Dialect
    from sqlglot.errors import TokenError

    try:
        tokens = Dialect.get_or_raise("postgres").tokenize(sql)
    except TokenError as exc:
        raise StatementError(f"the model's SQL cannot be read: {exc}") from None
    depth = 0
    for i, token in enumerate(tokens):
        kind = token.token_type.name
        depth += 1 if kind == "L_PAREN" else -1 if kind == "R_PAREN" else 0
        if depth or i == 0:
            continue
        text = _word(token)
        nxt = _word(tokens[i + 1]) if i + 1 < len(tokens) else ""
        if text == "TO" and nxt in VERBS:  # unambiguous: TO never starts a clause of a SELECT
            return _parse(sql, tokens, i + 1, VERBS[nxt])
        if text in BARE and _word(tokens[i - 1]) not in ("AS", ",", ".", "SELECT"):
            try:  # a bare keyword might be a column alias: it counts only if a clause follows
                return _parse(sql, tokens, i, BARE[text])
            except StatementError:
                continue
    return None


def _parse(sql: str, tokens, at: int, verb: str) -> Clause:
    start = tokens[at - 1].start if tokens[at - 1].text.upper() == "TO" else tokens[at].start
    select = sql[:start].rstrip()
    if not select:
        raise StatementError("the statement needs a SELECT before its TO ... clause.")
    return _Parser(tokens, at + 1, verb).clause(select)


class _Parser:
    def __init__(self, tokens, pos: int, verb: str):
        self.tokens, self.pos, self.verb = tokens, pos, verb

    # ---- token helpers

    def peek(self, ahead: int = 0):
        i = self.pos + ahead
        return self.tokens[i] if i < len(self.tokens) else None

    def word(self, ahead: int = 0) -> str:
        t = self.peek(ahead)
        return "" if t is None else _word(t)

    def take(self):
        t = self.peek()
        if t is None:
            raise self.error("the statement ends early")
        self.pos += 1
        return t

    def expect(self, text: str) -> None:
        if self.word() != text:
            raise self.error(f"expected {text}")
        self.pos += 1

    def error(self, what: str) -> StatementError:
        t = self.peek()
        near = f"near '{t.text}' (line {t.line})" if t is not None else "at the end"
        return StatementError(
            f"cannot read the TO {self.verb.upper()} clause {near}: {what}. SQLFlow's form is "
            f"{_FORMS[self.verb]}."
        )

    # ---- grammar

    def clause(self, select: str) -> Clause:
        subject = self.relation() if self.verb in ("evaluate", "explain") else self.name()
        clause = Clause(self.verb, select, subject)
        seen = set()
        while self.peek() is not None and self.word() != ";":
            word = self.word()
            if word not in CLAUSE_WORDS or word in seen:
                raise self.error(
                    f"'{self.peek().text}' is not expected here"
                    + (" (given twice)" if word in seen else "")
                )
            seen.add(word)
            self.pos += 1
            if word == "WITH":
                clause.attributes = self.attributes()
            elif word == "COLUMN":
                clause.columns = self.columns()
            elif word == "LABEL":
                clause.label = self.label()
            elif word == "USING":
                clause.using = self.relation()
            else:
                clause.into = self.name()
        if self.word() == ";":
            self.pos += 1
        if self.peek() is not None:
            raise self.error("nothing may follow the semicolon")
        return clause

    def relation(self) -> Name:
        """A model's relation: a rendered ref(), which `dbt run --empty` renders as a sub-select
        `(select * from <relation> where false limit 0) _dbt_limit_subq_<name>`."""
        if self.word() != "(":
            return self.name()
        depth, start = 0, self.pos
        while self.peek() is not None:
            word = self.word()
            depth += 1 if word == "(" else -1 if word == ")" else 0
            self.pos += 1
            if depth == 0:
                break
        inner = self.tokens[start : self.pos]
        after_from = [i for i, t in enumerate(inner) if _word(t) == "FROM"]
        if not after_from:
            self.pos = start
            raise self.error("expected a model (a ref())")
        found = _Parser(inner, after_from[0] + 1, self.verb).name()
        if self.peek() is not None and _is_word(self.peek()) and self.word() not in CLAUSE_WORDS:
            self.pos += 1  # the sub-select's alias
        return found

    def name(self) -> Name:
        parts = [self._part()]
        while self.word() == ".":
            self.pos += 1
            parts.append(self._part(after_dot=True))  # `result.label`: a keyword is a name here
        return Name(tuple(parts))

    def _part(self, after_dot: bool = False) -> str:
        t = self.peek()
        keyword = self.word() in CLAUSE_WORDS and not after_dot
        if t is None or (t.token_type.name != "IDENTIFIER" and (keyword or not _is_word(t))):
            raise self.error("expected a name")
        self.pos += 1
        return t.text

    def label(self) -> str:
        t = self.take()
        if t.token_type.name in ("STRING", "IDENTIFIER") or _is_word(t):
            return t.text
        self.pos -= 1
        raise self.error("expected the label column")

    def attributes(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        while True:
            key = str(self.name())
            self.expect("=")
            out[key] = self.value()
            if self.word() != ",":
                return out
            self.pos += 1

    def value(self) -> Any:
        t = self.take()
        kind = t.token_type.name
        if t.text == "[":
            items = []
            while self.word() != "]":
                items.append(self.value())
                if self.word() == ",":
                    self.pos += 1
            self.pos += 1
            return items
        if t.text == "-" and self.peek() is not None and self.peek().token_type.name == "NUMBER":
            return -self._number(self.take().text)
        if kind == "NUMBER":
            return self._number(t.text)
        if kind in ("STRING", "IDENTIFIER"):  # SQLFlow writes strings in double quotes
            return t.text
        if kind in ("TRUE", "FALSE"):
            return kind == "TRUE"
        if _is_word(t) and t.text.upper() not in CLAUSE_WORDS:  # e.g. optimizer.Adam or mean
            self.pos -= 1
            return str(self.name())
        self.pos -= 1
        raise self.error("expected a value (a number, a string, true/false or [a, list])")

    @staticmethod
    def _number(text: str):
        return float(text) if any(c in text for c in ".eE") else int(text)

    def columns(self) -> List[ColumnSpec]:
        out = [self.column()]
        while self.word() == ",":
            self.pos += 1
            out.append(self.column())
        if self.word() == "FOR":
            raise self.error(
                "COLUMN ... FOR (feature columns per model part) is not supported; list every "
                "column in one COLUMN"
            )
        return out

    def column(self) -> ColumnSpec:
        name = self.name()
        if self.word() != "(":
            return ColumnSpec(None, (str(name),))
        self.pos += 1
        args: List[Any] = []
        while self.word() != ")":
            t = self.peek()
            if t is not None and _is_word(t) and self.word(1) == "(":
                args.append(self.column())
            elif t is not None and (t.token_type.name == "IDENTIFIER" or _is_word(t)):
                args.append(str(self.name()))
            else:
                value = self.value()
                args.append(Text(value) if isinstance(value, str) else value)
            if self.word() == ",":
                self.pos += 1
            elif self.word() != ")":
                raise self.error("expected , or )")
        self.pos += 1
        return ColumnSpec(str(name).upper(), tuple(args))


def _word(token) -> str:
    """The token as a keyword or punctuation, upper-cased; '' for quoted names and strings."""
    quoted = token.token_type.name in ("IDENTIFIER", "STRING", "NATIONAL_STRING", "RAW_STRING")
    return "" if quoted else token.text.upper()


def _is_word(token) -> bool:
    return token.text[:1].isalpha() or token.text[:1] == "_"


_FORMS = {
    "train": "SELECT ... TO TRAIN <model> WITH k = v, ... COLUMN c1, ... LABEL <column> "
    "[USING {{ ref('pretrained') }}] INTO <this model's name>",
    "predict": "SELECT ... TO PREDICT <this model's name>.<column> USING {{ ref('model') }}",
    "evaluate": "SELECT ... TO EVALUATE {{ ref('model') }} WITH validation.metrics = \"Accuracy,AUC\" "
    "LABEL <column> INTO <this model's name>",
    "explain": "SELECT ... TO EXPLAIN {{ ref('model') }} [WITH k = v, ...] [USING <explainer>]",
}
