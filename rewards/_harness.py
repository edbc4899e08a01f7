"""The test harness that runs inside the sandbox (`python3 -I -S -c <this file>`; stdlib only).

Reads one JSON payload on stdin: {"nonce", "code", "tests", "entry_point", "strict", "limits"}. Runs the candidate
code, then the tests (HumanEval `check(candidate)` or plain assert lines) with == / != / assert rewritten to
type-strict checks, and only when all of that returns normally writes the line "__REWARDS_PASS__ <nonce>" and
exits 0. sys.exit, os._exit, a crash or a timeout never reach that line."""

import ast
import builtins
import json
import os
import sys


def _main():
    payload = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    fd = os.open("/dev/null", os.O_RDONLY)
    os.dup2(fd, 0)
    os.close(fd)
    try:
        import resource

        for name, value in (payload.get("limits") or {}).items():
            resource.setrlimit(getattr(resource, name), (value, value))
    except (ImportError, ValueError, OSError):
        pass
    marker = ("\n__REWARDS_PASS__ " + payload.pop("nonce") + "\n").encode()
    ok = _run(payload["code"], payload["tests"], payload.get("entry_point"), payload.get("strict", True))
    if ok is True:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os.write(1, marker)
            os._exit(0)
    os._exit(1)


def _run(code, tests, entry_point, strict):
    plain_types = frozenset([int, float, complex, str, bytes, bool, type(None), list, tuple, dict, set, frozenset])
    _type, _isinstance, _len, _all, _bool = type, isinstance, len, all, bool
    clean_builtins = dict(builtins.__dict__)

    def plain(value, depth=0):
        kind = _type(value)
        if kind not in plain_types or depth > 50:
            return False
        if kind in (list, tuple, set, frozenset):
            return _all(plain(v, depth + 1) for v in value)
        if kind is dict:
            return _all(plain(k, depth + 1) and plain(v, depth + 1) for k, v in value.items())
        return True

    def strict_eq(a, b):
        if not (plain(a) and plain(b)):
            raise AssertionError("comparison with a value that is not a built-in type")
        return _bool(a == b)

    def strict_truth(value):
        if _type(value) is bool:
            return value
        if not plain(value):
            raise AssertionError("assertion on a value that is not a built-in type")
        return _bool(value)

    def strict_call(fn):
        def candidate(*args, **kwargs):
            result = fn(*args, **kwargs)
            if not plain(result):
                raise AssertionError("the candidate returned a value that is not a built-in type")
            return result
        return candidate

    namespace = {"__name__": "__candidate__", "__builtins__": builtins}
    exec(compile(code, "<candidate>", "exec"), namespace)
    tree = ast.parse(tests, "<tests>", "exec")
    if strict:
        tree = ast.fix_missing_locations(_Strict().visit(tree))
    scope = dict(namespace)
    scope.update({"__builtins__": clean_builtins, "__name__": "__tests__",
                  "__rw_eq__": strict_eq, "__rw_truth__": strict_truth})
    exec(compile(tree, "<tests>", "exec"), scope)
    if entry_point:
        check, fn = scope.get("check"), namespace.get(entry_point)
        if not callable(check) or not callable(fn):
            return False
        check(strict_call(fn) if strict else fn)
    return True


class _Strict(ast.NodeTransformer):
    """a == b -> __rw_eq__(a, b); a != b -> not __rw_eq__(a, b); assert x -> assert __rw_truth__(x)."""

    def visit_Compare(self, node):
        self.generic_visit(node)
        if len(node.ops) == 1 and isinstance(node.ops[0], (ast.Eq, ast.NotEq)):
            call = ast.Call(ast.Name("__rw_eq__", ast.Load()), [node.left, node.comparators[0]], [])
            return call if isinstance(node.ops[0], ast.Eq) else ast.UnaryOp(ast.Not(), call)
        return node

    def visit_Assert(self, node):
        self.generic_visit(node)
        node.test = ast.Call(ast.Name("__rw_truth__", ast.Load()), [node.test], [])
        return node


if __name__ == "__main__":
    _main()
