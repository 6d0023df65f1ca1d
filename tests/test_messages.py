"""grpyc.messages: the per-frame decoder agrees with the general one on every input."""

from __future__ import annotations

from typing import Any

import pytest

from grpyc import brine, consts
from grpyc._brine_small import SMALL_INPUT
from grpyc.messages import (
    ProtocolError,
    decode_measured,
    decode_payload,
    encode_exception,
    encode_reply,
    encode_request,
)

_ID_PACK = ("builtins.method", 140_230_123_456_789, 0)
_CALL_ARGS = (
    (consts.LABEL_LOCAL_REF, _ID_PACK),
    (consts.LABEL_TUPLE, ((consts.LABEL_VALUE, 42),)),
    (),
)

PAYLOADS: dict[str, bytes] = {
    "call request": bytes(encode_request(7, consts.HANDLE_CALL, _CALL_ARGS)),
    "getattr request": bytes(
        encode_request(8, consts.HANDLE_GETATTR, ((consts.LABEL_LOCAL_REF, _ID_PACK), "value"))
    ),
    "int reply": bytes(encode_reply(9, (consts.LABEL_VALUE, 42))),
    "str reply": bytes(encode_reply(10, (consts.LABEL_VALUE, "x" * 300))),
    "exception": encode_exception(11, ("builtins.ValueError", ("boom",), (), "tb")),
    "exception with a traceback": encode_exception(
        14, ("builtins.ValueError", ("boom",), (), "Traceback ...\n" * 150)
    ),
    "ping request": bytes(
        encode_request(15, consts.HANDLE_PING, (consts.LABEL_TUPLE, ((0, "abc" * 173),)))
    ),
    "not a pair": bytes([consts.MSG_REPLY]) + brine.dump((1, 2, 3)),
    "seq not an int": bytes([consts.MSG_REPLY]) + brine.dump(("1", 2)),
    "unknown message type": bytes([9]) + brine.dump((1, 2)),
    "trailing byte": bytes(encode_reply(12, (consts.LABEL_VALUE, 1))) + b"\x00",
    "truncated": bytes(encode_reply(13, (consts.LABEL_VALUE, "abc")))[:-1],
    "type byte only": bytes([consts.MSG_REQUEST]),
    "empty": b"",
    "too deep": bytes([consts.MSG_REPLY]) + brine.dump((1, ((((((0,),),),),),))),
}


def _outcome(decode: Any, payload: Any, max_depth: int, max_size: int | None) -> Any:
    try:
        return decode(payload, max_depth, max_size, None)
    except (ProtocolError, ValueError) as exc:
        return type(exc)


def _general(payload: Any, max_depth: int, max_size: int | None, progress: Any) -> Any:
    # A bytearray never takes the one-pass path: brine decodes it the general way.
    return decode_measured(
        bytearray(payload), max_depth, max_decoded_size=max_size, progress=progress
    )


@pytest.mark.parametrize("name", sorted(PAYLOADS))
@pytest.mark.parametrize("max_size", [None, 1_000_000, 40])
def test_per_frame_decoder_matches_the_general_one(name: str, max_size: int | None) -> None:
    payload = PAYLOADS[name]
    for max_depth in (64, 3):
        fast = _outcome(decode_payload, payload, max_depth, max_size)
        general = _outcome(_general, payload, max_depth, max_size)
        assert fast == general, (name, max_depth, fast, general)


def test_the_cases_take_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison above means something only if the inputs reach the one-pass
    decoder (compiled build: pure Python has none) and include answers and refusals."""
    from grpyc import messages

    calls = []
    one_pass = messages.decode_small

    def counting(*args: Any) -> Any:
        calls.append(args[0])
        return one_pass(*args)

    monkeypatch.setattr(messages, "decode_small", counting)
    outcomes = [_outcome(decode_payload, p, 64, None) for p in PAYLOADS.values()]
    assert ProtocolError in outcomes
    assert any(type(o) is tuple for o in outcomes)
    if SMALL_INPUT:
        assert PAYLOADS["call request"] in calls and PAYLOADS["int reply"] in calls
    else:
        assert calls == []
