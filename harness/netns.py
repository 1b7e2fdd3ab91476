"""Sites as separate network hosts: one Linux network namespace per site, linked by veth.

Each site gets a namespace ``<tag>s<i>`` with a veth pair to the root namespace
(``10.<net>.<i>.1`` on the host side, ``10.<net>.<i>.2`` inside), a WAN delay, and the
site's engines running inside (``ip netns exec``). The access point stays in the root
namespace. ``partition`` drops every packet inside a site's namespace (nftables), so
open connections and new ones hang, as when a WAN link fails; ``heal`` undoes it.

WAN delay uses ``tc netem`` where the kernel has it. Where it does not
(``CONFIG_NET_SCH_NETEM`` unset, as on some VM kernels), a userspace relay
(:mod:`harness.tcprelay`) inside the namespace delays every chunk each way instead; the
engines then listen on the namespace's loopback behind it. :attr:`Lab.delay_method` says
which is in use. Needs root, ``ip`` (iproute2) and ``nft`` (nftables):
``scripts/_netns_env.sh`` installs the tools.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness.processes import ROOT, Process
from harness.simengine import EngineProcess, EngineSpec

ENGINE_PORT = 8000  # where the access point reaches each site's engine


class NetnsError(RuntimeError):
    pass


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def unavailable(tag: str) -> str | None:
    """None if a namespace with a veth link can be made here; else why not (really tried)."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing; run scripts/_netns_env.sh"
    if shutil.which("nft") is None:
        return "the `nft` command (nftables) is missing; run scripts/_netns_env.sh"
    ns, host_if, ns_if = f"{tag}probe", f"{tag}ph", f"{tag}pn"
    try:
        _run("ip", "netns", "add", ns)
    except NetnsError as exc:
        return f"cannot create a network namespace: {exc}"
    try:
        _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _run("ip", "link", "set", ns_if, "netns", ns)
        _run("ip", "netns", "exec", ns, "nft", "list", "ruleset")
    except NetnsError as exc:
        return f"cannot link a network namespace: {exc}"
    finally:
        _run("ip", "link", "del", host_if, check=False)
        _run("ip", "netns", "del", ns, check=False)
    return None


def _free_net() -> int:
    """A second octet x such that nothing on this host uses 10.x.0.0/16."""
    used = _run("ip", "-4", "addr").stdout + _run("ip", "-4", "route").stdout
    for x in range(200 + os.getpid() % 50, 255):
        if f"10.{x}." not in used:
            return x
    raise NetnsError("no free 10.x.0.0/16 network for the test namespaces")


@dataclass
class NetSite:
    index: int
    ns: str
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str
    delay_ms: float
    engines: list[EngineProcess] = field(default_factory=list)
    relays: list[Process] = field(default_factory=list)
    partitioned: bool = False

    @property
    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.ns]


class Lab:
    """The namespaces of one test; :meth:`close` removes everything it made."""

    def __init__(self, tag: str, log_dir: Path) -> None:
        self.tag = tag
        self.log_dir = log_dir
        self.net = _free_net()
        self.sites: list[NetSite] = []
        self.delay_method = ""

    def add_site(self, delay_ms: float) -> NetSite:
        i = len(self.sites) + 1
        site = NetSite(
            index=i,
            ns=f"{self.tag}s{i}",
            host_if=f"{self.tag}h{i}",
            ns_if=f"{self.tag}n{i}",
            host_ip=f"10.{self.net}.{i}.1",
            ns_ip=f"10.{self.net}.{i}.2",
            delay_ms=delay_ms,
        )
        self.sites.append(site)
        ns = ["ip", "netns", "exec", site.ns]
        _run("ip", "netns", "add", site.ns)
        _run("ip", "link", "add", site.host_if, "type", "veth", "peer", "name", site.ns_if)
        _run("ip", "link", "set", site.ns_if, "netns", site.ns)
        _run("ip", "addr", "add", f"{site.host_ip}/24", "dev", site.host_if)
        _run("ip", "link", "set", site.host_if, "up")
        _run(*ns, "ip", "addr", "add", f"{site.ns_ip}/24", "dev", site.ns_if)
        _run(*ns, "ip", "link", "set", site.ns_if, "up")
        _run(*ns, "ip", "link", "set", "lo", "up")
        netem = _run(
            *ns, "tc", "qdisc", "add", "dev", site.ns_if, "root", "netem",
            "delay", f"{delay_ms}ms", check=False,
        )  # fmt: skip
        self.delay_method = "tc netem" if netem.returncode == 0 else "userspace relay"
        return site

    def start_engine(self, site: NetSite, spec: EngineSpec) -> EngineProcess:
        """Run an engine inside ``site``; the access point reaches it at ns_ip:ENGINE_PORT."""
        if self.delay_method == "tc netem":
            engine = EngineProcess(spec, self.log_dir, site.ns_ip, ENGINE_PORT, site.exec_prefix)
            site.engines.append(engine)
            return engine.start()
        inner = ("127.0.0.1", ENGINE_PORT + 1)  # the namespace's own loopback
        engine = EngineProcess(
            spec, self.log_dir, site.ns_ip, ENGINE_PORT, site.exec_prefix, bind=inner
        )
        site.engines.append(engine)
        engine.launch()
        relay = Process(
            f"relay {site.ns}",
            [
                *site.exec_prefix, sys.executable, "-m", "harness.tcprelay",
                "--listen", f"{site.ns_ip}:{ENGINE_PORT}",
                "--target", f"{inner[0]}:{inner[1]}",
                "--delay-ms", str(site.delay_ms / 2),  # each way: the RTT is delay_ms
            ],
            self.log_dir / f"relay-{site.ns}.log",
            cwd=ROOT,
        ).start()  # fmt: skip
        site.relays.append(relay)
        return engine.wait_ready()

    def url(self, site: NetSite) -> str:
        return f"http://{site.ns_ip}:{ENGINE_PORT}"

    def partition(self, site: NetSite) -> None:
        """Drop every packet in and out of the site: connections hang, nothing is refused."""
        rules = (
            f"table inet {self.tag}cut {{\n"
            "  chain in { type filter hook input priority 0; policy drop; }\n"
            "  chain out { type filter hook output priority 0; policy drop; }\n"
            "}\n"
        )
        subprocess.run(
            [*site.exec_prefix, "nft", "-f", "-"],
            input=rules,
            text=True,
            check=True,
            capture_output=True,
            timeout=30,
        )
        site.partitioned = True

    def heal(self, site: NetSite) -> None:
        _run(*site.exec_prefix, "nft", "delete", "table", "inet", f"{self.tag}cut")
        site.partitioned = False

    def close(self) -> None:
        for site in self.sites:
            for engine in site.engines:
                engine.stop()
            for relay in site.relays:
                relay.stop(10)
            _run("ip", "link", "del", site.host_if, check=False)
            _run("ip", "netns", "del", site.ns, check=False)
