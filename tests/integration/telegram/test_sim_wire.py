"""The sim's WebSocket protocol spoken raw: answers, errors, and bad frames."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from tests.integration.telegram.world import SimWorld


async def _ask(ws: aiohttp.ClientWebSocketResponse, request: dict[str, Any]) -> dict[str, Any]:
    await ws.send_bytes(orjson.dumps(request))
    while True:
        frame = orjson.loads((await ws.receive(timeout=20)).data)
        for obj in frame if isinstance(frame, list) else [frame]:
            if obj.get("id") == request["id"]:
                return dict(obj)


SEND = {"chat_id": "x", "text": "t", "random_id": 1}


async def test_requests_answers_and_errors(sim_world: SimWorld) -> None:
    account = await sim_world.account()
    assert account.credential is not None
    async with sim_world.http.ws_connect(sim_world.url + "/ws") as ws:
        key = (await _ask(ws, {"id": 1, "m": "new_key"}))["r"]["key"]
        assert len(key) == 64
        fresh = await _ask(ws, {"id": 2, "m": "attach", "c": 1, "a": {"key": key, "window": 8}})
        assert fresh["r"] == {"user": None, "seq": 0}
        me = await _ask(ws, {"id": 3, "m": "me", "c": 1})
        assert me["e"]["code"] == "AUTH_KEY_INVALID"
        attach = {"key": account.credential.hex(), "seq": None, "window": 8}
        ok = await _ask(ws, {"id": 4, "m": "attach", "c": 2, "a": attach})
        assert ok["r"]["user"]["id"] == account.user_id
        again = await _ask(ws, {"id": 5, "m": "attach", "c": 2, "a": attach})
        assert again["e"]["code"] == "INPUT_INVALID"
        bad = await _ask(ws, {"id": 6, "m": "send_message", "c": 2, "a": SEND})
        assert bad["e"]["code"] == "INPUT_INVALID" and "chat_id" in bad["e"]["message"]
        nowhere = await _ask(ws, {"id": 7, "m": "me", "c": 99})
        assert nowhere["e"]["code"] == "NOT_CONNECTED"
        unknown = await _ask(ws, {"id": 8, "m": "teleport", "c": 2})
        assert unknown["e"]["code"] == "METHOD_INVALID"
        notalist = await _ask(ws, {"id": 9, "m": "me", "c": 2, "a": [1]})
        assert notalist["e"]["code"] == "INPUT_INVALID"
        stranger = await _ask(
            ws, {"id": 10, "m": "attach", "c": 3, "a": {"key": "00", "window": 1}}
        )
        assert stranger["e"]["code"] == "AUTH_KEY_UNREGISTERED"
        detached = await _ask(ws, {"id": 11, "m": "detach", "c": 2})
        assert detached["r"] == {}
    info = await sim_world.info(account)
    assert info["connections"] == 0 and info["max_connections"] == 1


async def test_a_bad_frame_closes_only_that_transport(sim_world: SimWorld) -> None:
    async with sim_world.http.ws_connect(sim_world.url + "/ws") as ws:
        await ws.send_bytes(b"{not json")
        msg = await ws.receive(timeout=20)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    async with sim_world.http.ws_connect(sim_world.url + "/ws") as ws:
        assert "key" in (await _ask(ws, {"id": 1, "m": "new_key"}))["r"]
