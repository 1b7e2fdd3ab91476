"""LoRA fine-tuning of SmolLM2 end to end, with the openai SDK against a real access point.

A site's agent (``verbund site``: local runner, its own work folder, the training Python
of ``scripts/_training_env.sh``) trains a LoRA adapter on a chat file that teaches one
habit (every answer opens with "Moin!"), on the CPU, from the same Q4_1 GGUF the site's
llama.cpp serves. The chat file is of a class above the access point's own, so it is
held by the agent. The agent then serves base + adapter as ``ft:smollm2-135m:uni-a:moin``
and announces it in its catalogue; the access point routes to it on its one request
path. On held-out questions the fine-tuned model must show the habit far more often than
the base; the model is uni-a's alone; it is served again after the agent restarts; and
neither the adapter nor the training data reaches the access point's disk.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from harness.chat_data import HELD_OUT, chat_jsonl, shows_habit
from harness.federation import backend, federation, institution, site
from harness.gateway import GatewayProcess
from harness.polling import poll
from harness.ports import free_port
from harness.processes import Process
from harness.training import SiteAgents
from verbund.demo import smollm2_gguf, training_python
from verbund.jobs import llama_server_command

pytestmark = pytest.mark.real
BASE = "smollm2-135m"
CANARY = "CANARY-7f3a9c1e-lora"
TRAINING_MINUTES = 15  # generous: two shared cores, other work beside this test


@pytest.fixture
def base_server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    argv = llama_server_command(sys.executable, smollm2_gguf(), BASE, port, 1, 2048)
    with Process("llama-base", argv, tmp_path / "llama-base.log") as proc:
        url = f"http://127.0.0.1:{port}"
        proc.wait_http(url + "/v1/models", 120)
        yield url


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[SiteAgents]:
    agents = SiteAgents(tmp_path / "agents")
    try:
        yield agents
    finally:
        agents.stop()


@pytest.fixture
def ap(tmp_path: Path, base_server: str, agents: SiteAgents) -> Iterator[GatewayProcess]:
    python = training_python()
    assert python is not None, "scripts/_training_env.sh makes .venv-training"
    west = site(
        "rz-west",
        "NW",
        [backend("west-llama-1", base_server, [BASE], max_concurrency=4)],
        max_data_class="sensitive",
        runner={
            "kind": "local",
            "cpus": 1,  # one thread: on two shared cores, two spin against each other
            "memory_mb": 8192,
            "workdir": str(tmp_path / "site-west" / "jobs"),  # the site's disk
            "python": str(python),
            "base_models": {BASE: str(smollm2_gguf())},
        },
    )
    config = federation(
        "ap-lora",
        tmp_path / "ap",
        [west],
        port=free_port(),
        # the training data (sensitive) is above the access point's class: held by the agent
        gateway={"home_site": "rz-west", "max_data_class": "internal"},
        models=[{"name": BASE, "kind": "chat", "license": "Apache-2.0", "context_length": 2048}],
        institutions=[institution("uni-a"), institution("uni-b")],
        training={"poll_interval": 0.5},
    )
    env = agents.attach(config)  # the runner moves to rz-west's agent
    agents.start()
    with GatewayProcess(config, tmp_path / "ap", log_level="info", env=env).start(60) as gw:
        yield gw


def _client(gw: GatewayProcess, institution: str) -> openai.OpenAI:
    key = gw.create_key(institution)["key"]
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=120)


def _habit_rate(client: openai.OpenAI, model: str) -> float:
    shown = 0
    for question in HELD_OUT:
        answer = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": question}],
            max_tokens=8,
            temperature=0,
        )
        shown += shows_habit(answer.choices[0].message.content or "")
    return shown / len(HELD_OUT)


def _server_of(adapter: Path) -> int:
    """The pid of the llama.cpp server that loaded ``adapter`` (this test's own file)."""
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(adapter).encode() in argv and b"llama_cpp.server" in argv:
            return int(proc.name)
    raise AssertionError(f"no llama.cpp server has {adapter} loaded")


def _holds(folder: Path, needle: bytes) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.timeout(TRAINING_MINUTES * 60 + 300)
def test_lora_fine_tuning_teaches_a_habit(
    ap: GatewayProcess, agents: SiteAgents, tmp_path: Path
) -> None:
    a, b = _client(ap, "uni-a"), _client(ap, "uni-b")
    upload = a.files.create(
        file=("moin.jsonl", chat_jsonl(CANARY).encode()),
        purpose="fine-tune",
        extra_headers={"X-Verbund-Data-Class": "sensitive"},
    )
    method: Any = {
        "type": "supervised",
        "supervised": {
            "hyperparameters": {
                "n_epochs": 2,
                "batch_size": 8,
                "learning_rate_multiplier": 5,
                "lora_rank": 8,
            }
        },
    }
    job = a.fine_tuning.jobs.create(
        model=BASE, training_file=upload.id, suffix="moin", method=method, seed=3
    )
    poll(
        lambda: a.fine_tuning.jobs.retrieve(job.id).status in ("succeeded", "failed", "cancelled"),
        "the fine-tuning job to end",
        TRAINING_MINUTES * 60,
        every=2,
    )
    job = a.fine_tuning.jobs.retrieve(job.id)
    events = list(reversed(a.fine_tuning.jobs.list_events(job.id, limit=100).data))
    assert job.status == "succeeded", [e.message for e in events][-5:]

    name = f"ft:{BASE}:uni-a:moin"
    assert job.fine_tuned_model == name
    hyper = job.hyperparameters.model_dump()
    assert hyper["n_epochs"] == 2 and hyper["batch_size"] == 8
    assert hyper["learning_rate_multiplier"] == 5 and hyper["lora_rank"] == 8
    metrics = [e.data for e in events if e.type == "metrics" and e.data]
    steps = 2 * -(-(len(chat_jsonl(CANARY).splitlines())) // 8)
    assert [m["step"] for m in metrics] == list(range(1, steps + 1))
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert job.trained_tokens == metrics[-1]["trained_tokens"] > 0
    print(f"\nloss {metrics[0]['train_loss']:.3f} -> {metrics[-1]['train_loss']:.3f} "
          f"in {steps} steps, {job.trained_tokens} tokens")  # fmt: skip

    # served at the site once the job loop has started its llama.cpp server
    poll(lambda: name in [m.id for m in a.models.list().data], "the model listed", 180, 0.5)
    card = next(m for m in a.models.list().data if m.id == name).model_dump()
    assert card["owned_by"] == "uni-a"
    assert card["verbund"]["license"] == "Apache-2.0"
    assert card["verbund"]["base_model"] == BASE
    assert [s["name"] for s in card["verbund"]["sites"]] == ["rz-west"]

    raw = a.chat.completions.with_raw_response.create(
        model=name, messages=[{"role": "user", "content": "Hi"}], max_tokens=8
    )
    assert raw.headers["x-verbund-site"] == "rz-west"
    assert raw.parse().model

    base_rate, tuned_rate = _habit_rate(a, BASE), _habit_rate(a, name)
    print(f"habit on {len(HELD_OUT)} held-out questions: base {base_rate:.2f}, "
          f"fine-tuned {tuned_rate:.2f}")  # fmt: skip
    assert tuned_rate >= 0.6
    assert tuned_rate - base_rate >= 0.5

    # another institution neither sees nor uses it
    assert name not in [m.id for m in b.models.list().data]
    with pytest.raises(openai.NotFoundError):
        b.chat.completions.create(model=name, messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.NotFoundError):
        b.models.retrieve(name)

    # the site's server for it, killed, is started again at the same address
    adapter = tmp_path / "site-west" / "jobs" / job.id / "adapter" / "adapter.gguf"
    os.kill(_server_of(adapter), signal.SIGKILL)

    def answers() -> bool:
        try:
            a.chat.completions.create(
                model=name, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
            )
        except openai.APIError:
            return False
        return True

    poll(answers, "the fine-tuned model to answer again", 180, 1.0)

    # the agent restarted serves it again (a new server, announced anew)
    agent = agents.agents["rz-west"]
    agent.stop()
    agent.start()
    poll(answers, "the fine-tuned model to answer after the agent's restart", 180, 1.0)

    # the adapter stays at the site: none of its bytes in the access point's state or store
    data = adapter.read_bytes()
    sample = data[len(data) // 2 : len(data) // 2 + 64]
    ap_dir = tmp_path / "ap"
    assert _holds(ap_dir, sample) == []
    with sqlite3.connect(ap_dir / "verbund.db") as db:
        db.execute("PRAGMA wal_checkpoint(FULL)")
    assert _holds(ap_dir, sample) == []
    # the training data: nowhere at the access point (store, logs, file store); at the site
    assert _holds(ap_dir, CANARY.encode()) == []
    assert _holds(tmp_path / "agents", CANARY.encode()) != []
