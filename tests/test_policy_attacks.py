"""Attacks on the attribute policy, on every request handler.

Regression tests for the classes of RPyC's CVEs:

- CVE-2019-16328: comparison, hash and instance-check paths reaching
  attributes the policy forbids (CMP with ``op="__init__"``, HASH on an object
  whose ``_rpyc_getattr`` hides ``__hash__``, ...);
- CVE-2024-27758: a client proxy's ``__array__``/pickle path unpickling bytes
  from a malicious server without ``allow_pickle``;
- ``__call__`` reachable on objects whose ``_rpyc_getattr`` hides it;
- private attributes and sandbox escapes (``__class__``, ``__globals__``,
  ``__subclasses__``, ``__builtins__``, ``__code__``, ``gi_frame``,
  ``f_globals`` ...) through GETATTR, SETATTR, DELATTR, CALLATTR, CMP,
  HASH, DIR, INSPECT, BUFFITER, OLDSLICING, CTXEXIT, INSTANCECHECK, PICKLE.

Requests are sent raw (``conn.sync_request(HANDLE_X, proxy, ...)``) from a
grpyc client, and from a stock rpyc client in an OS thread, to a grpyc server
running a service under the default configuration.
"""

import copy
import os
import pickle
import sys
import types

import gevent
import pytest

import grpyc
from grpyc import consts, netref
from grpyc.helpers import restricted
from grpyc.server import Server
from grpyc.service import Service

PWNED = []  # code smuggled in pickles appends here if it ever runs


# ------------------------------------------------------------------ targets
class Thing:
    """A plain object: public data, a private attribute, methods."""

    def __init__(self):
        self.value = 1
        self._secret = "s3cret"

    def bump(self):
        self.value += 1
        return self.value

    def _private_method(self):
        return os.system

    def exposed_get(self):
        return self.value

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


class Hidden:
    """Callable, hashable, comparable, iterable, a context manager: all hidden.

    Its ``_rpyc_getattr`` lets the peer reach ``value`` only.
    """

    value = 7

    def _rpyc_getattr(self, name):
        if name != "value":
            raise AttributeError(f"{name!r} is hidden")
        return self.value

    def __call__(self, *args):
        PWNED.append("Hidden.__call__")
        return os.system

    def __hash__(self):
        PWNED.append("Hidden.__hash__")
        return 1

    def __eq__(self, other):
        PWNED.append("Hidden.__eq__")
        return True

    def __lt__(self, other):
        PWNED.append("Hidden.__lt__")
        return True

    def __repr__(self):
        PWNED.append("Hidden.__repr__")
        return "hidden"

    def __iter__(self):
        return self

    def __next__(self):
        PWNED.append("Hidden.__next__")
        return os.system

    def __exit__(self, *exc_info):
        PWNED.append("Hidden.__exit__")
        return True

    def __reduce_ex__(self, proto):
        PWNED.append("Hidden.__reduce_ex__")
        return (os.system, ("true",))


class GuardedMeta(type):
    """A metaclass whose policy hides everything, ``__instancecheck__`` included."""

    def _rpyc_getattr(cls, name):
        raise AttributeError(f"{name!r} is hidden")

    def __instancecheck__(cls, instance):
        PWNED.append("GuardedMeta.__instancecheck__")
        return True


class Guarded(metaclass=GuardedMeta):
    pass


def plain_function(x):
    return x


def generator():
    yield 1
    yield 2


def current_frame():
    return sys._getframe()


def a_traceback():
    try:
        raise ValueError("tb")
    except ValueError as exc:
        return exc.__traceback__


class PolicyTargetService(Service):
    """What a careful service hands out, under the default configuration."""

    def on_connect(self, conn):
        self.conn = conn

    def exposed_thing(self):
        return Thing()

    def exposed_hidden(self):
        return Hidden()

    def exposed_restricted(self):
        return restricted(Thing(), ["value", "bump"], wattrs=())

    def exposed_restricted_list(self):
        return restricted([1, 2, 3], ["__len__"], wattrs=())

    def exposed_function(self):
        return plain_function

    def exposed_generator(self):
        return generator()

    def exposed_method(self):
        return Thing().bump

    def exposed_thing_class(self):
        return Thing

    def exposed_guarded_class(self):
        return Guarded

    def exposed_frame(self):
        return current_frame()

    def exposed_traceback(self):
        return a_traceback()

    def exposed_data(self):
        return {"key": [1, 2, 3]}


TARGETS = [
    "root",
    "thing",
    "hidden",
    "restricted",
    "function",
    "generator",
    "method",
    "thing_class",
    "frame",
    "traceback",
    "data",
]

# Names that lead out of a sandbox, or are private: never reachable.
ESCAPE_NAMES = [
    "__class__", "__dict__", "__globals__", "__code__", "__closure__", "__builtins__",
    "__subclasses__", "__mro__", "__bases__", "__base__", "__init__", "__init_subclass__",
    "__subclasshook__", "__getattribute__", "__setattr__", "__delattr__", "__reduce__",
    "__reduce_ex__", "__getstate__", "__self__", "__func__", "__objclass__", "__wrapped__",
    "__module__", "__qualname__", "__defaults__", "__kwdefaults__", "__loader__", "__spec__",
    "__import__", "__call__ ", "_secret", "_private_method", "_rpyc_getattr", "_obj",
    "_attrs", "conn", "gi_frame", "gi_code", "gi_yieldfrom", "f_globals", "f_locals",
    "f_builtins", "f_back", "f_code", "tb_frame", "tb_next", "co_code", "func_globals",
    "im_func", "mro", "system", "os", "sys", "eval", "exec", "open", "compile",
]  # fmt: skip


@pytest.fixture
def server():
    server = Server(PolicyTargetService, hostname="127.0.0.1", port=0)
    server.listen()
    yield server
    server.close()


@pytest.fixture
def conn(server):
    conn = grpyc.connect("127.0.0.1", server.port, config={"sync_request_timeout": 10})
    yield conn
    conn.close()


@pytest.fixture
def targets(conn):
    """Proxies of every target, by name."""
    root = conn.root
    found = {"root": root}
    for name in TARGETS[1:]:
        found[name] = getattr(root, name)()
    return found


@pytest.fixture(autouse=True)
def _nothing_pwned():
    PWNED.clear()
    yield
    assert PWNED == [], f"forbidden code ran: {PWNED}"


def refused(conn, handler, *args):
    """The exception a request raised; fails the test if it succeeded."""
    try:
        result = conn.sync_request(handler, *args)
    except Exception as exc:  # the refusal, of whatever type the handler raises
        return exc
    pytest.fail(f"handler {consts.HANDLER_NAMES[handler]}{args[1:]!r} returned {result!r}")


def server_side_objects(server):
    """Every object the server has exported, over all its connections."""
    return [entry[0] for conn in server.clients for entry in conn._local_objects.values()]


# ------------------------------------------------ attribute handlers, by name
@pytest.mark.parametrize(
    "handler",
    [consts.HANDLE_GETATTR, consts.HANDLE_DELATTR, consts.HANDLE_SETATTR, consts.HANDLE_CALLATTR],
    ids=["GETATTR", "DELATTR", "SETATTR", "CALLATTR"],
)
def test_escape_names_are_refused_on_every_target(conn, targets, handler):
    extra = {
        consts.HANDLE_GETATTR: (),
        consts.HANDLE_DELATTR: (),
        consts.HANDLE_SETATTR: (plain_function,),
        consts.HANDLE_CALLATTR: ((), ()),
    }[handler]
    leaks = []
    for target_name, target in targets.items():
        for name in ESCAPE_NAMES:
            for spelled in (name, name.encode()):
                try:
                    result = conn.sync_request(handler, target, spelled, *extra)
                except AttributeError:
                    continue
                except Exception as exc:
                    leaks.append((target_name, name, f"raised {type(exc).__name__}: {exc}"))
                    continue
                leaks.append((target_name, name, repr(result)))
    assert leaks == []


def test_oldslicing_cannot_reach_escape_names(conn, targets):
    leaks = []
    for target_name, target in targets.items():
        for name in ESCAPE_NAMES:
            try:
                conn.sync_request(consts.HANDLE_OLDSLICING, target, name, name, 0, 1, ())
            except AttributeError:
                continue
            except Exception as exc:
                leaks.append((target_name, name, f"{type(exc).__name__}: {exc}"))
                continue
            leaks.append((target_name, name, "succeeded"))
    assert leaks == []


def test_setattr_and_delattr_are_off_even_for_exposed_and_public_names(conn, targets):
    for name in ("value", "exposed_get", "bump", "__doc__"):
        error = refused(conn, consts.HANDLE_SETATTR, targets["thing"], name, 5)
        assert isinstance(error, AttributeError)
        assert "allow_setattr is off" in str(error)
        error = refused(conn, consts.HANDLE_DELATTR, targets["thing"], name)
        assert "allow_delattr is off" in str(error)
    # restricted(..., wattrs=()) refuses writes through its own policy.
    error = refused(conn, consts.HANDLE_SETATTR, targets["restricted"], "value", 5)
    assert "not one of the writable attributes" in str(error)


def test_non_str_attribute_names_are_refused(conn, targets):
    for name in (5, None, ("__class__",), 1.5, frozenset(["__class__"])):
        error = refused(conn, consts.HANDLE_GETATTR, targets["thing"], name)
        assert isinstance(error, TypeError)
        assert "attribute name must be str" in str(error)


def test_allowed_paths_still_work(conn, targets):
    # The refusals above are the policy, not a broken connection.
    assert conn.sync_request(consts.HANDLE_GETATTR, targets["restricted"], "value") == 1
    assert targets["root"].thing().get() == 1
    assert conn.sync_request(consts.HANDLE_HASH, targets["thing"]) == hash(targets["thing"])
    assert conn.sync_request(consts.HANDLE_CMP, targets["thing"], 5, "__eq__") is NotImplemented
    assert conn.sync_request(consts.HANDLE_GETATTR, targets["hidden"], "value") == 7


# ---------------------------------------------------------------- CMP, HASH
NOT_COMPARISONS = [
    "__init__", "__setattr__", "__getattribute__", "__class__", "__reduce_ex__", "__call__",
    "__delattr__", "__subclasses__", "__hash__", "__eq__ ", "__EQ__", "eq", "", "__cmp__x",
]  # fmt: skip


def test_cmp_with_an_op_that_is_not_a_comparison_is_refused(conn, targets):
    for target_name, target in targets.items():
        for op in NOT_COMPARISONS:
            error = refused(conn, consts.HANDLE_CMP, target, 1, op)
            assert isinstance(error, AttributeError), (target_name, op, error)
            assert "not a comparison" in str(error)
            error = refused(conn, consts.HANDLE_CMP, target, 1, op.encode())
            assert isinstance(error, AttributeError), (target_name, op, error)


@pytest.mark.parametrize("op", ["__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__"])
@pytest.mark.parametrize("target", ["hidden", "restricted"])
def test_cmp_on_an_object_whose_policy_hides_the_operator_is_refused(conn, targets, op, target):
    error = refused(conn, consts.HANDLE_CMP, targets[target], 1, op)
    assert isinstance(error, AttributeError)


@pytest.mark.parametrize("target", ["hidden", "restricted", "restricted_list"])
def test_hash_on_an_object_whose_policy_hides_hash_is_refused(conn, targets, target):
    proxy = conn.root.restricted_list() if target == "restricted_list" else targets[target]
    assert isinstance(refused(conn, consts.HANDLE_HASH, proxy), AttributeError)


# ---------------------------------------------------------- CALL and others
def test_call_on_an_object_whose_policy_hides_call_is_refused(conn, targets):
    error = refused(conn, consts.HANDLE_CALL, targets["hidden"], (), ())
    assert isinstance(error, AttributeError)
    assert "'__call__' is hidden" in str(error)
    error = refused(conn, consts.HANDLE_CALLATTR, targets["hidden"], "__call__", (), ())
    assert isinstance(error, AttributeError)
    with pytest.raises(AttributeError):
        targets["hidden"]()


@pytest.mark.parametrize("handler", [consts.HANDLE_REPR, consts.HANDLE_STR])
@pytest.mark.parametrize("target", ["hidden", "restricted"])
def test_repr_and_str_follow_the_objects_policy(conn, targets, handler, target):
    assert isinstance(refused(conn, handler, targets[target]), AttributeError)


@pytest.mark.parametrize("target", ["hidden", "restricted", "restricted_list"])
def test_buffiter_on_an_object_whose_policy_hides_next_is_refused(conn, targets, target):
    proxy = conn.root.restricted_list() if target == "restricted_list" else targets[target]
    assert isinstance(refused(conn, consts.HANDLE_BUFFITER, proxy, 10), AttributeError)


def test_ctxexit_on_an_object_whose_policy_hides_exit_is_refused(conn, targets):
    for target in ("hidden", "restricted"):
        error = refused(conn, consts.HANDLE_CTXEXIT, targets[target], None)
        assert isinstance(error, AttributeError)


def test_instancecheck_follows_the_metaclass_policy(conn, targets):
    guarded = conn.root.guarded_class()
    error = refused(conn, consts.HANDLE_INSTANCECHECK, guarded, ("x", 1, 2))
    assert isinstance(error, AttributeError)
    error = refused(conn, consts.HANDLE_INSTANCECHECK, targets["thing"], ("x", 1, 2))
    assert isinstance(error, TypeError)
    assert "not a class" in str(error)


@pytest.mark.parametrize("target", TARGETS)
def test_pickle_is_refused_by_default(conn, targets, target):
    error = refused(conn, consts.HANDLE_PICKLE, targets[target], pickle.HIGHEST_PROTOCOL)
    assert isinstance(error, ValueError)
    assert "allow_pickle=False" in str(error)


def test_pickle_allowed_still_follows_the_objects_policy():
    server = Server(
        PolicyTargetService, hostname="127.0.0.1", port=0, protocol_config={"allow_pickle": True}
    )
    server.listen()
    try:
        with grpyc.connect("127.0.0.1", server.port) as conn:
            hidden = conn.root.hidden()
            error = refused(conn, consts.HANDLE_PICKLE, hidden, 2)
            assert isinstance(error, AttributeError)
            restricted_thing = conn.root.restricted()
            assert isinstance(refused(conn, consts.HANDLE_PICKLE, restricted_thing, 2), Exception)
    finally:
        server.close()


def test_dir_lists_names_but_grants_nothing(conn, targets):
    names = conn.sync_request(consts.HANDLE_DIR, targets["restricted"])
    assert all(type(name) is str for name in names)
    for name in names:
        if name in ("value", "bump"):
            continue
        error = refused(conn, consts.HANDLE_GETATTR, targets["restricted"], name)
        assert isinstance(error, AttributeError), name


def test_inspect_lists_methods_as_rpyc_does_but_grants_nothing(conn, targets, server):
    thing = targets["thing"]
    id_pack = object.__getattribute__(thing, "____id_pack__")
    names = {name for name, _ in conn.sync_request(consts.HANDLE_INSPECT, id_pack)}
    # RPyC lists every routine (its proxies are built from the list); what
    # the policy refuses stays refused when used.
    assert "_private_method" in names
    assert "exposed_get" in names
    error = refused(conn, consts.HANDLE_CALLATTR, thing, "_private_method", (), ())
    assert isinstance(error, AttributeError)
    # Dunders are listed (they make the proxy's operators) but stay guarded.
    error = refused(conn, consts.HANDLE_CALLATTR, thing, "__init_subclass__", (), ())
    assert isinstance(error, AttributeError)


def test_inspect_of_an_id_pack_that_is_not_exported_is_refused(conn, server):
    # Objects the server never exported to this connection cannot be named,
    # not even by an id pack copied from another connection.
    with grpyc.connect("127.0.0.1", server.port) as other:
        elsewhere = other.root.thing()
        id_pack = object.__getattribute__(elsewhere, "____id_pack__")
        assert isinstance(refused(conn, consts.HANDLE_INSPECT, id_pack), KeyError)


def test_local_ref_to_an_object_exported_on_another_connection_is_refused(server):
    with grpyc.connect("127.0.0.1", server.port) as one:
        thing = one.root.thing()
        id_pack = object.__getattribute__(thing, "____id_pack__")
        with grpyc.connect("127.0.0.1", server.port) as two:
            # A proxy made by hand: it sends `id_pack` as a reference.
            forged = netref.UnresolvedNetref(two, id_pack)
            error = refused(two, consts.HANDLE_GETATTR, forged, "value")
            assert isinstance(error, KeyError)


# ------------------------------------------------------- escape search
FORBIDDEN_TYPES = (types.ModuleType, types.FrameType, types.CodeType, types.CellType)


DANGEROUS = (os.system, eval, exec, open, compile, __import__, getattr, setattr, type, object)


def forbidden(obj):
    """Whether reaching `obj` would let a peer out of the sandbox."""
    if isinstance(obj, FORBIDDEN_TYPES) or any(obj is danger for danger in DANGEROUS):
        return True
    return isinstance(obj, dict) and any(
        obj is vars(module) for module in list(sys.modules.values()) if module is not None
    )


@pytest.fixture
def quick_server():
    """The same service, without traceback text in refusals: the search makes thousands."""
    server = Server(
        PolicyTargetService,
        hostname="127.0.0.1",
        port=0,
        protocol_config={"include_local_traceback": False},
    )
    server.listen()
    yield server
    server.close()


@pytest.fixture
def quick_conn(quick_server):
    conn = grpyc.connect("127.0.0.1", quick_server.port)
    yield conn
    conn.close()


def test_no_path_of_gets_and_safe_calls_reaches_os_system(quick_server, quick_conn):
    """Breadth-first search from every target through every name DIR lists.

    Follows GETATTR of each listed name (plus the escape names) and zero-argument
    calls of the dunders the policy calls safe; checks on the server side that
    nothing it exported is a module, frame, code object, globals dict or a
    dangerous builtin.
    """
    server, conn = quick_server, quick_conn
    root = conn.root
    targets = {"root": root, **{name: getattr(root, name)() for name in TARGETS[1:]}}
    safe_calls = ("__iter__", "__next__", "__enter__", "__new__", "__reversed__")
    # The frame and traceback targets are handed out on purpose; what matters
    # is that nothing behind them is reached.
    handed_out = {id(obj) for obj in server_side_objects(server)}
    frontier = list(targets.values())
    seen = {id(proxy) for proxy in frontier}
    steps = 0

    def outcome(result):
        result.wait()
        return None if result.error else result.value

    for _depth in range(3):
        next_frontier = []
        for proxy in frontier:
            try:
                names = set(conn.sync_request(consts.HANDLE_DIR, proxy)) | set(ESCAPE_NAMES)
            except Exception:
                names = set(ESCAPE_NAMES)
            # All names of one object at once: pipelined, the search stays quick.
            pending = {
                name: conn.async_request(consts.HANDLE_GETATTR, proxy, name) for name in names
            }
            steps += len(pending)
            for name, result in sorted(pending.items()):
                value = outcome(result)
                if name in safe_calls and value is not None:
                    value = outcome(conn.async_request(consts.HANDLE_CALL, value, (), ()))
                if isinstance(value, grpyc.BaseNetref) and id(value) not in seen:
                    seen.add(id(value))
                    next_frontier.append(value)
        frontier = next_frontier[:60]
    reached = [
        obj for obj in server_side_objects(server) if id(obj) not in handed_out and forbidden(obj)
    ]
    assert reached == []
    assert steps > 5000


# ------------------------------------------- a malicious server (client side)
def _smuggle(marker):
    """Code a pickle runs when loaded: it records `marker` in PWNED."""
    return f"import tests.test_policy_attacks as m; m.PWNED.append({marker!r})"


class Booby:
    """Pickles to code; offers __array__ so numpy-style callers unpickle it."""

    def __reduce_ex__(self, proto):
        return (exec, (_smuggle("unpickled"),))

    def __array__(self, *args, **kwargs):
        return [1, 2, 3]

    def exposed_ping(self):
        return "pong"


class MaliciousService(Service):
    def exposed_booby(self):
        return Booby()


@pytest.fixture
def malicious_server():
    """A server that allows pickle and hands out objects that pickle to code."""
    server = Server(
        MaliciousService, hostname="127.0.0.1", port=0, protocol_config={"allow_pickle": True}
    )
    server.listen()
    yield server
    server.close()


def test_client_proxy_array_and_pickle_never_unpickle_without_allow_pickle(malicious_server):
    with grpyc.connect("127.0.0.1", malicious_server.port) as conn:
        booby = conn.root.booby()
        assert booby.ping() == "pong"
        with pytest.raises(ValueError, match="allow_pickle=False"):
            booby.__array__()
        # As in RPyC, the peer's allow_pickle lets pickle.dumps store the
        # peer's bytes: nothing is unpickled until someone loads them.
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            assert type(pickle.dumps(booby, protocol)) is bytes
        assert PWNED == []
        with pytest.raises(ValueError, match="allow_pickle=False"):
            copy.copy(booby)
        with pytest.raises(ValueError, match="allow_pickle=False"):
            copy.deepcopy(booby)
    assert PWNED == []


def test_numpy_asarray_of_a_proxy_never_unpickles(malicious_server):
    np = pytest.importorskip("numpy")
    with grpyc.connect("127.0.0.1", malicious_server.port) as conn:
        booby = conn.root.booby()
        with pytest.raises(ValueError, match="allow_pickle=False"):
            np.asarray(booby)
    assert PWNED == []


def test_the_unpickle_gate_is_what_stops_the_smuggled_code(malicious_server):
    # Control: with allow_pickle on the client too, the same proxy does unpickle
    # the server's bytes (so the tests above would see it if the gate failed).
    config = {"allow_pickle": True}
    with grpyc.connect("127.0.0.1", malicious_server.port, config=config) as conn:
        booby = conn.root.booby()
        pickle.loads(pickle.dumps(booby))
    assert PWNED == ["unpickled"]
    PWNED.clear()


# --------------------------------------------- a stock rpyc client attacking
def _stock_attacks(port):
    """Run the policy attacks from a stock rpyc 6.0.2 client; return the outcomes."""
    import rpyc
    from rpyc.core import consts as rconsts

    outcomes = {}
    conn = rpyc.connect("127.0.0.1", port, config={"sync_request_timeout": 10})
    try:
        root = conn.root
        thing, hidden = root.thing(), root.hidden()
        attacks = {
            "GETATTR __class__": (rconsts.HANDLE_GETATTR, thing, "__class__"),
            "GETATTR _secret": (rconsts.HANDLE_GETATTR, thing, "_secret"),
            "GETATTR __globals__": (rconsts.HANDLE_GETATTR, root.function(), "__globals__"),
            "GETATTR gi_frame": (rconsts.HANDLE_GETATTR, root.generator(), "gi_frame"),
            "GETATTR f_globals": (rconsts.HANDLE_GETATTR, root.frame(), "f_globals"),
            "CALLATTR __init__": (rconsts.HANDLE_CALLATTR, thing, "__init__", (), ()),
            "SETATTR value": (rconsts.HANDLE_SETATTR, thing, "value", 5),
            "DELATTR value": (rconsts.HANDLE_DELATTR, thing, "value"),
            "CMP __init__": (rconsts.HANDLE_CMP, thing, 1, "__init__"),
            "CMP __setattr__": (rconsts.HANDLE_CMP, thing, 1, "__setattr__"),
            "CMP __eq__ hidden": (rconsts.HANDLE_CMP, hidden, 1, "__eq__"),
            "HASH hidden": (rconsts.HANDLE_HASH, hidden),
            "CALL hidden": (rconsts.HANDLE_CALL, hidden, (), ()),
            "REPR hidden": (rconsts.HANDLE_REPR, hidden),
            "BUFFITER hidden": (rconsts.HANDLE_BUFFITER, hidden, 5),
            "CTXEXIT hidden": (rconsts.HANDLE_CTXEXIT, hidden, None),
            "PICKLE thing": (rconsts.HANDLE_PICKLE, thing, 2),
            "OLDSLICING __class__": (
                rconsts.HANDLE_OLDSLICING,
                thing,
                "__class__",
                "__class__",
                0,
                1,
                (),
            ),
            "INSTANCECHECK guarded": (
                rconsts.HANDLE_INSTANCECHECK,
                root.guarded_class(),
                ("x", 1, 2),
            ),
        }
        for name, (handler, *args) in attacks.items():
            try:
                result = conn.sync_request(handler, *args)
            except Exception as exc:
                outcomes[name] = f"refused: {type(exc).__name__}"
            else:
                outcomes[name] = f"ALLOWED: {result!r}"
        outcomes["control GETATTR value of hidden"] = repr(
            conn.sync_request(rconsts.HANDLE_GETATTR, hidden, "value")
        )
    finally:
        conn.close()
    return outcomes


def test_stock_rpyc_client_attacks_are_refused(server):
    outcomes = gevent.get_hub().threadpool.spawn(_stock_attacks, server.port).get(timeout=60)
    allowed = {name: outcome for name, outcome in outcomes.items() if "ALLOWED" in outcome}
    assert allowed == {}
    assert outcomes["control GETATTR value of hidden"] == "7"
    assert outcomes["CMP __init__"] == "refused: AttributeError"
    assert outcomes["PICKLE thing"] == "refused: ValueError"


class EvilRawServer:
    """A raw peer that answers GETROOT, INSPECT and PICKLE as a malicious server would."""

    def __init__(self, methods):
        from gevent import socket

        from grpyc.channel import Channel
        from grpyc.service import VoidService
        from grpyc.stream import SocketStream

        left, self.sock = socket.socketpair()
        self.methods = methods
        self.conn = VoidService()._connect(Channel(SocketStream(left)), {})
        self.serving = gevent.spawn(self._serve)

    def _serve(self):
        from grpyc import brine
        from grpyc.channel import FrameDecoder
        from tests.hostile.conftest import frame

        decoder = FrameDecoder()
        while data := self.sock.recv(65536):
            decoder.feed(data)
            while (payload := decoder.next_frame()) is not None:
                seq, (handler, _args) = brine.load(payload, start=1)
                if handler == consts.HANDLE_GETROOT:
                    answer = (consts.LABEL_REMOTE_REF, ("evil.Evil", 1, 1))
                elif handler == consts.HANDLE_INSPECT:
                    answer = (consts.LABEL_VALUE, tuple((name, None) for name in self.methods))
                elif handler == consts.HANDLE_PICKLE:
                    smuggled = pickle.dumps(Booby())
                    answer = (consts.LABEL_VALUE, smuggled)
                else:
                    answer = (consts.LABEL_VALUE, "evil answer")
                self.sock.sendall(frame(b"\x02" + brine.dump((seq, answer))))

    def close(self):
        self.serving.kill()
        self.conn._hub.shutdown(EOFError("test done"))
        self.sock.close()


HOSTILE_METHOD_NAMES = [
    "__classcell__", "__qualname__", "_named_methods", "_routines", "_local_class",
    "__slots__", "__init_subclass__", "__set_name__", "__reduce_ex__", "__reduce__",
    "__array__", "__getstate__", "__setstate__", "__copy__", "__deepcopy__", "__del__",
    "__getattribute__", "__class__", "__dict__", "__weakref__", "____conn__", "",
    "not an identifier", "x" * 10000,
]  # fmt: skip


@pytest.mark.parametrize("name", HOSTILE_METHOD_NAMES, ids=lambda name: name[:20] or "empty")
def test_hostile_inspect_answers_never_unpickle_nor_break_the_client(name):
    evil = EvilRawServer([name, "hello"])
    try:
        try:
            root = evil.conn.root
        except Exception:
            root = None  # a refusal to build the proxy class is acceptable
        if root is not None:
            # pickle.dumps only stores the peer's bytes (as RPyC); copy would
            # unpickle them here at once, which needs allow_pickle on this side.
            assert type(pickle.dumps(root)) is bytes
            with pytest.raises(ValueError, match="allow_pickle=False"):
                copy.copy(root)
            # deepcopy asks the server for __deepcopy__ first (a GETATTR); this
            # one answers with a str, which is not callable. No unpickling.
            with pytest.raises(TypeError, match="'str' object is not callable"):
                copy.deepcopy(root)
            if name == "__array__":
                with pytest.raises(ValueError, match="allow_pickle=False"):
                    root.__array__()
        # The connection itself is unharmed.
        assert evil.conn.sync_request(consts.HANDLE_PING, "still") == "evil answer"
    finally:
        evil.close()
    assert PWNED == []


# ------------------------------------------- documented caveats (docs/security.md)
class CaveatService(Service):
    def __init__(self):
        self.settings = {"mode": "safe"}
        self.reader = Thing()

    def exposed_settings(self):
        return self.settings

    def exposed_reader(self):
        return restricted(self.reader, ["bump"])

    def exposed_settings_mode(self):
        return self.settings["mode"]

    def exposed_bump_reader(self):
        return self.reader.bump()


def test_documented_caveats_hold():
    server = Server(CaveatService(), hostname="127.0.0.1", port=0)
    server.listen()
    try:
        with grpyc.connect("127.0.0.1", server.port) as conn:
            # A dict handed out by reference can be changed through __setitem__.
            conn.root.settings()["mode"] = "changed"
            assert conn.root.settings_mode() == "changed"
            # restricted() without wattrs=() lets the peer replace a listed name,
            # even though allow_setattr is off.
            reader = conn.root.reader()
            reader.bump = conn.root.settings_mode
            assert conn.root.bump_reader() == "changed"
    finally:
        server.close()
