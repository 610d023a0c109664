"""Faults on demand: rules that make the local cloud fail the way Azure failed, so a client's
retry and error paths can be tested (LocalStack sells this as chaos engineering; moto offers
state transitions).

Rules come from a JSON file at start (the ``faults`` option, or ``LOCALCLOUD_FAULTS`` naming the
file) and from the admin route ``/_localcloud/faults`` while the cloud runs (a bearer token of
the local cloud, as for ARM): GET lists the rules with what is left of them, PUT replaces them,
POST adds one, DELETE removes them all. A file or body is a list of rules or
``{"rules": [...]}``; each rule is an object:

* what it matches: ``service`` (``identity``, ``arm``, ``batchai``, ``files``, ``blob`` or
  ``*``),
  ``method`` (``GET``... or ``*``) and ``path`` (a regular expression searched in the request
  path); for compute rules ``cluster`` or ``job`` (a regular expression on the name);
* what it does, one or more of: ``status`` (429, 500 or 503, answered with the service's
  error body and ``Retry-After: retryAfter``, default 1 second), ``latencyMs`` (added before
  the request is served), ``allocationFailure`` (true, or {"code", "message"}: a cluster's
  next allocation fails and its nodes are not added), ``nodeFailure`` (true, or
  {"afterSeconds"}: a node running a matching job turns unusable and the job fails);
* how often: ``times`` (the first N matches; unlimited without it) and ``probability``
  (0 to 1; each match fires with that chance, default 1).

A faulted request has no effect: it is answered before any handler sees it.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .connection import BLOB_PATH_PREFIX

ENVIRONMENT_VARIABLE = "LOCALCLOUD_FAULTS"
ADMIN_PATH = "/_localcloud/faults"
SERVICES = ("identity", "arm", "batchai", "files", "blob", "*")
STATUSES = (429, 500, 503)

# What Batch AI reported (Azure Batch's allocation codes underneath; an unusable node's error
# was InternalError). What is confirmed of each, and what is not: docs/error-codes.md.
ALLOCATION_ERROR = {
    "code": "AllocationFailed",
    "message": "Allocation failed: the desired number of dedicated nodes could not be "
    "allocated (a fault rule of the local cloud).",
}
NODE_ERROR_CODE = "InternalError"


class FaultRuleError(ValueError):
    """A rule that cannot be used; the message names the field and what it must be."""


@dataclass
class Rule:
    service: str = "*"
    method: str = "*"
    path: re.Pattern = field(default_factory=lambda: re.compile(""))
    cluster: re.Pattern | None = None
    job: re.Pattern | None = None
    status: int | None = None
    retry_after: int = 1
    latency_ms: float = 0.0
    allocation_failure: dict | None = None
    node_failure: dict | None = None
    times: int | None = None
    probability: float = 1.0
    fired: int = 0
    source: dict = field(default_factory=dict)

    @property
    def is_compute(self) -> bool:
        return self.allocation_failure is not None or self.node_failure is not None

    def describe(self) -> dict:
        left = None if self.times is None else max(0, self.times - self.fired)
        return {**self.source, "fired": self.fired, "left": left}


def parse_rules(data) -> list[Rule]:
    """Rules from parsed JSON (a list, or {"rules": [...]}); FaultRuleError if one is bad."""
    if isinstance(data, dict) and "rules" in data:
        data = data["rules"]
    if not isinstance(data, list):
        raise FaultRuleError('fault rules must be a JSON list of rules or {"rules": [...]}')
    return [parse_rule(item, f"rule {index + 1}") for index, item in enumerate(data)]


def parse_rule(item, where: str = "the rule") -> Rule:
    if not isinstance(item, dict):
        raise FaultRuleError(f"{where} must be a JSON object")
    known = {
        "service", "method", "path", "cluster", "job", "status", "retryAfter", "latencyMs",
        "allocationFailure", "nodeFailure", "times", "probability",
    }  # fmt: skip
    unknown = sorted(set(item) - known)
    if unknown:
        raise FaultRuleError(f"{where}: unknown field {unknown[0]!r}; known: {sorted(known)}")
    rule = Rule(source=dict(item))
    rule.service = str(item.get("service", "*")).lower()
    if rule.service not in SERVICES:
        raise FaultRuleError(f"{where}: service must be one of {', '.join(SERVICES)}")
    rule.method = str(item.get("method", "*")).upper()
    rule.path = _regex(item.get("path", ""), f"{where}: path")
    rule.cluster = _regex(item["cluster"], f"{where}: cluster") if "cluster" in item else None
    rule.job = _regex(item["job"], f"{where}: job") if "job" in item else None
    if "status" in item:
        if item["status"] not in STATUSES:
            raise FaultRuleError(f"{where}: status must be one of {STATUSES}")
        rule.status = item["status"]
    rule.retry_after = _number(item.get("retryAfter", 1), f"{where}: retryAfter", int)
    rule.latency_ms = _number(item.get("latencyMs", 0), f"{where}: latencyMs", float)
    if "times" in item:
        rule.times = _number(item["times"], f"{where}: times", int)
    rule.probability = _number(item.get("probability", 1), f"{where}: probability", float)
    if rule.probability > 1:
        raise FaultRuleError(f"{where}: probability must be between 0 and 1")
    rule.allocation_failure = _effect(item.get("allocationFailure"), ALLOCATION_ERROR)
    rule.node_failure = _effect(item.get("nodeFailure"), {"afterSeconds": 0})
    if rule.status is None and not rule.latency_ms and not rule.is_compute:
        raise FaultRuleError(
            f"{where} does nothing: give status, latencyMs, allocationFailure or nodeFailure"
        )
    return rule


def _regex(value, where: str) -> re.Pattern:
    try:
        return re.compile(str(value))
    except re.error as err:
        raise FaultRuleError(f"{where} is not a regular expression: {err}") from None


def _number(value, where: str, kind):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise FaultRuleError(f"{where} must be a number of at least 0")
    return kind(value)


def _effect(value, defaults: dict) -> dict | None:
    if value is None or value is False:
        return None
    return {**defaults, **(value if isinstance(value, dict) else {})}


def load_rules_file(path: str | os.PathLike) -> list[Rule]:
    """Rules from a JSON file; FaultRuleError naming the file if it cannot be used."""
    try:
        return parse_rules(json.loads(Path(path).read_text(encoding="utf-8")))
    except OSError as err:
        raise FaultRuleError(f"cannot read the fault rules file {path}: {err.strerror}") from None
    except ValueError as err:
        raise FaultRuleError(f"the fault rules file {path} is not usable: {err}") from None


def service_of(path: str, account: str) -> str | None:
    """Which surface a request path belongs to (None: never faulted, e.g. health, admin)."""
    segments = path.split("/")
    first = segments[1].lower() if len(segments) > 1 else ""
    if first in ("subscriptions", "providers"):
        return "batchai" if "/providers/microsoft.batchai" in path.lower() else "arm"
    if first == account.lower():
        return "files"
    if first == BLOB_PATH_PREFIX and len(segments) > 2 and segments[2].lower() == account.lower():
        return "blob"
    if path.endswith("/oauth2/token"):
        return "identity"
    return None


class Faults:
    """The rules of one running local cloud; thread-safe."""

    def __init__(self, rules: list[Rule] | None = None, seed: int | None = None):
        self._rules = list(rules or [])
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    def replace(self, rules: list[Rule]) -> None:
        with self._lock:
            self._rules = list(rules)

    def add(self, rule: Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def describe(self) -> list[dict]:
        with self._lock:
            return [rule.describe() for rule in self._rules]

    def _fire(self, rule: Rule) -> bool:
        """Whether a matching rule fires now (counts it if so); call with the lock held."""
        if rule.times is not None and rule.fired >= rule.times:
            return False
        if rule.probability < 1 and self._random.random() >= rule.probability:
            return False
        rule.fired += 1
        return True

    def for_request(self, service: str, method: str, path: str) -> tuple[float, Rule | None]:
        """(latency in seconds to add, the rule whose status to answer or None)."""
        latency, failing = 0.0, None
        with self._lock:
            for rule in self._rules:
                if rule.is_compute or rule.service not in ("*", service):
                    continue
                if rule.method not in ("*", method.upper()) or not rule.path.search(path):
                    continue
                if (failing is None or rule.status is None) and self._fire(rule):
                    latency += rule.latency_ms / 1000
                    if rule.status is not None:
                        failing = rule
        return latency, failing

    def allocation_failure(self, cluster_name: str) -> dict | None:
        """The error a cluster's allocation fails with now, or None."""
        with self._lock:
            for rule in self._rules:
                if rule.allocation_failure is None:
                    continue
                if rule.cluster and not rule.cluster.search(cluster_name):
                    continue
                if self._fire(rule):
                    failure = rule.allocation_failure
                    return {"code": failure["code"], "message": failure["message"]}
        return None

    def node_failure(self, job_name: str, ran_seconds: float) -> bool:
        """True if the node under a job that has run ``ran_seconds`` fails now."""
        with self._lock:
            for rule in self._rules:
                if rule.node_failure is None:
                    continue
                if rule.job and not rule.job.search(job_name):
                    continue
                if ran_seconds >= float(rule.node_failure.get("afterSeconds") or 0) and (
                    self._fire(rule)
                ):
                    return True
        return False
