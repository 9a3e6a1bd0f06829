"""A small OData `$filter` parser, for the filters ARM's authorization APIs accept.

ARM answers "The filter '…' is not supported" for anything outside a short list, so the emulator parses the
expression into a tree and lets each API decide which shapes it supports, instead of string-matching the raw
query (the SDKs encode quotes differently per operation; see the wire notes §7.8).

Grammar (a subset of OData v4): or/and/not, comparisons (eq ne gt ge lt le), function calls such as
`atScope()` and `assignedTo('id')`, parentheses, string literals with '' escaping, numbers, true/false/null.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


class ODataError(ValueError):
    """A filter that is not syntactically valid OData."""


@dataclass(frozen=True)
class Field:
    name: str


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Compare:
    op: str
    left: Any
    right: Any


@dataclass(frozen=True)
class And:
    left: Any
    right: Any


@dataclass(frozen=True)
class Or:
    left: Any
    right: Any


@dataclass(frozen=True)
class Not:
    expr: Any


Node = Field | Literal | Call | Compare | And | Or | Not

COMPARISONS = {"eq", "ne", "gt", "ge", "lt", "le"}
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^']|'')*')
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<ident>[A-Za-z_$][A-Za-z0-9_$./]*)
      | (?P<punct>[(),])
    )""",
    re.VERBOSE,
)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            raise ODataError(f"unexpected character at position {pos}: {text[pos : pos + 10]!r}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str):
        self.tokens = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise ODataError("unexpected end of filter")
        self.i += 1
        return tok

    def keyword(self, word: str) -> bool:
        tok = self.peek()
        if tok and tok[0] == "ident" and tok[1].lower() == word:
            self.i += 1
            return True
        return False

    def expect(self, punct: str) -> None:
        kind, value = self.take()
        if kind != "punct" or value != punct:
            raise ODataError(f"expected {punct!r}, found {value!r}")

    def parse(self) -> Node:
        node = self.or_expr()
        if self.peek() is not None:
            raise ODataError(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return node

    def or_expr(self) -> Node:
        node = self.and_expr()
        while self.keyword("or"):
            node = Or(node, self.and_expr())
        return node

    def and_expr(self) -> Node:
        node = self.unary()
        while self.keyword("and"):
            node = And(node, self.unary())
        return node

    def unary(self) -> Node:
        if self.keyword("not"):
            return Not(self.unary())
        tok = self.peek()
        if tok == ("punct", "("):
            self.take()
            node = self.or_expr()
            self.expect(")")
            return node
        left = self.operand()
        nxt = self.peek()
        if nxt and nxt[0] == "ident" and nxt[1].lower() in COMPARISONS:
            self.take()
            return Compare(nxt[1].lower(), left, self.operand())
        return left

    def operand(self) -> Node:
        kind, value = self.take()
        if kind == "string":
            return Literal(value[1:-1].replace("''", "'"))
        if kind == "number":
            return Literal(float(value) if "." in value else int(value))
        if kind == "ident":
            if self.peek() == ("punct", "("):
                self.take()
                args: list[Node] = []
                if self.peek() != ("punct", ")"):
                    args.append(self.operand())
                    while self.peek() == ("punct", ","):
                        self.take()
                        args.append(self.operand())
                self.expect(")")
                return Call(value, tuple(args))
            low = value.lower()
            if low in ("true", "false"):
                return Literal(low == "true")
            if low == "null":
                return Literal(None)
            return Field(value)
        raise ODataError(f"unexpected {value!r}")


def parse(text: str) -> Node:
    """Parse a decoded `$filter` value into a tree; raise ODataError when it is not valid OData."""
    if not text.strip():
        raise ODataError("empty filter")
    return _Parser(text).parse()


def conjuncts(node: Node) -> list[Node]:
    """`a and b and c` -> [a, b, c]; any other node -> [node]."""
    if isinstance(node, And):
        return conjuncts(node.left) + conjuncts(node.right)
    return [node]


def field_eq(node: Node) -> tuple[str, Any] | None:
    """`name eq 'value'` (either way round) -> ("name", "value"); otherwise None."""
    if isinstance(node, Compare) and node.op == "eq":
        if isinstance(node.left, Field) and isinstance(node.right, Literal):
            return node.left.name, node.right.value
        if isinstance(node.right, Field) and isinstance(node.left, Literal):
            return node.right.name, node.left.value
    return None


def call_args(node: Node, name: str) -> tuple[Any, ...] | None:
    """`name(args…)` with literal args -> their values; otherwise None. Function names are case-insensitive."""
    if isinstance(node, Call) and node.name.lower() == name.lower():
        if all(isinstance(a, Literal) for a in node.args):
            return tuple(a.value for a in node.args)
    return None
