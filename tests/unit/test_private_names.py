"""No private Twisted name outside ``monit/_twisted/``: the wall holds, file by file.

Every file of ``monit/`` is parsed. Outside ``monit/_twisted/`` it may not:
- import a private Twisted module or name (a dotted part starting with ``_``);
- read or write an attribute whose name Twisted's own source defines as
  private (a class, a function, a class attribute, an attribute set on an
  object, or a name-mangled ``_Class__name``) unless monit defines that name
  itself, outside any class that inherits it from Twisted; names written as
  strings (``getattr``/``setattr``/``hasattr``/``delattr``, tuples and lists
  of names) count;
- in a class that inherits from Twisted, define or reach through ``self`` a
  private name one of its Twisted classes has: that is an override, or a
  reach into the parent.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from types import ModuleType

import attrs
import twisted

import monit

MONIT = Path(monit.__file__).parent
TWISTED = Path(twisted.__file__).parent
WALL = MONIT / "_twisted"
_NAME_ARGUMENT = {"getattr", "setattr", "hasattr", "delattr"}


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def mangled(class_name: str, name: str) -> str:
    """What Python makes of ``__name`` written inside class ``class_name``."""
    if name.startswith("__") and not name.endswith("__") and class_name.strip("_"):
        return f"_{class_name.lstrip('_')}{name}"
    return name


@attrs.frozen
class Defined:
    """The private names a source defines: all of them, and each class's own."""

    names: frozenset[str]
    by_class: Mapping[str, frozenset[str]]  # qualified class name: the names its body and methods define


def definitions(tree: ast.Module) -> Defined:
    names: set[str] = set()
    by_class: dict[str, frozenset[str]] = {}
    for node in tree.body:
        names.update(_defined_at(node, ""))
        names.update(_defined_in_functions(node, ""))
    for qualname, node in _classes(tree.body, ""):
        own = set(_class_names(node))
        by_class[qualname] = frozenset(own)
        names.update(own)
    return Defined(frozenset(filter(private, names)), by_class)


def _classes(body: list[ast.stmt], prefix: str) -> Iterator[tuple[str, ast.ClassDef]]:
    """Every class at module or class level, with its qualified name."""
    for node in body:
        if isinstance(node, ast.ClassDef):
            qualname = prefix + node.name
            yield qualname, node
            yield from _classes(node.body, qualname + ".")


def _defined_at(node: ast.stmt, class_name: str) -> Iterator[str]:
    """What a module- or class-level statement defines."""
    if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        yield mangled(class_name, node.name)
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    for target in targets:
        for name in ast.walk(target):
            if isinstance(name, ast.Name):
                yield mangled(class_name, name.id)


def _defined_in_functions(node: ast.AST, class_name: str) -> Iterator[str]:
    """Attributes set on anything, anywhere below ``node``."""
    for found in ast.walk(node):
        if isinstance(found, ast.Attribute) and isinstance(found.ctx, (ast.Store, ast.Del)):
            yield mangled(class_name, found.attr)


def _class_names(node: ast.ClassDef) -> Iterator[str]:
    for statement in node.body:
        yield from _defined_at(statement, node.name)
    for found in ast.walk(node):
        if (
            isinstance(found, ast.Attribute)
            and isinstance(found.ctx, ast.Store)
            and isinstance(found.value, ast.Name)
            and found.value.id == "self"
        ):
            yield mangled(node.name, found.attr)


@cache
def twisted_sources() -> dict[str, Defined]:
    """Each module of the installed Twisted, by dotted name, with what it defines."""
    sources = {}
    for path in sorted(TWISTED.rglob("*.py")):
        parts = path.relative_to(TWISTED.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        try:
            tree = ast.parse(path.read_bytes())
        except SyntaxError:  # a file kept for an old Python; nothing imports it
            continue
        sources[module] = definitions(tree)
    return sources


@cache
def twisted_private() -> frozenset[str]:
    return frozenset().union(*(defined.names for defined in twisted_sources().values()))


def twisted_names_of(cls: type) -> frozenset[str]:
    """The names the Twisted classes in ``cls``'s bases define themselves."""
    sources = twisted_sources()
    names: set[str] = set()
    for base in cls.__mro__:
        if base.__module__.split(".")[0] == "twisted" and base.__module__ in sources:
            names |= sources[base.__module__].by_class.get(base.__qualname__, frozenset())
    return frozenset(filter(private, names))


@attrs.frozen(order=True)
class Breach:
    where: str
    line: int
    name: str
    why: str

    def __str__(self) -> str:
        return f"{self.where}:{self.line}: {self.name} ({self.why})"


def breaches(where: str, tree: ast.Module, namespace: Mapping[str, object], ours: frozenset[str]) -> set[Breach]:
    """What a source outside the wall does with Twisted's private names.

    ``namespace`` holds its classes (the module, imported), ``ours`` the
    private names monit defines itself.
    """
    found = set(_imports(where, tree))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            found |= set(_overrides(where, node, _inherited(node, namespace)))
    everywhere = twisted_private() - ours
    for name, line in _names_used(tree, namespace):
        if name in everywhere:
            found.add(Breach(where, line, name, "private in Twisted, and not monit's"))
    return found


def _inherited(node: ast.ClassDef, namespace: Mapping[str, object]) -> frozenset[str]:
    """The private names the Twisted classes among a class's bases define themselves."""
    names: frozenset[str] = frozenset()
    for base in node.bases:
        cls = _resolved(base, namespace)
        if isinstance(cls, type):
            names |= twisted_names_of(cls)
    return names


def _resolved(expression: ast.expr, namespace: Mapping[str, object]) -> object:
    """What a name, or a dotted name, stands for in a module (None if it cannot tell)."""
    if isinstance(expression, ast.Name):
        return namespace.get(expression.id)
    if isinstance(expression, ast.Attribute):
        return getattr(_resolved(expression.value, namespace), expression.attr, None)
    return None


def _imports(where: str, tree: ast.Module) -> Iterator[Breach]:
    for node in ast.walk(tree):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            modules = [f"{node.module}.{alias.name}" for alias in node.names]
        for module in modules:
            assert isinstance(node, (ast.Import, ast.ImportFrom))  # only imports name modules
            if module.split(".")[0] == "twisted" and any(map(private, module.split("."))):
                yield Breach(where, node.lineno, module, "a private Twisted import")


def _overrides(where: str, node: ast.ClassDef, inherited: frozenset[str]) -> Iterator[Breach]:
    """Names of its Twisted bases that a class defines, or reaches through self."""
    if not inherited:
        return
    for statement in node.body:
        for name in _defined_at(statement, node.name):
            if name in inherited:
                yield Breach(where, statement.lineno, name, f"overrides a private name of {node.name}'s Twisted bases")
    for found in ast.walk(node):
        if (
            isinstance(found, ast.Attribute)
            and isinstance(found.value, ast.Name)
            and found.value.id == "self"
            and mangled(node.name, found.attr) in inherited
        ):
            yield Breach(where, found.lineno, found.attr, f"a private name of {node.name}'s Twisted bases")


def _names_used(tree: ast.Module, namespace: Mapping[str, object]) -> Iterator[tuple[str, int]]:
    """Attributes read or written, and names written as strings; not those of a module outside Twisted (os._exit)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and not _outside_twisted(node.value, namespace):
            yield node.attr, node.lineno
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _NAME_ARGUMENT:
            if len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                yield node.args[1].value, node.lineno
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            for element in node.elts:
                if isinstance(element, ast.Constant) and isinstance(element.value, str):
                    yield element.value, element.lineno


def _outside_twisted(value: ast.expr, namespace: Mapping[str, object]) -> bool:
    """Whether ``value`` names a module that is not Twisted's."""
    module = namespace.get(value.id) if isinstance(value, ast.Name) else None
    return isinstance(module, ModuleType) and module.__name__.split(".")[0] != "twisted"


def monit_sources() -> Iterator[tuple[Path, str, ast.Module]]:
    for path in sorted(MONIT.rglob("*.py")):
        parts = path.relative_to(MONIT.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield path, module, ast.parse(path.read_bytes())


def monit_own(sources: list[tuple[Path, str, ast.Module]]) -> frozenset[str]:
    """The private names monit defines outside the wall, but not those it defines over a Twisted base's."""
    own: set[str] = set()
    for path, module, tree in sources:
        if not path.is_relative_to(WALL):
            own.update(_own_names(tree.body, vars(importlib.import_module(module))))
    return frozenset(own)


def _own_names(
    body: list[ast.stmt],
    namespace: Mapping[str, object],
    class_name: str = "",
    overriding: frozenset[str] = frozenset(),
) -> Iterator[str]:
    for statement in body:
        names = set(_defined_at(statement, class_name))
        if isinstance(statement, ast.ClassDef):
            yield from _own_names(statement.body, namespace, statement.name, _inherited(statement, namespace))
        else:
            names.update(_defined_in_functions(statement, class_name))
        yield from (name for name in names if private(name) and name not in overriding)


def test_nothing_outside_the_wall_touches_a_private_twisted_name():
    sources = list(monit_sources())
    ours = monit_own(sources)
    found: set[Breach] = set()
    for path, module, tree in sources:
        if not path.is_relative_to(WALL):
            where = str(path.relative_to(MONIT.parent))
            found |= breaches(where, tree, vars(importlib.import_module(module)), ours)
    assert not found, "private Twisted names outside monit/_twisted/:\n" + "\n".join(map(str, sorted(found)))


BREACHING = """import os
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.web import http
from twisted.web.http import HTTPChannel

class Channel(HTTPChannel):
    _log = None

    def lineReceived(self, line):
        return self._receivedHeaderSize

def dig(connection):
    setattr(connection, "_HTTPChannel__first_line", os._exit)
    names = ("_tempDataLen", "_ours")
    return connection._tempDataBuffer, connection._ours
"""


def test_the_scan_finds_each_kind_of_breach():
    tree = ast.parse(BREACHING)
    namespace: dict[str, object] = {}
    exec(compile(tree, "breaching", "exec"), namespace)
    found = {(breach.line, breach.name) for breach in breaches("breaching", tree, namespace, frozenset({"_ours"}))}
    assert found == {
        (2, "twisted.internet._sslverify.IOpenSSLTrustRoot"),
        (7, "_log"),
        (10, "_receivedHeaderSize"),
        (13, "_HTTPChannel__first_line"),
        (14, "_tempDataLen"),
        (15, "_tempDataBuffer"),
    }
