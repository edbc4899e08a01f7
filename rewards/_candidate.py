"""The candidate side: runs inside the sandbox after rewards/_wire.py's source (`python3 -I -S -c`, stdlib only).

It holds no test, no expected value and nothing that decides the verdict: it loads the program, then answers the
judge's requests over its inherited stdin/stdout pipes (fds 0 and 1 are then pointed at /dev/null, so the
program's own prints go nowhere):
  ("function", code, cap) -> ("ok", [callable top-level names], {name: module it imported}) | ("err", type name)
      ("c", name, args, kwargs) -> ("v", value) | ("e", exception type name) | ("x",) not a built-in value
  ("stdio", code, cap) -> ("ok", [], {}) | ("err", name)
      ("r", input bytes) -> ("o", exited cleanly, stdout bytes (up to cap + 1)): one forked run of the program
  ("tool", [cell, ...], cap) -> ("t", stdout of the last cell (up to cap + 1 chars), its error's last line | None):
      the cells run in order in one namespace (an interpreter session replayed); only the last one's output is kept
A SystemExit or other BaseException out of a call ends this process, which the judge scores as a failure."""


def _read_exact(fd, n):
    chunks = []
    while n:
        chunk = _os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _recv(fd):
    size = int(_read_exact(fd, 8), 16)
    if size > MAX_FRAME:
        raise EOFError
    return loads(_read_exact(fd, size))


def _send(fd, value):
    try:
        data = dumps(value)
    except BaseException:
        data = dumps(("x",))
    write_frame(_os.write, fd, data)


def _builtin_name(error):
    import builtins

    for cls in type(error).__mro__:
        if builtins.__dict__.get(cls.__name__) is cls:
            return cls.__name__
    return "Exception"


def _serve_stdio(program, rfd, wfd, cap):
    while True:
        _, data = _recv(rfd)
        source, sink = _os.memfd_create("stdin"), _os.memfd_create("stdout")
        view = memoryview(data)
        while view:
            view = view[_os.write(source, view):]
        _os.lseek(source, 0, 0)
        pid = _os.fork()
        if pid == 0:
            status = 1
            try:
                _os.dup2(source, 0)
                _os.dup2(sink, 1)
                _os.close(rfd)
                _os.close(wfd)
                try:
                    exec(program, {"__name__": "__main__", "__builtins__": __builtins__})
                    status = 0
                except SystemExit as error:
                    status = 0 if error.code in (None, 0) else 1
                _sys.stdout.flush()
            finally:
                _os._exit(status)
        _, wait_status = _os.waitpid(pid, 0)
        _os.lseek(sink, 0, 0)
        output = _read_up_to(sink, cap + 1)
        _os.close(source)
        _os.close(sink)
        _send(wfd, ("o", _os.WIFEXITED(wait_status) and _os.WEXITSTATUS(wait_status) == 0, output))


def _read_up_to(fd, n):
    chunks = []
    while n > 0:
        chunk = _os.read(fd, min(n, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _serve_calls(namespace, rfd, wfd):
    while True:
        _, name, args, kwargs = _recv(rfd)
        try:
            result = namespace[name](*args, **kwargs)
        except Exception as error:
            _send(wfd, ("e", _builtin_name(error)))
            continue
        _send(wfd, ("v", result))


class _Capped:
    """sys.stdout for a tool cell: keeps the first cap + 1 characters written, drops the rest."""

    def __init__(self, cap):
        self.cap, self.parts, self.size = cap, [], 0

    def write(self, text):
        if type(text) is not str:
            raise TypeError("write() argument must be str")
        room = self.cap + 1 - self.size
        if room > 0:
            self.parts.append(text[:room])
            self.size += min(len(text), room)
        return len(text)

    def flush(self):
        pass


def _error_line(error):
    try:
        message = str(error)
    except BaseException:
        message = ""
    name = type(error).__name__
    line = (name + ": " + message) if type(message) is str and message else name
    return line[:1000] if type(line) is str else "Exception"


def _run_cells(cells, cap):
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    sink, error = _Capped(cap), None
    for i, cell in enumerate(cells):
        last = i == len(cells) - 1
        _sys.stdout = sink if last else _Capped(0)
        try:
            exec(compile(cell, "<cell>", "exec"), namespace)
        except BaseException as caught:
            if last:
                error = _error_line(caught)
    _sys.stdout = _sys.__stdout__
    return ("t", "".join(sink.parts)[:cap + 1], error)


def _main():
    rfd, wfd = _os.dup(0), _os.dup(1)
    null = _os.open("/dev/null", _os.O_RDWR)
    for fd in (0, 1, 2):
        _os.dup2(null, fd)
    _os.close(null)
    mode, code, cap = _recv(rfd)
    if mode == "tool":
        _send(wfd, _run_cells(code, cap))
        return
    try:
        program = compile(code, "<candidate>", "exec")
    except BaseException as error:
        _send(wfd, ("err", _builtin_name(error)))
        return
    if mode == "stdio":
        _send(wfd, ("ok", [], {}))
        _serve_stdio(program, rfd, wfd, cap)
        return
    namespace = {"__name__": "__candidate__", "__builtins__": __builtins__}
    try:
        exec(program, namespace)
    except BaseException as error:
        _send(wfd, ("err", _builtin_name(error)))
        return
    items = list(namespace.items())
    modules = {k: v.__name__ for k, v in items if type(k) is str and type(v) is type(_sys) and type(v.__name__) is str}
    _send(wfd, ("ok", [k for k, v in items if type(k) is str and callable(v)], modules))
    _serve_calls(namespace, rfd, wfd)


import os as _os  # noqa: E402  (after the wire functions' source in the sandbox)
import sys as _sys  # noqa: E402

if __name__ == "__main__":
    try:
        _main()
    except BaseException:
        pass
    _os._exit(0)
