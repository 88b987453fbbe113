"""The objects the Kubernetes API stand-in (``kube_api.py``) and its Job controller (``batch_jobs.py``) share: API
errors as ``Status`` bodies, label/field selectors, resource quantities, and the kubelet's runtime state of a pod
(its containers and each container's runs). See ``kube_api.py`` for what is mirrored from where.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime
import re
import subprocess
from typing import Any, Callable, Mapping

NODE_NAME = "kube-api-stand-in-node"
DEFAULT_GRACE_S = 30.0

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN = re.compile(rf"^{DNS1123_LABEL}(\.{DNS1123_LABEL})*$")
PYTHON_COMMAND = re.compile(r"^python(3(\.\d+)?)?$")


def timestamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
    if details:
        body["details"] = details
    return body


class ApiError(Exception):
    """An error the API answers with a ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.body = status_body(code, reason, message, details)
        self.code = code


def not_found(resource: str, name: str, group: str = "") -> ApiError:
    qualified = f"{resource}.{group}" if group else resource
    return ApiError(404, "NotFound", f'{qualified} "{name}" not found',
                    {"name": name, **({"group": group} if group else {}), "kind": resource})


# ---- selectors and quantities ------------------------------------------------------------------------

def parse_label_selector(text: str) -> list[Callable[[Mapping[str, str]], bool]]:
    """Equality- and set-based label selector terms (``a=b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``,
    ``a``, ``!a``), AND-ed."""
    terms: list[Callable[[Mapping[str, str]], bool]] = []
    for raw in re.findall(r"(?:[^,(]|\([^)]*\))+", text or ""):
        term = raw.strip()
        if not term:
            continue
        m = re.fullmatch(r"(\S+)\s+(in|notin)\s+\(([^)]*)\)", term)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            if op == "in":
                terms.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                terms.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
            continue
        m = re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*(\S*)", term)
        if m:
            key, op, value = m.groups()
            if op == "!=":
                terms.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                terms.append(lambda labels, k=key, v=value: labels.get(k) == v)
            continue
        if term.startswith("!"):
            terms.append(lambda labels, k=term[1:].strip(): k not in labels)
        elif re.fullmatch(r"[^=!\s]+", term):
            terms.append(lambda labels, k=term: k in labels)
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")
    return terms


def parse_field_selector(text: str) -> list[tuple[str, str, str]]:
    terms = []
    for term in filter(None, (t.strip() for t in (text or "").split(","))):
        m = re.fullmatch(r"([^=!]+?)\s*(==|=|!=)\s*(.*)", term)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid selector: '{text}'; can't understand '{term}'")
        terms.append((m.group(1), m.group(2), m.group(3)))
    return terms


def field_value(obj: Mapping, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return "" if value is None else str(value)


def matches(obj: dict, labels: list, fields: list) -> bool:
    obj_labels = obj.get("metadata", {}).get("labels") or {}
    if not all(term(obj_labels) for term in labels):
        return False
    for path, op, value in fields:
        equal = field_value(obj, path) == value
        if equal != (op != "!="):
            return False
    return True


_SUFFIXES = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60,
             "n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}


def parse_quantity(text: Any) -> float:
    """A Kubernetes resource quantity (``500m``, ``4``, ``16Gi``, ``1e3``) as a number."""
    s = str(text).strip()
    m = re.fullmatch(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?", s)
    if not m:
        raise ValueError(f"quantities must match the regular expression "
                         f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$', got {s!r}")
    return float(m.group(1)) * _SUFFIXES[m.group(2) or ""]


def pod_requests(pod_spec: dict) -> dict[str, float]:
    total: dict[str, float] = collections.defaultdict(float)
    for container in pod_spec.get("containers") or []:
        resources = container.get("resources") or {}
        # API defaulting: requests default to limits.
        requests = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        for name, value in requests.items():
            total[name] += parse_quantity(value)
    return dict(total)


def parse_bool(value: str | None) -> bool:
    """A boolean query parameter as Go's strconv.ParseBool reads it (the Python client sends "True")."""
    return value in ("1", "t", "T", "TRUE", "true", "True")


# ---- runtime state -------------------------------------------------------------------------------------

@dataclasses.dataclass
class Instance:
    """One run of a container: a process, its log file and how it ended."""
    container_id: str
    log_path: str
    started_at: str
    proc: subprocess.Popen | None = None
    terminated: dict | None = None


@dataclasses.dataclass
class Container:
    spec: dict
    restart_count: int = 0
    instances: list[Instance] = dataclasses.field(default_factory=list)
    waiting: dict | None = dataclasses.field(default_factory=lambda: {"reason": "ContainerCreating"})
    next_start: float = 0.0        # monotonic time of the next (re)start or pull attempt
    backoff_s: float = 0.0
    pull_failures: int = 0
    final: bool = False            # terminated and not going to be restarted

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def current(self) -> Instance | None:
        return self.instances[-1] if self.instances else None

    @property
    def proc(self) -> subprocess.Popen | None:
        """The current instance's process until the kubelet has reaped it (so its process group id is reserved)."""
        current = self.current
        return current.proc if current and current.proc and current.terminated is None else None

    def last_state(self) -> Instance | None:
        """The instance ``lastState.terminated`` describes."""
        ended = [i for i in self.instances if i.terminated is not None]
        current = self.current
        if self.waiting is not None or (current is not None and current.terminated is None):
            return ended[-1] if ended else None
        return ended[-2] if len(ended) >= 2 else None


@dataclasses.dataclass
class Pod:
    obj: dict
    containers: list[Container]
    owner: tuple | None                         # (namespace, tfjob name) or ("jobs.batch", namespace, name)
    requests: dict[str, float]
    log_dir: str
    scheduled: bool = False
    scheduling_failed_at: float = 0.0
    delete_requested: float | None = None       # monotonic
    grace_s: float = DEFAULT_GRACE_S
    sigkill_sent: bool = False
    own_network: bool = False                   # a network namespace of its own (pods of Jobs: pod_network.py)
    ip: str | None = None                       # its address there, once the sandbox exists
    sandbox_retry_at: float = 0.0

    @property
    def name(self) -> str:
        return self.obj["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.obj["metadata"]["namespace"]

    @property
    def phase(self) -> str:
        return self.obj["status"].get("phase", "Pending")

    def alive(self) -> bool:
        return any(c.proc is not None for c in self.containers)
