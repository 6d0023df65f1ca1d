"""grpyc/_tbtext.py: a traceback's text, character for character what
`traceback.format_exception` writes, with each distinct frame formatted once."""

import importlib
import sys
import textwrap
import traceback

import pytest

from grpyc import _tbtext
from grpyc._tbtext import format_exception


@pytest.fixture
def module_of(tmp_path, monkeypatch):
    """Factory: a module imported from a file with `source` (real source lines:
    the frames get ``^~~`` markers)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    made = []

    def make(name, source):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        importlib.invalidate_caches()
        made.append(name)
        return importlib.import_module(name)

    yield make
    for name in made:
        sys.modules.pop(name, None)


def _raised(func, *args):
    try:
        func(*args)
    except BaseException as exc:  # every kind is formatted
        return exc
    raise AssertionError("did not raise")


SHAPES = """
def lookup(key):
    return {"a": 1}[key] + 1

def chained():
    try:
        lookup("b")
    except KeyError as exc:
        raise ValueError("bad key") from exc

def during_handling():
    try:
        lookup("b")
    except KeyError:
        1 / 0

def with_notes():
    exc = TypeError("noted")
    exc.add_note("a note")
    raise exc

def grouped():
    raise ExceptionGroup("several", [_raised_here(KeyError("x")), _raised_here(OSError(2, "gone"))])

def _raised_here(exc):
    try:
        raise exc
    except BaseException as caught:
        return caught

def recurse(depth):
    return recurse(depth + 1)

def bad_syntax():
    compile("x = (", "<made>", "exec")

def from_exec():
    exec("def f():\\n    raise LookupError('no source')\\nf()")
"""


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("lookup", ("b",)),
        ("chained", ()),
        ("during_handling", ()),
        ("with_notes", ()),
        ("grouped", ()),
        ("recurse", (0,)),
        ("bad_syntax", ()),
        ("from_exec", ()),
    ],
)
def test_the_text_is_what_the_traceback_module_writes(module_of, name, args):
    shapes = module_of("tbtext_shapes", SHAPES)
    exc = _raised(getattr(shapes, name), *args)
    expected = traceback.format_exception(type(exc), exc, exc.__traceback__)
    assert format_exception(exc, exc.__traceback__) == expected
    assert format_exception(exc, exc.__traceback__) == expected  # from the cache now


def test_an_exception_without_a_traceback():
    exc = ValueError("never raised")
    assert format_exception(exc, None) == traceback.format_exception(type(exc), exc, None)


def test_a_frame_is_formatted_once(module_of, monkeypatch):
    shapes = module_of("tbtext_once", SHAPES)
    exc = _raised(shapes.chained)
    format_exception(exc, exc.__traceback__)
    formatted = []
    original = traceback.StackSummary.format_frame_summary

    def counting(self, frame_summary, **options):
        formatted.append(frame_summary)
        return original(self, frame_summary, **options)

    monkeypatch.setattr(traceback.StackSummary, "format_frame_summary", counting)
    again = _raised(shapes.chained)  # the same frames, raised anew
    assert format_exception(again, again.__traceback__) == traceback.format_exception(
        type(again), again, again.__traceback__
    )
    frames = len(traceback.extract_tb(again.__traceback__))
    frames += len(traceback.extract_tb(again.__cause__.__traceback__))
    assert len(formatted) == frames  # all by the reference call, none by ours


def test_an_edited_line_is_formatted_anew(module_of, tmp_path):
    first = module_of("tbtext_edited", "def fail():\n    raise KeyError('old text')\n")
    exc = _raised(first.fail)
    assert "KeyError('old text')" in "".join(format_exception(exc, exc.__traceback__))
    (tmp_path / "tbtext_edited.py").write_text("def fail():\n    raise KeyError('new')\n")
    # The traceback module reads the file again (linecache.checkcache): so do we.
    text = "".join(format_exception(exc, exc.__traceback__))
    assert text == "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert "KeyError('new')" in text


def test_the_cache_holds_at_most_its_limit(monkeypatch):
    monkeypatch.setattr(_tbtext, "CACHE_LIMIT", 5)
    monkeypatch.setattr(_tbtext, "_frame_lines", {})
    for n in range(12):
        code = compile(f"raise ValueError({n})", f"<generated {n}>", "exec")
        exc = _raised(exec, code)
        format_exception(exc, exc.__traceback__)
        assert len(_tbtext._frame_lines) <= 5


def test_a_frame_with_a_very_long_line_is_not_kept(module_of, monkeypatch):
    monkeypatch.setattr(_tbtext, "_frame_lines", {})
    long_line = "x = " + " + ".join(["1"] * 400) + " + undefined_name\n"
    shapes = module_of("tbtext_long", "def fail():\n    " + long_line)
    exc = _raised(shapes.fail)
    text = format_exception(exc, exc.__traceback__)
    assert text == traceback.format_exception(type(exc), exc, exc.__traceback__)
    assert [key[1] for key in _tbtext._frame_lines] == ["_raised"]  # not "fail"
