"""The sim's HTTP control API: shapes, id conventions, and 400s that name the field."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.telegram.world import ControlError, SimWorld, sim_process
from vibee.sim import telegram as sim_telegram
from vibee.sim import telegram_control as sim_control

STATS_KEYS = {
    "accounts",
    "connections",
    "max_connections_per_account",
    "messages_in",
    "messages_out",
    "duplicates_rejected",
}


async def test_ids_follow_telegrams_marked_convention(sim_world: SimWorld) -> None:
    account = await sim_world.account()
    user, _ = await sim_world.user()
    private = await sim_world.chat("private", [account.user_id, user])
    group = await sim_world.chat("group", [account.user_id, user])
    supergroup = await sim_world.chat("supergroup", [account.user_id, user])
    channel = await sim_world.chat("channel", [account.user_id, user])
    assert account.user_id > 0 and user > 0
    assert private.seen_by(account.user_id) == user and private.seen_by(user) == account.user_id
    assert group.chat_id < 0 and not str(group.chat_id).startswith("-100")
    assert str(supergroup.chat_id).startswith("-100") and str(channel.chat_id).startswith("-100")
    again = await sim_world.chat("private", [user, account.user_id])
    assert again.chat_id == private.chat_id


async def test_inject_transcript_and_stats(sim_world: SimWorld) -> None:
    before = await sim_world.request("GET", "/stats")
    assert STATS_KEYS <= before.keys()
    account = await sim_world.account()
    user, _ = await sim_world.user()
    group = await sim_world.chat("group", [account.user_id, user])
    first = await sim_world.inject(group, user, "one")
    second = await sim_world.inject(group, account.user_id, "two", reply_to=first)
    batch = await sim_world.request(
        "POST",
        "/messages/batch",
        {"messages": [{"chat_id": group.chat_id, "from": user, "text": f"b{i}"} for i in range(3)]},
    )
    assert batch["message_ids"] == [second + 1, second + 2, second + 3]
    transcript = await sim_world.transcript(group)
    assert [set(m) for m in transcript] == [
        {"message_id", "from", "text", "reply_to", "random_id", "date"}
    ] * 5
    assert transcript[1] == transcript[1] | {"from": account.user_id, "reply_to": first}
    after = await sim_world.request("GET", "/stats")
    assert after["messages_in"] - before["messages_in"] >= 5
    info = await sim_world.info(account)
    assert info["seq"] == 5 and info["connections"] == 0


async def test_a_batch_can_be_spread_over_time(sim_world: SimWorld) -> None:
    account = await sim_world.account()
    user, _ = await sim_world.user()
    chat = await sim_world.chat("private", [account.user_id, user])
    messages = [{"chat_id": chat.chat_id, "from": user, "text": f"s{i}"} for i in range(5)]
    batch = await sim_world.request(
        "POST", "/messages/batch", {"messages": messages, "spread_s": 0.2}
    )
    assert len(batch["message_ids"]) == 5
    dates = [m["date"] for m in await sim_world.transcript(chat)]
    assert dates == sorted(dates)
    assert dates[-1] - dates[0] >= 0.15  # even: the fifth is posted 4/5 of 0.2 s after the first
    poisson = await sim_world.request(
        "POST",
        "/messages/batch",
        {"messages": messages, "spread_s": 0.05, "arrival": "poisson", "seed": 3},
    )
    assert poisson["message_ids"] == [batch["message_ids"][-1] + i for i in range(1, 6)]


def test_poisson_arrivals_are_drawn_from_the_seed() -> None:
    first = sim_control.arrivals(1000, 1.0, "poisson", 7)
    assert first == sim_control.arrivals(1000, 1.0, "poisson", 7)
    assert first != sim_control.arrivals(1000, 1.0, "poisson", 8)
    assert first[0] == 0 and first == sorted(first) and len(set(first)) == 1000
    assert 0.8 < first[-1] < 1.2  # the gaps average 1 ms
    assert sim_control.arrivals(4, 1.0, "even", None) == [0, 0.25, 0.5, 0.75]


async def test_every_control_route_answers_json_for_unknown_ids(sim_world: SimWorld) -> None:
    for method, path in [
        ("GET", "/accounts/999999999"),
        ("GET", "/chats/-1/messages"),
        ("GET", "/accounts/15550000000/code"),
        ("DELETE", "/chats/-1/messages/1"),
        ("GET", "/nothing/here"),
    ]:
        with pytest.raises(ControlError) as err:
            await sim_world.request(method, path)
        assert err.value.status == 404, (method, path)


@pytest.fixture
async def setup(sim_world: SimWorld) -> dict[str, Any]:
    """An account, a user and a group to aim bad requests at."""
    account = await sim_world.account()
    user, username = await sim_world.user()
    group = await sim_world.chat("group", [account.user_id, user])
    return {
        "account": account.account_id,
        "account_user": account.user_id,
        "phone": account.phone,
        "user": user,
        "username": username,
        "member": user,
        "chat": group.chat_id,
    }


CHANNEL = {"type": "channel", "members": ["{user}"]}
FROM = {"from": "{member}"}
FLOOD = {"kind": "flood_wait", "account_id": "{account}"}
BAD: list[tuple[str, str, Any, str]] = [
    ("POST", "/accounts", {}, "phone"),
    ("POST", "/accounts", {"phone": "call me"}, "phone"),
    ("POST", "/accounts", {"phone": "{phone}"}, "phone"),
    ("POST", "/accounts", {"phone": "+1 555 777 0000", "username": "9lives"}, "username"),
    ("POST", "/accounts", {"phone": "+1 555 777 0001", "banned": "yes"}, "banned"),
    ("POST", "/accounts", {"phone": "+1 555 777 0002", "password": 5}, "password"),
    ("POST", "/users", {}, "name"),
    ("POST", "/users", {"name": "X", "username": "{username}"}, "username"),
    ("POST", "/chats", {"type": "room", "members": []}, "type"),
    ("POST", "/chats", {"type": "group", "members": "all"}, "members"),
    ("POST", "/chats", {"type": "group", "members": []}, "members"),
    ("POST", "/chats", {"type": "group", "members": [1]}, "members[0]"),
    ("POST", "/chats", {"type": "group", "members": ["abc"]}, "members[0]"),
    ("POST", "/chats", {"type": "private", "members": ["{user}"]}, "members"),
    ("POST", "/chats", {**CHANNEL, "admins": ["{account_user}"]}, "admins"),
    ("POST", "/chats/{chat}/messages", {"from": "x", "text": "hi"}, "from"),
    ("POST", "/chats/{chat}/messages", {"from": 1, "text": "hi"}, "from"),
    ("POST", "/chats/{chat}/messages", {"from": "{member}"}, "text"),
    ("POST", "/chats/{chat}/messages", {"from": "{member}", "text": "x" * 4097}, "text"),
    ("POST", "/chats/{chat}/messages", {**FROM, "text": "a", "reply_to": 999}, "reply_to"),
    ("POST", "/chats/abc/messages", {"from": 1, "text": "a"}, "chat_id"),
    ("POST", "/messages/batch", {"messages": []}, "messages"),
    ("POST", "/messages/batch", {"messages": [{"chat_id": 1}]}, "messages[0].chat_id"),
    ("POST", "/messages/batch", {"messages": [{**FROM, "chat_id": "{chat}"}]}, "messages[0].text"),
    ("POST", "/messages/batch", {"messages": [{}], "spread_s": "1s"}, "spread_s"),
    ("POST", "/messages/batch", {"messages": [{}], "spread_s": 601}, "spread_s"),
    ("POST", "/messages/batch", {"messages": [{}], "arrival": "burst"}, "arrival"),
    ("POST", "/messages/batch", {"messages": [{}], "seed": "x"}, "seed"),
    ("POST", "/faults", {"kind": "earthquake"}, "kind"),
    ("POST", "/faults", {"kind": "flood_wait"}, "account_id"),
    ("POST", "/faults", {**FLOOD, "account_id": 999999999, "seconds": 1}, "account_id"),
    ("POST", "/faults", FLOOD, "seconds"),
    ("POST", "/faults", {**FLOOD, "seconds": -1}, "seconds"),
    ("POST", "/faults", {**FLOOD, "seconds": 1, "count": 0}, "count"),
    ("POST", "/faults", {"kind": "slow_mode", "seconds": 5}, "chat_id"),
    ("POST", "/faults", {"kind": "latency", "seconds": "slow"}, "seconds"),
    ("POST", "/faults", {"kind": "latency", "seconds": 9999}, "seconds"),
    ("POST", "/faults", {"kind": "disconnect", "chat_id": "x"}, "chat_id"),
    ("POST", "/faults", {"kind": "revoke"}, "account_id"),
    ("POST", "/qr/whatever/accept", {}, "account_id"),
    ("PATCH", "/chats/{chat}/messages/1", {"text": 1}, "message_id"),
]  # fmt: skip


def _fill(value: Any, setup: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        key = value[1:-1]
        return setup.get(key, value)
    if isinstance(value, str):
        return value.format(**setup) if "{" in value else value
    if isinstance(value, dict):
        return {k: _fill(v, setup) for k, v in value.items()}
    if isinstance(value, list | set):
        return [_fill(v, setup) for v in value]
    return value


@pytest.mark.parametrize(("method", "path", "body", "field"), BAD)
async def test_bad_input_is_a_400_naming_the_field(
    sim_world: SimWorld, setup: dict[str, Any], method: str, path: str, body: Any, field: str
) -> None:
    body = _fill(body, setup)
    with pytest.raises(ControlError) as err:
        await sim_world.request(method, _fill(path, setup), body)
    status = 404 if field == "message_id" else 400
    assert (err.value.status, err.value.body["field"]) == (status, field), err.value.body
    assert field.split("[")[0].split(".")[0] in err.value.body["error"]


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"text"'])
async def test_a_body_that_is_not_an_object_is_a_400(sim_world: SimWorld, raw: bytes) -> None:
    async with sim_world.http.post(sim_world.url + "/users", data=raw) as response:
        assert response.status == 400
        assert (await response.json())["field"] == "body"


async def test_the_websocket_endpoint_refuses_plain_http(sim_world: SimWorld) -> None:
    async with sim_world.http.get(sim_world.url + "/ws") as response:
        assert response.status >= 400
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await sim_world.http.ws_connect(sim_world.url + "/stats")


def test_main_rejects_a_bad_listen_address(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim_telegram.main(["--listen", "nowhere"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err


@pytest.fixture(scope="module")
def fuzz_sim() -> Iterator[str]:
    """A sim of its own, with an account, a user and a group: the fuzzer may do anything."""
    with sim_process() as (url, _):
        for path, body in [
            ("/accounts", {"phone": "+10000000001"}),
            ("/users", {"name": "U"}),
            ("/chats", {"type": "group", "members": [1000000001, 1000000002]}),
        ]:
            request = urllib.request.Request(url + path, data=orjson.dumps(body), method="POST")
            with urllib.request.urlopen(request, timeout=20):
                pass
        yield url


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
FIELDS = ["phone", "password", "name", "username", "bot", "banned", "type", "members", "from"]
FIELDS += ["text", "reply_to", "kind", "account_id", "chat_id", "seconds", "count", "messages"]
ROUTES = ["/accounts", "/users", "/chats", "/faults", "/messages/batch", "/qr/t/accept"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    route=st.sampled_from([*ROUTES, "/chats/{chat}/messages"]),
    body=st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=5),
)
def test_no_body_makes_the_control_api_fail_with_a_500(
    fuzz_sim: str, route: str, body: dict[str, Any]
) -> None:
    request = urllib.request.Request(
        fuzz_sim + route.replace("{chat}", "-4000000001"),
        data=json.dumps(body).encode(),  # the stdlib's: big ints, and Infinity (not JSON)
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            status = response.status
    except urllib.error.HTTPError as err:
        status = err.code
        assert "field" in orjson.loads(err.read())
    assert status in (200, 400, 404)
