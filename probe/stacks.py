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

A :class:`StackMemo` (one per unit of work and thread, see ``recorder.Unit.stack_memo``) makes
captures incremental. It keeps anchors: frames of earlier walks that outlive queries (the view,
a template's ``{% for %}``). A walk stops at the first anchor it meets; the anchor is alive, so
its callers and their lines are still the ones recorded, and what a walk would find above it is
summarized once and reused. It also keeps stack shapes (the code objects from the capture point
down to an anchor): when the frames at the same depths run the same code and the anchor is
there, the result is read from those frames without a Python-level walk. The N+1 in a template
loop then costs the ~15 frames below the loop instead of ~55. Generator and coroutine frames are
never anchors: their ``f_back`` changes per resume. The memo holds strong references (no frame
can die and have its id reused while it is there) until :meth:`StackMemo.clear`, which the unit
calls when it finishes. The result is the same as a plain walk's, frame for frame
(tests/probe/test_stack_memo.py).
"""

from __future__ import annotations

import inspect
import operator
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
GEN = 32  # generator/coroutine code: its frame's caller changes per resume (never a memo anchor)
_SPECIAL = HIDDEN | TEMPLATE | ORM
_GEN_CODE = (
    inspect.CO_GENERATOR
    | inspect.CO_COROUTINE
    | inspect.CO_ASYNC_GENERATOR
    | inspect.CO_ITERABLE_COROUTINE
)

#: Interned-stack key of "no frames kept".
EMPTY = 0
#: Most distinct stacks interned per process; past it captures return EMPTY (and are counted).
MAX_STACKS = 200_000

_lock = threading.Lock()
_getframe = sys._getframe

# id(code) -> (code, flags, code index, ORM signature or None, normalized path)
_classes: dict[int, tuple[CodeType, int, int, Any, str]] = {}
#: id(code) -> its flags alone (the same entries as _classes: the memo walk's fast path).
_flags: dict[int, int] = {}
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
#: Bumped whenever classification or depth may change: memos built before are discarded.
_generation = 0

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
    global _depth, _app_prefixes, _lib_prefixes, _config, _generation
    if config is _config:
        return
    with _lock:
        _depth = max(1, int(config.stack_depth))
        _app_prefixes = tuple(_prefix(p) for p in config.app_paths)
        _lib_prefixes = tuple(_prefix(p) for p in config.library_paths)
        _config = config
        _classes.clear()
        _flags.clear()
        _generation += 1
    _load_template_codes()


def register_orm(signatures: dict[int, Any], reader: Callable[..., Any] | None) -> None:
    """Install the ORM signature table (id(code) -> signature) and the function reading it."""
    global _orm_reader, _generation
    with _lock:
        _orm_signatures.clear()
        _orm_signatures.update(signatures)
        _orm_reader = reader
        _classes.clear()
        _flags.clear()
        _generation += 1


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
    if code.co_flags & _GEN_CODE:
        flags |= GEN
    entry = (code, flags, index, signature, path)
    _classes[key] = entry
    _flags[key] = flags
    return entry


def _entry(code: CodeType) -> tuple[CodeType, int, int, Any, str]:
    """The classification of ``code`` (classifying it if a reconfiguration dropped it)."""
    return _classes.get(id(code)) or _classify(code)


def _load_template_codes() -> None:
    try:
        from django.template.base import Node

        _template_codes.add(id(Node.render_annotated.__code__))
    except Exception:  # pragma: no cover - Django without templates is unusual
        pass


def capture_stack(skip: int = 0, orm: bool = True, memo: StackMemo | None = None) -> StackInfo:
    """Walk the caller's stack once: (interned stack key, template dict, ORM context dict).

    ``skip`` frames above the caller are ignored (the caller itself is always skipped).
    ``orm`` False skips the ORM signature reading (cache calls). ``memo``, when given, is the
    calling thread's :class:`StackMemo` for the current unit: same result, far fewer frames.
    """
    try:
        frame: FrameType | None = _getframe(skip + 1)
    except ValueError:
        return EMPTY, None, None
    if memo is not None and not memo.busy:
        return _capture_memo(frame, orm, memo, skip + 2)  # type: ignore[arg-type]
    return _capture_plain(frame, orm)  # type: ignore[arg-type]


def _capture_plain(frame: FrameType | None, orm: bool, memo: StackMemo | None = None) -> StackInfo:
    """:func:`capture_stack` without a memo: one walk of every frame from ``frame`` outward."""
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
    template = _template_info(template_frame, memo) if template_frame is not None else None
    context = None
    if hits is not None and _orm_reader is not None:
        context = _orm_reader(hits)
    return key, template, context


# -- the memo ------------------------------------------------------------------------------------
#
# A summary stands for a run of consecutive frames (outermost part of a stack) as the walk would
# see it if the run were a whole stack: a tuple
#   (has_app, app, pending, hits, template, fallback)
# - has_app: the run holds an app frame;
# - app: (code index, line, ...) of its app frames, innermost first, at most ``_depth`` of them;
# - pending: (code index, line) of the outermost non-hidden library frame below the innermost app
#   frame (the library frame that app frame called), None if there is none or no app frame;
# - hits: ((ORM signature, frame), ...) of the ORM frames below the innermost app frame, innermost
#   first (all of them when there is no app frame);
# - template: the innermost non-app TEMPLATE frame of the run, or None;
# - fallback: (code index, line) of the innermost non-internal library frame, or None.
# Frames are kept (not their locals): the ORM and template readers read them at capture time,
# exactly as a plain walk would.

_Summary = tuple[bool, tuple[int, ...], "tuple[int, int] | None", tuple, "FrameType | None", Any]
_NOTHING: _Summary = (False, (), None, (), None, None)


def _prepend(frame: FrameType, outer: _Summary) -> _Summary:
    """The summary of ``frame`` followed (outward) by the run that ``outer`` summarizes."""
    code = frame.f_code
    entry = _classes.get(id(code)) or _classify(code)
    flags = entry[1]
    if flags & APP:
        app = (entry[2], frame.f_lineno, *outer[1])
        limit = 2 * _depth
        if len(app) > limit:
            app = app[:limit]
        return (True, app, None, (), outer[4], outer[5])
    if flags & HIDDEN:
        return outer
    has_app, app, pending, hits, template, fallback = outer
    if has_app and pending is None:
        pending = (entry[2], frame.f_lineno)
    if flags & ORM:
        hits = ((entry[3], frame), *hits)
    if flags & TEMPLATE:
        template = frame
    if not flags & INTERNAL:
        fallback = (entry[2], frame.f_lineno)
    return (has_app, app, pending, hits, template, fallback)


#: How many stack shapes a memo keeps (a template loop with two N+1s has two).
MAX_SHAPES = 8


class StackMemo:
    """What one thread's previous walks within one unit of work left behind; see the module doc.

    ``frames`` is the outermost part of the previous walk, outermost first, and ``index`` maps
    its non-generator frames (the anchors) to their positions. A walk stops at the first anchor
    it meets. ``sums[k]`` (computed lazily) summarizes ``frames[:k]``, and ``keys[k]`` caches the
    interned key of a walk stopping at ``frames[k]`` whose frames below add nothing to it.

    Which frames become anchors: the frames two consecutive full walks share from the outermost
    one (``chain`` keeps the ids of the last full walk's frames, not the frames), then, one at a
    time, the frame just below the deepest anchor when the next walk finds the same frame there
    (``below``, the one frame of a walk kept alive until the next walk). In a template loop the
    anchors end at the loop's frame; in a view's own loop, at the view's frame.

    ``shapes`` spares even the walk down to the anchor: a shape is the list of code objects a
    walk met down to an anchor, with what each one meant for the result. When the frames at the
    same depths run the same code objects and the anchor is there, the result is read from those
    frames directly; checking that takes C-level calls only (``sys._getframe`` by depth).

    After a walk that stopped at ``frames[k]``, ``frames[:k]`` are still exactly that frame's
    callers at the same lines (a frame cannot return while a frame it called is alive, and a
    non-generator frame keeps its caller), so ``sums[:k + 1]`` stay valid and the frames below
    ``k`` are dropped.
    """

    __slots__ = (
        "below",
        "below_at",
        "busy",
        "chain",
        "frames",
        "generation",
        "index",
        "keys",
        "shapes",
        "sums",
        "templates",
    )

    def __init__(self) -> None:
        self.busy = False
        self.clear()

    def clear(self) -> None:
        """Drop every reference (the unit calls this when it finishes)."""
        self.frames: list[FrameType] = []
        self.index: dict[FrameType, int] = {}
        self.chain: list[int] = []
        self.below: FrameType | None = None
        self.below_at = -1
        self.sums: list[_Summary] = [_NOTHING]
        self.keys: list[int | None] = [None]
        self.shapes: list[_Shape] = []
        #: id(template node) -> (node, template dict): one dict per node and unit.
        self.templates: dict[int, tuple[Any, dict[str, Any] | None]] = {}
        self.generation = _generation

    def summary(self, k: int) -> _Summary:
        """``sums[k]``, computing the missing ones from the live frames (callers of frames[k])."""
        sums = self.sums
        if k < len(sums):
            return sums[k]
        frames = self.frames
        keys = self.keys
        outer = sums[-1]
        for i in range(len(sums) - 1, k):
            outer = _prepend(frames[i], outer)
            sums.append(outer)
            keys.append(None)
        return outer

    def key(self, k: int) -> int:
        """The key of a walk stopping at frames[k] whose other frames are all plain library
        frames, when ``sums[k]`` has both an app frame and its pending library frame."""
        key = self.keys[k]
        if key is None:
            outer = self.sums[k]
            key = _intern((*outer[2], *outer[1][: 2 * (_depth - 1)]))
            if key != EMPTY:
                self.keys[k] = key
        return key

    def advance(self, stop: int, below: FrameType | None) -> None:
        """After a walk that stopped at frames[stop], ``below`` being the frame just below it."""
        frames = self.frames
        if stop < len(frames) - 1:
            pop = self.index.pop
            for frame in frames[stop + 1 :]:
                pop(frame, None)
            del frames[stop + 1 :]
        if len(self.sums) > stop + 1:
            del self.sums[stop + 1 :]
            del self.keys[stop + 1 :]
        if below is None:
            self.below = None
        elif below is self.below and self.below_at == stop:
            # Still there a walk later: a frame that outlives queries, make it an anchor.
            self.below = None
            frames.append(below)
            if not _entry(below.f_code)[1] & GEN:
                self.index[below] = stop + 1
        else:
            self.below = below
            self.below_at = stop

    def restart(self, start: FrameType | None) -> None:
        """After a walk that met no anchor (from ``start``): the frames this walk shares with
        the previous such walk, from the outermost one, become the anchors."""
        chain = []
        while start is not None:
            chain.append(start)
            start = start.f_back
        chain.reverse()
        old = self.chain
        same = 0
        limit = min(len(chain), len(old))
        while same < limit and id(chain[same]) == old[same]:
            same += 1
        self.chain = [*map(id, chain)]
        frames = chain[:same]
        self.frames = frames
        self.index = {
            frame: i for i, frame in enumerate(frames) if not _entry(frame.f_code)[1] & GEN
        }
        self.below = None
        self.below_at = -1
        self.sums = [_NOTHING]
        self.keys = [None]
        self.shapes = []


class _Shape:
    """A walk from a start frame down to an anchor, as code objects and what they meant.

    ``count`` frames from the start frame to the anchor (included); ``codes``: the code objects
    of those above the anchor (the anchor is known by identity). Then positions (in the list of
    frames) of: ORM frames before the first app frame with their signatures (``hits``), the
    first template frame (``template``, -1: none), the first app frame (``first_app``), app
    frames with their code indexes (``apps``); and (position, code index) of the frame the first
    app frame called (``pending``), of the last non-hidden frame (``last_lib``) and of the first
    non-internal one (``first_open``), None when there is none. ``plan`` caches the ORM frames
    to read, in the reader's order (outer ones included).
    """

    __slots__ = (
        "anchor",
        "apps",
        "codes",
        "count",
        "first_app",
        "first_open",
        "hits",
        "last_lib",
        "pending",
        "plan",
        "template",
    )

    def __init__(self, frames: list[FrameType]) -> None:
        codes = [*map(_code_of, frames)]
        first_app = -1
        hits: list[tuple[int, Any]] = []
        template = -1
        apps: list[tuple[int, int]] = []
        pending = last_lib = first_open = None
        for i, code in enumerate(codes):
            entry = _classes.get(id(code)) or _classify(code)
            flags = entry[1]
            if flags & APP:
                if first_app < 0:
                    first_app = i
                    pending = last_lib
                apps.append((i, entry[2]))
                continue
            if flags & TEMPLATE and template < 0:
                template = i
            if first_app < 0 and not flags & HIDDEN:
                if flags & ORM:
                    hits.append((i, entry[3]))
                last_lib = (i, entry[2])
                if first_open is None and not flags & INTERNAL:
                    first_open = (i, entry[2])
        self.count = len(frames)
        self.anchor = frames[-1]
        self.codes = codes[:-1]  # the anchor's own code goes without saying
        self.first_app = first_app
        self.hits = hits
        self.template = template
        self.apps = apps
        self.pending = pending
        self.last_lib = last_lib
        self.first_open = first_open
        self.plan: list[tuple[Any, int, FrameType | None]] | None = None

    def orm_plan(self, outer: _Summary) -> list[tuple[Any, int, FrameType | None]]:
        """(signature, position or -1, outer frame or None) of every ORM frame the reader may
        read, sorted as it sorts them (priority, then innermost first)."""
        if self.plan is None:
            plan: list[tuple[Any, int, FrameType | None]] = [(sig, i, None) for i, sig in self.hits]
            if self.first_app < 0:
                plan.extend((sig, -1, frame) for sig, frame in outer[3])
            plan.sort(key=_plan_priority)
            self.plan = plan
        return self.plan


def _plan_priority(item: tuple[Any, int, Any]) -> int:
    return item[0].priority  # type: ignore[no-any-return]


_code_of = operator.attrgetter("f_code")


def _last_lib(start: FrameType, end: FrameType | None) -> tuple[int, int] | None:
    """(code index, line) of the last non-hidden frame from ``start`` outward, before ``end``
    (library frames only there): the library frame the app frame ``end`` called."""
    found = None
    frame: FrameType | None = start
    while frame is not None and frame is not end:
        if not _entry(frame.f_code)[1] & HIDDEN:
            found = frame
        frame = frame.f_back
    if found is None:
        return None
    return _entry(found.f_code)[2], found.f_lineno


def _first_open(start: FrameType, end: FrameType) -> tuple[int, int] | None:
    """(code index, line) of the first non-internal frame from ``start`` to ``end`` included."""
    frame: FrameType | None = start
    while frame is not None:
        entry = _entry(frame.f_code)
        if not entry[1] & INTERNAL:
            return entry[2], frame.f_lineno
        if frame is end:
            break
        frame = frame.f_back
    return None


_NOTABLE = APP | ORM | TEMPLATE


def _capture_memo(start: FrameType, orm: bool, memo: StackMemo, base: int) -> StackInfo:
    """:func:`capture_stack` with a memo (``start`` is ``_getframe(base)`` here).

    First the known shapes, then a walk down to the first anchor. Below the innermost app
    frame only app, ORM and template frames matter to the result; the library frame an app
    frame called and the no-app fallback are looked up afterwards, when needed. Same result as
    :func:`_capture_plain`, frame for frame.
    """
    memo.busy = True
    try:
        if memo.generation != _generation:
            memo.clear()
        index = memo.index
        if not index:
            found = _capture_plain(start, orm, memo)
            memo.restart(start)
            return found
        getframe = _getframe
        for shape in memo.shapes:
            count = shape.count
            try:
                if getframe(base + count - 1) is not shape.anchor:
                    continue
            except ValueError:
                continue
            # The frames above the anchor (the anchor's own code is known by its identity).
            frames = [*map(getframe, range(base, base + count - 1))]
            if [*map(_code_of, frames)] == shape.codes:
                stop = index.get(shape.anchor)
                if stop is None:  # no longer an anchor
                    memo.shapes.remove(shape)
                    break
                frames.append(shape.anchor)
                return _apply_shape(shape, frames, stop, orm, memo)
        fget = _flags.get
        ident = id
        template_frame = None
        hits: list[tuple[Any, FrameType]] | None = None
        flat: list[int] | None = None
        kept = 0
        depth = _depth
        prev = None
        frame: FrameType | None = start
        flags = 0
        count = 1
        while frame is not None:
            flags = fget(ident(frame.f_code))
            if flags is None:
                flags = _classify(frame.f_code)[1]
            if flags & _NOTABLE:
                if flags & APP:
                    flat = []
                    if prev is not None:
                        entry = _entry(prev.f_code)
                        if not entry[1] & HIDDEN:
                            flat.append(entry[2])
                            flat.append(prev.f_lineno)
                            kept = 1
                        else:
                            pending = _last_lib(start, frame)
                            if pending is not None:
                                flat.extend(pending)
                                kept = 1
                    break
                if flags & ORM and orm:
                    if hits is None:
                        hits = []
                    hits.append((_entry(frame.f_code)[3], frame))
                if flags & TEMPLATE and template_frame is None:
                    template_frame = frame
            if frame in index:
                break
            prev = frame
            frame = frame.f_back
            count += 1
        if flat is not None:
            # From the innermost app frame outward: app frames and the template frame only.
            while True:
                if flags & APP:
                    if kept < depth:
                        flat.append(_entry(frame.f_code)[2])  # type: ignore[union-attr]
                        flat.append(frame.f_lineno)  # type: ignore[union-attr]
                        kept += 1
                elif flags & TEMPLATE and template_frame is None:
                    template_frame = frame
                if frame in index:
                    break
                prev = frame
                frame = frame.f_back  # type: ignore[union-attr]
                if frame is None:
                    break
                count += 1
                flags = fget(ident(frame.f_code))
                if flags is None:
                    flags = _classify(frame.f_code)[1]
        if frame is None:
            # No anchor on this stack: a plain walk, and new anchors.
            found = _capture_plain(start, orm, memo)
            memo.restart(start)
            return found
        stop = index[frame]
        frames = [*map(getframe, range(base, base + count))]
        if frames[-1] is frame:
            shapes = memo.shapes
            shapes.insert(0, _Shape(frames))
            if len(shapes) > MAX_SHAPES:
                shapes.pop()
        outer = memo.summary(stop)
        if template_frame is None:
            template_frame = outer[4]
        if flat is not None:
            if kept < depth:
                flat.extend(outer[1][: 2 * (depth - kept)])
            key = _intern(tuple(flat))
        else:
            if orm and outer[3]:
                hits = [*hits, *outer[3]] if hits is not None else list(outer[3])
            if not outer[0]:
                fallback = _first_open(start, frame) or outer[5]
                key = _intern(fallback) if fallback is not None else EMPTY
            elif outer[2] is not None:
                key = memo.key(stop)
            else:
                pending = _last_lib(start, frame.f_back)
                flat = [*pending] if pending is not None else []
                flat.extend(outer[1][: 2 * (depth - len(flat) // 2)])
                key = _intern(tuple(flat))
        memo.advance(stop, prev)
        template = _template_info(template_frame, memo) if template_frame is not None else None
        context = None
        if hits is not None and _orm_reader is not None:
            context = _orm_reader(hits)
        return key, template, context
    except BaseException:
        memo.clear()  # never keep a memo that an interrupted update may have left half-done
        raise
    finally:
        memo.busy = False


def _apply_shape(
    shape: _Shape, frames: list[FrameType], stop: int, orm: bool, memo: StackMemo
) -> StackInfo:
    """The walk's result from the frames of a known shape (anchor ``frames[-1]`` at ``stop``)."""
    sums = memo.sums
    outer = sums[stop] if stop < len(sums) else memo.summary(stop)
    if shape.first_app >= 0:
        depth = _depth
        flat: list[int] = []
        pending = shape.pending
        if pending is not None:
            flat.append(pending[1])
            flat.append(frames[pending[0]].f_lineno)
        kept = len(flat) // 2
        for i, code_index in shape.apps:
            if kept >= depth:
                break
            flat.append(code_index)
            flat.append(frames[i].f_lineno)
            kept += 1
        if kept < depth:
            flat.extend(outer[1][: 2 * (depth - kept)])
        key = _intern(tuple(flat))
    elif not outer[0]:
        first_open = shape.first_open
        if first_open is not None:
            key = _intern((first_open[1], frames[first_open[0]].f_lineno))
        elif outer[5] is not None:
            key = _intern(outer[5])
        else:
            key = EMPTY
    elif outer[2] is not None:
        key = memo.keys[stop] or memo.key(stop)
    else:
        last_lib = shape.last_lib
        flat = [last_lib[1], frames[last_lib[0]].f_lineno] if last_lib is not None else []
        flat.extend(outer[1][: 2 * (_depth - len(flat) // 2)])
        key = _intern(tuple(flat))
    # What memo.advance(stop, frames[-2]) does, inlined for the usual case.
    below = frames[-2] if len(frames) > 1 else None
    if stop == len(memo.frames) - 1 and len(sums) <= stop + 1 and below is not memo.below:
        memo.below = below
        memo.below_at = stop
    else:
        memo.advance(stop, below)
    template = shape.template
    template_frame = frames[template] if template >= 0 else outer[4]
    found = _template_info(template_frame, memo) if template_frame is not None else None
    context = None
    if orm and _orm_reader is not None:
        plan = shape.plan if shape.plan is not None else shape.orm_plan(outer)
        if plan:
            sig, i, frame = plan[0]
            context = _orm_reader([(sig, frames[i] if frame is None else frame)], True)
            if context is None and len(plan) > 1:
                rest = [(sig, frames[i] if frame is None else frame) for sig, i, frame in plan[1:]]
                context = _orm_reader(rest, True)
    return key, found, context


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


def _template_info(frame: FrameType, memo: StackMemo | None = None) -> dict[str, Any] | None:
    """Template name and line of the node being rendered (Node.render_annotated's ``self``).

    With a memo, a node's dict is made once per unit and shared by its records.
    """
    node = frame.f_locals.get("self")
    if memo is None:
        return _node_info(node)
    known = memo.templates.get(id(node))
    if known is not None and known[0] is node:
        return known[1]
    info = _node_info(node)
    memo.templates[id(node)] = (node, info)
    return info


def _node_info(node: Any) -> dict[str, Any] | None:
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


#: (id(code), line) -> its site dict, shared (read-only) by every queryset built there. Codes
#: that were classified stay in _codes, so their ids are never reused.
_sites: dict[tuple[int, int], dict[str, Any]] = {}
MAX_SITES = 50_000


def first_app_site(frame: FrameType | None, limit: int = 100) -> dict[str, Any] | None:
    """``{"file", "line", "func"}`` of the first app frame from ``frame`` outward, within
    ``limit`` frames (None: none). A queryset's creation site: found on the request thread,
    once per queryset a manager makes, from the cached classification (no source is read).
    The dict is shared: never modify it."""
    fget = _flags.get
    while frame is not None and limit > 0:
        code = frame.f_code
        flags = fget(id(code))
        if flags is None:
            flags = _classify(code)[1]
        if flags & APP:
            key = (id(code), frame.f_lineno)
            site = _sites.get(key)
            if site is None:
                site = {
                    "file": _entry(code)[4],
                    "line": key[1],
                    "func": getattr(code, "co_qualname", code.co_name),
                }
                if len(_sites) < MAX_SITES:
                    _sites[key] = site
            return site
        frame = frame.f_back
        limit -= 1
    return None


def is_app_file(filename: str) -> bool:
    """Whether ``filename`` counts as the user's code under the current configuration."""
    return bool(_classify_path(filename)[0] & APP)


def stats() -> dict[str, int]:
    """Sizes of the process-wide tables (for the probe's STATS message)."""
    return {"stacks": len(_stacks), "codes": len(_codes), "overflow": overflow}
