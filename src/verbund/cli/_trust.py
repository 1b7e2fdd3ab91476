"""``verbund audit checkpoint`` / ``verify --checkpoints`` / ``keygen``: a partner's
checks of an access point's audit chain, with checkpoints it keeps itself.

A partner keeps its copies of the checkpoints in a directory of its own
(``--keep DIR``, file ``checkpoints.jsonl``), outside the database whose history they
vouch for: whoever controls that database cannot then delete them too.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from verbund.cli._output import fail
from verbund.cli._target import session

_KEEP = typer.Option("--keep", help="Directory where this partner keeps its checkpoints.")


def _held(directory: Path | None) -> list[Any]:
    from verbund.trust import Checkpoint

    if directory is None or not (directory / "checkpoints.jsonl").exists():
        return []
    lines = (directory / "checkpoints.jsonl").read_text(encoding="utf-8").splitlines()
    return [Checkpoint.from_json(json.loads(line)) for line in lines if line.strip()]


def _keep(directory: Path, checkpoints: list[Any]) -> int:
    """Add checkpoints not yet kept; returns how many are kept in all."""
    kept = {(c.signer, c.chain, c.index, c.hash): c for c in _held(directory)}
    for c in checkpoints:
        kept.setdefault((c.signer, c.chain, c.index, c.hash), c)
    directory.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(c.to_json(), sort_keys=True) for c in kept.values()]
    (directory / "checkpoints.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(kept)


def _chain_hashes(ctx: typer.Context) -> list[str]:
    """The chain as the access point exports it, checked link by link here."""
    from verbund.audit import verify_chain

    entries: list[dict[str, Any]] = []
    after = 0
    while rows := session(ctx).call("GET", "/admin/audit", params={"after": after})["data"]:
        entries.extend(rows)
        after = rows[-1]["seq"]
    linked = verify_chain(entries)
    if not linked.ok:
        raise fail(f"audit log BROKEN at entry {linked.first_broken}: {linked.reason}", 2)
    return [e["hash"] for e in entries]


def _keys(ctx: typer.Context, config: Path | None) -> tuple[Any, str, list[Any]]:
    """Partner keys (from the federation config if given, else as the access point
    announces them), the chain's name, and the checkpoints the access point holds."""
    from verbund.config import load_config
    from verbund.trust import Checkpoint, PartnerKeys

    answer = session(ctx).call("GET", "/admin/audit/checkpoints")
    held = [Checkpoint.from_json(c) for c in answer["data"]]
    if config is not None:
        keys = dict(load_config(config).trust.partners)
    else:
        keys = answer["public_keys"]
        typer.echo("note: partner keys as the access point announces them (give --config)")
    return PartnerKeys(keys), answer["chain"], held


def checkpoint(
    ctx: typer.Context,
    keep: Annotated[Path | None, _KEEP] = None,
    key_file: Annotated[
        Path | None, typer.Option("--key-file", help="Sign the head with this partner's key.")
    ] = None,
    signer: Annotated[str, typer.Option("--as", help="Partner name for --key-file.")] = "",
    config: Annotated[
        Path | None, typer.Option("--config", help="Federation config with partner keys.")
    ] = None,
    sites: Annotated[
        bool,
        typer.Option(
            "--sites", help="Have the sites' agents sign the head with their own keys instead."
        ),
    ] = False,
) -> None:
    """Sign the chain's head (the access point's key, yours with --key-file, or the
    sites' agents' keys with --sites) and exchange checkpoints: yours go to the access
    point, its go into --keep."""
    from verbund.trust import SigningKey, check_against_checkpoints, sign_checkpoint

    mine = _held(keep)
    signed: dict[str, Any] | None = None
    if sites:
        answer = session(ctx).call("POST", "/admin/audit/checkpoints", json={"sites": True})
        for site, what in sorted((answer.get("sites") or {}).items()):
            typer.echo(f"site {site}: {what}")
    elif key_file is None:
        answer = session(ctx).call(
            "POST", "/admin/audit/checkpoints", json={"sign": True, "checkpoints": []}
        )
        signed = answer["signed"]
    else:
        if not signer:
            raise fail("--key-file needs --as NAME (the partner name the key is known by)")
        key = SigningKey.load(signer, file=str(key_file))
        assert key is not None
        keys, chain, held = _keys(ctx, config)
        hashes = _chain_hashes(ctx)
        verdict = check_against_checkpoints(hashes, [*held, *mine], keys, chain)
        if not verdict.ok:
            raise fail(f"not signing: {verdict.describe()}", 2)
        head = hashes[-1] if hashes else "0" * 64
        own = sign_checkpoint(key, chain, len(hashes), head, time.time())
        mine.append(own)
        signed = own.to_json()
    session(ctx).call(
        "POST", "/admin/audit/checkpoints", json={"checkpoints": [c.to_json() for c in mine]}
    )
    if signed is not None:
        typer.echo(
            f"signed entry #{signed['index']} ({signed['hash'][:12]}…) as {signed['signer']}"
        )
    if keep is not None:
        from verbund.trust import Checkpoint

        answer = session(ctx).call("GET", "/admin/audit/checkpoints")
        n = _keep(keep, [*mine, *(Checkpoint.from_json(c) for c in answer["data"])])
        typer.echo(f"{n} checkpoints kept in {keep}")


def verify_checkpoints(ctx: typer.Context, directory: Path | None, config: Path | None) -> None:
    """``verbund audit verify --checkpoints DIR``: the chain against every checkpoint
    held here and at the access point; exit code 2 names what disagrees."""
    from verbund.trust import check_against_checkpoints

    keys, chain, held = _keys(ctx, config)
    hashes = _chain_hashes(ctx)
    verdict = check_against_checkpoints(hashes, [*held, *_held(directory)], keys, chain)
    for c in verdict.rejected:
        typer.echo(f"ignored: checkpoint of entry #{c.index} claimed by {c.signer}: bad signature")
    if not verdict.ok:
        raise fail(f"audit log DISAGREES: {verdict.describe()}", 2)
    typer.echo(f"audit log OK: {verdict.describe()}")


def keygen(
    out: Annotated[Path, typer.Argument(help="Where to write the private key (PEM, 0600).")],
) -> None:
    """Make a partner's Ed25519 key; prints the public key for the partners' configs."""
    from verbund.trust import generate_key_file

    try:
        typer.echo(generate_key_file(out))
    except FileExistsError:
        raise fail(f"{out} exists; not overwriting a key") from None


def countersigned(
    settlement: dict[str, Any],
    directory: Path | None,
    config: Path | None,
    from_sites: bool = False,
) -> dict[str, Any]:
    """The settlement cross-checked against the signed statements in ``directory`` and,
    with ``from_sites``, those fetched from the sites' agents themselves."""
    from dataclasses import asdict

    from verbund.config import load_config
    from verbund.trust import PartnerKeys, UsageStatement, countersign

    if config is None:
        raise fail("--statements/--from-sites need --config (the federation config)")
    loaded = load_config(config)
    keys = PartnerKeys(dict(loaded.trust.partners))
    found: list[UsageStatement] = []
    if directory is not None:
        try:
            found = [
                UsageStatement.from_json(json.loads(p.read_text(encoding="utf-8")))
                for p in sorted(directory.glob("*.json"))
            ]
        except (OSError, ValueError) as exc:
            raise fail(f"{directory}: {exc}") from None
    unreachable: dict[str, str] = {}
    if from_sites:
        fetched, unreachable = _fetch_statements(loaded, keys, settlement["month"])
        found += fetched
    direct = {s.name for s in loaded.sites if s.agent_url and s.ingress == "direct"}
    out = asdict(countersign(settlement, found, keys, direct))
    out["unreachable"] = unreachable
    return out


def _fetch_statements(config: Any, keys: Any, month: str) -> tuple[list[Any], dict[str, str]]:
    """Each site agent's signed statement for ``month``, fetched with the credential in
    the site's ``agent_key_env``; the key an agent announces counts only where none is
    configured (as at the access points). Sites that could not be asked, and why."""
    import os

    import httpx

    from verbund.federation import CATALOGUE_PATH, USAGE_STATEMENTS_PATH, parse_catalogue
    from verbund.federation._agent import tls_context
    from verbund.trust import UsageStatement

    found: list[UsageStatement] = []
    problems: dict[str, str] = {}
    for site in config.sites:
        if not site.agent_url:
            continue
        key = os.environ.get(site.agent_key_env or "", "")
        if not key:
            problems[site.name] = f"${site.agent_key_env} is not set"
            continue
        verify = tls_context(site) if site.agent_url.startswith("https://") else True
        try:
            with httpx.Client(
                base_url=site.agent_url,
                headers={"authorization": f"Bearer {key}"},
                verify=verify,
                timeout=30,
                trust_env=False,
            ) as client:
                cat = client.get(CATALOGUE_PATH)
                cat.raise_for_status()
                keys.announce(site.name, parse_catalogue(site.name, cat.content).site.signing_key)
                resp = client.get(USAGE_STATEMENTS_PATH, params={"month": month})
                resp.raise_for_status()
                found.append(UsageStatement.from_json(resp.json()))
        except (httpx.HTTPError, ValueError) as exc:
            problems[site.name] = f"{type(exc).__name__}: {exc}"[:300]
    return found, problems


def print_countersigned(checked: dict[str, Any]) -> None:
    typer.echo(
        f"\ncountersigned by: {', '.join(checked['statements']) or 'no site'};"
        f" inputs and statements sha256 {checked['sha256'][:16]}"
    )
    for site, why in checked.get("unreachable", {}).items():
        typer.echo(f"no statement from {site}: {why}")
    for site in checked["rejected"]:
        typer.echo(f"ignored: statement claimed by {site}: bad signature or other month")
    for d in checked["differences"]:
        r, s = d["recorded"], d["stated"]
        typer.echo(
            f"DIFFERENCE at {d['site']} for {d['institution']}: access points recorded "
            f"{r['requests']} requests ({r['prompt_tokens']}+{r['completion_tokens']} tokens), "
            f"the site's signed statement says {s['requests']} "
            f"({s['prompt_tokens']}+{s['completion_tokens']})"
        )
    for site in checked.get("direct", []):
        typer.echo(
            f"{site} is reached directly (ingress direct): its agent sees no request, so its"
            " figures per institution are not compared; its engines' token counters per"
            " model are (below)"
        )
    for d in checked["node_differences"]:
        r, s = d["recorded"], d["stated"]
        typer.echo(
            f"NODE TIME DIFFERENCE at {d['site']} for {d['institution']} ({d['model']}):"
            f" access points recorded {r['cpu_seconds']:g} CPU s, {r['gpu_seconds']:g} GPU s,"
            f" the site's signed statement says {s['cpu_seconds']:g} CPU s,"
            f" {s['gpu_seconds']:g} GPU s"
        )
    for d in checked["engine_differences"]:
        r, s = d["recorded"], d["stated"]
        typer.echo(
            f"ENGINE COUNTER DIFFERENCE at {d['site']} for {d['model']} (all institutions):"
            f" access points recorded {r['prompt_tokens']}+{r['completion_tokens']} tokens,"
            f" the site's engines counted {s['prompt_tokens']}+{s['completion_tokens']}"
        )
    if not differs(checked):
        typer.echo("the access points' records agree with every signed statement")
    for n in checked.get("node_time", []):
        stated = f"{n['cpu_seconds']:g} CPU s, {n['gpu_seconds']:g} GPU s"
        if n["recorded"] is None:
            typer.echo(
                f"node time of on-demand instances ({n['model']}) stated by {n['site']}:"
                f" {stated} (measured by the site only; no counterpart at the access points,"
                " not cross-checked)"
            )
        else:
            typer.echo(f"node time at {n['site']} for {n['institution']} ({n['model']}): {stated}")
    for e in checked.get("engine", []):
        r = e["recorded"]
        if e["stated"] is None:
            typer.echo(
                f"not verifiable at {e['site']} for {e['model']}: its engines expose no token"
                f" counters (access points recorded {r['prompt_tokens']}+"
                f"{r['completion_tokens']} tokens)"
            )


def differs(checked: dict[str, Any]) -> bool:
    """Any difference between the access points' records and a signed statement."""
    return any(checked.get(k) for k in ("differences", "node_differences", "engine_differences"))
