"""The label set changes at run time, on a real 2-worker server under steady /predict load:
a label added is predicted by every worker within 2 s, accepted in corrections at once,
learned by the next training run; a retired one is never predicted nor accepted again;
the set survives a restart; bad changes are 4xx naming the field."""

from __future__ import annotations

import random
import threading
import time

import httpx
import pytest

from benchmarks.harness.server import running_server, wait_until
from tests.factories import FILLER, TOY_LABELS, tiny_training_env, toy_samples, training_cli

pytestmark = pytest.mark.integration
NEW = "pricing"
DESCRIPTION = "much about"  # words of the tiny vocabulary no toy label uses
NEW_WORDS = ["much", "about"]
FOLLOW_S = 2.0  # every worker follows a change within this long


def new_label_samples(count: int, seed: int = 1) -> list[tuple[str, str]]:
    rng, texts = random.Random(seed), set()
    while len(texts) < count:
        words = rng.sample(FILLER, 4) + [rng.choice(NEW_WORDS)]
        rng.shuffle(words)
        texts.add(" ".join(words))
    return [(text, NEW) for text in sorted(texts)]


class Load:
    """Steady /predict traffic from a thread, every answer's status kept."""

    def __init__(self, base: str):
        self.base, self.statuses, self.labels = base, [], set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            while not self._stop.is_set():
                response = client.post("/predict", json={"texts": ["i lost my card", DESCRIPTION]})
                self.statuses.append(response.status_code)
                if response.status_code == 200:
                    self.labels |= {item["label"] for item in response.json()}


def worker_versions(client: httpx.Client) -> set[int]:
    workers = client.get("/status").json()["workers"]
    return {w["label_set_version"] for w in workers if not w["stale"]}


def predict(client: httpx.Client, texts: list[str]) -> list[dict]:
    response = client.post("/predict", json={"texts": texts})
    assert response.status_code == 200, response.text
    return response.json()


def predicted(client: httpx.Client, text: str, times: int = 20) -> set[str]:
    """Labels served for `text` over `times` requests (which the workers share)."""
    return {
        client.post("/predict", json={"texts": [text]}).json()[0]["label"] for _ in range(times)
    }


@pytest.fixture(scope="module")
def env(tiny_model_dir) -> dict[str, str]:
    return {
        **tiny_training_env(tiny_model_dir),
        "LIVETUNE_WORKERS": "2",
        "LIVETUNE_THREADS": "1",
        "LIVETUNE_TRAINER": "false",  # the run below is `python -m training run --once`
    }


def test_a_label_added_retired_and_kept_across_a_restart(env, tmp_path):
    with (
        running_server(tmp_path, **env) as server,  # its data in tmp_path / "data"
        httpx.Client(base_url=server.base, timeout=30) as client,
    ):
        start = client.get("/labels").json()
        assert [label["name"] for label in start["labels"]] == TOY_LABELS
        assert start["version"] == 1 and worker_versions(client) == {1}

        with Load(server.base) as load:
            time.sleep(0.5)
            added = client.post("/labels", json={"name": NEW, "description": DESCRIPTION})
            assert added.status_code == 201, added.text
            assert added.json()["version"] == 2
            assert added.json()["label"]["state"] == "active"
            # Accepted at once, by whichever worker takes it.
            for word in ("hello", "world", "please", "how"):  # 2 words: not in the 60 below
                sample = {"text": f"{word} much", "label": NEW}
                stored = client.post("/feedback", json={"samples": [sample]})
                assert stored.status_code == 200, stored.text
            wait_until(lambda: worker_versions(client) == {2}, timeout=FOLLOW_S)
            assert predicted(client, DESCRIPTION) == {NEW}  # zero-shot, from its description
            time.sleep(0.5)
        assert load.statuses and set(load.statuses) == {200}, "a request failed during the change"
        assert NEW in load.labels

        listed = {label["name"]: label for label in client.get("/labels").json()["labels"]}
        assert listed[NEW]["corrections"] == 4 and listed[NEW]["trained"] is False
        metrics = client.get("/metrics").text
        assert "livetune_labels_active 4.0" in metrics
        served = [line for line in metrics.splitlines()
                  if line.startswith("livetune_label_set_version{")]  # fmt: skip
        assert len(served) == 2 and all(line.endswith(" 2.0") for line in served), served
        samples = toy_samples(180) + new_label_samples(60)
        seen = {text for text, _ in samples}
        unseen = [t for t, _ in new_label_samples(80, seed=99) if t not in seen][:40]
        zero_shot = sum(a["label"] == NEW for a in predict(client, unseen))

        # A training run learns it (on the tiny model, "about" is hard to tell from "back").
        body = {"samples": [{"text": t, "label": y} for t, y in samples]}
        assert client.post("/feedback", json=body).status_code == 200
        # One training thread: the governor would pick 1 or 2 by the machine's load, and the
        # tiny model's run then ends anywhere from 27 to 39 of the 40 texts below (seen in
        # CI); on one thread it is the same run every time (33-34 seen).
        cli_env = {**env, "LIVETUNE_DATA_DIR": str(server.data_dir), "LIVETUNE_TRAIN_THREADS": "1"}
        done = training_cli(cli_env, "run", "--once", timeout=300)
        assert done.returncode == 0, done.stderr
        adapter = client.get("/status").json()["active_adapter"]
        assert adapter != "base", client.get("/status").json()["last_training_run"]
        wait_until(
            lambda: {w["adapter"] for w in client.get("/status").json()["workers"]} == {adapter},
            timeout=FOLLOW_S + 2,
        )
        listed = {label["name"]: label for label in client.get("/labels").json()["labels"]}
        assert listed[NEW]["trained"] is True
        learned = sum(a["label"] == NEW for a in predict(client, unseen))
        assert learned > zero_shot and learned >= 0.7 * len(unseen), (zero_shot, learned)

        # Retire it: never predicted again, refused in corrections; its history stays.
        with Load(server.base) as load:
            retired = client.post(f"/labels/{NEW}/retire")
            assert retired.status_code == 200, retired.text
            assert retired.json()["label"]["state"] == "retired"
            refused = client.post("/feedback", json={"samples": [{"text": "x", "label": NEW}]})
            assert refused.status_code == 400
            [error] = refused.json()["detail"]
            assert error["loc"] == ["samples", 0, "label"] and error["type"] == "retired_label"
            assert "retired" in error["msg"]
            wait_until(lambda: worker_versions(client) == {3}, timeout=FOLLOW_S)
            since = len(load.statuses)
            time.sleep(1.0)
        assert set(load.statuses) == {200}
        assert NEW not in predicted(client, DESCRIPTION) | {
            a["label"] for a in predict(client, unseen)
        }
        assert len(load.statuses) > since
        listed = {label["name"]: label for label in client.get("/labels").json()["labels"]}
        assert listed[NEW]["state"] == "retired" and listed[NEW]["corrections"] == 64
        before_restart = client.get("/labels").json()

    with (
        running_server(tmp_path, **env) as server,  # the same data
        httpx.Client(base_url=server.base, timeout=30) as client,
    ):
        after = client.get("/labels").json()
        assert after == before_restart  # the configured labels do not bring it back
        assert worker_versions(client) == {3}
        assert NEW not in predicted(client, DESCRIPTION, times=5)


@pytest.fixture(scope="module")
def served(env, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("label-errors")
    with (
        running_server(tmp, **{**env, "LIVETUNE_WORKERS": "1"}) as server,
        httpx.Client(base_url=server.base, timeout=30) as client,
    ):
        yield client


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "loc", "kind"),
    [
        ("POST", "/labels", {"name": " padded"}, 400, ["body", "name"], "invalid_label"),
        ("POST", "/labels", {"name": "x" * 129}, 400, ["body", "name"], "invalid_label"),
        ("POST", "/labels", {"name": "new\nline"}, 400, ["body", "name"], "invalid_label"),
        ("POST", "/labels", {"description": "no name"}, 400, ["body", "name"], "missing"),
        ("POST", "/labels", {"name": 7}, 400, ["body", "name"], "string_type"),
        ("POST", "/labels", {"name": "ok", "colour": "red"}, 400, ["body", "colour"],
         "extra_forbidden"),
        ("POST", "/labels", {"name": "ok", "description": "a\tb"}, 400,
         ["body", "description"], "invalid_label"),
        ("POST", "/labels", {"name": "lost_card"}, 409, ["body", "name"], "label_exists"),
        ("POST", "/labels/never_added/retire", None, 404, ["path", "name"], "unknown_label"),
        ("PATCH", "/labels/never_added", {"description": "x"}, 404, ["path", "name"],
         "unknown_label"),
        ("PATCH", "/labels/lost_card", {}, 400, ["body", "description"], "missing"),
        ("PATCH", "/labels/old_one", {"description": "x"}, 409, ["path", "name"],
         "label_retired"),
    ],
)  # fmt: skip
def test_bad_label_changes_are_4xx_naming_the_field(served, method, path, body, status, loc, kind):
    if "old_one" in path and served.post("/labels", json={"name": "old_one"}).status_code == 201:
        assert served.post("/labels/old_one/retire").status_code == 200
    before = served.get("/labels").json()
    response = served.request(method, path, json=body)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert [(d["loc"], d["type"]) for d in detail] == [(loc, kind)]
    assert loc[-1] in response.json()["error"] or status != 400
    assert served.get("/labels").json() == before  # nothing changed


def test_a_body_that_is_not_json_is_a_400(served):
    response = served.post(
        "/labels", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["detail"][0]["loc"] == ["body"]


def test_a_label_name_with_a_slash_and_a_question_mark_is_addressable(served):
    name = "card/declined?"
    assert served.post("/labels", json={"name": name}).status_code == 201
    quoted = httpx.URL(f"/labels/{name.replace('/', '%2F').replace('?', '%3F')}")
    patched = served.patch(str(quoted), json={"description": "my card was declined"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["label"]["description"] == "my card was declined"
