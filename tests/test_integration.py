"""The real `bentoml serve` on a free loopback port, called over HTTP."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from benchmarks.harness.server import (
    ROOT,
    running_server,
    server_processes,
    start_server,
    stop_server,
    wait_for,
    wait_until,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The quick-start configuration: embedded MiniLM, example labels, two workers."""
    tmp_path = tmp_path_factory.mktemp("serve")
    with running_server(
        tmp_path, LIVETUNE_LABELS_FILE="examples/support_labels.txt", LIVETUNE_WORKERS="2"
    ) as server:
        yield server


@pytest.fixture(scope="module")
def server(served):
    return served.base


def readme_curl_commands() -> list[str]:
    """The shell lines of the README's REST API section, then of docs/api.md: every curl
    command, and the `NAME=$(...)` lines that keep an answer for a later one."""
    readme = (ROOT / "README.md").read_text()
    sections = [
        readme.split("## REST API", 1)[1].split("\n## ", 1)[0],
        (ROOT / "docs" / "api.md").read_text(),
    ]
    commands = []
    for section in sections:
        for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
            for command in block.replace("\\\n", " ").splitlines():
                command = command.split("  #", 1)[0].strip()
                if command.startswith("curl") or re.match(r"[A-Z_]+=\$\(", command):
                    commands.append(command)
    return commands


def test_readme_curl_examples_work_as_documented(server):
    """One shell runs them in order, as a reader would paste them; answers are split apart."""
    mark = "--- livetune example done ---"
    script = ["set -euo pipefail"]
    for command in readme_curl_commands():
        script.append(command.replace("localhost:3000", server.removeprefix("http://")))
        if command.startswith("curl"):
            script.append(f"echo; echo '{mark}'")
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    outputs = [output.strip() for output in result.stdout.split(mark)[:-1]]
    assert len(outputs) == 16
    predictions = json.loads(outputs[0])
    assert [p["label"] for p in predictions] == ["lost_card", "exchange_rate"]
    assert json.loads(outputs[1]) == {"ids": [1], "stored": 1, "duplicates": 0}
    assert json.loads(outputs[2]) == {"ids": [2], "stored": 1, "duplicates": 0}
    assert json.loads(outputs[3]) == {"accepted": True}
    status = json.loads(outputs[4])
    assert status["ready"] and status["active_adapter"] == "base"
    assert len(status["workers"]) == 2
    assert json.loads(outputs[5]) == []
    assert json.loads(outputs[6]) == {"active": "base"}
    labels = json.loads(outputs[7])
    assert labels["version"] == 1 and {label["state"] for label in labels["labels"]} == {"active"}
    added, described, retired = (json.loads(out) for out in outputs[8:11])
    assert (added["version"], added["label"]["name"]) == (2, "card_declined")
    assert described["label"]["description"] == "the shop refused my card"
    assert (retired["version"], retired["label"]["state"]) == (4, "retired")
    outputs = outputs[:7] + outputs[11:]  # the rest as before the label examples
    counts = [line.rsplit(" ", 1) for line in outputs[7].splitlines()]
    assert all(name.startswith("livetune_predictions_total{") for name, _ in counts)
    assert sum(float(value) for _, value in counts) == 3  # the two texts, then one
    assert outputs[8:10] == ["200", "200"]
    review = json.loads(outputs[10])  # the two served texts nobody labeled
    assert {item["text"] for item in review["items"]} == {
        "I lost my card yesterday", "what rate do you use for euros?"
    }  # fmt: skip
    error = json.loads(outputs[11])
    assert error["detail"][0]["loc"] == ["texts", 0]
    assert "whitespace" in error["detail"][0]["msg"]


def test_concurrent_requests_are_batched_without_mixing_answers(server):
    texts = [
        "I lost my card",
        "my card never arrived",
        "what is the exchange rate for dollars",
        "please refund my order",
        "my transfer was declined",
        "I want to close my account",
        "how can I change my pin",
        "someone stole my wallet and card",
    ] * 6
    alone = {
        text: httpx.post(f"{server}/predict", json={"texts": [text]}, timeout=30).json()[0]
        for text in set(texts)
    }

    def ask(text: str) -> tuple[str, httpx.Response]:
        return text, httpx.post(f"{server}/predict", json={"texts": [text]}, timeout=60)

    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(ask, texts))
    for text, response in results:
        assert response.status_code == 200, response.text
        [answer] = response.json()
        assert answer["label"] == alone[text]["label"]
        # bf16 autocast (this server's default precision) runs batches of 8 rows or more
        # and fp32 below: the same text's score moves with its batch (seen up to 0.11).
        # tests/test_batching.py checks the scores exactly, in fp32.
        assert answer["score"] == pytest.approx(alone[text]["score"], abs=0.15)


def test_bad_input_over_real_http_is_a_4xx(server):
    response = httpx.post(f"{server}/predict", json={"texts": [""] * 2}, timeout=30)
    assert response.status_code == 400
    assert {tuple(e["loc"]) for e in response.json()["detail"]} == {("texts", 0), ("texts", 1)}
    big = {"texts": ["x" * 1000] * 1100}
    assert httpx.post(f"{server}/predict", json=big, timeout=30).status_code == 413


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/maps")
def test_workers_parse_http_with_httptools_on_uvloop(served):
    """uvicorn silently falls back to pure-Python h11 and asyncio when httptools and uvloop
    are missing, at about a third more CPU per request; both are dependencies for that."""
    workers = [
        process
        for process in server_processes(served.process)
        if "_bentoml_impl.worker.service" in " ".join(process.cmdline())
    ]
    assert workers
    for worker in workers:
        maps = Path(f"/proc/{worker.pid}/maps").read_text()
        assert "httptools" in maps and "uvloop" in maps, worker.cmdline()


def test_invalid_input_is_logged_as_one_warning_line_not_an_error(served):
    base, log = served.base, served.log
    secret = "my-secret-text-" + "z" * 3000  # too long: refused, and never logged
    response = httpx.post(f"{base}/predict", json={"texts": ["fine", secret]}, timeout=30)
    assert response.status_code == 400
    lines = wait_until(
        lambda: [line for line in log.read_text().splitlines() if "answered 400" in line]
    )
    assert "WARNING" in lines[-1] and "texts.1:" in lines[-1], lines[-1]
    text = log.read_text()
    assert "Traceback" not in text and "ValidationError" not in text
    assert "my-secret-text" not in text


def test_a_model_that_cannot_load_is_neither_ready_nor_alive(tmp_path, tiny_model_dir):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    process, base = start_server(tmp_path, LIVETUNE_BASE_MODEL=str(broken), LIVETUNE_LABELS="a,b")
    try:
        wait_for(f"{base}/livez", process, status=503)
        assert httpx.get(f"{base}/readyz", timeout=5).status_code == 503
        assert httpx.post(f"{base}/predict", json={"texts": ["hi"]}, timeout=90).status_code == 503
    finally:
        stop_server(process)


def test_a_bad_setting_stops_the_server_and_names_the_variable(tmp_path):
    process, _ = start_server(tmp_path, LIVETUNE_LABELS="a,b", LIVETUNE_MAX_TOKENS="lots")
    try:
        assert process.wait(timeout=120) != 0
    finally:
        stop_server(process)
    log = next(tmp_path.glob("server-*.log")).read_text()
    assert "LIVETUNE_MAX_TOKENS" in log
