#!/usr/bin/env python3
"""Checks deploy/ offline, as scripts/test.sh runs it.

For the base and every overlay: `kubectl kustomize` renders it, kubernetes-validate
accepts every object against the Kubernetes 1.30 schemas (strict), and every probe and
named container port points at the port the binary really listens on: the binary's own
default (read from its --help) unless the ConfigMap sets the variable. Every variable the
ConfigMap or a container sets is one the binary reads, and the query-service's API keys
file lies in a Secret mounted as a folder (a subPath mount would never see an edit); with a
FEED_DATABASE_URL, the query-service reads from another database than it listens on.
There is one query-service and one ingestor per chain (`ingestor`, `ingestor-<chain>`),
whose selectors do not overlap; a TOKENS_FILE lies in a ConfigMap mounted as a folder, so
that an edit of the ConfigMap reaches the ingestor.

Usage: deploy/check.py <folder with the ingestor and query-service binaries>
"""
import glob
import os
import re
import subprocess
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "target", "debug")
# Which setting each named port and each probe of a container follows.
PORT_SETTING = {
    "ingestor": {"health": "HEALTH_ADDR", "metrics": "METRICS_ADDR", "probe": "HEALTH_ADDR"},
    "query-service": {"grpc": "LISTEN_ADDR", "metrics": "METRICS_ADDR", "probe": "LISTEN_ADDR"},
}


def help_text(binary):
    text = subprocess.run([os.path.join(BIN, binary), "--help"], capture_output=True, text=True, check=True).stdout
    return " ".join(text.split())


def defaults(binary):
    """{ENV: default} from a binary's --help."""
    return dict(re.findall(r"\[env: (\w+)=?[^\]]*\] \[default: ([^\]]+)\]", help_text(binary)))


def known_variables(binary):
    """Every environment variable a binary reads, from its --help (and the *_FILE forms
    of its secrets)."""
    names = set(re.findall(r"\[env: (\w+)", help_text(binary)))
    return names | {n + "_FILE" for n in ("DATABASE_URL", "RPC_URL")} | {"RUST_LOG"}


def binary_of(deployment):
    """The binary a Deployment runs: `query-service`, or `ingestor` for `ingestor` and
    `ingestor-<chain>` (one per chain)."""
    if deployment == "query-service":
        return deployment
    if deployment == "ingestor" or deployment.startswith("ingestor-"):
        return "ingestor"
    return None


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def check(target, failures):
    rendered = subprocess.run(["kubectl", "kustomize", target], capture_output=True, text=True)
    if rendered.returncode != 0:
        failures.append(f"{target}: kubectl kustomize failed: {rendered.stderr.strip()}")
        return
    path = os.path.join("/tmp", "deploy-check-" + target.replace("/", "_") + ".yaml")
    with open(path, "w") as f:
        f.write(rendered.stdout)
    valid = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "-k", "1.30.0", "--strict", "--quiet", path],
        capture_output=True, text=True,
    )
    if valid.returncode != 0:
        failures.append(f"{target}: schema validation failed:\n{valid.stdout}{valid.stderr}")
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    # The settings: the ConfigMap both binaries take their environment from (others are
    # files, such as the tokens files).
    config = {}
    for d in docs:
        if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "erc20-holders":
            config.update(d.get("data") or {})
    for var in config:
        if not any(var in known_variables(b) for b in PORT_SETTING):
            failures.append(f"{target}: the ConfigMap sets {var}, which no binary reads")
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    binaries = sorted(binary_of(d["metadata"]["name"]) or d["metadata"]["name"] for d in deployments)
    if binaries.count("query-service") != 1 or "ingestor" not in binaries or not set(binaries) <= set(PORT_SETTING):
        failures.append(f"{target}: expected one query-service and one or more ingestor Deployments, got {binaries}")
    selectors = [tuple(sorted(d["spec"]["selector"]["matchLabels"].items())) for d in deployments]
    for i, a in enumerate(selectors):
        for b in selectors[i + 1:]:
            if set(a) <= set(b) or set(b) <= set(a):
                failures.append(f"{target}: two Deployments' selectors overlap: {dict(a)} and {dict(b)}")
    for d in deployments:
        name = binary_of(d["metadata"]["name"])
        if name is None:
            continue
        spec = d["spec"]["template"]["spec"]
        settings = {**defaults(name), **config}
        known = known_variables(name)
        for c in spec["containers"]:
            if c["name"] != name:
                continue
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            for var in env:
                if var not in known:
                    failures.append(f"{target}: {name} sets {var}, which it does not read")
            if name == "query-service" and "FEED_DATABASE_URL" in env:
                secret = {e["name"]: ((e.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name")
                          for e in c.get("env", [])}
                if secret.get("DATABASE_URL") == secret.get("FEED_DATABASE_URL"):
                    failures.append(f"{target}: query-service reads and listens on the same database; FEED_DATABASE_URL is for the primary when DATABASE_URL is a replica")
            tokens = env.get("TOKENS_FILE")
            if tokens is not None:
                config_dirs = {
                    m["mountPath"] for m in c.get("volumeMounts", [])
                    if not m.get("subPath") and any(
                        v["name"] == m["name"] and "configMap" in v for v in spec.get("volumes", []))
                }
                if not any(tokens.startswith(d.rstrip("/") + "/") for d in config_dirs):
                    failures.append(f"{target}: {d['metadata']['name']}'s TOKENS_FILE is not in a ConfigMap mounted as a folder (a subPath mount would never see an edit)")
            if name == "query-service":
                keys = env.get("QUERY_API_KEYS_FILE")
                secret_dirs = {
                    m["mountPath"] for m in c.get("volumeMounts", [])
                    if not m.get("subPath") and any(
                        v["name"] == m["name"] and "secret" in v for v in spec.get("volumes", []))
                }
                if not keys or not any(keys.startswith(d.rstrip("/") + "/") for d in secret_dirs):
                    failures.append(f"{target}: query-service's QUERY_API_KEYS_FILE is not in a Secret mounted as a folder")
        for c in spec["containers"]:
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            for port_name, setting in PORT_SETTING[name].items():
                want = port_of(settings[setting])
                if port_name == "probe":
                    for probe in ("readinessProbe", "livenessProbe"):
                        grpc = (c.get(probe) or {}).get("grpc")
                        if not grpc:
                            failures.append(f"{target}: {name} has no gRPC {probe}")
                        elif grpc["port"] != want:
                            failures.append(f"{target}: {name} {probe} port {grpc['port']}, but it listens on {want} ({setting})")
                elif ports.get(port_name) != want:
                    failures.append(f"{target}: {name} port {port_name} is {ports.get(port_name)}, but it listens on {want} ({setting})")
            sc = c.get("securityContext") or {}
            if sc.get("readOnlyRootFilesystem") is not True or sc.get("allowPrivilegeEscalation") is not False:
                failures.append(f"{target}: {name} container is not locked down")
        if (spec.get("securityContext") or {}).get("runAsNonRoot") is not True:
            failures.append(f"{target}: {name} may run as root")
    print(f"deploy check: {target}: {len(docs)} objects rendered and checked")


def main():
    failures = []
    targets = [os.path.join(HERE, "base")] + sorted(glob.glob(os.path.join(HERE, "overlays", "*")))
    for t in targets:
        check(os.path.relpath(t), failures)
    for f in failures:
        print("deploy check: " + f, file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
