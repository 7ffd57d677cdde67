"""Stack capture: the app/library rule, the frames kept, interning, and resolving."""

from __future__ import annotations

import dataclasses
import os
import sys
import threading

import django
import pytest

from djangoscope.probe import stacks
from djangoscope.probe.conf import get_config

from .fakelib import fake_library

FAKE_LIB, _lib = fake_library(
    "fakelib_for_djangoscope_tests",
    "def call(fn, *args):\n"
    "    return fn(*args)\n"
    "def capture_here(out):\n"
    "    out.append(capture(0))\n",
)


@pytest.fixture(autouse=True)
def default_config():
    stacks.configure(get_config())
    yield
    stacks.configure(get_config())


def configure(**changes):
    stacks.configure(dataclasses.replace(get_config(), **changes))


def here() -> int:
    return sys._getframe(1).f_lineno


def test_app_and_library_files():
    assert stacks.is_app_file(__file__)
    assert not stacks.is_app_file(django.__file__)
    assert not stacks.is_app_file(os.__file__)  # stdlib
    assert not stacks.is_app_file(pytest.__file__)  # site-packages
    assert not stacks.is_app_file(stacks.__file__)  # the probe itself
    assert not stacks.is_app_file(threading.__file__)
    assert not stacks.is_app_file("<frozen importlib._bootstrap>")
    assert stacks.is_app_file("<console>")


def test_demo_is_app_code_even_under_library_paths():
    from djangoscope.resources.demo.bookshop import models

    assert stacks.is_app_file(models.__file__)
    configure(library_paths=(os.path.dirname(os.path.dirname(models.__file__)),))
    assert stacks.is_app_file(models.__file__)


def test_app_and_library_paths_settings():
    configure(app_paths=(os.path.dirname(pytest.__file__),))
    assert stacks.is_app_file(pytest.__file__)
    configure(library_paths=(os.path.dirname(__file__),))
    assert not stacks.is_app_file(__file__)


def test_keeps_app_frames_and_the_library_frame_they_called():
    key, template, orm = _lib["call"](stacks.capture_stack, 0)
    line = here() - 1
    frames = stacks.resolve(key)
    assert template is None and orm is None
    assert frames[-1] == {
        "file": FAKE_LIB,
        "line": 2,
        "func": "call",
        "app": False,
    }
    assert frames[-2] == {
        "file": __file__,
        "line": line,
        "func": "test_keeps_app_frames_and_the_library_frame_they_called",
        "app": True,
    }
    # Only app frames above: pytest's and pluggy's frames are not kept.
    assert all(f["app"] for f in frames[:-1])


def test_interning_same_site_same_key_other_line_other_key():
    keys = []
    for _ in range(3):
        keys.append(stacks.capture_stack(0)[0])
    other = stacks.capture_stack(0)[0]
    assert len(set(keys)) == 1
    assert other != keys[0]
    assert stacks.resolve(keys[0])[:-1] == stacks.resolve(other)[:-1]
    assert stacks.resolve(keys[0])[-1]["line"] + 1 == stacks.resolve(other)[-1]["line"]


def nested(n: int):
    if n == 0:
        return stacks.capture_stack(0)[0]
    return nested(n - 1)


def test_stack_depth_limit_keeps_the_innermost_frames():
    configure(stack_depth=3)
    frames = stacks.resolve(nested(10))
    assert len(frames) == 3
    assert [f["func"] for f in frames] == ["nested"] * 3
    configure(stack_depth=100)
    frames = stacks.resolve(nested(10))
    assert [f["func"] for f in frames].count("nested") == 11


def test_no_app_frame_keeps_the_innermost_library_call_site():
    out: list = []
    thread = threading.Thread(target=_lib["capture_here"], args=(out,))
    thread.start()
    thread.join()
    (key, _template, _orm) = out[0]
    assert stacks.resolve(key) == [
        {"file": FAKE_LIB, "line": 4, "func": "capture_here", "app": False}
    ]


def test_resolve_unknown_keys():
    assert stacks.resolve(stacks.EMPTY) == []
    assert stacks.resolve(10**9) == []


def test_threads_intern_consistently():
    keys: list[int] = []

    def grab():
        for _ in range(200):
            keys.append(_lib["call"](stacks.capture_stack, 0)[0])

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1
