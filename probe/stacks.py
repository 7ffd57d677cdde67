"""Process-wide call-stack capture and interning, cheap enough to run on every query.

A capture is ONE walk of ``sys._getframe()`` links. Each code object is classified once (app,
library, template node render, ORM signature) and cached by ``id(code)``; the cache holds the code
object, so an id can never be reused while it is cached. A stack is interned as a tuple of ints
(code index, line) and handed out as a small int key; :func:`resolve` turns a key into frames on
the sender thread. The request thread never reads source, never calls linecache and never
formats strings.

Frames kept per stack: every "app" frame (innermost first, at most ``stack_depth``) plus the
library frame the innermost app frame called (``Book.author.__get__``, ``QuerySet.__iter__``, ...),
which is what the call site "did". When no app frame exists at all (a query from middleware
inside Django, say), the innermost library frame outside Django's ORM/cache/template/utils and
the stdlib is kept instead, so the query is still placed somewhere.

The "app" rule (documented for users in docs/probe.md): a file is app code unless it lies under
the stdlib, a site-packages/dist-packages directory, the active virtualenv, Django's package, the
probe's package or a ``LIBRARY_PATHS`` prefix. ``APP_PATHS`` prefixes are always app code, and
so is the bundled demo (``djangoscope/resources/demo``) even when installed in site-packages.
Pseudo files (``<frozen ...>``, ``<string>``) are library code; interactive ones (``<console>``,
``<stdin>``, ``<ipython-input-...>``) are app code.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
import threading
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

# Classification flags of a code object.
APP = 1
HIDDEN = 2  # the probe's own frames: never kept, never "the library frame the app called"
INTERNAL = 4  # library plumbing: never used as the no-app-frame fallback
TEMPLATE = 8  # django.template.base.Node.render_annotated: the template node being rendered
ORM = 16  # matches an ORM frame signature (see capture/orm.py)
_SPECIAL = HIDDEN | TEMPLATE | ORM

#: Interned-stack key of "no frames kept".
EMPTY = 0
#: Most distinct stacks interned per process; past it captures return EMPTY (and are counted).
MAX_STACKS = 200_000

_lock = threading.Lock()
_getframe = sys._getframe

# id(code) -> (code, flags, code index, ORM signature or None, normalized path)
_classes: dict[int, tuple[CodeType, int, int, Any, str]] = {}
_code_index: dict[int, int] = {}
_codes: list[CodeType] = []

_stack_ids: dict[tuple[int, ...], int] = {(): EMPTY}
_stacks: list[tuple[int, ...]] = [()]
overflow = 0

# Configuration (set by configure(); defaults until the probe is installed).
_depth = 40
_app_prefixes: tuple[str, ...] = ()
_lib_prefixes: tuple[str, ...] = ()
_config: Any = None

# ORM signature table registered by capture/orm.py: id(code) -> signature, and its reader.
_orm_signatures: dict[int, Any] = {}
_orm_reader: Callable[[list[tuple[Any, FrameType]]], dict[str, Any] | None] | None = None
_template_codes: set[int] = set()

#: What capture_stack returns: (stack key, template dict or None, ORM context dict or None).
StackInfo = tuple[int, "dict[str, Any] | None", "dict[str, Any] | None"]


def _real(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))


def _prefix(path: str) -> str:
    path = _real(path)
    return path if path.endswith(os.sep) else path + os.sep


def _package_dir(module: str) -> str | None:
    try:
        from importlib.util import find_spec

        spec = find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return _prefix(next(iter(spec.submodule_search_locations)))


_PROBE_DIR = _prefix(os.path.dirname(os.path.abspath(__file__)))
_DEMO_DIR = _package_dir("djangoscope.resources.demo") or _prefix(
    os.path.join(os.path.dirname(_PROBE_DIR.rstrip(os.sep)), "resources", "demo")
)


def _django_dir() -> str:
    import django

    return _prefix(os.path.dirname(django.__file__))


_DJANGO_DIR = _django_dir()
#: Django sub-packages that are plumbing around a query/cache call, not a meaningful call site.
_DJANGO_INTERNAL = tuple(
    _DJANGO_DIR + os.path.join(*part.split("/")) + os.sep
    for part in ("db", "utils", "dispatch", "template", "test", "core/cache")
)


def _library_dirs() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(site-packages dirs, stdlib dirs, other installed dirs), longest first.

    Never the bare prefix of a system Python (``/usr``): apps live under it (``/usr/src/app``).
    """
    site_dirs: set[str] = set()
    stdlib: set[str] = set()
    other: set[str] = set()
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        vars_ = {"base": prefix, "platbase": prefix, "installed_base": prefix}
        vars_["installed_platbase"] = prefix
        try:
            paths = sysconfig.get_paths(vars=vars_)
        except Exception:
            continue
        for key in ("stdlib", "platstdlib"):
            if paths.get(key):
                stdlib.add(_prefix(paths[key]))
        for key in ("purelib", "platlib"):
            if paths.get(key):
                site_dirs.add(_prefix(paths[key]))
    if sys.prefix != sys.base_prefix:  # a virtualenv: everything in it is installed code
        other.add(_prefix(sys.prefix))
    try:
        site_dirs.update(_prefix(p) for p in site.getsitepackages())
    except Exception:
        pass
    try:
        site_dirs.add(_prefix(site.getusersitepackages()))
    except Exception:
        pass
    for entry in sys.path:
        base = os.path.basename(entry.rstrip("/\\"))
        if base in ("site-packages", "dist-packages"):
            site_dirs.add(_prefix(entry))
        elif entry.endswith(".zip"):
            stdlib.add(_prefix(entry))
    root = _prefix(os.sep)

    def ordered(dirs: set[str]) -> tuple[str, ...]:
        return tuple(sorted(dirs - {root}, key=len, reverse=True))

    return ordered(site_dirs), ordered(stdlib), ordered(other)


_SITE_DIRS, _STDLIB_DIRS, _OTHER_LIB_DIRS = _library_dirs()
#: Third-party plumbing that never makes a useful call site.
_INTERNAL_LIBS = ("asgiref", "gunicorn", "uvicorn", "daphne", "hypercorn", "waitress")


def configure(config: Any) -> None:
    """Apply ProbeConfig paths and depth; reclassifies code lazily when they change."""
    global _depth, _app_prefixes, _lib_prefixes, _config
    if config is _config:
        return
    with _lock:
        _depth = max(1, int(config.stack_depth))
        _app_prefixes = tuple(_prefix(p) for p in config.app_paths)
        _lib_prefixes = tuple(_prefix(p) for p in config.library_paths)
        _config = config
        _classes.clear()
    _load_template_codes()


def register_orm(signatures: dict[int, Any], reader: Callable[..., Any] | None) -> None:
    """Install the ORM signature table (id(code) -> signature) and the function reading it."""
    global _orm_reader
    with _lock:
        _orm_signatures.clear()
        _orm_signatures.update(signatures)
        _orm_reader = reader
        _classes.clear()


def _classify_path(filename: str) -> tuple[int, str]:
    if filename.startswith("<"):
        if filename.startswith(("<frozen", "<string>")):
            return INTERNAL, filename
        return APP, filename
    path = _real(filename)
    if path.startswith(_app_prefixes):
        return APP, path
    if path.startswith(_DEMO_DIR):
        return APP, path
    if _lib_prefixes and path.startswith(_lib_prefixes):
        return 0, path
    if path.startswith(_PROBE_DIR):
        return HIDDEN | INTERNAL, path
    if path.startswith(_DJANGO_DIR):
        return (INTERNAL if path.startswith(_DJANGO_INTERNAL) else 0), path
    for dir_ in _SITE_DIRS:
        if path.startswith(dir_):
            return (INTERNAL if path[len(dir_) :].startswith(_INTERNAL_LIBS) else 0), path
    if path.startswith(_STDLIB_DIRS):
        return INTERNAL, path  # threading, socketserver, asyncio, wsgiref, contextlib...
    if path.startswith(_OTHER_LIB_DIRS):
        return 0, path
    return APP, path


def _classify(code: CodeType) -> tuple[CodeType, int, int, Any, str]:
    """Classify a code object once; the entry is cached for the life of the process."""
    key = id(code)
    with _lock:
        index = _code_index.get(key)
        if index is None:
            index = len(_codes)
            _codes.append(code)
            _code_index[key] = index
    flags, path = _classify_path(code.co_filename)
    signature = _orm_signatures.get(key)
    if signature is not None:
        flags |= ORM
    if key in _template_codes:
        flags |= TEMPLATE
    entry = (code, flags, index, signature, path)
    _classes[key] = entry
    return entry


def _load_template_codes() -> None:
    try:
        from django.template.base import Node

        _template_codes.add(id(Node.render_annotated.__code__))
    except Exception:  # pragma: no cover - Django without templates is unusual
        pass


def capture_stack(skip: int = 0, orm: bool = True) -> StackInfo:
    """Walk the caller's stack once: (interned stack key, template dict, ORM context dict).

    ``skip`` frames above the caller are ignored (the caller itself is always skipped).
    ``orm`` False skips the ORM signature reading (cache calls).
    """
    try:
        frame: FrameType | None = _getframe(skip + 1)
    except ValueError:
        return EMPTY, None, None
    get = _classes.get
    ident = id
    flat: list[int] = []
    depth = _depth
    kept = 0
    lib_zone = True
    pending_entry = pending_frame = None
    fallback_entry = fallback_frame = None
    template_frame = None
    hits: list[tuple[Any, FrameType]] | None = None
    while frame is not None:
        code = frame.f_code
        entry = get(ident(code))
        if entry is None:
            entry = _classify(code)
        flags = entry[1]
        if flags & APP:
            if lib_zone:
                lib_zone = False
                if pending_frame is not None:
                    flat.append(pending_entry[2])
                    flat.append(pending_frame.f_lineno)
                    kept = 1
            if kept < depth:
                flat.append(entry[2])
                flat.append(frame.f_lineno)
                kept += 1
        elif lib_zone:
            if flags & _SPECIAL:
                if flags & HIDDEN:
                    frame = frame.f_back
                    continue
                if flags & ORM and orm:
                    if hits is None:
                        hits = []
                    hits.append((entry[3], frame))
                if flags & TEMPLATE and template_frame is None:
                    template_frame = frame
            pending_entry = entry
            pending_frame = frame
            if fallback_frame is None and not flags & INTERNAL:
                fallback_entry = entry
                fallback_frame = frame
        elif flags & TEMPLATE and template_frame is None:
            template_frame = frame
        frame = frame.f_back
    if lib_zone and fallback_frame is not None:
        flat = [fallback_entry[2], fallback_frame.f_lineno]
    key = _intern(tuple(flat))
    template = _template_info(template_frame) if template_frame is not None else None
    context = None
    if hits is not None and _orm_reader is not None:
        context = _orm_reader(hits)
    return key, template, context


def _intern(flat: tuple[int, ...]) -> int:
    global overflow
    key = _stack_ids.get(flat)
    if key is not None:
        return key
    with _lock:
        key = _stack_ids.get(flat)
        if key is None:
            if len(_stacks) >= MAX_STACKS:
                overflow += 1
                return EMPTY
            key = len(_stacks)
            _stacks.append(flat)
            _stack_ids[flat] = key
    return key


_UNKNOWN_SOURCE = "<unknown source>"


def _template_info(frame: FrameType) -> dict[str, Any] | None:
    """Template name and line of the node being rendered (Node.render_annotated's ``self``)."""
    node = frame.f_locals.get("self")
    origin = getattr(node, "origin", None)
    token = getattr(node, "token", None)
    if origin is None:
        return None
    name = origin.template_name
    path = origin.name if name is not None else None
    if name is None:
        name = "<string>" if origin.name == _UNKNOWN_SOURCE else origin.name
    return {"name": name, "line": getattr(token, "lineno", None), "path": path}


def resolve(key: int) -> list[dict[str, Any]]:
    """Frames of an interned stack, outermost first: ``{"file", "line", "func", "app"}``.

    Runs on the sender thread (it may classify and look up names; it never reads source).
    """
    try:
        flat = _stacks[key]
    except (IndexError, TypeError):
        return []
    frames = []
    for i in range(len(flat) - 2, -1, -2):
        code = _codes[flat[i]]
        entry = _classes.get(id(code)) or _classify(code)
        frames.append(
            {
                "file": entry[4],
                "line": flat[i + 1],
                "func": getattr(code, "co_qualname", code.co_name),
                "app": bool(entry[1] & APP),
            }
        )
    return frames


def is_app_file(filename: str) -> bool:
    """Whether ``filename`` counts as the user's code under the current configuration."""
    return bool(_classify_path(filename)[0] & APP)


def stats() -> dict[str, int]:
    """Sizes of the process-wide tables (for the probe's STATS message)."""
    return {"stacks": len(_stacks), "codes": len(_codes), "overflow": overflow}
