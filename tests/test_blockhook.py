"""grpyc._blockhook: which greenlets may carry the hook, and taking it off for a wait."""

import gevent

from grpyc._blockhook import HOOK, can_carry_hook, resume_hook, suspend_hook
from grpyc._readers import PoolReader
from grpyc.lib import LeanGreenlet


def test_plain_greenlets_may_carry_the_hook_and_pool_readers_need_no_check():
    assert can_carry_hook(gevent.Greenlet(lambda: None))
    assert can_carry_hook(LeanGreenlet(lambda: None))
    # The hub skips the check for a PoolReader: its classes define none.
    assert all(HOOK not in vars(base) for base in PoolReader.__mro__)
    assert can_carry_hook(PoolReader(lambda: None))


def test_a_greenlet_with_a_switch_out_of_its_own_may_not():
    class Own(gevent.Greenlet):
        def switch_out(self):
            pass

    class Derived(Own):
        pass

    assert not can_carry_hook(Own(lambda: None))
    assert not can_carry_hook(Derived(lambda: None))
    glet = gevent.Greenlet(lambda: None)
    glet.switch_out = lambda: None  # one set on the instance by someone else
    assert not can_carry_hook(glet)


def test_suspend_takes_the_hook_off_and_resume_puts_it_back():
    glet = gevent.Greenlet(lambda: None)
    hook = lambda: None  # noqa: E731
    glet.__dict__[HOOK] = hook
    suspended = suspend_hook(glet)
    assert suspended is hook and HOOK not in glet.__dict__
    resume_hook(glet, suspended)
    assert glet.__dict__[HOOK] is hook
    plain = gevent.Greenlet(lambda: None)
    resume_hook(plain, suspend_hook(plain))  # none to take off: none put back
    assert HOOK not in plain.__dict__


def test_gevent_calls_the_hook_when_the_greenlet_blocks():
    calls = []

    def body():
        gevent.getcurrent().__dict__[HOOK] = lambda: calls.append("blocked")
        gevent.sleep(0.001)

    glet = gevent.spawn(body)
    glet.join(2)
    assert calls == ["blocked"]
