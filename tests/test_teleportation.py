"""Teleportation: exports match stock rpyc's value for value, both sides import each other's."""

import builtins
import inspect
import sys
import types

import pytest
from rpyc.core import brine as rpyc_brine
from rpyc.utils import teleportation as rpyc_teleportation

from grpyc import brine
from grpyc.teleportation import CODE_MARKER, MAX_CODE_NESTING, export_function, import_function

HERE = f"{sys.version_info.major}.{sys.version_info.minor}"


# Functions to teleport. They live at module level: closures cannot travel.


def add(a, b=10, *, scale=2):
    """Docstring travels as a constant."""
    return (a + b) * scale


def uses_inner_functions(n):
    import math  # globals are the importer's: imports go in the body

    offset = 1

    def shifted(x):
        return x + offset  # a closure created at run time is fine

    squares = [shifted(i * i) for i in range(n)]
    return math.fsum(map(lambda s: s / 2, squares))  # noqa: C417 - a lambda const


def uses_constants(x):
    table = (1, 2.5, 3j, b"raw", "text", None, True, ..., 10**30, -7)
    return x in {1, 2, 3}, x in frozenset(table), table


def generates(n):
    yield from range(n)
    yield "done"


def handles_errors(value):
    try:
        return 100 // value
    except ZeroDivisionError:
        return "division by zero"
    finally:
        pass


async def coroutine(x):
    return x * 3


def positional_only(a, b, /, c):
    return a - b + c


def returns_marker_lookalike():
    return ("MAg1c J0hNNzo0hn ZqhuBP17LQk8", 1)


def make_adder(n):
    def adder(x):
        return x + n

    return adder


def run_coroutine(coro):
    with pytest.raises(StopIteration) as stop:
        coro.send(None)
    return stop.value.value


CALLS = [
    (add, (1,), {}, 22),
    (add, (1, 2), {"scale": 3}, 9),
    (uses_inner_functions, (4,), {}, 9.0),
    (
        uses_constants,
        (2,),
        {},
        (True, False, (1, 2.5, 3j, b"raw", "text", None, True, ..., 10**30, -7)),
    ),
    (handles_errors, (0,), {}, "division by zero"),
    (handles_errors, (7,), {}, 14),
    (positional_only, (5, 3, 1), {}, 3),
]
FUNCTIONS = [add, uses_inner_functions, uses_constants, generates, handles_errors, coroutine]


def call_ids(call):
    return call.__name__ if callable(call) else ""


def through_the_wire(exported):
    """What the peer receives: the export after a brine round trip."""
    return rpyc_brine.load(rpyc_brine.dump(exported))


# Wire shape and interop with stock rpyc.


@pytest.mark.parametrize("func", [*FUNCTIONS, positional_only], ids=call_ids)
def test_export_equals_stock_export(func):
    assert export_function(func) == rpyc_teleportation.export_function(func)


@pytest.mark.parametrize("func", FUNCTIONS, ids=call_ids)
def test_export_is_brine_dumpable(func):
    exported = export_function(func)
    assert brine.dumpable(exported)
    assert rpyc_brine.dumpable(exported)
    assert brine.load(brine.dump(exported)) == exported


def test_export_shape():
    name, module, defaults, kwdefaults, code = export_function(add)
    assert (name, module, defaults, kwdefaults) == ("add", __name__, (10,), (("scale", 2),))
    assert len(code) == 18
    assert code[6] == add.__code__.co_code
    assert code[12] == "add"


def test_nested_code_is_tagged_with_the_marker():
    code = export_function(uses_inner_functions)[4]
    nested = [const for const in code[7] if isinstance(const, tuple) and const[0] == CODE_MARKER]
    assert sorted(c[1][12] for c in nested) == [
        "uses_inner_functions.<locals>.<lambda>",
        "uses_inner_functions.<locals>.<listcomp>",
        "uses_inner_functions.<locals>.shifted",
    ]


@pytest.mark.parametrize(("func", "args", "kwargs", "expected"), CALLS, ids=call_ids)
def test_grpyc_export_runs_under_stock_import(func, args, kwargs, expected):
    exported = through_the_wire(export_function(func))
    imported = rpyc_teleportation.import_function(exported, {}, def_=False)
    assert imported(*args, **kwargs) == expected


@pytest.mark.parametrize(("func", "args", "kwargs", "expected"), CALLS, ids=call_ids)
def test_stock_export_runs_under_grpyc_import(func, args, kwargs, expected):
    exported = through_the_wire(rpyc_teleportation.export_function(func))
    imported = import_function(exported, {}, def_=False)
    assert imported(*args, **kwargs) == expected


@pytest.mark.parametrize("func", FUNCTIONS, ids=call_ids)
def test_round_trip_rebuilds_the_same_code(func):
    imported = import_function(through_the_wire(export_function(func)), {}, def_=False)
    assert imported.__code__ == func.__code__
    assert imported.__name__ == func.__name__
    assert imported.__qualname__ == func.__qualname__
    assert imported.__defaults__ == func.__defaults__
    assert imported.__kwdefaults__ == func.__kwdefaults__


def test_generator_function_teleports():
    imported = import_function(export_function(generates), {}, def_=False)
    assert inspect.isgeneratorfunction(imported)
    assert list(imported(3)) == [0, 1, 2, "done"]


def test_coroutine_function_teleports():
    imported = import_function(export_function(coroutine), {}, def_=False)
    assert inspect.iscoroutinefunction(imported)
    assert run_coroutine(imported(5)) == 15


def test_stock_exported_generator_runs_under_grpyc_import():
    exported = through_the_wire(rpyc_teleportation.export_function(generates))
    assert list(import_function(exported, {}, def_=False)(2)) == [0, 1, "done"]


# Globals.


def test_def_binds_the_function_in_globals():
    namespace = {}
    imported = import_function(export_function(add), namespace)
    assert namespace["add"] is imported
    assert imported.__globals__ is namespace
    assert namespace["__builtins__"] is builtins.__dict__


def test_def_false_leaves_globals_alone_except_builtins():
    namespace = {}
    import_function(export_function(add), namespace, def_=False)
    assert list(namespace) == ["__builtins__"]


def test_given_builtins_are_kept():
    namespace = {"__builtins__": {"len": lambda _: 42}}

    def counts(x):
        return len(x)

    imported = import_function(export_function(counts), namespace, def_=False)
    assert imported("abc") == 42


def test_function_sees_the_globals_it_is_given():
    def reads_global():
        return SETTING  # noqa: F821 - resolved in the importer's globals

    imported = import_function(export_function(reads_global), {"SETTING": "remote"}, False)
    assert imported() == "remote"


def test_default_globals_are_the_exporting_modules():
    imported = import_function(export_function(add), def_=False)
    assert imported.__globals__ is vars(sys.modules[__name__])


def test_unknown_module_falls_back_to_main():
    name, _, defaults, kwdefaults, code = export_function(add)
    exported = (name, "grpyc_no_such_module.anywhere", defaults, kwdefaults, code)
    imported = import_function(exported, def_=False)
    assert imported.__globals__ is vars(sys.modules["__main__"])


def test_remote_style_globals_must_be_a_dict():
    with pytest.raises(TypeError, match="globals must be a dict, not mappingproxy"):
        import_function(export_function(add), types.MappingProxyType({}))


# What cannot be exported.


def test_closure_is_refused():
    with pytest.raises(
        TypeError, match=r"cannot export make_adder.<locals>.adder: .*closure over n"
    ):
        export_function(make_adder(1))


def test_non_dumpable_default_is_refused():
    def with_list_default(x=[1]):  # noqa: B006 - the point of the test
        return x

    with pytest.raises(TypeError, match=r"defaults not dumpable: \(\[1\],\)"):
        export_function(with_list_default)


def test_non_dumpable_keyword_default_is_refused():
    def with_dict_default(*, x={}):  # noqa: B006 - the point of the test
        return x

    with pytest.raises(TypeError, match=r"keyword defaults not dumpable: \(\('x', \{\}\),\)"):
        export_function(with_dict_default)


def test_non_dumpable_constant_is_refused():
    code = add.__code__.replace(co_consts=(*add.__code__.co_consts, object()))
    func = types.FunctionType(code, {})
    with pytest.raises(TypeError, match=r"cannot export add: constant not dumpable: <object"):
        export_function(func)


def test_constant_mimicking_the_marker_is_refused():
    with pytest.raises(TypeError, match="constant mimics CODE_MARKER"):
        export_function(returns_marker_lookalike)


@pytest.mark.parametrize(
    ("value", "kind"),
    [(len, "builtin_function_or_method"), ("add", "str"), (int, "type"), (print, "builtin")],
)
def test_non_functions_are_refused(value, kind):
    with pytest.raises(TypeError, match=f"can only export a Python function, not {kind}"):
        export_function(value)


def test_bound_method_is_refused():
    class Holder:
        def method(self):
            return self

    with pytest.raises(TypeError, match="can only export a Python function, not method"):
        export_function(Holder().method)


# Python versions.


def as_layout_of_python_3_10(code):
    """Drop co_qualname and co_exceptiontable: the 16-field layout of 3.8 to 3.10."""
    return code[:12] + code[13:15] + code[16:]


def test_export_from_python_3_10_is_refused_naming_both_versions():
    name, module, defaults, kwdefaults, code = export_function(add)
    tampered = (name, module, defaults, kwdefaults, as_layout_of_python_3_10(code))
    with pytest.raises(
        ValueError,
        match=rf"function exported by Python 3\.8 to 3\.10 \(16 code fields\) cannot be "
        rf"imported by Python {HERE}: bytecode differs between Python versions",
    ):
        import_function(tampered, {})


def test_export_from_python_3_7_is_refused_naming_both_versions():
    name, module, defaults, kwdefaults, code = export_function(add)
    python_3_7 = code[:1] + code[2:12] + code[13:15] + code[16:]
    with pytest.raises(
        ValueError, match=rf"Python 3\.7 or older \(15 code fields\) .* by Python {HERE}"
    ):
        import_function((name, module, defaults, kwdefaults, python_3_7), {})


def test_nested_code_from_another_version_is_refused():
    name, module, defaults, kwdefaults, code = export_function(uses_inner_functions)
    consts = tuple(
        (CODE_MARKER, as_layout_of_python_3_10(c[1]))
        if isinstance(c, tuple) and c[0] == CODE_MARKER
        else c
        for c in code[7]
    )
    tampered = (name, module, defaults, kwdefaults, (*code[:7], consts, *code[8:]))
    with pytest.raises(ValueError, match=r"Python 3\.8 to 3\.10"):
        import_function(tampered, {})


# Hostile input.


def exported_add_with(index, value):
    fields = list(export_function(add))
    fields[index] = value
    return tuple(fields)


def exported_add_with_code_field(index, value):
    code = list(export_function(add)[4])
    code[index] = value
    return exported_add_with(4, tuple(code))


@pytest.mark.parametrize(("value", "kind"), [(None, "NoneType"), ([1, 2], "list"), ({}, "dict")])
def test_non_tuple_export_is_a_type_error(value, kind):
    with pytest.raises(TypeError, match=f"exported function must be a tuple, not {kind}"):
        import_function(value, {})


@pytest.mark.parametrize("length", [0, 4, 6])
def test_wrong_field_count_is_refused(length):
    exported = (export_function(add) * 2)[:length]
    with pytest.raises(ValueError, match=f"exported function must have 5 fields, got {length}"):
        import_function(exported, {})


@pytest.mark.parametrize(
    ("index", "value", "message"),
    [
        (0, 5, "exported function name must be a str, got 5"),
        (1, 5, "exported module name must be absolute or None, got 5"),
        (1, "", "exported module name must be absolute or None, got ''"),
        (1, ".relative", "exported module name must be absolute or None, got '.relative'"),
        (2, [1], r"exported defaults must be a tuple or None, got \[1\]"),
        (3, (("x",),), r"exported kwdefaults must be \(name, value\) pairs or None"),
        (3, ((1, 2),), r"exported kwdefaults must be \(name, value\) pairs or None"),
        (3, {"x": 1}, r"exported kwdefaults must be \(name, value\) pairs or None"),
        (4, None, "exported code must be a tuple, got NoneType"),
        (4, (), f"exported code has 0 fields; Python {HERE} expects 18"),
        (4, (0,) * 17, f"exported code has 17 fields; Python {HERE} expects 18"),
    ],
)
def test_malformed_export_is_refused(index, value, message):
    with pytest.raises(ValueError, match=message):
        import_function(exported_add_with(index, value), {})


@pytest.mark.parametrize(
    ("index", "value", "message"),
    [
        (0, "1", "exported co_argcount must be int, got '1'"),
        (0, True, "exported co_argcount must be int, got True"),
        (0, -1, r"exported co_argcount must be in 0\.\.2147483647, got -1"),
        (4, 2**31, r"exported co_stacksize must be in 0\.\.2147483647, got 2147483648"),
        (5, -1, r"exported co_flags must be in 0\.\.2147483647, got -1"),
        (1, 3, "exported co_posonlyargcount=3 exceeds co_argcount=2"),
        (6, "code", "exported co_code must be bytes, got 'code'"),
        (6, b"\x00", "exported code 'add' is invalid: code: co_code is malformed"),
        (7, [None], r"exported co_consts must be tuple, got \[None\]"),
        (8, (1,), r"exported co_names must hold only str, got \(1,\)"),
        (9, "ab", "exported co_varnames must be tuple, got 'ab'"),
        (12, None, "exported co_qualname must be str, got None"),
        (14, bytearray(b""), r"exported co_linetable must be bytes, got bytearray\(b''\)"),
        (16, ("n",), r"exported function 'add' has free variables \('n',\)"),
    ],
)
def test_malformed_code_is_refused(index, value, message):
    with pytest.raises(ValueError, match=message):
        import_function(exported_add_with_code_field(index, value), {})


def test_huge_values_are_shortened_in_messages():
    with pytest.raises(ValueError, match="exported co_filename must be str") as raised:
        import_function(exported_add_with_code_field(10, b"x" * 1_000_000), {})
    assert len(str(raised.value)) < 200


@pytest.mark.parametrize("payload", [(), (1, 2), 5, "text"])
def test_malformed_nested_code_is_refused(payload):
    code = list(export_function(add)[4])
    code[7] = (*code[7], (CODE_MARKER, payload))
    with pytest.raises(ValueError, match="exported code"):
        import_function(exported_add_with(4, tuple(code)), {})


def test_code_nested_too_deep_is_refused():
    code = export_function(add)[4]
    nested = code
    for _ in range(MAX_CODE_NESTING):
        nested = (*code[:7], (None, (CODE_MARKER, nested)), *code[8:])
    with pytest.raises(
        ValueError, match=f"exported code nests deeper than MAX_CODE_NESTING={MAX_CODE_NESTING}"
    ):
        import_function(exported_add_with(4, nested), {})


def test_code_nested_to_the_limit_is_accepted():
    code = export_function(add)[4]
    nested = code
    for _ in range(MAX_CODE_NESTING - 1):
        nested = (*code[:7], (None, (CODE_MARKER, nested)), *code[8:])
    assert import_function(exported_add_with(4, nested), {}, False)(1) == 22


def test_malformed_export_imports_no_module(tmp_path, monkeypatch):
    (tmp_path / "grpyc_teleport_probe.py").write_text("import sys\nsys.grpyc_probe_ran = True\n")
    monkeypatch.syspath_prepend(tmp_path)
    exported = exported_add_with_code_field(6, b"\x00")
    exported = (exported[0], "grpyc_teleport_probe", *exported[2:])
    with pytest.raises(ValueError, match="co_code is malformed"):
        import_function(exported)
    assert "grpyc_teleport_probe" not in sys.modules
    assert not hasattr(sys, "grpyc_probe_ran")
