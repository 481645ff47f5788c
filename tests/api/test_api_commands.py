"""Tasks that run commands over JSON-RPC: only an admin creates or changes them, and their `env`
is checked when they are written. On SQLite and PostgreSQL through the TestClient harness, and
end to end on a real `apflow serve` with the executor switched on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_harness import Service, ServiceFactory
from api_support import (
    JWT_SECRET,
    Api,
    ServerProcess,
    admin_token,
    assert_field,
    assert_stopped_gracefully,
    client_for,
    create_pg_database,
    drop_pg_database,
    server_env,
    token,
)

INVALID, FORBIDDEN = -32602, -32003
ALICE, ROOT = token("alice"), admin_token("root")
COMMAND = {"executor_id": "command_executor"}
ECHO = {"executor_id": "echo_executor"}
SSH = {"GIT_SSH_COMMAND": "touch /tmp/apflow-escaped #"}


def command_task(name: str = "cmd", **fields: Any) -> dict[str, Any]:
    return {"name": name, "params": COMMAND, "inputs": {"command": ["true"]}, **fields}


# The three shapes of tasks.create, each with a task that runs commands somewhere in it.
CREATE_FORMS: dict[str, Any] = {
    "single": command_task(),
    "single-by-schemas.method": {"name": "cmd", "schemas": {"method": "command_executor"}},
    "single-named-twice": {
        "name": "cmd",
        "params": ECHO,
        "schemas": {"method": "command_executor"},
    },
    "array": [{"name": "root"}, command_task(parent_id="root")],
    "tasks-object": {
        "tasks": [{"name": "root"}, {"name": "a", "parent_id": "root"}, command_task(parent_id="a")]
    },
}


def only_an_admin(error: dict[str, Any]) -> None:
    assert_field(error, FORBIDDEN)
    assert "only an admin may" in error["message"], error
    assert "command_executor" in error["message"], error


def total(api: Api) -> int:
    count: int = api.call("tasks.list", {}, auth=ROOT)["total"]
    return count


@pytest.fixture
def secured(make_service: ServiceFactory) -> Service:
    return make_service(jwt_secret=JWT_SECRET, command_env_allowlist=("LANG",))


# ---------------------------------------------------------------------- admin only


@pytest.mark.parametrize("params", CREATE_FORMS.values(), ids=CREATE_FORMS.keys())
def test_a_non_admin_may_not_create_a_command_task(secured: Service, params: Any) -> None:
    only_an_admin(secured.api.fail("tasks.create", params, auth=ALICE))
    assert total(secured.api) == 0


@pytest.mark.parametrize("params", CREATE_FORMS.values(), ids=CREATE_FORMS.keys())
def test_an_admin_may_create_a_command_task(secured: Service, params: Any) -> None:
    created = secured.api.call("tasks.create", params, auth=ROOT)
    tasks = created["tasks"] if "tasks" in created else [created]
    assert total(secured.api) == len(tasks)


def test_the_refusal_names_the_task_of_a_tree(secured: Service) -> None:
    error = secured.api.fail("tasks.create", CREATE_FORMS["array"], auth=ALICE)
    only_an_admin(error)
    assert error["message"].startswith("tasks[1]: "), error


@pytest.mark.parametrize(
    "change",
    [
        {"name": "renamed"},
        {"inputs": {"command": ["sh", "-c", "id"]}},
        {"params": ECHO},
        {"priority": 0},
        {"schedule_type": "daily", "schedule_expression": "09:00", "schedule_enabled": True},
    ],
    ids=["name", "inputs", "switch-away", "priority", "schedule"],
)
def test_a_non_admin_may_not_change_a_command_task_even_their_own(
    secured: Service, change: dict[str, Any]
) -> None:
    task = secured.api.call("tasks.create", command_task(user_id="alice"), auth=ROOT)
    only_an_admin(secured.api.fail("tasks.update", {"task_id": task["id"], **change}, auth=ALICE))
    assert secured.api.call("tasks.get", {"task_id": task["id"]}, auth=ALICE) == task


@pytest.mark.parametrize(
    "switch",
    [
        {"params": COMMAND},
        {"schemas": {"method": "command_executor"}},
        {"params": {"executor_id": "command_executor", "other": 1}, "name": "x"},
    ],
    ids=["params.executor_id", "schemas.method", "with-other-fields"],
)
def test_a_non_admin_may_not_switch_a_task_to_commands(
    secured: Service, switch: dict[str, Any]
) -> None:
    alice = secured.api.as_user(ALICE)
    own = alice.create(name="mine", inputs={"command": ["sh", "-c", "id"]})
    only_an_admin(alice.fail("tasks.update", {"task_id": own["id"], **switch}))
    assert alice.call("tasks.get", {"task_id": own["id"]}) == own


def test_an_admin_may_change_and_switch_command_tasks(secured: Service) -> None:
    admin = secured.api.as_user(ROOT)
    task = admin.call("tasks.create", command_task(user_id="alice"))
    renamed = admin.call("tasks.update", {"task_id": task["id"], "name": "renamed"})
    assert renamed["name"] == "renamed"
    echo = admin.create(name="echo", user_id="alice")
    switched = admin.call("tasks.update", {"task_id": echo["id"], "params": COMMAND})
    assert switched["params"] == COMMAND


def test_non_admins_keep_every_other_task(secured: Service) -> None:
    """The rule is about command tasks only: a user's other tasks are theirs to write, and a
    command task an admin made for them is still theirs to read."""
    alice = secured.api.as_user(ALICE)
    own = alice.create(name="mine", inputs={"env": SSH})  # `env` means nothing to echo
    assert alice.call("tasks.update", {"task_id": own["id"], "name": "b"})["name"] == "b"
    tree = alice.call("tasks.create", {"tasks": [{"name": "r"}, {"name": "k", "parent_id": "r"}]})
    assert len(tree["tasks"]) == 2
    given = secured.api.call("tasks.create", command_task(user_id="alice"), auth=ROOT)
    assert alice.call("tasks.get", {"task_id": given["id"]})["id"] == given["id"]


def test_with_auth_off_the_local_operator_is_the_admin(make_service: ServiceFactory) -> None:
    service = make_service()
    task = service.api.call("tasks.create", command_task())
    assert service.api.call("tasks.update", {"task_id": task["id"], "name": "x"})["name"] == "x"
    echo = service.api.create(name="echo")
    switched = service.api.call("tasks.update", {"task_id": echo["id"], "params": COMMAND})
    assert switched["params"] == COMMAND
    created = service.api.call("tasks.create", CREATE_FORMS["tasks-object"])
    assert len(created["tasks"]) == 3


# ---------------------------------------------------------------------- env when written


def test_env_is_checked_when_a_command_task_is_written(secured: Service) -> None:
    admin = secured.api.as_user(ROOT)
    inputs = {"command": ["git", "ls-remote"], "env": SSH}
    error = admin.fail("tasks.create", command_task(inputs=inputs))
    assert_field(error, INVALID, "inputs.env")
    assert "'GIT_SSH_COMMAND'" in error["message"]
    assert "APFLOW_COMMAND_ENV_ALLOWLIST" in error["message"]

    tree = [{"name": "root"}, command_task(parent_id="root", inputs=inputs)]
    assert_field(admin.fail("tasks.create", tree), INVALID, "tasks[1].inputs.env")
    assert total(secured.api) == 0

    task = admin.call("tasks.create", command_task(inputs={"command": ["date"], "env": {}}))
    error = admin.fail("tasks.update", {"task_id": task["id"], "inputs": inputs})
    assert_field(error, INVALID, "inputs.env")
    listed = {"command": ["date"], "env": {"LANG": "C"}}
    assert admin.call("tasks.update", {"task_id": task["id"], "inputs": listed})["inputs"] == listed

    echo = admin.create(name="echo", inputs={"env": {"LD_PRELOAD": "/x.so"}})
    error = admin.fail("tasks.update", {"task_id": echo["id"], "params": COMMAND})
    assert_field(error, INVALID, "inputs.env")
    assert admin.call("tasks.get", {"task_id": echo["id"]}) == echo


# ---------------------------------------------------------------------- a real server


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    home: Path = tmp_path_factory.mktemp(f"commands-{request.param}")
    url = f"sqlite+aiosqlite:///{home / 'live.db'}" if request.param == "sqlite" else None
    url = url or create_pg_database()
    env = server_env(
        home,
        APFLOW_DATABASE_URL=url,
        APFLOW_JWT_SECRET=JWT_SECRET,
        APFLOW_ALLOW_COMMAND_EXECUTOR="1",
        APFLOW_COMMAND_ALLOWLIST="echo hello, sh -c 'echo \"$APFLOW_T_GREETING\"'",
        APFLOW_COMMAND_ENV_ALLOWLIST="APFLOW_T_GREETING",
    )
    server = ServerProcess(env)
    try:
        server.wait_ready()
        with client_for(server) as http:
            yield Api(http, ROOT)
    finally:
        code = server.stop()
        if request.param == "postgresql":
            drop_pg_database(url)
    assert_stopped_gracefully(server, code)


def test_live_non_admins_are_refused_and_nothing_is_written(live: Api) -> None:
    before = live.call("tasks.list", {})["total"]
    for params in CREATE_FORMS.values():
        only_an_admin(live.fail("tasks.create", params, auth=ALICE))
    task = live.call("tasks.create", command_task(user_id="alice"))
    only_an_admin(live.fail("tasks.update", {"task_id": task["id"], "name": "x"}, auth=ALICE))
    own = live.call("tasks.create", {"name": "echo", "params": ECHO}, auth=ALICE)
    only_an_admin(live.fail("tasks.update", {"task_id": own["id"], "params": COMMAND}, auth=ALICE))
    assert live.call("tasks.list", {})["total"] == before + 2
    assert live.call("tasks.get", {"task_id": own["id"]})["params"] == ECHO


def test_live_env_outside_the_allowlist_is_refused_when_written(live: Api) -> None:
    error = live.fail("tasks.create", command_task(inputs={"command": ["echo"], "env": SSH}))
    assert_field(error, INVALID, "inputs.env")


def test_live_allowed_prefixes_run_and_others_fail(live: Api) -> None:
    allowed = live.call("tasks.create", command_task(inputs={"command": ["echo", "hello", "you"]}))
    outcome = live.call("tasks.execute", {"task_id": allowed["id"], "wait": True})
    assert outcome["status"] == "completed", outcome
    assert outcome["result"]["stdout"] == "hello you\n"

    greeting = command_task(
        inputs={
            "command": ["sh", "-c", 'echo "$APFLOW_T_GREETING"'],
            "env": {"APFLOW_T_GREETING": "from the allowed env"},
        }
    )
    task = live.call("tasks.create", greeting)
    outcome = live.call("tasks.execute", {"task_id": task["id"], "wait": True})
    assert outcome["status"] == "completed", outcome
    assert outcome["result"]["stdout"] == "from the allowed env\n"

    for argv, error in (
        (
            ["echo", "bye"],
            "'echo' is in APFLOW_COMMAND_ALLOWLIST only with other leading arguments",
        ),
        (
            ["sh", "-c", "id"],
            "'sh' is in APFLOW_COMMAND_ALLOWLIST only with other leading arguments",
        ),
        (["true"], "'true' is not in APFLOW_COMMAND_ALLOWLIST"),
    ):
        task = live.call("tasks.create", command_task(inputs={"command": argv}))
        outcome = live.call("tasks.execute", {"task_id": task["id"], "wait": True})
        assert (outcome["status"], outcome["error"]) == ("failed", error), outcome
