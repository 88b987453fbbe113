"""Pod networking for the Kubernetes API stand-in: a network namespace per pod, and the cluster DNS as hosts files.

On a cluster every pod has an IP address of its own, so all replicas of a training Job listen on the same port,
and a headless Service gives pod ``<hostname>`` with ``subdomain: <service>`` the DNS name
``<hostname>.<service>.<namespace>.svc.cluster.local`` (Kubernetes docs, "DNS for Services and Pods": A records
for the ready pods a headless Service selects, and for not-ready ones with ``publishNotReadyAddresses``).

Here (root and iproute2 needed; ``available()`` says why not):

- a bridge with the node's address 10.244.0.1/24 (the first pod CIDR of many clusters); each pod gets a namespace
  ``bk-<pid>-<n>-p<i>`` with an ``eth0`` veth on that bridge, an address in 10.244.0.0/24 and its loopback up.
  Where the stand-in itself runs in the machine's own network namespace the bridge goes into a namespace of its
  own (``bk-<pid>-<n>-node``), so nothing is added to the machine's network and pods reach only each other. Where
  it runs in a test's namespace (tests/standins/gcs_netns.py: kfp-local on gs://), the bridge goes there: pods
  reach the node at 10.244.0.1, and the node's hosts-file names that point at its loopback (storage.googleapis.com
  and friends there) point pods at 10.244.0.1, as a cluster's DNS would forward them upstream; the services behind
  them must listen on all of the node's addresses;
- the pod's processes run through ``ip netns exec``, which enters the namespace and bind-mounts
  ``/etc/netns/<name>/hosts`` and ``resolv.conf`` over ``/etc`` for them (ip-netns(8)), then execs the command (same
  pid, so the kubelet's process-group handling is unchanged);
- cluster DNS: every pod's hosts file lists the kubelet's own entries (localhost, the pod's address with its
  hostname, as the kubelet's managed /etc/hosts does) and the records of every headless Service; the files are
  rewritten in place (the bind mounts keep pointing at them) whenever the records change, and glibc and c-ares read
  the hosts file on each lookup. ``resolv.conf`` has the cluster's search path and a nameserver nobody answers on,
  so names that are not records fail at once.

Namespaces of a stand-in whose process died are swept at the next start (``sweep_stale``).
"""
from __future__ import annotations

import ipaddress
import itertools
import logging
import os
import shutil
import subprocess
from typing import Iterable, Mapping

logger = logging.getLogger(__name__)

PREFIX = "bk-"
NETNS_ETC = "/etc/netns"
POD_CIDR = ipaddress.ip_network("10.244.0.0/24")
CLUSTER_DOMAIN = "cluster.local"
_instances = itertools.count()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def available() -> str | None:
    """None when pod namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "pod network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "pod network namespaces need iproute2's ip"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(name: str) -> None:
    _ip("netns", "del", name, check=False)
    shutil.rmtree(os.path.join(NETNS_ETC, name), ignore_errors=True)


def sweep_stale() -> list[str]:
    """Deletes the pod and node namespaces of stand-ins whose process is gone; returns their names."""
    if available() is not None:
        return []
    out = _ip("netns", "list", check=False).stdout
    stale = []
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        if name.startswith(PREFIX) and len(parts) >= 3 and parts[1].isdigit() and not _pid_alive(int(parts[1])):
            _remove(name)
            stale.append(name)
    return stale


def _loopback_names(path: str) -> list[str]:
    """The names a hosts file gives loopback addresses, but the localhost ones."""
    names = []
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return names
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        try:
            loopback = ipaddress.ip_address(fields[0]).is_loopback
        except ValueError:
            continue
        names += [n for n in fields[1:] if loopback and "localhost" not in n and "loopback" not in n
                  and n not in names]
    return names


def dns_names(hostname: str, subdomain: str, namespace: str) -> list[str]:
    """The A-record names of a pod with ``hostname`` and ``subdomain`` (a headless Service) in ``namespace``."""
    return [f"{hostname}.{subdomain}.{namespace}.svc.{CLUSTER_DOMAIN}", f"{hostname}.{subdomain}.{namespace}.svc"]


class PodNetwork:
    """The node bridge and one namespace per pod; see the module docstring. Not thread-safe: the stand-in calls it
    from its control loop, under its lock."""

    def __init__(self):
        instance = next(_instances)
        self.name = f"{PREFIX}{os.getpid()}-{instance}"
        # In a named namespace (a test's) or the machine's own? (init's namespace is not readable in a container.)
        self.on_machine = not _ip("netns", "identify", str(os.getpid()), check=False).stdout.strip()
        self.node = f"{self.name}-node" if self.on_machine else None
        self.bridge = "br0" if self.on_machine else f"bk{os.getpid() % 100000}-{instance}"
        self._veth = f"v{os.getpid() % 100000}-{instance}-"
        self._node_names: dict[str, str] = {}
        self._started = False
        self._pods: dict[str, tuple[str, str, str]] = {}     # pod uid -> (netns, ip, hostname)
        self._free = list(POD_CIDR.hosts())[1:]              # .1 is the bridge's
        self._records: dict[str, str] = {}                    # DNS name -> ip
        self._counter = itertools.count()

    def _start(self) -> None:
        if self._started:
            return
        sweep_stale()
        node_ip = str(next(POD_CIDR.hosts()))
        if self.on_machine:
            _ip("netns", "add", self.node)
            self._started = True
            _ip(*self._on_node("link", "set", "lo", "up"))
        else:
            self._started = True
            self._node_names = {name: node_ip for name in _loopback_names("/etc/hosts")}
        _ip(*self._on_node("link", "add", self.bridge, "type", "bridge"))
        _ip(*self._on_node("addr", "add", f"{node_ip}/{POD_CIDR.prefixlen}", "dev", self.bridge))
        _ip(*self._on_node("link", "set", self.bridge, "up"))
        logger.info("pod network: bridge %s on %s in %s; node names for pods: %s", self.bridge, POD_CIDR,
                    f"namespace {self.node}" if self.node else "this namespace", sorted(self._node_names) or "none")

    def _on_node(self, *args: str) -> tuple[str, ...]:
        return ("-n", self.node, *args) if self.node else args

    def add_pod(self, uid: str, hostname: str, namespace: str) -> tuple[str, str]:
        """A namespace with an address for pod ``uid`` -> (namespace name, IP). Raises RuntimeError (with ip's
        message) when it cannot be made."""
        if uid in self._pods:
            netns, ip, _ = self._pods[uid]
            return netns, ip
        self._start()
        if not self._free:
            raise RuntimeError(f"pod network {POD_CIDR} has no free address")
        n = next(self._counter)
        netns, veth, ip = f"{self.name}-p{n}", f"{self._veth}{n}", str(self._free.pop(0))
        try:
            _ip("netns", "add", netns)
            self._pods[uid] = (netns, ip, hostname)
            _ip(*self._on_node("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns))
            _ip(*self._on_node("link", "set", veth, "master", self.bridge, "up"))
            _ip("-n", netns, "addr", "add", f"{ip}/{POD_CIDR.prefixlen}", "dev", "eth0")
            _ip("-n", netns, "link", "set", "eth0", "up")
            _ip("-n", netns, "link", "set", "lo", "up")
        except subprocess.CalledProcessError as exc:
            self.remove_pod(uid)
            raise RuntimeError(f"could not set up the pod network namespace {netns}: {exc.stderr.strip()}") from None
        os.makedirs(os.path.join(NETNS_ETC, netns), exist_ok=True)
        with open(os.path.join(NETNS_ETC, netns, "resolv.conf"), "w") as f:
            f.write(f"search {namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\n"
                    "nameserver 127.0.0.53\noptions ndots:5 timeout:1 attempts:1\n")
        self._write_hosts(netns, ip, hostname)
        return netns, ip

    def remove_pod(self, uid: str) -> None:
        entry = self._pods.pop(uid, None)
        if entry is None:
            return
        netns, ip, _ = entry
        _remove(netns)
        self._free.append(ipaddress.ip_address(ip))

    def set_records(self, records: Mapping[str, str]) -> None:
        """The cluster DNS (name -> IP); every pod's hosts file is rewritten when it changed."""
        if dict(records) == self._records:
            return
        self._records = dict(records)
        for netns, ip, hostname in self._pods.values():
            self._write_hosts(netns, ip, hostname)

    def _write_hosts(self, netns: str, ip: str, hostname: str) -> None:
        own = [name for name, address in self._records.items() if address == ip]
        lines = ["# Kubernetes-managed hosts file (the kube API stand-in's pod network).",
                 "127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                 f"{ip}\t{' '.join([*own, hostname])}", "# cluster DNS records"]
        lines += [f"{address}\t{name}" for name, address in sorted(self._records.items()) if address != ip]
        if self._node_names:
            lines.append("# the node's own names, at its pod-network address")
            lines += [f"{address}\t{name}" for name, address in sorted(self._node_names.items())]
        path = os.path.join(NETNS_ETC, netns, "hosts")
        with open(path, "a+") as f:      # in place: a bind mount of the old file would not see a replaced one
            f.seek(0)
            f.truncate()
            f.write("\n".join(lines) + "\n")

    def command(self, uid: str, argv: Iterable[str]) -> list[str]:
        netns, _, _ = self._pods[uid]
        return ["ip", "netns", "exec", netns, *argv]

    def ip(self, uid: str) -> str | None:
        entry = self._pods.get(uid)
        return entry[1] if entry else None

    def stop(self) -> None:
        for uid in list(self._pods):
            self.remove_pod(uid)
        if self._started:
            if self.node:
                _remove(self.node)
            else:
                _ip("link", "del", self.bridge, check=False)
            self._started = False
