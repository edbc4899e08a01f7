"""The test harness that runs inside the sandbox (`python3 -I -S -c <this file>`; stdlib only).

Reads one marshal-ed dict on stdin: {"nonce", "code", "tests", "entry_point", "strict", "limits"} (marshal and
_ast are built in: importing json and ast would cost more than the interpreter's own start). Runs the candidate
code, then the tests (HumanEval `check(candidate)` or plain assert lines) with == / != / assert rewritten to
type-strict checks, and only when all of that returns normally writes the line "__REWARDS_PASS__ <nonce>" and
exits 0. sys.exit, os._exit, a crash or a timeout never reach that line.

The nonce is in no file, argument or environment variable of the sandbox, so printing a marker cannot forge a pass;
Python code in the same interpreter could still dig it out of the harness's own frames (introspection), which is
why the sandbox around this process, not the harness, is the security boundary."""

import _ast
import builtins
import marshal
import os
import sys


def _main():
    payload = marshal.loads(sys.stdin.buffer.read())
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
    _type, _all, _bool = type, all, bool
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
    tree = compile(tests, "<tests>", "exec", _ast.PyCF_ONLY_AST)
    if strict:
        tree = _strict(tree)
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


def _located(new, old):
    for name in ("lineno", "col_offset", "end_lineno", "end_col_offset"):
        setattr(new, name, getattr(old, name, 1))
    return new


def _strict(node):
    """a == b -> __rw_eq__(a, b); a != b -> not __rw_eq__(a, b); assert x -> assert __rw_truth__(x)."""
    for name in node._fields:
        value = getattr(node, name, None)
        if isinstance(value, list):
            setattr(node, name, [_strict(v) if isinstance(v, _ast.AST) else v for v in value])
        elif isinstance(value, _ast.AST):
            setattr(node, name, _strict(value))
    if isinstance(node, _ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (_ast.Eq, _ast.NotEq)):
        func = _located(_ast.Name("__rw_eq__", _ast.Load()), node)
        call = _located(_ast.Call(func, [node.left, node.comparators[0]], []), node)
        return call if isinstance(node.ops[0], _ast.Eq) else _located(_ast.UnaryOp(_ast.Not(), call), node)
    if isinstance(node, _ast.Assert):
        func = _located(_ast.Name("__rw_truth__", _ast.Load()), node.test)
        node.test = _located(_ast.Call(func, [node.test], []), node.test)
    return node


if __name__ == "__main__":
    _main()
