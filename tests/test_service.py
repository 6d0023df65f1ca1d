"""Unit tests of grpyc.service with a stand-in connection (no sockets, no protocol).

Stock rpyc 6.0.2 is the reference: where behaviour must match it exactly
(names, the permissive classic config, the attributes classic mode adds to a
connection, attribute resolution under RPyC's policy), the tests run stock's
code on the same stand-in and compare.
"""

import builtins
import importlib.util
import json
import os
import subprocess
import sys
import types
import weakref

import pytest
import rpyc
import rpyc.core.protocol
import rpyc.core.service

import grpyc.service  # noqa: F401 - loads the module; grpyc.service is the decorator
from grpyc.service import (
    ClassicClient,
    ClassicService,
    FakeSlaveService,
    MasterService,
    ModuleNamespace,
    Service,
    Slave,
    SlaveService,
    VoidService,
)

ALL_SERVICES = [
    Service,
    VoidService,
    SlaveService,
    FakeSlaveService,
    MasterService,
    ClassicService,
    ClassicClient,
]

CLASSIC_ATTRS = ["builtin", "builtins", "eval", "execute", "modules", "namespace", "teleport"]


class FakeConnection:
    """What services touch on a connection: its config dict and the peer's root."""

    def __init__(self, root=None):
        self._config = dict(rpyc.core.protocol.DEFAULT_CONFIG)
        self.root = root

    def update_config(self, changes):
        self._config.update(changes)


class RecordingConnection:
    """A `_protocol` stand-in recording how `_connect` constructs it."""

    def __init__(self, root, channel, config):
        self._local_root = root
        self.channel = channel
        self.config = config


class RecordingService(Service):
    _protocol = RecordingConnection

    def __init__(self):
        self.connected = []

    def on_connect(self, conn):
        self.connected.append(conn)


class CalcService(Service):
    def exposed_add(self, x, y):
        return x + y


def check_attr(config, obj, name, perm="allow_getattr"):
    """Stock RPyC's attribute policy applied to ``obj``: the name it resolves to."""
    holder = types.SimpleNamespace(_config=config)
    return rpyc.core.protocol.Connection._check_attr(holder, obj, name, perm)


def stock_class_named(name, base=rpyc.Service, **attrs):
    return type(name, (base,), attrs)


# --- names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "name"),
    [
        (Service, ""),
        (VoidService, "VOID"),
        (SlaveService, "SLAVE"),
        (FakeSlaveService, "FAKESLAVE"),
        (MasterService, "MASTER"),
        (ClassicService, "CLASSIC"),
        (ClassicClient, "CLASSICCLIENT"),
    ],
)
def test_builtin_services_are_named_like_stock(service, name):
    stock = getattr(rpyc.core.service, service.__name__)
    assert service.get_service_name() == name
    assert service.get_service_aliases() == (name,)
    assert service.get_service_aliases() == stock.get_service_aliases()


@pytest.mark.parametrize(
    ("class_name", "aliases", "expected"),
    [
        ("FooService", (), ("FOO",)),
        ("fooservice", (), ("FOO",)),
        ("Calculator", (), ("CALCULATOR",)),
        ("MyService2", (), ("MYSERVICE2",)),
        ("ServiceService", (), ("SERVICE",)),
        ("Foobar", ["foo", "bar", "lalaland"], ("FOO", "BAR", "LALALAND")),
        ("FooService", ("Other",), ("OTHER",)),
        ("Numbered", (42, "x"), ("42", "X")),
    ],
)
def test_service_names_derive_from_class_or_aliases(class_name, aliases, expected):
    ours = type(class_name, (Service,), {"ALIASES": aliases})
    stock = stock_class_named(class_name, ALIASES=aliases)
    assert ours.get_service_aliases() == expected
    assert ours.get_service_name() == expected[0]
    assert stock.get_service_aliases() == expected


def test_service_names_are_exposed_to_the_peer():
    service = CalcService()
    assert service.exposed_get_service_name() == "CALC"
    assert service.exposed_get_service_aliases() == ("CALC",)
    assert CalcService.exposed_get_service_name() == "CALC"


# --- attribute access ----------------------------------------------------------


@pytest.mark.parametrize("service", ALL_SERVICES)
def test_services_leave_getattr_to_the_connection_policy(service):
    # Like stock: an `_rpyc_getattr` here would bypass allow_getattr and the
    # rest of the connection's attribute policy.
    assert not hasattr(service, "_rpyc_getattr")
    assert not hasattr(getattr(rpyc.core.service, service.__name__), "_rpyc_getattr")


@pytest.mark.parametrize("service", ALL_SERVICES)
def test_services_refuse_setattr_and_delattr(service):
    instance = service()
    with pytest.raises(AttributeError, match=r"^access denied: cannot set 'x' of a service$"):
        instance._rpyc_setattr("x", 1)
    with pytest.raises(AttributeError, match=r"^access denied: cannot delete 'x' of a service$"):
        instance._rpyc_delattr("x")


def test_slave_service_refuses_setattr_even_with_permissive_config():
    service = SlaveService()
    conn = FakeConnection()
    service.on_connect(conn)
    assert conn._config["allow_setattr"] is True
    with pytest.raises(AttributeError, match="access denied"):
        service._rpyc_setattr("namespace", {})
    assert service.namespace == {}


@pytest.mark.parametrize(
    ("name", "resolved"),
    [
        ("add", "exposed_add"),
        ("exposed_add", "exposed_add"),
        ("get_service_name", "exposed_get_service_name"),
        ("get_service_aliases", "exposed_get_service_aliases"),
        ("__repr__", "__repr__"),
    ],
)
def test_default_policy_maps_names_to_exposed_names(name, resolved):
    config = dict(rpyc.core.protocol.DEFAULT_CONFIG)
    assert check_attr(config, CalcService(), name) == resolved


@pytest.mark.parametrize("name", ["on_connect", "on_disconnect", "_connect", "ALIASES"])
def test_default_policy_hides_unexposed_names(name):
    config = dict(rpyc.core.protocol.DEFAULT_CONFIG)
    with pytest.raises(AttributeError, match=f"cannot access '{name}'"):
        check_attr(config, CalcService(), name)


@pytest.mark.parametrize(
    "name", ["getmodule", "eval", "execute", "getconn", "namespace", "_conn", "on_connect"]
)
def test_slave_policy_reaches_plain_classic_names(name):
    service = SlaveService()
    conn = FakeConnection()
    service.on_connect(conn)
    assert check_attr(conn._config, service, name) == name


@pytest.mark.parametrize("name", ["getmodule", "eval", "execute", "getconn", "namespace"])
def test_fake_slave_answers_classic_names_with_none(name):
    service = FakeSlaveService()
    config = dict(rpyc.core.protocol.DEFAULT_CONFIG)
    resolved = check_attr(config, service, name)
    assert resolved == f"exposed_{name}"
    assert getattr(service, resolved) is None


# --- on_connect / on_disconnect -------------------------------------------------


@pytest.mark.parametrize("service", [Service, VoidService, FakeSlaveService])
def test_plain_services_leave_the_connection_alone(service):
    conn = FakeConnection(root=object())
    before = dict(conn._config)
    assert service().on_connect(conn) is None
    assert service().on_disconnect(conn) is None
    assert conn._config == before
    assert sorted(vars(conn)) == ["_config", "root"]


def test_slave_service_turns_on_the_permissive_config():
    conn = FakeConnection()
    expected = dict(conn._config)
    expected.update(
        allow_all_attrs=True,
        allow_pickle=True,
        allow_getattr=True,
        allow_setattr=True,
        allow_delattr=True,
        allow_exposed_attrs=False,
        import_custom_exceptions=True,
        instantiate_custom_exceptions=True,
        instantiate_oldstyle_exceptions=True,
    )
    service = SlaveService()
    assert service.getconn() is None
    service.on_connect(conn)
    assert conn._config == expected
    assert service.getconn() is conn


@pytest.mark.parametrize("name", ["SlaveService", "ClassicService"])
def test_permissive_config_matches_stock(name):
    ours, stock = FakeConnection(root=Slave()), FakeConnection(root=Slave())
    getattr(sys.modules["grpyc.service"], name)().on_connect(ours)
    getattr(rpyc.core.service, name)().on_connect(stock)
    assert ours._config == stock._config


@pytest.mark.parametrize("service", [MasterService, ClassicClient, ClassicService])
def test_classic_clients_install_the_same_attributes_as_stock(service):
    ours, stock = FakeConnection(root=Slave()), FakeConnection(root=Slave())
    service().on_connect(ours)
    getattr(rpyc.core.service, service.__name__)().on_connect(stock)
    assert sorted(vars(ours)) == sorted(vars(stock)) == sorted(["_config", "root", *CLASSIC_ATTRS])


@pytest.mark.parametrize("service", [MasterService, ClassicClient])
def test_master_services_expose_nothing(service):
    conn = FakeConnection(root=Slave())
    before = dict(conn._config)
    service().on_connect(conn)
    assert conn._config == before


def test_master_service_gives_the_connection_the_peers_namespace():
    slave = Slave()
    conn = FakeConnection(root=slave)
    MasterService().on_connect(conn)
    assert conn.modules["json"] is json
    assert conn.modules.os is os
    assert conn.builtins is builtins
    assert conn.builtin is builtins
    assert conn.namespace is slave.namespace
    assert conn.eval == slave.eval
    assert conn.execute == slave.execute
    conn.execute("answer = 6 * 7")
    assert conn.eval("answer") == 42
    assert slave.namespace["answer"] == 42


def test_classic_service_configures_then_installs():
    seen_config = []

    class ObservingSlave(Slave):
        __slots__ = ()

        def getmodule(self, name):
            seen_config.append(conn._config["allow_all_attrs"])
            return super().getmodule(name)

    conn = FakeConnection(root=ObservingSlave())
    service = ClassicService()
    service.on_connect(conn)
    assert seen_config == [True, True]
    assert service.getconn() is conn
    assert conn.builtins is builtins


# --- teleport -------------------------------------------------------------------


class TeleportRecorder:
    def __init__(self):
        self.imported = []

    def import_function(self, exported, globals_, def_):
        self.imported.append((exported, globals_, def_))
        return ("imported", exported)


class ModuleTable:
    """A peer root whose getmodule serves only the modules in a table."""

    def __init__(self, modules):
        self.modules = {"builtins": builtins, "importlib.util": importlib.util, **modules}
        self.requested = []
        self.namespace = {}
        self.eval = self.execute = None

    def getmodule(self, name):
        self.requested.append(name)
        if name not in self.modules:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return self.modules[name]


@pytest.fixture
def local_exporter(monkeypatch):
    exporter = types.ModuleType("grpyc.teleportation")
    exporter.export_function = lambda func: ("exported", func.__name__)
    monkeypatch.setitem(sys.modules, "grpyc.teleportation", exporter)
    return exporter


def square(x):
    return x * x


def test_teleport_uses_the_peers_grpyc_importer(local_exporter):
    remote = TeleportRecorder()
    peer = ModuleTable({"grpyc.teleportation": remote, "rpyc.utils.teleportation": object()})
    conn = FakeConnection(root=peer)
    ClassicClient().on_connect(conn)
    assert conn.teleport(square) == ("imported", ("exported", "square"))
    assert remote.imported == [(("exported", "square"), peer.namespace, True)]
    assert peer.requested == ["builtins", "importlib.util", "grpyc.teleportation"]


def test_teleport_falls_back_to_stock_rpyc_importer(local_exporter):
    remote = TeleportRecorder()
    peer = ModuleTable({"rpyc.utils.teleportation": remote})
    conn = FakeConnection(root=peer)
    MasterService().on_connect(conn)
    namespace = {"x": 1}
    conn.teleport(square, globals=namespace, def_=False)
    conn.teleport(square, namespace, True)
    assert remote.imported == [
        (("exported", "square"), namespace, False),
        (("exported", "square"), namespace, True),
    ]
    assert peer.requested[2:] == [
        "grpyc.teleportation",
        "rpyc.utils.teleportation",
        "grpyc.teleportation",
    ]


def test_teleport_without_any_importer_raises_import_error(local_exporter):
    conn = FakeConnection(root=ModuleTable({}))
    MasterService().on_connect(conn)
    with pytest.raises(ModuleNotFoundError, match=r"rpyc\.utils\.teleportation"):
        conn.teleport(square)


# --- ModuleNamespace ------------------------------------------------------------


class RecordingImporter:
    def __init__(self):
        self.calls = []

    def __call__(self, name):
        self.calls.append(name)
        return Slave().getmodule(name)


def test_module_namespace_fetches_builtins_and_importlib_util_up_front():
    getmodule = RecordingImporter()
    ModuleNamespace(getmodule)
    assert getmodule.calls == ["builtins", "importlib.util"]


def test_module_namespace_caches_each_module_once():
    getmodule = RecordingImporter()
    ns = ModuleNamespace(getmodule)
    assert ns["os.path"] is os.path
    assert ns["os.path"] is os.path
    assert ns.json is json
    assert ns["json"] is json
    assert ns.builtins is builtins
    assert getmodule.calls == ["builtins", "importlib.util", "os.path", "json"]


def test_module_namespace_reaches_modules_with_private_names():
    ns = ModuleNamespace(Slave().getmodule)
    assert ns._thread is sys.modules["_thread"]
    assert ns["_io"] is sys.modules["_io"]


def test_module_namespace_does_not_cache_failed_imports():
    getmodule = RecordingImporter()
    ns = ModuleNamespace(getmodule)
    for _ in range(2):
        with pytest.raises(ModuleNotFoundError, match="grpyc_no_such_module"):
            ns["grpyc_no_such_module"]
    assert getmodule.calls[2:] == ["grpyc_no_such_module", "grpyc_no_such_module"]


def test_module_namespace_attribute_miss_is_attribute_error():
    ns = ModuleNamespace(Slave().getmodule)
    with pytest.raises(AttributeError, match=r"^no module named 'grpyc_no_such_module'$") as info:
        ns.grpyc_no_such_module
    assert info.value.name == "grpyc_no_such_module"
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    assert not hasattr(ns, "grpyc_no_such_module")


def test_module_namespace_contains_tells_whether_a_module_can_be_found():
    getmodule = RecordingImporter()
    ns = ModuleNamespace(getmodule)
    assert "json" in ns
    assert "os.path" in ns
    assert "grpyc_no_such_module" not in ns
    assert getmodule.calls == ["builtins", "importlib.util"]


def test_module_namespace_is_weakly_referenceable_and_read_only():
    ns = ModuleNamespace(Slave().getmodule)
    assert weakref.ref(ns)() is ns
    with pytest.raises(AttributeError, match="no attribute 'json'"):
        ns.json = json


# --- Slave ----------------------------------------------------------------------


def test_slave_execute_and_eval_share_one_namespace():
    slave = Slave()
    assert slave.execute("def double(x):\n    return 2 * x\n") is None
    assert slave.eval("double(21)") == 42
    assert sorted(k for k in slave.namespace if k != "__builtins__") == ["double"]


def test_slave_runs_code_objects():
    slave = Slave()
    slave.execute(compile("y = 3", "<test>", "exec"))
    assert slave.eval(compile("y + 1", "<test>", "eval")) == 4


def test_slave_errors_propagate():
    slave = Slave()
    with pytest.raises(ZeroDivisionError, match="division by zero"):
        slave.eval("1 / 0")
    with pytest.raises(SyntaxError):
        slave.execute("def")


@pytest.mark.parametrize("name", ["os.path", ("os", "path")])
def test_slave_getmodule_takes_dotted_names_or_parts(name):
    assert Slave().getmodule(name) is os.path


def test_slave_getmodule_missing_module_raises():
    with pytest.raises(ModuleNotFoundError, match="grpyc_no_such_module"):
        Slave().getmodule("grpyc_no_such_module")


def test_slave_instances_start_empty_and_apart():
    first, second = Slave(), Slave()
    first.execute("z = 1")
    assert second.namespace == {}
    assert first.getconn() is None


# --- _connect -------------------------------------------------------------------


def test_connect_on_an_instance_serves_that_instance():
    service = RecordingService()
    config = {"allow_pickle": True}
    conn = service._connect("channel", config)
    assert isinstance(conn, RecordingConnection)
    assert conn._local_root is service
    assert conn.channel == "channel"
    assert conn.config is config
    assert service.connected == [conn]


def test_connect_on_the_class_serves_a_new_instance():
    first = RecordingService._connect("a")
    second = RecordingService._connect("b", config={"x": 1})
    assert type(first._local_root) is RecordingService
    assert first._local_root is not second._local_root
    assert first._local_root.connected == [first]
    assert first.config == {}
    assert second.config == {"x": 1}


def test_connect_failure_in_on_connect_propagates():
    class Failing(RecordingService):
        def on_connect(self, conn):
            raise RuntimeError("refused by on_connect")

    with pytest.raises(RuntimeError, match="refused by on_connect"):
        Failing._connect("channel")


def test_connect_cannot_be_overwritten_on_an_instance():
    class WithDict(Service):
        pass

    with pytest.raises(AttributeError, match="cannot overwrite method '_connect'"):
        WithDict()._connect = None


@pytest.mark.parametrize("service", ALL_SERVICES)
def test_service_instances_have_no_dict(service):
    assert not hasattr(service(), "__dict__")


def test_importing_service_does_not_import_the_protocol():
    code = "import sys, grpyc.service; print('grpyc.protocol' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout == "False\n"


def test_public_names():
    assert sys.modules["grpyc.service"].__all__ == [
        "ClassicClient",
        "ClassicService",
        "FakeSlaveService",
        "MasterService",
        "ModuleNamespace",
        "Service",
        "Slave",
        "SlaveService",
        "VoidService",
    ]
