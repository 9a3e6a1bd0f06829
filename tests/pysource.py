"""Parse Python source in tests that read the portal's own code.

CPython 3.11 keeps the AST constructor's recursion counter per interpreter, not per call, so an `ast.parse` that
runs while another thread of the test process (the emulator, a worker) is building an AST can fail with
"SystemError: AST constructor recursion depth mismatch" (python/cpython#106905, fixed in 3.12). The source is
fine; parsing it again gives the right tree.
"""

from __future__ import annotations

import ast


def parse(source: str, filename: str = "<unknown>") -> ast.Module:
    for _attempt in range(4):
        try:
            return ast.parse(source, filename)
        except SystemError as error:  # only the race above; a real syntax error is a SyntaxError
            if "recursion depth mismatch" not in str(error):
                raise
            last = error
    raise last
