"""The stack memo (stacks.StackMemo): a capture with it gives exactly what a plain walk gives.

Every helper below captures twice from the same frame, once with the memo and once without, and
the two results must be equal: across repeated captures (anchors, known stack shapes), through
generator frames resumed from different callers, recursion, frames that returned and were
replaced by new ones at the same depth, a configuration change, and real ORM queries fired from
a template loop.
"""

from __future__ import annotations

import dataclasses
import os
import threading

import pytest
from django.template import Context, Template

from djangoscope.probe import recorder, stacks
from djangoscope.probe.conf import get_config
from djangoscope.probe.recorder import Unit, current_unit

from .fakelib import fake_library

FAKE_LIB, _lib = fake_library(
    "fakelib_for_djangoscope_memo_tests",
    "def call(fn, *args):\n"
    "    return fn(*args)\n"
    "def twice(memo, orm=True):\n"
    "    # skip=1: both walks start at this function's caller, on the same line\n"
    "    return capture(1, orm, memo), capture(1, orm, None)\n"
    "def deep(n, fn, *args):\n"
    "    if n == 0:\n"
    "        return fn(*args)\n"
    "    return deep(n - 1, fn, *args)\n"
    "def resumed(gen):\n"
    "    return next(gen)\n"
    "def loop(memo, n, out, orm=True):\n"
    "    for _ in range(n):\n"
    "        out.append(deep(1, twice, memo, orm))\n",
)
call, twice, deep, resumed = _lib["call"], _lib["twice"], _lib["deep"], _lib["resumed"]
loop = _lib["loop"]

# The probe's own code is never kept ("hidden"): a helper compiled as if it were part of it.
_hidden: dict = {"call": call}
exec(
    compile(
        "def hidden_call(fn, *args):\n    return call(fn, *args)\n",
        os.path.join(os.path.dirname(stacks.__file__), "fake_hidden_for_tests.py"),
        "exec",
    ),
    _hidden,
)
hidden_call = _hidden["hidden_call"]


@pytest.fixture(autouse=True)
def default_config():
    stacks.configure(get_config())
    yield
    stacks.configure(get_config())


def configure(**changes):
    stacks.configure(dataclasses.replace(get_config(), **changes))


def check(pair):
    with_memo, plain = pair
    assert with_memo == plain
    return with_memo


def from_app(memo, depth):
    return check(deep(depth, twice, memo))


def test_repeated_captures_match_and_use_the_memo():
    memo = stacks.StackMemo()
    keys = {from_app(memo, 1 + i % 3)[0] for i in range(12)}
    assert len(keys) == 1  # library lines below the app frame are not kept: one stack
    assert memo.index  # anchors were found...
    assert memo.shapes  # ...and stack shapes recorded
    for _ in range(3):
        check(call(twice, memo))  # another path below the same anchors


def test_app_frames_below_the_anchors():
    memo = stacks.StackMemo()

    def inner(n):
        if n == 0:
            return deep(2, twice, memo)
        return inner(n - 1)

    for n in (0, 3, 1, 3, 0, 2, 2):
        key = check(inner(n))[0]
        assert [f["func"] for f in stacks.resolve(key)].count(
            "test_app_frames_below_the_anchors.<locals>.inner"
        ) == n + 1


def test_depth_limit_with_the_memo():
    memo = stacks.StackMemo()

    def inner(n):
        if n == 0:
            return deep(1, twice, memo)
        return inner(n - 1)

    configure(stack_depth=3)
    for n in (6, 1, 6, 0, 6):
        check(inner(n))
    configure(stack_depth=40)  # a configuration change discards what the memo knew
    for n in (6, 1, 6):
        frames = stacks.resolve(check(inner(n))[0])
        assert len(frames) > 3


def gen_captures(memo):
    while True:
        yield check(twice(memo))


def test_generator_frames_resumed_from_different_callers():
    memo = stacks.StackMemo()
    gen = gen_captures(memo)
    results = []
    for i in range(8):
        # The generator's caller (and so its f_back) changes on each resume.
        if i % 2:
            results.append(deep(3, resumed, gen))
        else:
            results.append(call(next, gen))
    assert len({r[0] for r in results}) == 2


def recurse(memo, n, out):
    out.append(check(twice(memo)))
    if n:
        recurse(memo, n - 1, out)
        out.append(check(twice(memo)))


def test_recursion():
    memo = stacks.StackMemo()
    out: list = []
    for _ in range(2):
        recurse(memo, 5, out)
    assert len({r[0] for r in out}) == 11  # 6 depths on the way in, 5 on the way out


def site_a(memo):
    return call(twice, memo)


def site_b(memo):
    return deep(2, twice, memo)


def test_returned_frames_cannot_give_a_stale_result():
    # site_a's and site_b's frames die after each call; the next ones are new frames, often at
    # the same address and depth as a dead one. The memo must never take one for the other.
    memo = stacks.StackMemo()
    seen = {}
    for i in range(12):
        site = site_a if i % 3 else site_b
        key = check(site(memo))[0]
        assert seen.setdefault(site.__name__, key) == key
    assert seen["site_a"] != seen["site_b"]


def test_no_app_frame_at_all():
    # A thread running library code only: the key is the innermost non-internal frame.
    memo = stacks.StackMemo()
    out: list = []
    thread = threading.Thread(target=loop, args=(memo, 6, out, False))
    thread.start()
    thread.join()
    assert len(out) == 6
    for pair in out:
        check(pair)
    assert len({pair[0][0] for pair in out}) == 1
    assert stacks.resolve(out[0][0][0])[0]["file"] == FAKE_LIB


def test_library_anchor_called_by_app_code():
    # The anchor (loop's frame) is a library frame whose caller is app code: the library frame
    # the app frame called is then the anchor itself, read at its current line.
    memo = stacks.StackMemo()
    out: list = []
    loop(memo, 6, out)
    for pair in out:
        check(pair)
    frames = stacks.resolve(out[-1][0][0])
    assert frames[-1]["func"] == "loop" and not frames[-1]["app"]


def test_hidden_frame_between_app_and_library_code():
    memo = stacks.StackMemo()
    for depth in (1, 2, 1, 2, 1):
        key = check(hidden_call(deep, depth, twice, memo))[0]
        assert "hidden_call" not in [f["func"] for f in stacks.resolve(key)]


def test_a_walk_away_from_every_anchor():
    memo = stacks.StackMemo()
    for _ in range(3):
        from_app(memo, 1)
    assert memo.index
    out: list = []
    # Another thread's stack shares no frame with the anchors: a full walk, new anchors.
    thread = threading.Thread(target=lambda: out.extend(from_app(memo, 2) for _ in range(3)))
    thread.start()
    thread.join()
    assert len(out) == 3
    from_app(memo, 1)


def test_clear_drops_every_reference():
    memo = stacks.StackMemo()
    for _ in range(4):
        from_app(memo, 1)
    assert memo.frames and memo.index and memo.shapes
    memo.clear()
    assert not memo.frames and not memo.index and not memo.shapes and not memo.templates
    assert memo.below is None
    from_app(memo, 1)  # still usable


def test_unit_memo_per_thread_and_cleared_at_finish():
    unit = Unit()
    mine = unit.stack_memo()
    assert mine is unit.memo is not None
    others: list = []
    thread = threading.Thread(target=lambda: others.append(unit.stack_memo()))
    thread.start()
    thread.join()
    assert others[0] is not None and others[0] is not mine
    from_app(mine, 1)
    from_app(mine, 1)
    unit.finish()
    assert unit.memo is None and unit.stack_memo() is None
    assert not mine.frames and not mine.shapes


CATALOGUE = Template(
    "{% for book in books %}{{ book.author.name }}"
    "{% for tag in book.tags.all %}{{ tag.name }}{% endfor %}"
    "{% if book.publisher %}{{ book.publisher.name }}{% endif %}{{ reviews }}{% endfor %}"
)


def count_reviews():
    """App code called by the template: queries below it are attributed to it."""
    from djangoscope.resources.demo.bookshop.models import Review

    return Review.objects.count()


def _record(use_memo: bool):
    from djangoscope.resources.demo.bookshop.models import Book

    unit = Unit()
    if not use_memo:
        unit.memo = None
    token = current_unit.set(unit)
    try:
        books = Book.objects.order_by("pk")
        CATALOGUE.render(Context({"books": books, "reviews": count_reviews}))
        for book in Book.objects.order_by("pk"):
            book.tags.count()
    finally:
        current_unit.reset(token)
    return unit


def test_template_loop_queries_match_a_plain_walk(installed, books):
    with_memo, plain = _record(True), _record(False)
    fields = ("sql", "params", "stack", "template", "orm")
    got = [tuple(q[f] for f in fields) for q in with_memo.queries]
    expected = [tuple(q[f] for f in fields) for q in plain.queries]
    assert got == expected
    assert len(got) > 10
    assert {q["orm"]["op"] for q in with_memo.queries if q["orm"]} >= {
        "fk",
        "related_fetch",
        "related_manager",
    }
    assert any(q["template"] for q in with_memo.queries)
    counts = [q for q in with_memo.queries if "bookshop_review" in q["sql"]]
    assert counts and all(q["template"] and q["orm"]["op"] == "queryset" for q in counts)


def test_unit_views_of_compact_records():
    unit = Unit(limits={"spans": 4})
    now = 1000
    unit.add_query({"sql": "SELECT 1", "alias": "default", "vendor": "x", "start_ns": now,
                    "end_ns": now + 5})  # fmt: skip
    span = unit.open_span(recorder.SPAN_TEMPLATE, "t.html")
    unit.add_query({"sql": "SELECT 2", "params": (1,), "alias": "default", "vendor": "x",
                    "start_ns": now + 10, "end_ns": now + 20, "rowcount": 1})  # fmt: skip
    unit.close_span(span)
    unit.add_query({"sql": "SELECT 3", "alias": "default", "vendor": "x", "start_ns": now,
                    "end_ns": now + 1})  # fmt: skip
    assert [q["sql"] for q in unit.queries] == ["SELECT 1", "SELECT 2", "SELECT 3"]
    assert unit.queries[1]["params"] == (1,) and unit.queries[1]["rowcount"] == 1
    assert unit.queries[1]["span"] == span.id
    # Ids in creation order; the third query's span is over the limit of 4.
    assert [(s.id, s.kind, s.ref) for s in unit.spans] == [
        (0, "request", None),
        (1, "sql", 0),
        (2, "template", None),
        (3, "sql", 1),
    ]
    assert unit.truncated == {"spans": 1}
    message = unit.to_message()
    assert [s["id"] for s in message["spans"]] == [0, 1, 2, 3]
    assert message["spans"][3]["parent"] == span.id
    assert message["spans"][3]["ref"] == 1
    assert len(message["queries"]) == 3


def test_a_failure_inside_the_memo_clears_it(monkeypatch):
    memo = stacks.StackMemo()
    for _ in range(4):
        from_app(memo, 1)
    assert memo.shapes and memo.index

    def boom(flat):
        raise RuntimeError("boom")

    monkeypatch.setattr(stacks, "_intern", boom)
    with pytest.raises(RuntimeError):
        deep(1, twice, memo)
    assert not memo.frames and not memo.index and not memo.shapes and not memo.busy
    monkeypatch.undo()
    for _ in range(3):
        from_app(memo, 1)
