"""POST /webhook/trigger/{task_id}: its status codes, each authentication layer
and their order (JWT, verify hook, HMAC), the replay store, the IP allowlist with trusted
proxies, the rate limit and idempotency keys. Through the TestClient, on SQLite and
PostgreSQL (the address and rate-limit tests, which are about the request and not storage,
on SQLite)."""

from __future__ import annotations

import asyncio
import json
import time
from ipaddress import ip_network
from typing import Any

import pytest
from api_harness import Service, ServiceFactory
from api_support import (
    JWT_SECRET,
    OTHER_SECRET,
    WEBHOOK_SECRET,
    admin_token,
    alg_none_token,
    signature,
    signed_headers,
    token,
)

from apflow_server.core.types import WebhookVerifyContext, WebhookVerifyResult
from apflow_server.scheduler.gateway.hooks import register_webhook_verify_hook

BODY = json.dumps({"event": "tick"}).encode()


def make_task(service: Service, **fields: Any) -> dict[str, Any]:
    api = service.api.as_user(admin_token()) if service.settings.jwt_secret else service.api
    fields.setdefault("name", "hooked")
    fields.setdefault("params", {"executor_id": "echo_executor"})
    task: dict[str, Any] = api.call("tasks.create", fields)
    return task


def history(service: Service, task_id: str) -> list[dict[str, Any]]:
    api = service.api.as_user(admin_token()) if service.settings.jwt_secret else service.api
    return api.runs(task_id)


# ---------------------------------------------------------------------- status codes


def test_async_is_202_with_the_run_id(service: Service) -> None:
    task = make_task(service)
    reply = service.api.webhook(task["id"], body=BODY)
    assert reply.status == 202
    assert reply.body == {
        "success": True,
        "status": "triggered",
        "task_id": task["id"],
        "run_id": reply.body["run_id"],
    }
    runs = service.api.wait_run(task["id"])
    assert [(r["id"], r["trigger"], r["status"]) for r in runs] == [
        (reply.body["run_id"], "webhook", "completed")
    ]
    assert service.api.webhook(task["id"], query="?async=true").status == 202


def test_sync_is_200_with_result_error_and_children(service: Service) -> None:
    root, ok, bad = service.api.call(
        "tasks.create",
        [
            {"name": "root"},
            {
                "name": "ok",
                "parent_id": "root",
                "params": {"executor_id": "echo_executor"},
                "inputs": {"n": 1},
            },
            {
                "name": "bad",
                "parent_id": "root",
                "params": {"executor_id": "test_fail"},
                "inputs": {"message": "child broke"},
            },
        ],
    )["tasks"]
    reply = service.api.webhook(root["id"], query="?async=false")
    assert reply.status == 200
    body = reply.body
    assert set(body) >= {"success", "status", "task_id", "run_id", "result", "error", "children"}
    assert body["success"] is False
    assert body["status"] == "failed"
    assert body["task_id"] == root["id"]
    assert body["error"]
    children = {child["name"]: child for child in body["children"]}
    assert set(children) == {"ok", "bad"}
    assert children["ok"] == {
        "task_id": ok["id"],
        "name": "ok",
        "status": "completed",
        "error": None,
    }
    assert children["bad"]["task_id"] == bad["id"]
    assert children["bad"]["status"] == "failed"
    assert "child broke" in children["bad"]["error"]
    assert [r["id"] for r in service.api.runs(root["id"])] == [body["run_id"]]


def test_sync_success(service: Service) -> None:
    task = make_task(service, inputs={"answer": 42})
    for query in ("?async=false", "?async=0", "?async=FALSE"):
        reply = service.api.webhook(task["id"], query=query)
        assert reply.status == 200
        assert reply.body["success"] is True
        assert reply.body["status"] == "completed"
        assert reply.body["result"] == {"answer": 42}
        assert reply.body["error"] is None
        assert reply.body["children"] == []
    assert len(service.api.runs(task["id"])) == 3


def test_unknown_task_is_404(service: Service) -> None:
    reply = service.api.webhook("no-such-task")
    assert reply.status == 404
    assert reply.body["success"] is False


def test_a_bad_async_value_is_400(service: Service) -> None:
    task = make_task(service)
    for query in ("?async=maybe", "?async=", "?async=yes!"):
        reply = service.api.webhook(task["id"], query=query)
        assert reply.status == 400, query
        assert reply.body["success"] is False
    assert service.api.runs(task["id"]) == []


def test_a_busy_task_is_409(service: Service) -> None:
    task = make_task(service, params={"executor_id": "test_sleep"}, inputs={"seconds": 5})
    assert task["schedule_overlap"] == "skip"
    assert service.api.webhook(task["id"]).status == 202
    busy = service.api.webhook(task["id"])
    assert busy.status == 409
    assert busy.body["success"] is False
    assert service.api.webhook(task["id"], query="?async=false").status == 409
    assert len(service.api.runs(task["id"])) == 1
    service.api.call("tasks.cancel", {"task_id": task["id"]})


def test_cancel_other_replaces_the_running_run(service: Service) -> None:
    task = make_task(
        service,
        params={"executor_id": "test_sleep"},
        inputs={"seconds": 5},
        schedule_overlap="cancel_other",
    )
    first = service.api.webhook(task["id"])
    second = service.api.webhook(task["id"])
    assert (first.status, second.status) == (202, 202)
    runs = {r["id"]: r["status"] for r in service.api.runs(task["id"])}
    assert runs == {first.body["run_id"]: "cancelled", second.body["run_id"]: "running"}
    service.api.call("tasks.cancel", {"task_id": task["id"]})


def test_a_large_body_is_413_not_500(service: Service) -> None:
    task = make_task(service)
    reply = service.api.webhook(task["id"], body=b"x" * (1024 * 1024 + 1))
    assert reply.status == 413
    assert service.api.runs(task["id"]) == []


# ---------------------------------------------------------------------- idempotency keys


def test_the_same_idempotency_key_returns_the_first_run(service: Service) -> None:
    task = make_task(service)
    first = service.api.webhook(task["id"], query="?async=false", headers={"Idempotency-Key": "a"})
    assert first.status == 200
    again = service.api.webhook(task["id"], headers={"Idempotency-Key": "a"})
    assert again.status == 202
    assert again.body["run_id"] == first.body["run_id"]
    again_sync = service.api.webhook(
        task["id"], query="?async=false", headers={"Idempotency-Key": "a"}
    )
    assert again_sync.body["run_id"] == first.body["run_id"]
    assert len(service.api.runs(task["id"])) == 1
    other = service.api.webhook(task["id"], query="?async=false", headers={"Idempotency-Key": "b"})
    assert other.status == 200
    assert other.body["run_id"] != first.body["run_id"]
    assert len(service.api.runs(task["id"])) == 2
    # while a run is in flight, a repeat of its key is not a conflict: it is that run
    slow = make_task(service, params={"executor_id": "test_sleep"}, inputs={"seconds": 5})
    started = service.api.webhook(slow["id"], headers={"Idempotency-Key": "s"})
    repeat = service.api.webhook(slow["id"], headers={"Idempotency-Key": "s"})
    assert (started.status, repeat.status) == (202, 202)
    assert repeat.body["run_id"] == started.body["run_id"]
    assert len(service.api.runs(slow["id"])) == 1
    service.api.call("tasks.cancel", {"task_id": slow["id"]})


def test_an_overlong_idempotency_key_is_400(service: Service) -> None:
    task = make_task(service)
    reply = service.api.webhook(task["id"], headers={"Idempotency-Key": "k" * 256})
    assert reply.status == 400
    assert service.api.runs(task["id"]) == []


# ---------------------------------------------------------------------- layer 1: JWT


@pytest.fixture
def locked(make_service: ServiceFactory) -> Service:
    """JWT and HMAC both configured."""
    return make_service(jwt_secret=JWT_SECRET, webhook_secret=WEBHOOK_SECRET)


def test_a_valid_jwt_is_accepted_even_with_a_wrong_hmac(locked: Service) -> None:
    task = make_task(locked)
    headers = signed_headers(task["id"], BODY, secret=OTHER_SECRET)
    reply = locked.api.webhook(task["id"], body=BODY, headers=headers, auth=admin_token())
    assert reply.status == 202


def test_an_invalid_jwt_is_401_even_with_a_valid_hmac(locked: Service) -> None:
    task = make_task(locked)
    for bad in (
        token("root", ["admin"], secret=OTHER_SECRET),
        alg_none_token(),
        token("root", ["admin"], expires_in=-10),
    ):
        reply = locked.api.webhook(
            task["id"], body=BODY, headers=signed_headers(task["id"], BODY), auth=bad
        )
        assert reply.status == 401
        assert reply.body["success"] is False
    assert history(locked, task["id"]) == []


def test_a_valid_jwt_wins_over_a_refusing_hook(locked: Service) -> None:
    register_webhook_verify_hook(lambda ctx: WebhookVerifyResult(valid=False, error="no"))
    task = make_task(locked)
    assert locked.api.webhook(task["id"], auth=admin_token()).status == 202


# ---------------------------------------------------------------------- layer 2: the hook


def test_a_sync_hook_accepts_and_sees_the_request(make_service: ServiceFactory) -> None:
    service = make_service(
        jwt_secret=JWT_SECRET, webhook_secret=WEBHOOK_SECRET, client=("10.1.2.3", 4567)
    )
    seen: list[WebhookVerifyContext] = []

    def hook(context: WebhookVerifyContext) -> WebhookVerifyResult:
        seen.append(context)
        return WebhookVerifyResult(valid=context.headers.get("x-partner-key") == "open-sesame")

    register_webhook_verify_hook(hook)
    task = make_task(service)
    accepted = service.api.webhook(
        task["id"],
        body=BODY,
        headers={
            "X-Partner-Key": "open-sesame",
            "X-Webhook-Signature": "abc",
            "X-Webhook-Timestamp": "123",
        },
    )
    assert accepted.status == 202
    context = seen[0]
    assert context.task_id == task["id"]
    assert context.body == BODY
    assert context.signature == "abc"
    assert context.timestamp == "123"
    assert context.client_ip == "10.1.2.3"
    refused = service.api.webhook(task["id"], headers={"X-Partner-Key": "wrong"})
    assert refused.status == 401
    assert len(history(service, task["id"])) == 1


def test_an_async_hook_decides(locked: Service) -> None:
    async def hook(context: WebhookVerifyContext) -> WebhookVerifyResult:
        await asyncio.sleep(0)
        return WebhookVerifyResult(valid=context.body == b"let me in", error="wrong body")

    register_webhook_verify_hook(hook)
    task = make_task(locked)
    assert locked.api.webhook(task["id"], body=b"let me in").status == 202
    refused = locked.api.webhook(task["id"], body=b"please")
    assert refused.status == 401
    assert "wrong body" in refused.body["error"]


def test_a_refusing_hook_is_final_even_with_a_valid_hmac(locked: Service) -> None:
    register_webhook_verify_hook(lambda ctx: WebhookVerifyResult(valid=False, error="nope"))
    task = make_task(locked)
    reply = locked.api.webhook(task["id"], body=BODY, headers=signed_headers(task["id"], BODY))
    assert reply.status == 401
    assert history(locked, task["id"]) == []


def test_a_hook_naming_another_user_than_the_owner_is_403(locked: Service) -> None:
    owned = make_task(locked, user_id="bob")
    register_webhook_verify_hook(lambda ctx: WebhookVerifyResult(valid=True, user_id="alice"))
    assert locked.api.webhook(owned["id"]).status == 403
    register_webhook_verify_hook(lambda ctx: WebhookVerifyResult(valid=True, user_id="bob"))
    assert locked.api.webhook(owned["id"], query="?async=false").status == 200
    assert len(history(locked, owned["id"])) == 1


@pytest.mark.parametrize("kind", ["raises", "raises-async", "returns-nonsense"])
def test_a_broken_hook_refuses(locked: Service, kind: str) -> None:
    def raising(context: WebhookVerifyContext) -> WebhookVerifyResult:
        raise RuntimeError("hook bug")

    async def raising_async(context: WebhookVerifyContext) -> WebhookVerifyResult:
        raise RuntimeError("hook bug")

    def nonsense(context: WebhookVerifyContext) -> Any:
        return True

    hooks = {"raises": raising, "raises-async": raising_async, "returns-nonsense": nonsense}
    register_webhook_verify_hook(hooks[kind])
    task = make_task(locked)
    reply = locked.api.webhook(task["id"], body=BODY, headers=signed_headers(task["id"], BODY))
    assert reply.status == 401
    assert "hook bug" not in json.dumps(reply.body)
    assert history(locked, task["id"]) == []


@pytest.mark.parametrize("valid", ["yes", "false", 1, [True], {"valid": True}])
def test_a_hook_must_answer_exactly_true(locked: Service, valid: Any) -> None:
    """Only `valid=True` accepts: a truthy string, number or container is a refusal."""
    register_webhook_verify_hook(lambda ctx: WebhookVerifyResult(valid=valid, user_id=None))
    task = make_task(locked)
    assert locked.api.webhook(task["id"], body=BODY).status == 401
    assert history(locked, task["id"]) == []


# ---------------------------------------------------------------------- layer 3: HMAC


def test_a_valid_signature_is_accepted_once(locked: Service) -> None:
    task = make_task(locked)
    headers = signed_headers(task["id"], BODY)
    assert locked.api.webhook(task["id"], body=BODY, headers=headers).status == 202
    replay = locked.api.webhook(task["id"], body=BODY, headers=headers)
    assert replay.status == 401
    assert len(history(locked, task["id"])) == 1


def test_a_replay_is_refused_by_another_instance_sharing_the_database(
    make_service: ServiceFactory,
) -> None:
    first = make_service(jwt_secret=JWT_SECRET, webhook_secret=WEBHOOK_SECRET)
    second = make_service(jwt_secret=JWT_SECRET, webhook_secret=WEBHOOK_SECRET)
    task = make_task(first)
    headers = signed_headers(task["id"], BODY)
    assert first.api.webhook(task["id"], body=BODY, headers=headers).status == 202
    assert second.api.webhook(task["id"], body=BODY, headers=headers).status == 401
    # and the other way round
    body = b'{"event": "second"}'
    fresh = signed_headers(task["id"], body)
    first.api.wait_run(task["id"], auth=admin_token())
    assert second.api.webhook(task["id"], body=body, headers=fresh).status == 202
    assert first.api.webhook(task["id"], body=body, headers=fresh).status == 401
    assert len(history(first, task["id"])) == 2


@pytest.mark.parametrize(
    "case",
    [
        "wrong-secret",
        "stale",
        "future",
        "other-task",
        "altered-body",
        "no-signature",
        "no-timestamp",
        "bad-timestamp",
        "nothing",
    ],
)
def test_bad_signatures_are_401(make_service: ServiceFactory, case: str) -> None:
    service = make_service(
        jwt_secret=JWT_SECRET, webhook_secret=WEBHOOK_SECRET, webhook_tolerance_seconds=60
    )
    task = make_task(service)
    other = make_task(service, name="other")
    now = int(time.time())
    headers = {
        "wrong-secret": signed_headers(task["id"], BODY, secret=OTHER_SECRET),
        "stale": signed_headers(task["id"], BODY, timestamp=now - 120),
        "future": signed_headers(task["id"], BODY, timestamp=now + 120),
        "other-task": signed_headers(other["id"], BODY),
        "altered-body": signed_headers(task["id"], b'{"event": "tock"}'),
        "no-signature": {"X-Webhook-Timestamp": str(now)},
        "no-timestamp": {"X-Webhook-Signature": signature(WEBHOOK_SECRET, now, task["id"], BODY)},
        "bad-timestamp": {
            "X-Webhook-Timestamp": "yesterday",
            "X-Webhook-Signature": signature(WEBHOOK_SECRET, "yesterday", task["id"], BODY),
        },
        "nothing": {},
    }[case]
    reply = service.api.webhook(task["id"], body=BODY, headers=headers)
    assert reply.status == 401
    assert reply.body["success"] is False
    assert history(service, task["id"]) == []


def test_a_signature_for_a_dotted_id_does_not_open_its_prefix(locked: Service) -> None:
    """Task ids may contain dots: the signature of (task "x.y", empty body) must not also be
    the signature of (task "x", body "y.") — the ids are chosen so the signed texts would be
    byte for byte the same if the id were written as it is."""
    dotted = make_task(locked, id="x.y")
    prefix = make_task(locked, id="x")
    headers = signed_headers(dotted["id"], b"")
    forged = locked.api.webhook(prefix["id"], body=b"y.", headers=headers)
    assert forged.status == 401
    assert history(locked, prefix["id"]) == []
    # the dotted id itself is signed as "{ts}.x%2Ey.{body}" and accepted
    assert locked.api.webhook(dotted["id"], body=b"", headers=headers).status == 202


def test_a_timestamp_within_the_tolerance_is_accepted(make_service: ServiceFactory) -> None:
    service = make_service(
        jwt_secret=JWT_SECRET, webhook_secret=WEBHOOK_SECRET, webhook_tolerance_seconds=60
    )
    task = make_task(service)
    old = signed_headers(task["id"], BODY, timestamp=int(time.time()) - 50)
    assert service.api.webhook(task["id"], body=BODY, headers=old).status == 202


def test_auth_on_and_no_credentials_is_401(make_service: ServiceFactory) -> None:
    task = make_task(make_service())  # through an instance with auth off, same database
    for settings in ({"jwt_secret": JWT_SECRET}, {"webhook_secret": WEBHOOK_SECRET}):
        service = make_service(**settings)
        assert service.api.webhook(task["id"]).status == 401
        assert service.api.webhook(task["id"], query="?async=false").status == 401
        assert service.api.webhook("missing").status == 401  # no probing for task ids


def test_with_only_a_webhook_secret_a_signature_is_enough(make_service: ServiceFactory) -> None:
    task = make_task(make_service())
    service = make_service(webhook_secret=WEBHOOK_SECRET)
    reply = service.api.webhook(task["id"], body=BODY, headers=signed_headers(task["id"], BODY))
    assert reply.status == 202


def test_with_only_a_webhook_secret_json_rpc_is_usable(make_service: ServiceFactory) -> None:
    service = make_service(webhook_secret=WEBHOOK_SECRET)
    reply = service.api.rpc("tasks.list", {})
    assert reply.status == 200


def test_auth_off_accepts_anyone(service: Service) -> None:
    task = make_task(service)
    assert service.api.webhook(task["id"]).status == 202


# ---------------------------------------------------------------------- addresses


def test_the_allowlist_accepts_a_listed_range(make_protocol_service: ServiceFactory) -> None:
    service = make_protocol_service(
        client=("10.1.2.3", 1234),
        webhook_allowed_ips=(ip_network("192.168.0.0/16"), ip_network("10.0.0.0/8")),
    )
    assert service.api.webhook(make_task(service)["id"]).status == 202


def test_the_allowlist_refuses_others_with_403(make_protocol_service: ServiceFactory) -> None:
    service = make_protocol_service(
        client=("10.1.2.3", 1234),
        webhook_allowed_ips=(ip_network("192.168.0.0/16"), ip_network("10.1.2.4/32")),
    )
    task = make_task(service)
    reply = service.api.webhook(task["id"])
    assert reply.status == 403
    assert reply.body["success"] is False
    assert service.api.runs(task["id"]) == []
    # the allowlist is the webhook's: the rest of JSON-RPC is not restricted by it
    assert service.api.call("tasks.get", {"task_id": task["id"]})["id"] == task["id"]


def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    make_protocol_service: ServiceFactory,
) -> None:
    service = make_protocol_service(
        client=("10.1.2.3", 1234),
        webhook_allowed_ips=(ip_network("192.168.0.0/16"),),
        trusted_proxies=(ip_network("172.16.0.0/12"),),
    )
    task = make_task(service)
    reply = service.api.webhook(task["id"], headers={"X-Forwarded-For": "192.168.1.1"})
    assert reply.status == 403


def test_forwarded_for_from_an_untrusted_peer_cannot_escape_the_allowlist(
    make_protocol_service: ServiceFactory,
) -> None:
    service = make_protocol_service(
        client=("10.1.2.3", 1234), webhook_allowed_ips=(ip_network("10.0.0.0/8"),)
    )
    task = make_task(service)
    reply = service.api.webhook(task["id"], headers={"X-Forwarded-For": "203.0.113.9"})
    assert reply.status == 202


def test_forwarded_for_from_a_trusted_proxy_is_honoured_rightmost_untrusted_hop(
    make_protocol_service: ServiceFactory,
) -> None:
    service = make_protocol_service(
        client=("172.16.0.5", 1234),
        webhook_allowed_ips=(ip_network("192.168.0.0/16"),),
        trusted_proxies=(ip_network("172.16.0.0/12"),),
    )
    task = make_task(service, params={"executor_id": "echo_executor"})
    assert service.api.webhook(task["id"]).status == 403  # the proxy itself is not allowed
    chain = {"X-Forwarded-For": "192.168.1.7, 172.16.0.9"}
    assert service.api.webhook(task["id"], query="?async=false", headers=chain).status == 200
    # a client forging the leftmost hop: the rightmost untrusted hop is the real client
    forged = {"X-Forwarded-For": "192.168.1.7, 198.51.100.4, 172.16.0.9"}
    assert service.api.webhook(task["id"], headers=forged).status == 403


# ---------------------------------------------------------------------- the rate limit


def retry_after(reply: Any) -> int:
    value = reply.headers.get("retry-after")
    assert value is not None and value.isdigit(), reply.headers
    assert 1 <= int(value) <= 60
    return int(value)


def test_the_request_after_the_limit_is_429(make_protocol_service: ServiceFactory) -> None:
    service = make_protocol_service(webhook_rate_limit=3)
    statuses = [service.api.webhook("missing").status for _ in range(3)]
    assert statuses == [404, 404, 404]
    limited = service.api.webhook("missing")
    assert limited.status == 429
    assert limited.body["success"] is False
    retry_after(limited)
    task = make_task(service)
    assert service.api.webhook(task["id"]).status == 429
    assert service.api.runs(task["id"]) == []


def test_refused_requests_count_towards_the_limit(make_protocol_service: ServiceFactory) -> None:
    service = make_protocol_service(
        jwt_secret=JWT_SECRET, webhook_secret=WEBHOOK_SECRET, webhook_rate_limit=2
    )
    task = make_task(service)
    assert [service.api.webhook(task["id"]).status for _ in range(2)] == [401, 401]
    good = service.api.webhook(task["id"], body=BODY, headers=signed_headers(task["id"], BODY))
    assert good.status == 429
    retry_after(good)
    assert history(service, task["id"]) == []


def test_the_limit_is_per_client_address(make_protocol_service: ServiceFactory) -> None:
    service = make_protocol_service(
        client=("10.0.0.1", 1234),
        trusted_proxies=(ip_network("10.0.0.0/8"),),
        webhook_rate_limit=2,
    )
    one, two = {"X-Forwarded-For": "192.0.2.1"}, {"X-Forwarded-For": "192.0.2.2"}
    assert [service.api.webhook("missing", headers=one).status for _ in range(2)] == [404, 404]
    assert service.api.webhook("missing", headers=one).status == 429
    assert service.api.webhook("missing", headers=two).status == 404
    # JSON-RPC is not limited by the webhook's limit
    for _ in range(3):
        assert service.api.call("tasks.list", {})["total"] == 0


def test_invalid_tokens_count_towards_the_limit(make_protocol_service: ServiceFactory) -> None:
    """The limit runs before authentication: requests with forged bearer tokens are counted
    too, so tokens cannot be guessed at full speed."""
    service = make_protocol_service(jwt_secret=JWT_SECRET, webhook_rate_limit=2)
    task = make_task(service)
    forged = {"Authorization": f"Bearer {token('alice', secret=OTHER_SECRET)}"}
    statuses = [service.api.webhook(task["id"], headers=forged).status for _ in range(3)]
    assert statuses == [401, 401, 429]


def test_the_allowlist_applies_before_a_token_is_read(
    make_protocol_service: ServiceFactory,
) -> None:
    service = make_protocol_service(
        jwt_secret=JWT_SECRET,
        client=("10.1.2.3", 1234),
        webhook_allowed_ips=(ip_network("192.168.0.0/16"),),
    )
    task = make_task(service)
    forged = {"Authorization": "Bearer not-a-token"}
    assert service.api.webhook(task["id"], headers=forged).status == 403
    valid = {"Authorization": f"Bearer {admin_token()}"}
    assert service.api.webhook(task["id"], headers=valid).status == 403


def test_json_rpc_trigger_obeys_the_rate_limit(make_protocol_service: ServiceFactory) -> None:
    service = make_protocol_service(webhook_rate_limit=2)
    task, other = make_task(service), make_task(service, name="other")
    for each in (task, other):  # two tasks: a second trigger of one could find it running
        assert service.api.call("tasks.webhook.trigger", {"task_id": each["id"]})["success"]
    limited = service.api.rpc("tasks.webhook.trigger", {"task_id": task["id"]})
    assert limited.status == 429
    assert limited.body["error"]["code"] == -32029
    assert 1 <= limited.body["error"]["data"]["retry_after"] <= 60
    # the REST route shares the count
    assert service.api.webhook(task["id"]).status == 429
    # each member of a batch counts
    batch = [
        {
            "jsonrpc": "2.0",
            "method": "tasks.webhook.trigger",
            "params": {"task_id": task["id"]},
            "id": i,
        }
        for i in range(3)
    ]
    assert {reply["error"]["code"] for reply in service.api.post(batch).body} == {-32029}
    service.api.wait_run(task["id"])
    assert len(service.api.runs(task["id"])) == 1


def test_json_rpc_trigger_obeys_the_allowlist(make_protocol_service: ServiceFactory) -> None:
    service = make_protocol_service(
        client=("10.1.2.3", 1234), webhook_allowed_ips=(ip_network("192.168.0.0/16"),)
    )
    task = make_task(service)
    error = service.api.fail("tasks.webhook.trigger", {"task_id": task["id"]})
    assert error["code"] == -32003
    assert service.api.runs(task["id"]) == []


def test_rate_limit_zero_is_off(make_protocol_service: ServiceFactory) -> None:
    service = make_protocol_service(webhook_rate_limit=0)
    assert {service.api.webhook("missing").status for _ in range(30)} == {404}


# ---------------------------------------------------------------------- public API


def test_the_hook_registration_is_public() -> None:
    import apflow_server

    assert apflow_server.register_webhook_verify_hook is register_webhook_verify_hook


def test_firing_a_due_occurrence_is_a_schedulers_operation(
    make_protocol_service: ServiceFactory,
) -> None:
    """`scheduled_for` is what an API-mode scheduler sends: admins only, and not a webhook,
    so not counted by the webhook's limit."""
    service = make_protocol_service(jwt_secret=JWT_SECRET, webhook_rate_limit=1)
    owner = service.api.as_user(token("alice"))
    task = owner.create(
        schedule_type="interval",
        schedule_expression="60",
        schedule_start_at="2020-01-01T00:00:00Z",
        schedule_enabled=True,
    )
    due = {"task_id": task["id"], "scheduled_for": task["next_run_at"]}
    assert owner.fail("tasks.webhook.trigger", due)["code"] == -32003
    admin = service.api.as_user(admin_token())
    for _ in range(3):  # past the webhook limit of one a minute
        reply = admin.rpc("tasks.webhook.trigger", due)
        assert reply.status == 200 and "result" in reply.body, reply.body
