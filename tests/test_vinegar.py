"""grpyc.vinegar: exception dump/load (PROTOCOL.md section 6), fed values only."""

import builtins
import dataclasses
import inspect
import json
import os
import sys
import traceback
from urllib.error import URLError

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grpyc import consts, vinegar
from grpyc.helpers import restricted
from grpyc.vinegar import LOCAL_VERSION, GenericException, VinegarError

HEADER = "\n\n========= Remote Traceback ({}) =========\n"
INIT_CALLS = []
NEW_CALLS = []


class PlanetError(Exception):
    def __init__(self, planet, code):
        INIT_CALLS.append(planet)
        super().__init__(planet)
        self.code = code
        self.payload = [1, 2]


class LoudNewError(Exception):
    def __new__(cls, *args):
        NEW_CALLS.append(cls)
        return super().__new__(cls, *args)


class ReadOnlyError(Exception):
    @property
    def level(self):
        return "fixed"


class NotAnException:
    def __new__(cls, *args):
        NEW_CALLS.append(cls)
        return super().__new__(cls)


class BrokenAttrError(Exception):
    @property
    def secret(self):
        raise RuntimeError("no")

    @property
    def weird(self):
        return UnreprObject()


class UnreprObject:
    def __repr__(self):
        raise RuntimeError("no repr")


METHOD = "<builtins.builtin_function_or_method object>"


def dumped(exc, **flags):
    try:
        raise exc
    except type(exc):
        return vinegar.dump(*sys.exc_info(), **flags)


def wire(names, args=(), attrs=(), tbtext="TB\n", version=LOCAL_VERSION):
    return (names, args, (*attrs, ("_remote_version", version)), tbtext)


# ------------------------------------------------------------------ dump


def test_dump_stop_iteration_is_the_shortcut_int():
    assert dumped(StopIteration()) == consts.EXC_STOP_ITERATION == 1


def test_dump_value_error_has_the_protocol_shape():
    exc = ValueError("bad", 3)
    names, args, attrs, tbtext = dumped(exc)
    assert names == ("builtins", "ValueError")
    assert args == ("bad", 3)
    assert attrs == (("add_note", METHOD), ("_remote_version", LOCAL_VERSION))
    assert tbtext.startswith("Traceback (most recent call last):\n")
    assert tbtext.endswith("ValueError: ('bad', 3)\n")


def test_dump_sends_public_attributes_and_reprs_plain_data():
    exc = PlanetError("mars", 7)
    names, args, attrs, _ = dumped(exc)
    assert names == (__name__, "PlanetError")
    assert args == ("mars",)
    assert attrs == (
        ("add_note", METHOD),
        ("code", 7),
        ("payload", "[1, 2]"),
        ("_remote_version", LOCAL_VERSION),
    )


def test_dump_reprs_non_dumpable_args():
    _, args, _, _ = dumped(ValueError([1, 2], {"a": 1}, b"ok", (1, "t")))
    assert args == ("[1, 2]", "{'a': 1}", b"ok", (1, "t"))


def test_dump_skips_unreadable_attributes_and_survives_broken_repr():
    _, args, attrs, _ = dumped(BrokenAttrError(UnreprObject()))
    assert args == ("<unrepresentable UnreprObject object>",)
    assert [name for name, _ in attrs] == ["add_note", "weird", "_remote_version"]
    assert attrs[1] == ("weird", f"<{__name__}.UnreprObject object>")


def test_dump_denies_traceback_and_version_when_told():
    _, _, attrs, tbtext = dumped(
        KeyError("k"), include_local_traceback=False, include_local_version=False
    )
    assert tbtext == "<traceback denied>"
    assert attrs[-1] == ("_remote_version", "<version denied>")


def test_dump_traceback_text_includes_chained_exceptions():
    try:
        try:
            raise KeyError("inner")
        except KeyError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError:
        names, args, _, tbtext = vinegar.dump(*sys.exc_info())
    assert names == ("builtins", "RuntimeError")
    assert args == ("outer",)
    assert "KeyError: 'inner'\n" in tbtext
    assert "The above exception was the direct cause of the following exception:" in tbtext
    assert tbtext.endswith("RuntimeError: outer\n")


def test_local_version_leads_with_the_rpyc_major_a_stock_peer_checks():
    assert LOCAL_VERSION == "6.0.2+grpyc.0.1.0"
    assert LOCAL_VERSION.split(".")[0] == "6"


# ------------------------------------------------------------------ load


def test_load_stop_iteration():
    exc = vinegar.load(1)
    assert type(exc) is StopIteration


def test_load_rebuilds_builtin_class_and_shows_remote_traceback():
    exc = vinegar.load(wire(("builtins", "ValueError"), ("bad",), tbtext="TB\n"))
    assert isinstance(exc, ValueError)
    assert type(exc).__name__ == "ValueError"
    assert type(exc).__module__ == "builtins"
    assert exc.args == ("bad",)
    assert exc._remote_tb == "TB\n"
    assert str(exc) == "bad" + HEADER.format(1) + "TB\n"
    assert repr(exc) == str(exc)
    assert traceback.format_exception_only(type(exc), exc)[0].startswith("ValueError: bad\n")


def test_load_round_trips_key_error():
    exc = vinegar.load(dumped(KeyError("k")))
    assert isinstance(exc, KeyError)
    assert exc.args == ("k",)
    assert str(exc).startswith("'k'" + HEADER.format(1) + "Traceback (most recent call last):\n")
    assert str(exc).endswith("KeyError: 'k'\n")


def test_load_round_trips_os_error_fields():
    exc = vinegar.load(dumped(FileNotFoundError(2, "No such file or directory", "x.txt")))
    assert type(exc).__mro__[1] is FileNotFoundError
    assert (exc.errno, exc.strerror, exc.filename) == (2, "No such file or directory", "x.txt")
    assert str(exc).startswith("[Errno 2] No such file or directory: 'x.txt'" + HEADER.format(1))


def test_load_counts_remote_traceback_hops():
    first = vinegar.load(wire(("builtins", "ValueError"), ("bad",), tbtext="TB1\n"))
    second = vinegar.load(dumped(first))
    assert isinstance(second, ValueError)
    assert second.args == ("bad",)
    assert str(second).startswith("bad" + HEADER.format(2))
    assert HEADER.format(1) + "TB1\n" in str(second)


def test_load_custom_class_is_generic_by_default():
    INIT_CALLS.clear()
    exc = vinegar.load(dumped(PlanetError("mars", 7)))
    assert INIT_CALLS == ["mars"]  # only the dump side constructed one
    assert isinstance(exc, GenericException)
    assert isinstance(exc, Exception)
    assert not isinstance(exc, PlanetError)
    assert type(exc).__name__ == f"{__name__}.PlanetError"
    assert type(exc).__module__ == f"grpyc.vinegar/{__name__}"
    assert (exc.args, exc.code, exc.payload) == (("mars",), 7, "[1, 2]")
    assert exc._remote_version == LOCAL_VERSION
    assert str(exc).startswith("mars" + HEADER.format(1))
    line = traceback.format_exception_only(type(exc), exc)[0]
    assert line.startswith(f"grpyc.vinegar/{__name__}.{__name__}.PlanetError: mars\n")


def test_load_custom_class_when_instantiation_is_on_skips_init():
    value = dumped(PlanetError("venus", 9))
    INIT_CALLS.clear()
    exc = vinegar.load(value, instantiate_custom_exceptions=True)
    assert INIT_CALLS == []
    assert isinstance(exc, PlanetError)
    assert type(exc).__name__ == "PlanetError"
    assert type(exc).__module__ == __name__
    assert (exc.args, exc.code, exc.payload) == (("venus",), 9, "[1, 2]")
    assert str(exc).startswith("venus" + HEADER.format(1))


def test_load_never_runs_new_of_custom_class_when_instantiation_is_off():
    NEW_CALLS.clear()
    exc = vinegar.load(wire((__name__, "LoudNewError"), ("x",)))
    assert NEW_CALLS == []
    assert type(exc).__name__ == f"{__name__}.LoudNewError"


def test_load_generic_classes_are_cached_per_remote_name():
    first = vinegar.load(wire(("remote.mod", "Boom"), ("a",)))
    second = vinegar.load(wire(("remote.mod", "Boom"), ("b",)))
    other = vinegar.load(wire(("remote.other", "Boom"), ("c",)))
    assert type(first) is type(second)
    assert type(first) is not type(other)
    assert type(first).__name__ == "remote.mod.Boom"
    with pytest.raises(type(first), match=r"^b\n"):
        raise second


def test_load_generic_class_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(vinegar, "_generic_classes", {})
    monkeypatch.setattr(vinegar, "_generic_exceptions_cache", {"m.Mine": PlanetError})
    monkeypatch.setattr(vinegar, "_MAX_GENERIC_CLASSES", 3)
    kept = type(vinegar.load(wire(("m", "Kept"))))
    for index in range(5):
        vinegar.load(wire(("m", f"E{index}")))
        assert type(vinegar.load(wire(("m", "Kept")))) is kept  # recently used stays
    assert len(vinegar._generic_classes) == 3
    assert list(vinegar._generic_classes) == ["m.E3", "m.E4", "m.Kept"]
    # RPyC's registry holds the same generic classes, and what a program registered.
    assert sorted(vinegar._generic_exceptions_cache) == ["m.E3", "m.E4", "m.Kept", "m.Mine"]
    assert vinegar._generic_exceptions_cache["m.Kept"] is kept


# ------------------------------------------------------------ _generic_exceptions_cache


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setattr(vinegar, "_generic_exceptions_cache", {})
    monkeypatch.setattr(vinegar, "_generic_classes", {})
    return vinegar._generic_exceptions_cache


def test_a_registered_class_stands_for_its_remote_name(registry):
    registry["urllib.error.URLError"] = URLError
    exc = vinegar.load(dumped(URLError("down"), include_local_traceback=False))
    assert isinstance(exc, URLError)
    assert type(exc).__name__ == "URLError"
    assert (exc.args, exc.reason) == (("down",), "down")
    assert str(exc) == "<urlopen error down>" + HEADER.format(1) + "<traceback denied>"


def test_without_registration_a_stdlib_exception_stays_generic_as_in_rpyc(registry):
    exc = vinegar.load(wire(("urllib.error", "URLError"), ("down",)))
    assert isinstance(exc, GenericException)
    assert not isinstance(exc, URLError)
    assert type(exc).__name__ == "urllib.error.URLError"
    assert registry["urllib.error.URLError"] is type(exc)


def test_a_registered_name_does_not_override_instantiation_of_the_real_class(registry):
    registry[f"{__name__}.PlanetError"] = KeyError
    exc = vinegar.load(
        wire((__name__, "PlanetError"), ("mars",)), instantiate_custom_exceptions=True
    )
    assert isinstance(exc, PlanetError)


def test_a_registered_non_exception_is_never_instantiated(registry):
    registry["m.Thing"] = NotAnException
    calls_before = len(NEW_CALLS)
    exc = vinegar.load(wire(("m", "Thing"), ("x",)))
    assert isinstance(exc, GenericException)
    assert len(NEW_CALLS) == calls_before
    assert registry["m.Thing"] is NotAnException  # the program's entry stays


# ------------------------------------------------------------ attribute values


@dataclasses.dataclass
class Account:
    owner: str
    password: str


def test_an_objects_hidden_fields_do_not_leak_through_attribute_error_obj():
    # Python sets AttributeError.obj to the object that lacked the attribute.
    view = restricted(Account("bob", "hunter2"), ["balance"])
    try:
        view.balance
    except AttributeError:
        value = vinegar.dump(*sys.exc_info(), include_local_traceback=False)
    attrs = dict(value[2])
    assert attrs["obj"] == f"<{__name__}.Account object>"
    assert attrs["name"] == "balance"
    assert "hunter2" not in repr(value)


@pytest.mark.parametrize(
    "data",
    [
        [1, "two", b"3", None],
        {"a": (1, 2), 3: [4.5]},
        {frozenset({1}), (2, "x")},
        bytearray(b"raw"),
        [[[1]], {"k": {"v"}}],
    ],
    ids=lambda data: type(data).__name__,  # a set's repr differs with the hash seed
)
def test_plain_data_attributes_travel_as_their_repr_as_in_rpyc(data):
    exc = ValueError("v")
    exc.data = data
    assert dict(dumped(exc)[2])["data"] == repr(data)


@pytest.mark.parametrize(
    ("data", "placeholder"),
    [
        ([1, Account("a", "b")], "<builtins.list object>"),
        ({"k": object()}, "<builtins.dict object>"),
        (list(range(1001)), "<builtins.list object>"),
        (Account("a", "b"), f"<{__name__}.Account object>"),
        (print, METHOD),
    ],
    ids=["object-in-list", "object-in-dict", "too-many-items", "object", "function"],
)
def test_other_attribute_values_travel_as_a_placeholder(data, placeholder):
    exc = ValueError("v")
    exc.data = data
    assert dict(dumped(exc)[2])["data"] == placeholder


@pytest.mark.parametrize(
    ("module", "name", "steering"),
    [
        ("builtins", "KeyboardInterrupt", KeyboardInterrupt),
        ("builtins", "SystemExit", SystemExit),
        ("builtins", "GeneratorExit", GeneratorExit),
        ("builtins", "SystemError", SystemError),
        ("greenlet", "GreenletExit", __import__("greenlet").GreenletExit),
    ],
)
@pytest.mark.parametrize("custom", [False, True])
def test_load_steering_exceptions_as_plain_data(module, name, steering, custom):
    # A peer's KeyboardInterrupt must not stop this process (docs/semantics.md).
    exc = vinegar.load(
        wire((module, name), (3,), attrs=(("code", 3),)),
        import_custom_exceptions=custom,
        instantiate_custom_exceptions=custom,
    )
    assert not isinstance(exc, steering)
    assert isinstance(exc, GenericException)
    assert type(exc).__name__ == f"{module}.{name}"
    assert exc.args == (3,)


def test_load_exception_group_falls_back_to_generic():
    exc = vinegar.load(wire(("builtins", "ExceptionGroup"), ("msg", "[ValueError()]")))
    assert isinstance(exc, GenericException)
    assert type(exc).__name__ == "builtins.ExceptionGroup"


@pytest.mark.parametrize("clsname", ["open", "print", "object", "type", "__import__", "__class__"])
def test_load_builtin_non_exception_becomes_generic(clsname):
    exc = vinegar.load(wire(("builtins", clsname), ("x",)))
    assert isinstance(exc, GenericException)
    assert type(exc).__name__ == f"builtins.{clsname}"


@pytest.mark.parametrize(
    "flags",
    [{}, {"instantiate_custom_exceptions": True, "import_custom_exceptions": True}],
)
def test_load_never_calls_a_named_function(monkeypatch, flags):
    calls = []
    monkeypatch.setattr(os, "system", lambda *args: calls.append(args))
    exc = vinegar.load(wire(("os", "system"), ("echo hi",)), **flags)
    assert calls == []
    assert isinstance(exc, GenericException)
    assert type(exc).__name__ == "os.system"


def test_load_never_instantiates_a_non_exception_class():
    NEW_CALLS.clear()
    exc = vinegar.load(wire((__name__, "NotAnException")), instantiate_custom_exceptions=True)
    assert NEW_CALLS == []
    assert isinstance(exc, GenericException)


@pytest.fixture
def importable_module(tmp_path, monkeypatch):
    name = "grpyc_vinegar_probe_module"
    (tmp_path / f"{name}.py").write_text(
        "IMPORTED = True\nclass ProbeError(Exception):\n    pass\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    yield name
    sys.modules.pop(name, None)


@pytest.mark.parametrize(
    "flags",
    [
        {},
        {"import_custom_exceptions": True},
        {"instantiate_custom_exceptions": True},
    ],
)
def test_load_imports_nothing_unless_import_and_instantiate_are_on(importable_module, flags):
    exc = vinegar.load(wire((importable_module, "ProbeError"), ("p",)), **flags)
    assert importable_module not in sys.modules
    assert type(exc).__name__ == f"{importable_module}.ProbeError"


def test_load_imports_module_when_allowed(importable_module):
    exc = vinegar.load(
        wire((importable_module, "ProbeError"), ("p",)),
        import_custom_exceptions=True,
        instantiate_custom_exceptions=True,
    )
    module = sys.modules[importable_module]
    assert module.IMPORTED is True
    assert isinstance(exc, module.ProbeError)


@pytest.mark.parametrize("modname", [".relative", "", "a..b", "os/path", "x y"])
def test_load_never_imports_a_name_that_is_not_a_module_path(modname):
    exc = vinegar.load(
        wire((modname, "E")), import_custom_exceptions=True, instantiate_custom_exceptions=True
    )
    assert isinstance(exc, GenericException)


def test_load_ignores_dunder_and_invalid_attribute_names():
    attrs = (
        ("__class__", "x"),
        ("__dict__", "y"),
        ("__init__", "z"),
        ("__traceback__", "t"),
        ("__cause__", "c"),
        ("__notes__", ("n",)),
        ("__module__", "m"),
        ("not an identifier", 1),
        ("_remote_tb", "forged"),
        ("ok", 1),
    )
    exc = vinegar.load(wire(("builtins", "ValueError"), ("v",), attrs=attrs, tbtext="TB\n"))
    assert type(exc).__mro__[1] is ValueError
    assert exc.__traceback__ is None
    assert exc.__cause__ is None
    assert not hasattr(exc, "__notes__")
    assert sorted(vars(exc)) == ["_remote_tb", "_remote_version", "ok"]
    assert exc._remote_tb == "TB\n"


def test_load_never_shadows_methods():
    attrs = (("add_note", "x"), ("with_traceback", "y"))
    exc = vinegar.load(wire(("builtins", "ValueError"), attrs=attrs))
    exc.add_note("a note")
    assert exc.__notes__ == ["a note"]
    assert exc.with_traceback(None) is exc


def test_load_skips_read_only_attributes():
    exc = vinegar.load(
        wire((__name__, "ReadOnlyError"), attrs=(("level", "forged"),)),
        instantiate_custom_exceptions=True,
    )
    assert isinstance(exc, ReadOnlyError)
    assert exc.level == "fixed"


def test_load_str_survives_unprintable_args():
    deep = ()
    for _ in range(100_000):
        deep = (deep,)
    exc = vinegar.load(wire(("builtins", "ValueError"), (deep, 1)))
    assert str(exc) == "<Unprintable exception>" + HEADER.format(1) + "TB\n"


@pytest.mark.parametrize(
    ("version", "warning"),
    [
        ("5.3.1", f"\nWARNING: Remote is on RPyC 5.3.1 and local is on RPyC {LOCAL_VERSION}.\n\n"),
        ("6.0.2", ""),
        ("6.1.0+other", ""),
        ("<version denied>", ""),
        (7, ""),
    ],
)
def test_load_warns_about_another_major_version(version, warning):
    exc = vinegar.load(wire(("builtins", "ValueError"), version=version, tbtext="TB\n"))
    assert exc._remote_tb == "TB\n" + warning


def test_load_without_version_attribute_has_no_warning():
    exc = vinegar.load((("builtins", "ValueError"), (), (), "TB\n"))
    assert exc._remote_tb == "TB\n"


def _deep(depth):
    value = ()
    for _ in range(depth):
        value = (value,)
    return value


NAMES = ("builtins", "ValueError")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, r"must be 1 or a 4-tuple .*, got NoneType"),
        (2, r"got int"),
        (True, r"got bool"),
        (1.0, r"got float"),
        ("ValueError", r"got str of length 10"),
        ((), r"got tuple of length 0"),
        ((NAMES, (), ()), r"got tuple of length 3"),
        ((NAMES, (), (), "", ""), r"got tuple of length 5"),
        (_deep(100_000), r"got tuple of length 1"),
        ((("builtins",), (), (), ""), r"class name must be a \(module, class_name\) pair"),
        (("builtins.ValueError", (), (), ""), r"class name must be a .* got str of length 19"),
        (((b"builtins", "ValueError"), (), (), ""), r"module name must be a str, got bytes"),
        ((("builtins", 1), (), (), ""), r"class name must be a str, got int"),
        (((_deep(100_000), "E"), (), (), ""), r"module name must be a str, got tuple"),
        ((("m" * 1001, "E"), (), (), ""), r"module name of 1001 chars exceeds the limit of 1000"),
        ((("m", "E" * 1001), (), (), ""), r"class name of 1001 chars exceeds the limit of 1000"),
        ((("m", "a\x00b"), (), (), ""), r"class name 'a\\x00b' has non-printable characters"),
        ((("\ud800", "E"), (), (), ""), r"module name '\\ud800' has non-printable characters"),
        ((("m\n", "E"), (), (), ""), r"module name 'm\\n' has non-printable characters"),
        ((NAMES, "x", (), ""), r"args must be a tuple, got str"),
        ((NAMES, frozenset(), (), ""), r"args must be a tuple, got frozenset"),
        ((NAMES, (), "x", ""), r"attrs must be a tuple, got str"),
        ((NAMES, (), (("a",),), ""), r"attrs\[0\] must be a \(name, value\) pair"),
        ((NAMES, (), (("a", 1), "b"), ""), r"attrs\[1\] must be a \(name, value\) pair"),
        ((NAMES, (), ((1, 2),), ""), r"attrs\[0\] name must be a str, got int"),
        ((NAMES, (), (), None), r"traceback text must be a str, got NoneType"),
        ((NAMES, (), (), b"tb"), r"traceback text must be a str, got bytes"),
    ],
)
def test_load_rejects_wrong_shapes(value, message):
    with pytest.raises(VinegarError, match=message):
        vinegar.load(value)


def test_vinegar_error_is_a_value_error():
    assert issubclass(VinegarError, ValueError)


def test_vinegar_imports_neither_socket_nor_gevent():
    source = vinegar.__loader__.get_source(vinegar.__name__)
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert not [line for line in imports if "socket" in line or "gevent" in line]


# ------------------------------------------------------------ hypothesis

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.complex_numbers(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.sampled_from([NotImplemented, Ellipsis])
)
_dumpable = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=5).map(tuple)
        | st.builds(slice, inner, inner, inner)
        | st.frozensets(_scalars, max_size=4)
    ),
    max_leaves=25,
)
_dotted = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.]{0,15}", fullmatch=True)
_modnames = (
    st.sampled_from(["builtins", "os", "grpyc.vinegar", __name__]) | _dotted | st.text(max_size=20)
)
_clsnames = (
    st.sampled_from([*sorted(vars(builtins)), "PlanetError", "system"])
    | _dotted
    | st.text(max_size=20)
)
_attr_names = st.sampled_from(
    ["__class__", "__dict__", "__init__", "args", "errno", "code", "add_note", "_remote_version"]
) | st.text(max_size=20)


def _mostly(valid, junk=_dumpable):
    """Valid parts three times in four, so most examples get past the shape check."""
    return st.integers(0, 3).flatmap(lambda pick: junk if pick == 3 else valid)


_builtin_exceptions = sorted(
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
)
_class_names = st.tuples(st.just("builtins"), st.sampled_from(_builtin_exceptions)) | st.tuples(
    _modnames, _clsnames
)
_near_valid = st.tuples(
    _mostly(_class_names),
    _mostly(st.lists(_dumpable, max_size=4).map(tuple)),
    _mostly(st.lists(st.tuples(_attr_names, _dumpable), max_size=4).map(tuple)),
    _mostly(st.text(max_size=30)),
)


def _check_load_outcome(value, instantiate_custom):
    try:
        exc = vinegar.load(value, instantiate_custom_exceptions=instantiate_custom)
    except VinegarError:
        return
    assert isinstance(exc, BaseException)
    assert isinstance(str(exc), str)
    if not instantiate_custom and not isinstance(exc, StopIteration):
        assert isinstance(exc, GenericException) or type(exc).__module__ == "builtins"


@settings(max_examples=200, deadline=None)
@given(value=_dumpable, instantiate_custom=st.booleans())
def test_load_of_any_dumpable_value_is_an_exception_or_vinegar_error(value, instantiate_custom):
    _check_load_outcome(value, instantiate_custom)


@settings(max_examples=200, deadline=None)
@given(value=_near_valid, instantiate_custom=st.booleans())
def test_load_of_near_valid_values_is_an_exception_or_vinegar_error(value, instantiate_custom):
    _check_load_outcome(value, instantiate_custom)


# ------------------------------------------------- static lookups of load


class _Meta(type):
    def helper(cls) -> None:
        """A metaclass method: inspect finds it on the class too."""


class _MetaClassedError(ValueError, metaclass=_Meta):
    pass


class _MineError(ValueError):
    note = 5

    def method(self) -> None:
        pass

    @property
    def prop(self) -> int:
        return 1


def test_the_class_lookup_of_load_agrees_with_inspect() -> None:
    classes = [c for c in vars(builtins).values() if isinstance(c, type)]
    classes = [c for c in classes if issubclass(c, BaseException)] + [_MineError, _MetaClassedError]
    names = {name for cls in classes for name in dir(cls)}
    names |= {"absent", "mro", "helper", "__dict__", "__mro__", "method", "prop", "note"}
    for cls in classes:
        for name in names:
            assert vinegar._static_class_attr(cls, name) is inspect.getattr_static(
                cls, name, None
            ), (cls, name)


def test_the_module_lookup_of_load_agrees_with_inspect() -> None:
    for module in (builtins, os, json, vinegar):
        for name in [*dir(module), "absent", "__dict__", "__class__", "__getattr__"]:
            assert vinegar._static_module_attr(module, name) is inspect.getattr_static(
                module, name, None
            ), (module, name)
