"""grpyc.vinegar against stock rpyc 6.0.2's vinegar, through stock brine bytes."""

import dataclasses
import sys
from urllib.error import URLError

import pytest
from rpyc.core import brine as stock_brine
from rpyc.core import vinegar as stock_vinegar

import grpyc
from grpyc import vinegar
from grpyc.vinegar import LOCAL_VERSION, GenericException
from tests.interop.conftest import start_rpyc_server, stop_process

HEADER = "\n\n========= Remote Traceback ({}) =========\n"
STOCK_FLAGS = {
    "import_custom_exceptions": False,
    "instantiate_custom_exceptions": False,
    "instantiate_oldstyle_exceptions": False,
}


class PlanetError(Exception):
    def __init__(self, planet, code):
        super().__init__(planet)
        self.code = code
        self.payload = [1, 2]


def raised(exc):
    try:
        raise exc
    except type(exc):
        return sys.exc_info()


def chained():
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError:
        return sys.exc_info()


def over_the_wire(value):
    """What the peer sees: the value as stock brine encodes and decodes it."""
    return stock_brine.load(stock_brine.dump(value))


def stock_load(value, **flags):
    return stock_vinegar.load(over_the_wire(value), **{**STOCK_FLAGS, **flags})


def grpyc_load(value, **flags):
    return vinegar.load(over_the_wire(value), **flags)


CASES = {
    "value_error": lambda: raised(ValueError("bad", 3)),
    "key_error": lambda: raised(KeyError("k")),
    "custom": lambda: raised(PlanetError("mars", 7)),
    "non_dumpable_args": lambda: raised(ValueError([1, 2], {"a": 1}, object())),
    "chained": chained,
    "os_error": lambda: raised(FileNotFoundError(2, "No such file or directory", "x.txt")),
}
FLAG_SETS = [(True, True), (False, False), (True, False)]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize(("with_tb", "with_version"), FLAG_SETS)
def test_dump_matches_stock_except_for_the_version_string(case, with_tb, with_version):
    info = CASES[case]()
    ours = vinegar.dump(*info, include_local_traceback=with_tb, include_local_version=with_version)
    theirs = stock_vinegar.dump(*info, with_tb, with_version)
    assert ours[:2] == theirs[:2]
    # Equal but for a method's repr, which grpyc replaces (see test below).
    assert [pair for pair in ours[2][:-1] if pair[0] != "add_note"] == [
        pair for pair in theirs[2][:-1] if pair[0] != "add_note"
    ]
    assert dict(ours[2])["add_note"] == "<builtins.builtin_function_or_method object>"
    assert dict(theirs[2])["add_note"].startswith("<built-in method add_note of ")
    assert ours[3] == theirs[3]
    assert ours[2][-1] == ("_remote_version", LOCAL_VERSION if with_version else "<version denied>")
    assert theirs[2][-1] == ("_remote_version", "6.0.2" if with_version else "<version denied>")
    assert stock_brine.dumpable(ours)


def test_stop_iteration_both_ways():
    ours = vinegar.dump(*raised(StopIteration()))
    assert ours == stock_vinegar.dump(*raised(StopIteration()), True, True) == 1
    assert stock_load(ours) is StopIteration
    assert type(grpyc_load(stock_vinegar.dump(*raised(StopIteration()), True, True))) is (
        StopIteration
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_stock_loads_grpyc_dump_without_version_warning(case):
    info = CASES[case]()
    ours = vinegar.dump(*info)
    exc = stock_load(ours)
    assert exc.args == ours[1]
    assert exc._remote_tb == ours[3]
    assert "WARNING" not in str(exc)
    assert str(exc).endswith(HEADER.format(1) + ours[3])


def test_stock_rebuilds_grpyc_builtin_exception():
    exc = stock_load(vinegar.dump(*raised(ValueError("bad", 3))))
    assert isinstance(exc, ValueError)
    assert type(exc).__name__ == "ValueError"
    assert exc.args == ("bad", 3)
    assert exc._remote_version == LOCAL_VERSION


def test_stock_instantiates_grpyc_custom_exception_when_allowed():
    ours = vinegar.dump(*raised(PlanetError("mars", 7)))
    generic = stock_load(ours)
    assert isinstance(generic, stock_vinegar.GenericException)
    assert type(generic).__name__ == f"{__name__}.PlanetError"
    custom = stock_load(ours, instantiate_custom_exceptions=True)
    assert isinstance(custom, PlanetError)
    assert (custom.args, custom.code, custom.payload) == (("mars",), 7, "[1, 2]")


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize(("with_tb", "with_version"), FLAG_SETS)
def test_grpyc_loads_stock_dump_like_stock_does(case, with_tb, with_version):
    theirs = stock_vinegar.dump(*CASES[case](), with_tb, with_version)
    ours = grpyc_load(theirs)
    reference = stock_load(theirs)
    assert type(ours).__name__ == type(reference).__name__
    if isinstance(reference, stock_vinegar.GenericException):
        assert isinstance(ours, GenericException)
    else:
        assert type(ours).__mro__[1] is type(reference).__mro__[1]
    assert ours.args == reference.args
    assert ours._remote_tb == reference._remote_tb == theirs[3]
    assert ours._remote_version == reference._remote_version
    assert str(ours).endswith(HEADER.format(1) + theirs[3])


def test_grpyc_loads_stock_value_error():
    exc = grpyc_load(stock_vinegar.dump(*raised(ValueError("bad", 3)), True, True))
    assert isinstance(exc, ValueError)
    assert exc.args == ("bad", 3)
    assert str(exc).startswith("('bad', 3)" + HEADER.format(1) + "Traceback (most recent call")
    assert str(exc).endswith("ValueError: ('bad', 3)\n")


def test_grpyc_loads_stock_key_error():
    exc = grpyc_load(stock_vinegar.dump(*raised(KeyError("k")), False, False))
    assert isinstance(exc, KeyError)
    assert str(exc) == "'k'" + HEADER.format(1) + "<traceback denied>"


def test_grpyc_loads_stock_custom_exception_with_and_without_instantiation():
    theirs = stock_vinegar.dump(*raised(PlanetError("mars", 7)), True, True)
    generic = grpyc_load(theirs)
    assert isinstance(generic, GenericException)
    assert type(generic).__name__ == f"{__name__}.PlanetError"
    assert (generic.args, generic.code, generic.payload) == (("mars",), 7, "[1, 2]")
    custom = grpyc_load(theirs, instantiate_custom_exceptions=True)
    assert isinstance(custom, PlanetError)
    assert (custom.args, custom.code, custom.payload) == (("mars",), 7, "[1, 2]")
    assert str(custom).startswith("mars" + HEADER.format(1))


def test_grpyc_loads_stock_chained_exception_text():
    exc = grpyc_load(stock_vinegar.dump(*chained(), True, True))
    assert isinstance(exc, RuntimeError)
    assert "KeyError: 'inner'\n" in str(exc)
    assert "The above exception was the direct cause of the following exception:" in str(exc)


def test_remote_traceback_hops_count_alike_across_implementations():
    first = stock_load(vinegar.dump(*raised(ValueError("bad"))))
    second = grpyc_load(stock_vinegar.dump(*raised(first), True, True))
    assert str(second).startswith("bad" + HEADER.format(2))
    third = stock_load(vinegar.dump(*raised(second)))
    assert str(third).startswith("bad" + HEADER.format(3))


# ------------------------------------------------- attribute values that are objects


@dataclasses.dataclass
class Account:
    owner: str
    password: str


def attribute_error_with_hidden_fields():
    try:
        grpyc.restricted(Account("bob", "hunter2"), ["balance"]).balance
    except AttributeError:
        return sys.exc_info()


def test_stock_sends_an_objects_repr_where_grpyc_sends_a_placeholder():
    info = attribute_error_with_hidden_fields()
    theirs = stock_vinegar.dump(*info, False, False)
    ours = vinegar.dump(*info, include_local_traceback=False)
    assert dict(theirs[2])["obj"] == "Account(owner='bob', password='hunter2')"
    assert dict(ours[2])["obj"] == f"<{__name__}.Account object>"
    assert "hunter2" not in repr(ours)


def test_stock_loads_the_placeholder_like_any_attribute():
    exc = stock_load(vinegar.dump(*attribute_error_with_hidden_fields()))
    assert isinstance(exc, AttributeError)
    assert (exc.name, exc.obj) == ("balance", f"<{__name__}.Account object>")
    assert "'Account' object has no attribute 'balance'" in str(exc)


# ------------------------------------------------- _generic_exceptions_cache


@pytest.fixture
def registries(monkeypatch):
    """Empty name -> class registries on both sides, restored afterwards."""
    monkeypatch.setattr(stock_vinegar, "_generic_exceptions_cache", {})
    monkeypatch.setattr(vinegar, "_generic_exceptions_cache", {})
    monkeypatch.setattr(vinegar, "_generic_classes", {})
    return stock_vinegar._generic_exceptions_cache, vinegar._generic_exceptions_cache


@pytest.mark.parametrize("registered", [False, True])
def test_url_error_loads_as_stock_loads_it(registries, registered):
    if registered:
        for registry in registries:
            registry["urllib.error.URLError"] = URLError
    theirs = stock_vinegar.dump(*raised(URLError("down")), True, True)
    ours, reference = grpyc_load(theirs), stock_load(theirs)
    assert isinstance(ours, URLError) is isinstance(reference, URLError) is registered
    assert isinstance(ours, GenericException) is (not registered)
    assert type(ours).__name__ == type(reference).__name__
    assert (ours.args, ours.reason) == (reference.args, reference.reason) == (("down",), "down")
    assert str(ours) == str(reference)


def test_stock_registers_its_generic_classes_where_grpyc_does(registries):
    theirs = stock_vinegar.dump(*raised(URLError("down")), True, True)
    ours, reference = grpyc_load(theirs), stock_load(theirs)
    stock_registry, grpyc_registry = registries
    # What code catching ``_generic_exceptions_cache[name]`` relies on.
    assert isinstance(reference, stock_registry["urllib.error.URLError"])
    assert isinstance(ours, grpyc_registry["urllib.error.URLError"])


def test_a_registered_url_error_from_a_stock_server_is_caught_as_url_error(registries):
    proc, port = start_rpyc_server("classic")
    conn = grpyc.connect("127.0.0.1", port)
    raising = "import urllib.error\nraise urllib.error.URLError('down')"
    try:
        with pytest.raises(GenericException, match="down") as generic:
            conn.root.execute(raising)
        assert type(generic.value).__name__ == "urllib.error.URLError"
        registries[1]["urllib.error.URLError"] = URLError
        with pytest.raises(URLError, match="<urlopen error down>"):
            conn.root.execute(raising)
    finally:
        conn.close()
        stop_process(proc)


def test_a_traceback_over_the_cap_is_sent_shortened_and_stock_reads_it():
    """Stock sends any traceback whole; grpyc keeps head and tail (semantics.md)."""
    cap = vinegar.MAX_TRACEBACK_CHARS
    info = raised(RuntimeError("start " + "x" * (3 * cap) + " end"))
    ours = vinegar.dump(*info)
    theirs = stock_vinegar.dump(*info, True, True)
    assert len(theirs[3]) > 3 * cap
    assert len(ours[3]) < cap + 300
    assert ours[3][:1000] == theirs[3][:1000]
    assert ours[3][-1000:] == theirs[3][-1000:]
    assert "characters of nested tracebacks left out" in ours[3]
    exc = stock_load(ours)
    assert "left out" in str(exc) and str(exc).rstrip().endswith("end")


def test_a_traceback_under_the_cap_is_sent_as_stock_sends_it():
    info = raised(RuntimeError("y" * (vinegar.MAX_TRACEBACK_CHARS // 2)))
    assert vinegar.dump(*info)[3] == stock_vinegar.dump(*info, True, True)[3]


def test_frames_formatted_before_give_the_text_stock_sends():
    """grpyc formats each distinct frame once (`grpyc._tbtext`): the second
    and later dumps of the same failure take its frames from that cache."""
    for _ in range(3):
        info = chained()
        assert vinegar.dump(*info)[3] == stock_vinegar.dump(*info, True, True)[3]
