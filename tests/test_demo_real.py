"""The real embedded demo federation: llama.cpp servers with SmolLM2, the openai SDK, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from harness.demo import Demo, pid_alive, start_demo
from harness.people import csrf_headers, sign_in
from harness.polling import poll
from verbund.demo import default_demo_config

pytestmark = pytest.mark.real
MODEL = "smollm2-135m"
ON_DEMAND = "smollm2-135m-ondemand"  # started on the first request, stopped after 30 s idle


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    d = start_demo(tmp_path_factory.mktemp("demo") / "state")
    yield d
    d.stop()


def client(demo: Demo, institution: str = "uni-a") -> openai.OpenAI:
    return openai.OpenAI(base_url=demo.url + "/v1", api_key=demo.key(institution), max_retries=0)


def usage_rows(demo: Demo, group_by: str = "institution") -> list[dict[str, object]]:
    with demo.admin() as admin:
        return list(admin.get("/admin/usage", params={"group_by": group_by}).json()["data"])


def verbund(demo: Demo, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verbund.cli", *args, "--state-dir", str(demo.state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_chat_with_the_openai_sdk(demo: Demo) -> None:
    before = sum(int(r["requests"]) for r in usage_rows(demo))
    raw = client(demo).chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hello in one word."}],
        max_tokens=16,
    )
    answer = raw.parse()
    assert answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    assert raw.headers["x-verbund-site"] in {"rz-west", "rz-sued", "rz-ost"}
    rows = usage_rows(demo)
    assert sum(int(r["requests"]) for r in rows) == before + 1
    assert sum(int(r["completion_tokens"]) for r in rows) >= answer.usage.completion_tokens


def test_streaming_chat(demo: Demo) -> None:
    stream = client(demo).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count to three."}],
        max_tokens=16,
        stream=True,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert all(c.choices for c in chunks), "a usage chunk the client did not ask for"


def test_streaming_with_usage_requested(demo: Demo) -> None:
    stream = client(demo).chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert any(c.choices and c.choices[0].delta.content for c in chunks)


def test_completions(demo: Demo) -> None:
    out = client(demo).completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=8
    )
    assert out.choices[0].text.strip()
    streamed = client(demo).completions.create(
        model=MODEL, prompt="One, two,", max_tokens=6, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices).strip()


def test_models_and_errors(demo: Demo) -> None:
    assert {m.id for m in client(demo).models.list()} == {
        MODEL,
        "smollm2-135m-embed",
        "digits",
        "digits-torch",
        "digits-onnx",
        "digits-keras",
        ON_DEMAND,
    }
    with pytest.raises(openai.NotFoundError) as nf:
        client(demo).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}]
        )
    assert nf.value.code == "model_not_found"
    bad = openai.OpenAI(base_url=demo.url + "/v1", api_key="vb-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def _status(demo: Demo, model: str) -> str:
    with httpx.Client(base_url=demo.url, trust_env=False, timeout=10) as c:
        r = c.get(f"/v1/models/{model}", headers={"authorization": f"Bearer {demo.key('uni-a')}"})
    return str(r.json()["verbund"]["status"])


def test_an_on_demand_model_starts_on_the_first_request_and_stops_when_idle(demo: Demo) -> None:
    poll(lambda: _status(demo, ON_DEMAND) == "stopped", "the on-demand model stopped", 60)
    answer = client(demo).chat.completions.create(
        model=ON_DEMAND, messages=[{"role": "user", "content": "Hello"}], max_tokens=8
    )
    assert answer.choices[0].message.content
    assert _status(demo, ON_DEMAND) == "ready"
    poll(lambda: _status(demo, ON_DEMAND) == "stopped", "the idle model to stop", 90, every=0.5)


def test_sensitive_data_stays_at_the_sensitive_site(demo: Demo) -> None:
    c = client(demo, "klinikum-c")  # default data class: sensitive
    for _ in range(3):
        raw = c.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
        assert raw.headers["x-verbund-site"] == "rz-west"


def test_cli_keys_usage_sites_audit(demo: Demo) -> None:
    created = verbund(demo, "keys", "create", "--institution", "uni-b", "--name", "lms", "--json")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    c = openai.OpenAI(base_url=demo.url + "/v1", api_key=key["key"], max_retries=0)
    assert c.models.list().data
    revoked = verbund(demo, "keys", "revoke", key["id"])
    assert revoked.returncode == 0
    with pytest.raises(openai.AuthenticationError):
        c.models.list()

    sites = verbund(demo, "sites")
    assert sites.returncode == 0 and "rz-ost" in sites.stdout and "up" in sites.stdout
    csv_out = verbund(demo, "usage", "--group-by", "institution,site", "--format", "csv")
    assert csv_out.stdout.splitlines()[0].startswith("institution,site,requests")
    as_json = json.loads(verbund(demo, "usage", "--format", "json").stdout)
    assert any(r["institution"] == "uni-a" and r["total_tokens"] > 0 for r in as_json)
    audit = verbund(demo, "audit", "verify")
    assert audit.returncode == 0 and "chain intact" in audit.stdout


def test_drain_and_resume_through_the_cli(demo: Demo) -> None:
    assert "active -> draining" in verbund(demo, "drain", "rz-west").stdout
    try:
        for _ in range(3):
            raw = client(demo).chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
            )
            assert raw.headers["x-verbund-site"] != "rz-west"
    finally:
        assert "draining -> active" in verbund(demo, "resume", "rz-west").stdout


def _site_states(demo: Demo) -> dict[str, str]:
    status = httpx.get(demo.url + "/status", timeout=10, trust_env=False).json()
    return {s["name"]: s["state"] for s in status["sites"]}


def test_each_site_runs_its_agent(demo: Demo) -> None:
    sites = demo.info["sites"]
    assert set(sites) == {"rz-west", "rz-sued", "rz-ost"}
    status = httpx.get(demo.url + "/status", timeout=10, trust_env=False).json()
    for site in status["sites"]:
        assert site["catalogue"]["source"] == "agent" and not site["catalogue"]["stale"]
    ost = demo.backends_of("rz-ost")
    assert ost and all("/relay/" in b["url"] for b in ost)

    def operator(site: str, at: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=sites[at or site]["agent_url"],
            headers={"authorization": f"Bearer {sites[site]['operator_key']}"},
            timeout=30,
            trust_env=False,
        )

    with operator("rz-west", at="rz-sued") as stranger:
        assert stranger.post("/sites/rz-sued/drain").status_code == 401
    with operator("rz-west") as west:
        assert west.post("/sites/rz-sued/drain").status_code == 403
    try:  # both other sites drained by their operators: rz-ost serves, through its agent
        for name in ("rz-west", "rz-sued"):
            with operator(name) as op:
                assert op.post(f"/sites/{name}/drain").status_code == 200
        poll(
            lambda: _site_states(demo)["rz-west"] == _site_states(demo)["rz-sued"] == "draining",
            "the operators' drains at the access point",
            30,
            every=0.1,
        )
        raw = client(demo).chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
        assert raw.headers["x-verbund-site"] == "rz-ost"
        assert raw.parse().choices[0].message.content is not None
    finally:
        for name in ("rz-west", "rz-sued"):
            with operator(name) as op:
                op.post(f"/sites/{name}/resume")
    poll(lambda: set(_site_states(demo).values()) == {"active"}, "sites active again", 30, 0.1)


async def test_demo_people_sign_in_make_a_key_and_see_their_usage(demo: Demo) -> None:
    """The newcomer's path without a browser: sign in as a demo person at the demo's
    identity provider, make a key, call a model with it, find the call in their usage."""
    people = demo.info["people"]
    assert demo.info["console"] == demo.url + "/console"
    assert {p["role"] for p in people.values()} == {
        "member",
        "institution_admin",
        "site_operator",
        "auditor",
    }
    login = next(
        n for n, p in people.items() if p["role"] == "member" and p["institution"] == "uni-a"
    )
    async with httpx.AsyncClient(base_url=demo.url, trust_env=False, timeout=30) as browser:
        done = await sign_in(browser, demo.url, login, people[login]["password"])
        assert done.headers["location"] == "/console"
        csrf = await csrf_headers(browser, demo.url)
        made = await browser.post("/v1/me/keys", json={"name": "demo laptop"}, headers=csrf)
        assert made.status_code == 201
        key = made.json()["key"]
        async with openai.AsyncOpenAI(base_url=demo.url + "/v1", api_key=key, max_retries=0) as sdk:
            await sdk.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
            )
        usage = (await browser.get("/v1/me/usage", params={"group_by": "model"})).json()
        assert [(r["model"], r["requests"]) for r in usage["data"]] == [(MODEL, 1)]
        operator = next(n for n, p in people.items() if p["role"] == "site_operator")
        await sign_in(browser, demo.url, operator, people[operator]["password"])
        own = people[operator]["site"]
        other = next(s for s in ("rz-west", "rz-sued", "rz-ost") if s != own)
        csrf = await csrf_headers(browser, demo.url)
        assert (await browser.post(f"/admin/sites/{other}/drain", headers=csrf)).status_code == 403
        assert (await browser.post(f"/admin/sites/{own}/drain", headers=csrf)).status_code == 200
        assert (await browser.post(f"/admin/sites/{own}/resume", headers=csrf)).status_code == 200


def test_busy_port_gives_a_clear_message(demo: Demo, tmp_path: Path) -> None:
    port = demo.url.rsplit(":", 1)[1]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "verbund.cli",
            "up",
            "--port",
            port,
            "--state-dir",
            str(tmp_path / "other"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert f"Port {port} on 127.0.0.1 is already in use" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_sigterm_stops_every_child(tmp_path: Path) -> None:
    d = start_demo(tmp_path / "state")
    pids = d.backend_pids()
    # every model server demo.toml launches; three site agents
    launched = {
        b["name"]
        for site in default_demo_config()["sites"]
        for b in site.get("backends", [])
        if b.get("launch")
    }
    assert set(pids) == launched
    pids["identity-provider"] = int(d.info["identity_provider"]["pid"])
    agents = {f"agent {n}": int(s["pid"]) for n, s in d.info["sites"].items()}
    assert len(agents) == 3
    pids.update(agents)
    assert all(pid_alive(p) for p in pids.values())
    assert d.stop() == 0
    assert not any(pid_alive(p) for p in pids.values())


def test_training_runs_at_a_demo_sites_agent(demo: Demo) -> None:
    from harness.training import blobs_csv

    c = client(demo)
    f = c.files.create(file=("blobs.csv", blobs_csv().encode()), purpose="fine-tune")
    job = c.fine_tuning.jobs.create(model="centroid-classifier", training_file=f.id)
    poll(
        lambda: c.fine_tuning.jobs.retrieve(job.id).status in ("succeeded", "failed"),
        "the demo's training job",
        180,
        every=0.5,
    )
    done = c.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded", done.error
    site = done.model_extra["verbund"]["site"] if done.model_extra else None
    assert site in {"rz-west", "rz-ost"}  # the demo sites with a runner
    assert (demo.state_dir / "sites" / str(site) / "models" / job.id / "model.json").exists()
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [8, 0, 0, 3]}]}
    r = httpx.post(
        f"{demo.url}/v2/models/{done.fine_tuned_model}/infer",
        json=body,
        headers={"authorization": f"Bearer {demo.key('uni-a')}"},
        trust_env=False,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == [1]
