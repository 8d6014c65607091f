"""The package's shape as a newcomer meets it: modules, the longest functions, their complexity.

    python benchmarks/code_shape.py            # the table, for the restructuring's before/after
    python benchmarks/code_shape.py --top 20

Complexity is McCabe's, counted on the AST: 1 + one per branch point (if/elif, loops, except
handlers, boolean operators, conditional expressions, comprehension conditions, match cases).
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "vocabshrink"
_BRANCHES = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.ExceptHandler, ast.IfExp, ast.Assert, ast.match_case)


def complexity(node: ast.AST) -> int:
    """McCabe complexity of one function, nested functions included (they are part of what one reads)."""
    score = 1
    for child in ast.walk(node):
        if isinstance(child, _BRANCHES):
            score += 1
        elif isinstance(child, ast.BoolOp):
            score += len(child.values) - 1
        elif isinstance(child, ast.comprehension):
            score += len(child.ifs)
    return score


def functions(root: Path = PACKAGE) -> list[tuple[int, int, str]]:
    """(lines, complexity, module:qualified name) of every function and method under `root`."""
    out = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(root).as_posix()

        def visit(node: ast.AST, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    name = f"{prefix}{child.name}"
                    out.append((child.end_lineno - child.lineno + 1, complexity(child), f"{rel}:{name}"))
                    visit(child, name + ".")
                elif isinstance(child, ast.ClassDef):
                    visit(child, f"{prefix}{child.name}.")

        visit(tree, "")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--top", type=int, default=10)
    args = ap.parse_args()
    modules = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py"))
    print(f"{len(modules)} modules:")
    for m in modules:
        print(f"  {m} ({len((PACKAGE / m).read_text(encoding='utf-8').splitlines())} lines)")
    funcs = sorted(functions(), reverse=True)
    print(f"\n{args.top} longest functions (lines, complexity):")
    for lines, cc, name in funcs[: args.top]:
        print(f"  {lines:4d} {cc:4d}  {name}")
    print(f"\nfunctions over 80 lines: {sum(1 for f in funcs if f[0] > 80)}; over 50: {sum(1 for f in funcs if f[0] > 50)}")
    top_cc = max(funcs, key=lambda f: f[1])
    print(f"most complex: {top_cc[2]} ({top_cc[1]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
