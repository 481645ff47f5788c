"""The JWT auth matrix over JSON-RPC and the webhook, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest
from api_harness import Service, ServiceFactory
from api_support import (
    JWT_SECRET,
    OTHER_SECRET,
    admin_token,
    alg_none_token,
    assert_field,
    bearer,
    token,
)

UNAUTHENTICATED, FORBIDDEN = -32001, -32003
ALICE, BOB = token("alice"), token("bob")
LIST = {"jsonrpc": "2.0", "method": "tasks.list", "id": 1}


@pytest.fixture
def secured(make_service: ServiceFactory) -> Service:
    return make_service(jwt_secret=JWT_SECRET)


def refused(service: Service, headers: dict[str, str]) -> dict[str, Any]:
    response = service.http.post("/tasks/", json=LIST, headers=headers)
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["jsonrpc"] == "2.0"
    assert body["id"] is None
    assert body["error"]["code"] == UNAUTHENTICATED
    assert "result" not in body
    error: dict[str, Any] = body["error"]
    return error


def test_no_token_is_401(secured: Service) -> None:
    refused(secured, {})
    # a batch and a notification without a token are refused as well
    response = secured.http.post("/tasks/", json=[LIST, LIST])
    assert response.status_code == 401
    response = secured.http.post("/tasks/", json={"jsonrpc": "2.0", "method": "tasks.list"})
    assert response.status_code == 401


@pytest.mark.parametrize(
    "headers",
    [
        bearer(token("alice", secret=OTHER_SECRET)),
        bearer(alg_none_token("root", ["admin"])),
        bearer(token("root", ["admin"], algorithm="HS512")),
        bearer(token("alice", expires_in=-60)),
        bearer("not.a.jwt"),
        bearer(jwt.encode({"roles": ["admin"]}, JWT_SECRET, algorithm="HS256")),
        bearer(jwt.encode({"sub": ""}, JWT_SECRET, algorithm="HS256")),
        bearer(token("alice", expires_in=None)),
        bearer(token("alice", audience="apflow")),
        {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
        {"Authorization": "Bearer"},
    ],
    ids=[
        "bad-signature",
        "alg-none",
        "hs512-when-hs256-pinned",
        "expired",
        "garbage",
        "no-sub",
        "empty-sub",
        "no-exp",
        "audience-the-server-does-not-have",
        "basic-auth",
        "empty-bearer",
    ],
)
def test_bad_credentials_are_401(secured: Service, headers: dict[str, str]) -> None:
    refused(secured, headers)


def test_alg_none_token_is_refused_even_for_a_real_subject(secured: Service) -> None:
    secured.api.as_user(admin_token()).create(name="exists")
    error = refused(secured, bearer(alg_none_token("root", ["admin"])))
    assert error["message"]


def test_a_tampered_payload_is_refused(secured: Service) -> None:
    header, _payload, sig = ALICE.split(".")
    forged = jwt.encode({"sub": "alice", "roles": ["admin"]}, "x" * 40).split(".")[1]
    refused(secured, bearer(f"{header}.{forged}.{sig}"))


def test_the_pinned_algorithm_is_the_configured_one(make_service: ServiceFactory) -> None:
    service = make_service(jwt_secret=JWT_SECRET, jwt_algorithm="HS512")
    assert service.api.call("tasks.list", {}, auth=token("alice", algorithm="HS512"))["total"] == 0
    refused(service, bearer(token("alice", algorithm="HS256")))


def test_a_token_without_exp_is_refused_naming_exp(secured: Service) -> None:
    """Tokens must expire (docs/decisions.md): one without `exp` would be valid forever."""
    error = refused(secured, bearer(token("alice", expires_in=None)))
    assert error["message"].startswith("invalid token: ") and "exp" in error["message"]
    assert secured.api.call("tasks.list", {}, auth=token("alice", expires_in=5))["total"] == 0


# ---------------------------------------------------------------------- audience and issuer

AUDIENCE, ISSUER = "apflow-production", "https://login.example.com"


@pytest.fixture
def scoped(make_protocol_service: ServiceFactory) -> Service:
    return make_protocol_service(jwt_secret=JWT_SECRET, jwt_audience=AUDIENCE, jwt_issuer=ISSUER)


def test_with_audience_and_issuer_configured_a_matching_token_is_accepted(scoped: Service) -> None:
    good = token("alice", audience=AUDIENCE, issuer=ISSUER)
    assert scoped.api.call("tasks.list", {}, auth=good)["total"] == 0
    among = token("alice", audience=["other", AUDIENCE], issuer=ISSUER)
    assert scoped.api.call("tasks.list", {}, auth=among)["total"] == 0


@pytest.mark.parametrize(
    ("claims", "named"),
    [
        ({"issuer": ISSUER}, "aud"),
        ({"audience": "apflow-staging", "issuer": ISSUER}, "audience"),
        ({"audience": AUDIENCE}, "iss"),
        ({"audience": AUDIENCE, "issuer": "https://evil.example.com"}, "issuer"),
        ({"audience": AUDIENCE, "issuer": ISSUER, "expires_in": None}, "exp"),
    ],
    ids=["no-aud", "other-aud", "no-iss", "other-iss", "no-exp"],
)
def test_with_audience_and_issuer_configured_others_are_refused(
    scoped: Service, claims: dict[str, Any], named: str
) -> None:
    error = refused(scoped, bearer(token("alice", **claims)))
    assert named in error["message"].lower(), error


def test_the_webhook_checks_audience_and_issuer_too(scoped: Service) -> None:
    task = scoped.api.as_user(token("alice", audience=AUDIENCE, issuer=ISSUER)).create()
    wrong = token("alice", audience="apflow-staging", issuer=ISSUER)
    assert scoped.api.webhook(task["id"], auth=wrong).status == 401
    right = token("alice", audience=AUDIENCE, issuer=ISSUER)
    assert scoped.api.webhook(task["id"], auth=right).status == 202


def test_an_expired_token_is_refused_with_a_clear_message(secured: Service) -> None:
    stale = jwt.encode({"sub": "alice", "exp": int(time.time()) - 1}, JWT_SECRET, algorithm="HS256")
    error = refused(secured, bearer(stale))
    assert "expired" in error["message"]


# ---------------------------------------------------------------------- ownership


@pytest.fixture
def bobs_task(secured: Service) -> dict[str, Any]:
    return secured.api.as_user(BOB).create(name="bob's", inputs={"mine": True})


def test_created_tasks_belong_to_their_creator(secured: Service) -> None:
    task = secured.api.as_user(ALICE).create(name="a")
    assert task["user_id"] == "alice"
    tree = secured.api.call(
        "tasks.create", [{"name": "r"}, {"name": "k", "parent_id": "r"}], auth=ALICE
    )
    assert {t["user_id"] for t in tree["tasks"]} == {"alice"}


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("tasks.get", {}),
        ("tasks.update", {"name": "stolen"}),
        ("tasks.delete", {}),
        ("tasks.tree", {}),
        ("tasks.execute", {"wait": True}),
        ("tasks.cancel", {}),
        ("tasks.runs.list", {}),
        ("tasks.scheduled.init", {}),
        ("tasks.scheduled.complete", {"success": True}),
        ("tasks.scheduled.preview", {}),
        ("tasks.webhook.trigger", {}),
        ("tasks.webhook.trigger", {"async_execution": False}),
    ],
)
def test_a_user_cannot_touch_another_users_task(
    secured: Service, bobs_task: dict[str, Any], method: str, extra: dict[str, Any]
) -> None:
    alice = secured.api.as_user(ALICE)
    assert_field(alice.fail(method, {"task_id": bobs_task["id"], **extra}), FORBIDDEN)
    bob = secured.api.as_user(BOB)
    assert bob.call("tasks.get", {"task_id": bobs_task["id"]}) == bobs_task
    assert bob.runs(bobs_task["id"]) == []


def test_a_user_cannot_put_a_task_under_another_users_task(
    secured: Service, bobs_task: dict[str, Any]
) -> None:
    alice = secured.api.as_user(ALICE)
    error = alice.fail("tasks.create", {"name": "cuckoo", "parent_id": bobs_task["id"]})
    assert error["code"] in {FORBIDDEN, -32602}
    assert secured.api.call("tasks.tree", {"task_id": bobs_task["id"]}, auth=BOB)["children"] == []


@pytest.fixture
def bobs_tree(secured: Service) -> dict[str, Any]:
    """Bob's root with one child, "report", whose id an attacker must not learn."""
    created = secured.api.call(
        "tasks.create",
        [{"name": "root"}, {"name": "report", "parent_id": "root"}],
        auth=BOB,
    )
    return {task["name"]: task for task in created["tasks"]}


@pytest.mark.parametrize("form", ["array", "object"])
def test_a_batch_cannot_hang_a_task_under_another_users_task(
    secured: Service, bobs_tree: dict[str, Any], form: str
) -> None:
    root, report = bobs_tree["root"], bobs_tree["report"]
    specs = [
        {
            "name": "cuckoo",
            "parent_id": root["id"],
            "params": {"executor_id": "echo_executor"},
            "inputs": {"evil": True},
        },
        # asks to run after bob's child, by name: resolving it would reveal its id
        {"name": "egg", "parent_id": "cuckoo", "dependencies": [{"id": "report"}]},
    ]
    params: Any = specs if form == "array" else {"tasks": specs}
    reply = secured.api.as_user(ALICE).rpc("tasks.create", params)
    assert reply.error["code"] == FORBIDDEN
    assert report["id"] not in json.dumps(reply.body)
    tree = secured.api.call("tasks.tree", {"task_id": root["id"]}, auth=BOB)
    assert [child["id"] for child in tree["children"]] == [report["id"]]
    assert secured.api.call("tasks.list", {}, auth=ALICE)["total"] == 0


def test_a_batch_cannot_depend_on_another_users_task(
    secured: Service, bobs_tree: dict[str, Any]
) -> None:
    report = bobs_tree["report"]
    reply = secured.api.as_user(ALICE).rpc(
        "tasks.create",
        [
            {"name": "mine"},
            {"name": "child", "parent_id": "mine", "dependencies": [{"id": report["id"]}]},
        ],
    )
    assert_field(reply.error, -32602, "tasks[1].dependencies[0].id")
    assert secured.api.call("tasks.list", {}, auth=ALICE)["total"] == 0


def test_an_admin_may_extend_anyones_tree_in_a_batch(
    secured: Service, bobs_tree: dict[str, Any]
) -> None:
    created = secured.api.call(
        "tasks.create",
        [{"name": "extra", "parent_id": bobs_tree["root"]["id"]}],
        auth=admin_token(),
    )
    assert [task["user_id"] for task in created["tasks"]] == ["bob"]


def test_listings_show_only_ones_own(secured: Service, bobs_task: dict[str, Any]) -> None:
    alice = secured.api.as_user(ALICE)
    own = alice.create(
        name="alice's", schedule_type="daily", schedule_expression="10:00", schedule_enabled=True
    )
    secured.api.call(
        "tasks.update",
        {
            "task_id": bobs_task["id"],
            "schedule_type": "daily",
            "schedule_expression": "09:00",
            "schedule_enabled": True,
        },
        auth=BOB,
    )
    alice.call("tasks.execute", {"task_id": own["id"], "wait": True})
    secured.api.call("tasks.execute", {"task_id": bobs_task["id"], "wait": True}, auth=BOB)
    assert [t["id"] for t in alice.call("tasks.list", {})["items"]] == [own["id"]]
    assert alice.call("tasks.list", {"user_id": "alice"})["total"] == 1
    assert [t["id"] for t in alice.call("tasks.scheduled.list", {})["items"]] == [own["id"]]
    assert {r["task_id"] for r in alice.call("tasks.runs.list", {})["items"]} == {own["id"]}
    later = "2100-01-01T00:00:00+00:00"
    due = alice.call("tasks.scheduled.due", {"before": later})["items"]
    assert [t["id"] for t in due] == [own["id"]]
    for method in ("tasks.list", "tasks.runs.list", "tasks.scheduled.list", "tasks.scheduled.due"):
        assert_field(alice.fail(method, {"user_id": "bob"}), FORBIDDEN)


def test_a_non_admin_may_not_create_or_move_tasks_for_another_user(secured: Service) -> None:
    alice = secured.api.as_user(ALICE)
    assert_field(alice.fail("tasks.create", {"name": "gift", "user_id": "bob"}), FORBIDDEN)
    error = alice.fail(
        "tasks.create", [{"name": "r"}, {"name": "k", "parent_id": "r", "user_id": "bob"}]
    )
    assert error["code"] in {FORBIDDEN, -32602}
    own = alice.create(name="mine")
    assert_field(alice.fail("tasks.update", {"task_id": own["id"], "user_id": "bob"}), FORBIDDEN)
    assert secured.api.call("tasks.list", {}, auth=admin_token())["total"] == 1
    assert alice.call("tasks.get", {"task_id": own["id"]})["user_id"] == "alice"


def test_admins_see_and_touch_everything(secured: Service, bobs_task: dict[str, Any]) -> None:
    admin = secured.api.as_user(admin_token("root"))
    alices = secured.api.as_user(ALICE).create(name="alice's")
    carols = admin.create(name="for carol", user_id="carol")
    assert carols["user_id"] == "carol"
    listed = {t["id"] for t in admin.call("tasks.list", {})["items"]}
    assert listed == {bobs_task["id"], alices["id"], carols["id"]}
    assert [t["id"] for t in admin.call("tasks.list", {"user_id": "bob"})["items"]] == [
        bobs_task["id"]
    ]
    assert admin.call("tasks.get", {"task_id": bobs_task["id"]})["name"] == "bob's"
    assert admin.call("tasks.update", {"task_id": bobs_task["id"], "name": "b2"})["name"] == "b2"
    outcome = admin.call("tasks.execute", {"task_id": bobs_task["id"], "wait": True})
    assert outcome["status"] == "completed"
    assert admin.call("tasks.runs.list", {"user_id": "bob"})["total"] == 1
    moved = admin.call("tasks.update", {"task_id": alices["id"], "user_id": "bob"})
    assert moved["user_id"] == "bob"
    assert admin.call("tasks.delete", {"task_id": bobs_task["id"]})["deleted"] == [bobs_task["id"]]
    assert secured.api.call("tasks.list", {}, auth=BOB)["total"] == 1  # alice's, now bob's


def test_rest_webhook_of_another_users_task_is_403(
    secured: Service, bobs_task: dict[str, Any]
) -> None:
    reply = secured.api.webhook(bobs_task["id"], auth=ALICE)
    assert reply.status == 403
    assert reply.body["success"] is False
    assert secured.api.runs(bobs_task["id"], auth=BOB) == []
    accepted = secured.api.webhook(bobs_task["id"], auth=BOB)
    assert accepted.status == 202
    by_admin = secured.api.webhook(bobs_task["id"], query="?async=false", auth=admin_token())
    assert by_admin.status in {200, 409}


def test_an_invalid_token_on_the_webhook_is_401(
    secured: Service, bobs_task: dict[str, Any]
) -> None:
    for bad in (
        alg_none_token("bob"),
        token("bob", secret=OTHER_SECRET),
        token("bob", expires_in=-5),
    ):
        reply = secured.api.webhook(bobs_task["id"], auth=bad)
        assert reply.status == 401
        assert reply.body["success"] is False
    assert secured.api.webhook(bobs_task["id"]).status == 401
    assert secured.api.runs(bobs_task["id"], auth=BOB) == []


def test_auth_off_needs_no_token(make_service: ServiceFactory) -> None:
    service = make_service()
    task = service.api.create(name="open", user_id="anyone")
    assert service.api.call("tasks.get", {"task_id": task["id"]})["user_id"] == "anyone"
    assert service.api.webhook(task["id"], query="?async=false").status == 200
