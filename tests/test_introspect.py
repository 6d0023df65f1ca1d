"""grpyc._introspect: hasattr_static, get_id_pack and class_hook answer as stock rpyc does.

The attribute policy asks hasattr_static on nearly every attribute a peer reads; a quick
"surely absent" answer must never differ from ``inspect.getattr_static``'s.
"""

import inspect
import sys
import types

import pytest
from rpyc.lib import hasattr_static as stock_hasattr_static

from grpyc import _introspect
from grpyc._introspect import _surely_absent, hasattr_static


class Plain:
    cls_attr = 1

    def __init__(self):
        self.value = 2

    def method(self):
        return 3


class WithProperties:
    @property
    def exposed_broken(self):
        raise AttributeError("inside the property")

    @property
    def fine(self):
        return 1


class WithGetattr:
    def __getattr__(self, name):
        return name


class Slotted:
    __slots__ = ("a",)


class SlottedWithDict:
    __slots__ = ("__dict__", "a")


class ShadowedDict:
    @property
    def __dict__(self):
        raise RuntimeError("user code must not run")


class Meta(type):
    meta_attr = 1


class WithMeta(metaclass=Meta):
    pass


class DictSubclassInstance:
    pass


holder = DictSubclassInstance()
holder.__dict__ = type("MyDict", (dict,), {})(x=1)
slotted = Slotted()
slotted.a = 1
slotted_dict = SlottedWithDict()
slotted_dict.extra = 1
OBJECTS = [
    Plain(),
    WithProperties(),
    WithGetattr(),
    slotted,
    Slotted(),
    slotted_dict,
    ShadowedDict(),
    WithMeta,
    WithMeta(),
    Plain,
    holder,
    iter([1, 2]),
    [1, 2],
    {"a": 1},
    42,
    "text",
    sys,
    types,
    len,
    Plain().method,
    lambda: None,
    object(),
    type,
    None,
]
NAMES = [
    "value", "cls_attr", "method", "exposed_broken", "fine", "a", "extra", "x", "__dict__",
    "meta_attr", "__next__", "exposed___next__", "exposed_value", "append", "path", "missing",
    "__init__", "__class__", "mro", "real",
]  # fmt: skip


def getattr_static_finds(obj, name):
    try:
        inspect.getattr_static(obj, name)
    except AttributeError:
        return False
    return True


@pytest.mark.parametrize("obj", OBJECTS, ids=lambda obj: type(obj).__name__)
def test_answers_as_getattr_static_and_stock_rpyc(obj):
    for name in NAMES:
        expected = getattr_static_finds(obj, name)
        assert hasattr_static(obj, name) == expected == stock_hasattr_static(obj, name), name
        if _surely_absent(obj, name):
            assert not expected, name


def test_a_raising_property_is_found_as_stock_finds_it():
    assert not hasattr(WithProperties(), "exposed_broken")
    assert hasattr_static(WithProperties(), "exposed_broken")


def test_the_quick_answer_covers_the_usual_reads():
    # Instances of plain classes and built-in iterators: no getattr_static call.
    assert _surely_absent(Plain(), "exposed_value")
    assert _surely_absent(iter([1]), "exposed___next__")
    assert _surely_absent(slotted, "exposed_a")
    # Anything less plain goes to getattr_static.
    assert not _surely_absent(Plain, "exposed_x")  # a class: its metaclass counts
    assert not _surely_absent(ShadowedDict(), "exposed_x")  # no user code may run
    assert not _surely_absent(holder, "exposed_x")  # an instance dict of another type


# ------------------------------------------------------------- get_id_pack
def test_id_packs_are_stock_rpycs_for_every_kind_of_object():
    import rpyc
    from rpyc.lib import get_id_pack as stock_get_id_pack

    from grpyc import classic
    from grpyc._introspect import get_id_pack

    stock_conn, grpyc_conn = rpyc.classic.connect_thread(), classic.connect_thread()
    try:
        objects = [
            *(Plain().method, len, [], {}, Plain(), Plain, int, sys, types, Plain.method),
            *(stock_conn.modules.os, grpyc_conn.modules.os, object(), (lambda: 1)),
        ]
        for obj in objects * 2:  # the second time from what the first one learnt
            assert get_id_pack(obj) == stock_get_id_pack(obj), obj
    finally:
        stock_conn.close()
        grpyc_conn.close()


def test_a_renamed_class_gets_its_new_name_pack_as_in_stock():
    from rpyc.lib import get_id_pack as stock_get_id_pack

    from grpyc._introspect import get_id_pack

    class Renamed:
        pass

    obj = Renamed()
    assert get_id_pack(obj)[0].endswith(".Renamed")
    Renamed.__name__ = "NewName"
    assert get_id_pack(obj) == stock_get_id_pack(obj)
    assert get_id_pack(obj)[0].endswith(".NewName")


# ------------------------------------------------------------- class_hook
# A type's own ``_rpyc_*`` accessors, found as stock finds them. Immutable
# types (builtins) are remembered as having none; what is remembered must
# hold for every hook, not only the one asked first.
class SetterOnly:
    """A type with its own ``_rpyc_setattr`` and no ``_rpyc_getattr``."""

    def __init__(self):
        self.seen = []

    def _rpyc_setattr(self, name, value):
        self.seen.append((name, value))


@pytest.fixture
def heap_types_count_as_immutable(monkeypatch):
    # Py_TPFLAGS_BASETYPE (set on object and on classes of Python code) stands
    # in for Py_TPFLAGS_IMMUTABLETYPE: Python code cannot make an immutable
    # type, and these types must reach the cache.
    monkeypatch.setattr(_introspect, "_IMMUTABLE_TYPE", 1 << 10)
    monkeypatch.setattr(_introspect, "_known_plain", set())


def test_a_type_asked_for_one_override_keeps_its_other_ones(heap_types_count_as_immutable):
    assert _introspect.class_hook(SetterOnly, "_rpyc_getattr") is None
    assert _introspect.class_hook(SetterOnly, "_rpyc_setattr") is SetterOnly._rpyc_setattr
    assert SetterOnly not in _introspect._known_plain


def test_a_type_without_overrides_is_remembered(heap_types_count_as_immutable):
    class NoHooks:
        pass

    for name in _introspect.HOOK_NAMES:
        assert _introspect.class_hook(NoHooks, name) is None
    assert NoHooks in _introspect._known_plain


def test_a_hook_of_a_base_or_set_later_is_found_as_getattr_finds_it():
    # The walk stops before ``object`` (it defines none and cannot gain one).
    class Base:
        def _rpyc_getattr(self, name):
            return name

    class Child(Base):
        pass

    class Plain:
        pass

    assert _introspect.class_hook(Child, "_rpyc_getattr") is Base._rpyc_getattr
    assert _introspect.class_hook(Plain, "_rpyc_getattr") is None
    Plain._rpyc_getattr = Base._rpyc_getattr  # a class of the program's own may gain one
    assert _introspect.class_hook(Plain, "_rpyc_getattr") is Plain._rpyc_getattr
    assert _introspect.class_hook(object, "_rpyc_getattr") is None


def _set_after_a_read(conn):
    """What a SetterOnly object on the other side of `conn` saw of a read then a write."""
    obj = conn.modules[__name__].SetterOnly()
    assert list(obj.seen) == []  # a GETATTR first: the type is looked at for _rpyc_getattr
    obj.value = 5  # then SETATTR: the type's own setter takes it
    return [tuple(item) for item in obj.seen]


def test_setattr_after_getattr_goes_to_the_types_own_setter_as_in_stock(
    heap_types_count_as_immutable,
):
    import rpyc

    from grpyc import classic

    grpyc_conn, stock_conn = classic.connect_thread(), rpyc.classic.connect_thread()
    try:
        assert _set_after_a_read(grpyc_conn) == _set_after_a_read(stock_conn) == [("value", 5)]
    finally:
        grpyc_conn.close()
        stock_conn.close()


# ------------------------------------------------------------- get_methods
def _methods_as_stock_lists(obj):
    from rpyc.lib import get_methods as stock_get_methods

    from grpyc._introspect import get_methods
    from grpyc.netref import LOCAL_ATTRS

    ours = get_methods(LOCAL_ATTRS, obj)
    assert len(ours) == len(dict(ours))
    return dict(ours), dict(stock_get_methods(LOCAL_ATTRS, obj))


@pytest.mark.parametrize(
    "obj",
    [*OBJECTS, [1], {}, 5, "text", sys, object(), len, str.join, types.SimpleNamespace],
    ids=lambda obj: type(obj).__name__,
)
def test_method_lists_are_stock_rpycs(obj):
    for _ in range(2):  # the second time from what the first one kept
        ours, stock = _methods_as_stock_lists(obj)
        assert ours == stock


class Documented:  # at module level: inspect finds an inherited docstring by qualified name
    def run(self):
        """First words."""

    def inherit(self):
        """Said by the base."""


class DocumentedDerived(Documented):
    def inherit(self):  # no docstring: inspect takes the base's
        pass


def test_a_docstring_changed_later_is_the_one_listed_as_in_stock():
    before, _ = _methods_as_stock_lists(DocumentedDerived())
    assert (before["run"], before["inherit"]) == ("First words.", "Said by the base.")
    try:
        Documented.run.__doc__ = "    Second words,\n    indented."
        Documented.inherit.__doc__ = "Said anew."
        ours, stock = _methods_as_stock_lists(DocumentedDerived())
    finally:
        Documented.run.__doc__, Documented.inherit.__doc__ = "First words.", "Said by the base."
    assert ours == stock
    assert (ours["run"], ours["inherit"]) == ("Second words,\nindented.", "Said anew.")


def test_a_descriptor_class_that_changes_is_asked_again_as_in_stock():
    class Descriptor:  # a method descriptor while it has __get__ and no __set__
        def __get__(self, obj, owner=None):
            return self

    class Holder:
        attached = Descriptor()

    ours, stock = _methods_as_stock_lists(Holder())
    assert "attached" in ours and ours == stock
    Descriptor.__set__ = lambda self, obj, value: None  # now a data descriptor
    ours, stock = _methods_as_stock_lists(Holder())
    assert "attached" not in ours and ours == stock


def test_long_docstrings_are_listed_but_not_kept():
    from grpyc import _introspect

    def documented():
        pass

    documented.__doc__ = "  line\n" * 2000  # 14,000 characters, cleaned as inspect does
    kept_before = _introspect._cleaned.cache_info().currsize
    assert _introspect._docstring(documented) == inspect.getdoc(documented)
    assert _introspect._cleaned.cache_info().currsize == kept_before
    documented.__doc__ = "  short\n    text\n      more"
    assert _introspect._docstring(documented) == inspect.getdoc(documented) == "short\ntext\n  more"
    assert _introspect._cleaned.cache_info().currsize == kept_before + 1
