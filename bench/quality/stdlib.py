"""The evaluation corpus: the Python standard library's own reference documentation, rendered
from its source files the way `pydoc` lays it out, built at bench time (nothing large committed).

Every public module, class, function and method with a docstring (at least `MIN_CHARS`) becomes
one `DocObject`: a heading (the qualified name and the signature, a class with its `__init__`
parameters), the docstring, the messages of the exceptions its body raises (as the source
writes them: `Raises ValueError: ...`) and, for a module, its constants (`Data:` lines,
`NAME = value`). The source is read with `ast`, never imported: importing the whole library runs
code (`antigravity` opens a browser, `tkinter` wants a display) and what it yields varies with
the machine. For one Python version the corpus is the same everywhere.

Two granularities are built from the same objects:
- rows: one text per object (long module docs are cut by the model's token limit);
- pages: one text per module (its doc, then every member as a `## ` section, in source order),
  to be split into chunks by the project's splitter; `Page.sections` says where each object's
  text lies in its page, so a label on an object becomes a label on the chunk holding it.
"""

from __future__ import annotations

import ast
import copy
import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.corpus import MIN_CHARS, stdlib_dir

# Not the library's reference text: tests, the IDLE and demo programs, deprecated tool kits,
# vendored wheels, the generated pydoc topics and ~100 near-identical codec modules.
EXCLUDED_PARTS = frozenset(
    {
        "test",
        "tests",
        "idle_test",
        "idlelib",
        "lib2to3",
        "turtledemo",
        "ensurepip",
        "distutils",
        "pydoc_data",
        "encodings",
        "site-packages",
        "dist-packages",
    }
)
CONSTANT = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*")
MAX_RAISES = 12  # per object: a few functions raise dozens of messages (argument parsers)
MAX_VALUE_CHARS = 80


@dataclass(frozen=True)
class Raise:
    exception: str  # as written: "ValueError", "error", "socket.timeout"
    message: str  # whitespace collapsed; {expr} where an f-string formats, %r left as written
    literal: bool  # the message is one plain string literal (what a user sees, verbatim)

    def line(self) -> str:
        return f"Raises {self.exception}: {self.message}"


@dataclass(frozen=True)
class DocObject:
    qualname: str  # "difflib.unified_diff", "threading.Thread.is_alive", "difflib"
    module: str
    kind: str  # module | class | function | method
    signature: str  # "(a, b, n=3)"; "" for a module or a class without __init__
    params: tuple[str, ...]
    doc: str
    raises: tuple[Raise, ...] = ()
    data: tuple[tuple[str, str], ...] = ()  # module constants: (NAME, repr of the value)

    @property
    def name(self) -> str:
        return self.qualname.rsplit(".", 1)[-1] if self.kind != "module" else self.qualname

    def heading(self) -> str:
        if self.kind == "module":
            return f"module {self.qualname}"
        prefix = "class " if self.kind == "class" else ""
        return f"{prefix}{self.qualname}{self.signature}"

    def text(self) -> str:
        """The row: heading, docstring, raised messages, constants (blank lines between)."""
        parts = [self.heading()]
        if self.doc:
            parts.append(self.doc)
        if self.raises:
            parts.append("\n".join(r.line() for r in self.raises))
        if self.data:
            parts.append("Data:\n" + "\n".join(f"{n} = {v}" for n, v in self.data))
        return "\n\n".join(parts)

    def summary(self) -> str:
        """The heading and the docstring's first paragraph: what a description of it is about."""
        first = self.doc.split("\n\n", 1)[0] if self.doc else ""
        return f"{self.heading()}\n\n{first}" if first else self.heading()


@dataclass(frozen=True)
class Page:
    """One module's documentation as one text; `sections[qualname]` = (start, end) offsets of
    that object's `text()` inside `text`."""

    module: str
    text: str
    sections: dict[str, tuple[int, int]] = field(hash=False)


def module_name(path: Path, root: Path) -> str | None:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if EXCLUDED_PARTS.intersection(parts):
        return None
    if parts[-1] == "__init__":
        parts.pop()
    if not parts or any(p.startswith("_") for p in parts):
        return None  # private modules (_pyio, _strptime, __main__) are not the documented API
    return ".".join(parts)


def _statements(body: Iterable[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements of a module or class body, stepping into if/try/with blocks (where a
    module defines platform-specific functions) but not into definitions."""
    for node in body:
        if isinstance(node, ast.If | ast.With):
            yield from _statements(node.body)
            yield from _statements(getattr(node, "orelse", []))
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _statements(block)
            for handler in node.handlers:
                yield from _statements(handler.body)
        else:
            yield node


def _own_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """The nodes of a function's body, without those of functions or classes defined in it."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            continue
        yield child
        yield from _own_nodes(child)


def _message(node: ast.expr) -> tuple[str, bool] | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value, True
    if isinstance(node, ast.JoinedStr):
        text = "".join(
            str(v.value) if isinstance(v, ast.Constant) else "{" + ast.unparse(v.value) + "}"
            for v in node.values
            if isinstance(v, ast.Constant | ast.FormattedValue)
        )
        return text, False
    # A template ("bad value %r" % x, "{}".format(x)) is shown as written; a user sees it
    # filled in, so it is not a message to search for verbatim.
    template = None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        template = _message(node.left)
    elif (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
    ):
        template = _message(node.func.value)
    return (template[0], False) if template else None


def _raises(function: ast.AST) -> tuple[Raise, ...]:
    found: dict[tuple[str, str], Raise] = {}
    for node in _own_nodes(function):
        if not isinstance(node, ast.Raise) or not isinstance(node.exc, ast.Call):
            continue
        call = node.exc
        if not call.args or not isinstance(call.func, ast.Name | ast.Attribute):
            continue
        parsed = _message(call.args[0])
        if parsed is None:
            continue
        message = " ".join(parsed[0].split())
        if len(message) < 3:
            continue
        exception = ast.unparse(call.func)
        found.setdefault((exception, message), Raise(exception, message, parsed[1]))
        if len(found) == MAX_RAISES:
            break
    return tuple(found.values())


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef, bound: bool) -> tuple[str, list[str]]:
    """ "(a, b=1, *, c)" and the parameter names, without self/cls for a bound method."""
    args = copy.deepcopy(node.args)
    if bound:
        if args.posonlyargs:
            args.posonlyargs.pop(0)
        elif args.args:
            args.args.pop(0)
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
        if a is not None:
            a.annotation = None  # pydoc-like and shorter: names and defaults only
    return f"({ast.unparse(args)})", names


def _is_bound(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    decorators = {ast.unparse(d) for d in node.decorator_list}
    return "staticmethod" not in decorators


def _constants(body: Iterable[ast.stmt]) -> tuple[tuple[str, str], ...]:
    found: dict[str, str] = {}
    for node in _statements(body):
        target, value = None, None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        if not isinstance(target, ast.Name) or not isinstance(value, ast.Constant):
            continue
        if not CONSTANT.fullmatch(target.id) or value.value is None or value.value is Ellipsis:
            continue
        shown = repr(value.value)
        if len(shown) > MAX_VALUE_CHARS:
            shown = shown[: MAX_VALUE_CHARS - 3] + "..."
        found.setdefault(target.id, shown)
    return tuple(found.items())


def _documented(doc: str | None) -> str:
    return doc if doc and len(doc) >= MIN_CHARS else ""


def _members(
    module: str, prefix: str, body: Iterable[ast.stmt], in_class: bool
) -> Iterator[DocObject]:
    for node in _statements(body):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if node.name.startswith("_"):
                continue
            doc = _documented(ast.get_docstring(node, clean=True))
            if not doc:
                continue
            signature, params = _signature(node, bound=in_class and _is_bound(node))
            yield DocObject(
                qualname=f"{prefix}.{node.name}",
                module=module,
                kind="method" if in_class else "function",
                signature=signature,
                params=tuple(params),
                doc=doc,
                raises=_raises(node),
            )
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            qualname = f"{prefix}.{node.name}"
            doc = _documented(ast.get_docstring(node, clean=True))
            init = next(
                (
                    n
                    for n in _statements(node.body)
                    if isinstance(n, ast.FunctionDef) and n.name == "__init__"
                ),
                None,
            )
            if doc:
                signature, params = _signature(init, bound=True) if init else ("", [])
                yield DocObject(
                    qualname=qualname,
                    module=module,
                    kind="class",
                    signature=signature,
                    params=tuple(params),
                    doc=doc,
                    raises=_raises(init) if init else (),
                )
            yield from _members(module, qualname, node.body, in_class=True)


def module_objects(path: Path, module: str) -> list[DocObject]:
    """The module itself (when it has a docstring or constants), then its members in order."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, UnicodeDecodeError):
        return []
    doc = _documented(ast.get_docstring(tree, clean=True))
    data = _constants(tree.body)
    found: list[DocObject] = []
    if doc or data:
        found.append(DocObject(module, module, "module", "", (), doc, (), data))
    seen = {module}
    for obj in _members(module, module, tree.body, in_class=False):
        if obj.qualname not in seen:  # a name defined twice (per platform): the first one
            seen.add(obj.qualname)
            found.append(obj)
    return found


@functools.cache
def objects() -> tuple[DocObject, ...]:
    """Every documented public object of the standard library, in a stable order."""
    root = stdlib_dir()
    found: list[DocObject] = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        if module is not None:
            found.extend(module_objects(path, module))
    return tuple(found)


def pages(items: Iterable[DocObject]) -> list[Page]:
    """One page per module, members as `## ` sections (a heading starts a chunk)."""
    by_module: dict[str, list[DocObject]] = {}
    for obj in items:
        by_module.setdefault(obj.module, []).append(obj)
    result = []
    for module, members in by_module.items():
        text = ""
        sections: dict[str, tuple[int, int]] = {}
        if members[0].kind != "module":
            text = f"# module {module}"
        for obj in members:
            marker = "# " if obj.kind == "module" else "## "
            text += ("\n\n" if text else "") + marker
            start = len(text)
            text += obj.text()
            sections[obj.qualname] = (start, len(text))
        result.append(Page(module, text, sections))
    return result
