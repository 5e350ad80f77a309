"""The Kubernetes example (scripts/deploy/kubernetes), checked offline: every manifest
against the Kubernetes JSON schemas bundled in kubernetes-validate (strict: unknown
fields fail), every container's command line through tilerouter's real settings parser
with the ConfigMap's TOML, ports in args against the Services and containers, probe paths
against the real gateway routes and router stats server. Never applied to a cluster."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine
from tornado.web import ErrorHandler

from config.settings import Settings
from router.stats_http import start_stats_server
from tests.deploy_checks import (
    DEPLOY,
    DNS_SCHEME,
    check_command,
    endpoint_host,
    endpoint_port,
    parse_flags,
)

K8S = DEPLOY / "kubernetes"
CONFIG_MOUNT = "/etc/tilerouter"
WORKLOADS = ("Deployment", "StatefulSet")


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
DOCS = [(p.name, d) for p in MANIFESTS for d in load(p)]


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in DOCS if d["kind"] == kind}


def containers() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(workload name, its pod spec, container) for every container of every workload."""
    return [(d["metadata"]["name"], d["spec"]["template"]["spec"], c)
            for _, d in DOCS if d["kind"] in WORKLOADS
            for c in d["spec"]["template"]["spec"]["containers"]]


def schema_versions() -> list[str]:
    """The oldest and the newest Kubernetes whose schemas the package bundles."""
    versions = all_versions()
    return sorted({versions[0], versions[-1]})


def validate(doc: dict[str, Any]) -> None:
    for version in schema_versions():
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_manifests_are_all_there() -> None:
    kinds = {d["kind"] for _, d in DOCS}
    assert {"ConfigMap", "Service", "StatefulSet", "Deployment"} <= kinds
    assert len(containers()) == 3


@pytest.mark.parametrize(("name", "doc"), DOCS,
                         ids=[f"{n}:{d['kind']}/{d['metadata']['name']}" for n, d in DOCS])
def test_manifest_matches_the_kubernetes_schema(name: str, doc: dict[str, Any]) -> None:
    validate(doc)


def test_schema_check_catches_a_misspelt_field() -> None:
    """The control for the test above: a wrong field name deep in a pod spec fails."""
    doc = copy.deepcopy(by_kind("Deployment")["tilerouter-gateway"])
    ctx = doc["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    ctx["readOnlyRootFileSystem"] = ctx.pop("readOnlyRootFilesystem")
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFileSystem"):
        validate(doc)


def listed() -> set[str]:
    return set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])


def test_kustomization_lists_the_manifests() -> None:
    """Everything but the *.example.yaml files is applied by ``kubectl apply -k``."""
    assert listed() == {p.name for p in MANIFESTS if not p.name.endswith(".example.yaml")}


@pytest.mark.skipif(shutil.which("kubectl") is None,
                    reason="kubectl not installed: the kustomization is not rendered (the "
                           "manifests themselves were checked above)")
def test_kustomize_renders_a_valid_set() -> None:
    """kubectl's own kustomize (offline) renders the set, and the result validates too."""
    run = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    rendered = [d for d in yaml.safe_load_all(run.stdout) if d]
    assert len(rendered) == sum(len(load(K8S / n)) for n in listed())
    for doc in rendered:
        validate(doc)


def configmap_toml(tmp_path: Path) -> str:
    """The ConfigMap's tilerouter.toml, written where a test can load it."""
    path = tmp_path / "tilerouter.toml"
    path.write_text(by_kind("ConfigMap")["tilerouter-config"]["data"]["tilerouter.toml"])
    return str(path)


def container_command(c: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """argv and the literal environment (secrets are left out: they are optional)."""
    env = {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
    return [*c["command"], *c.get("args", [])], env


@pytest.mark.parametrize(("workload", "pod", "container"), containers(),
                         ids=[w for w, _, _ in containers()])
def test_container_command_is_accepted_by_the_settings_parser(
        tmp_path: Path, workload: str, pod: dict[str, Any], container: dict[str, Any]) -> None:
    argv, env = container_command(container)
    assert env.pop("TILEROUTER_CONFIG") == f"{CONFIG_MOUNT}/tilerouter.toml"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[CONFIG_MOUNT]["readOnly"] is True
    settings = check_command(argv, env, configmap_toml(tmp_path))
    # stopped by SIGTERM: the preStop wait and the drain must end, with a second to
    # spare, before the kubelet's SIGKILL
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
    wait = float(pre_stop["command"][1]) if pre_stop else 0.0
    assert pod["terminationGracePeriodSeconds"] > settings.drain_timeout + wait + 1
    if settings.slides.startswith("/") and workload != "tilerouter-router":
        assert mounts[settings.slides]["readOnly"] is True  # the slides, never written


def _ports(c: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in c.get("ports", [])}


def test_router_ports_match_the_headless_service() -> None:
    service = by_kind("Service")["tilerouter-router"]
    router = by_kind("StatefulSet")["tilerouter-router"]
    assert service["spec"]["clusterIP"] == "None"
    assert router["spec"]["serviceName"] == "tilerouter-router"
    assert router["spec"]["replicas"] >= 3
    labels = router["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (container,) = router["spec"]["template"]["spec"]["containers"]
    ns = parse_flags(container_command(container)[0])
    bound = {"frontend": endpoint_port(ns.frontend), "backend": endpoint_port(ns.backend),
             "stats": int(ns.stats_port)}
    assert _ports(container) == bound
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == bound
    assert all(p["targetPort"] == p["name"] for p in service["spec"]["ports"])


@pytest.mark.parametrize("workload", ["tilerouter-workers", "tilerouter-gateway"])
def test_clients_find_the_routers_by_the_service_name(workload: str) -> None:
    service = by_kind("Service")["tilerouter-router"]
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    (container,) = by_kind("Deployment")[workload]["spec"]["template"]["spec"]["containers"]
    ns = parse_flags(container_command(container)[0])
    for side in ("frontend", "backend"):
        endpoint = getattr(ns, side)
        assert endpoint.startswith(DNS_SCHEME), endpoint
        host = endpoint_host(endpoint)
        assert host == "tilerouter-router" or host.startswith("tilerouter-router."), host
        assert endpoint_port(endpoint) == ports[side]


def test_gateway_port_matches_its_service() -> None:
    service = by_kind("Service")["tilerouter-gateway"]
    (container,) = by_kind("Deployment")["tilerouter-gateway"]["spec"]["template"]["spec"][
        "containers"]
    ns = parse_flags(container_command(container)[0])
    (port,) = service["spec"]["ports"]
    assert port["port"] == 8080 and _ports(container)[port["targetPort"]] == int(ns.port)
    assert ns.host == "0.0.0.0"


def probes(container: dict[str, Any]) -> list[dict[str, Any]]:
    found = [container[k]["httpGet"] for k in ("livenessProbe", "readinessProbe",
                                                 "startupProbe") if k in container]
    assert all(_ports(container)[p["port"]] for p in found)
    return found


def test_gateway_probe_paths_are_real_routes() -> None:
    from wsgateway.app import make_app
    from wsgateway.gateway import Gateway
    from wsgateway.router_pool import RouterPool

    settings = Settings()
    app = make_app(Gateway(settings, RouterPool(settings)))
    (container,) = by_kind("Deployment")["tilerouter-gateway"]["spec"]["template"]["spec"][
        "containers"]
    paths = [p["path"] for p in probes(container)]
    assert sorted(paths) == ["/healthz", "/readyz"]
    for path in [*paths, "/no-such-route"]:
        request = HTTPServerRequest(start_line=RequestStartLine("GET", path, "HTTP/1.1"),
                                    headers=HTTPHeaders({"Host": "localhost"}))
        handler = app.find_handler(request).handler_class
        assert (handler is ErrorHandler) == (path == "/no-such-route"), path


def test_router_probe_paths_answer_on_a_real_stats_server() -> None:
    class Source:
        snapshot: dict[str, Any] = {"workers": {}}

    (container,) = by_kind("StatefulSet")["tilerouter-router"]["spec"]["template"]["spec"][
        "containers"]
    server = start_stats_server("127.0.0.1", 0, Source())
    try:
        port = server.server_address[1]
        paths = [p["path"] for p in probes(container)]
        assert paths
        for path in paths:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                assert r.status == 200 and json.loads(r.read()) == Source.snapshot
        with pytest.raises(urllib.error.HTTPError):  # the control: a wrong path fails
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("workload", "pod", "container"), containers(),
                         ids=[w for w, _, _ in containers()])
def test_pods_run_unprivileged_with_bounded_resources(
        workload: str, pod: dict[str, Any], container: dict[str, Any]) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    ctx = container["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= container["resources"][kind].keys()
    # a read-only root still needs a writable temp dir
    assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}
