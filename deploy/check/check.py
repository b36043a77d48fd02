"""Checks every deployment artefact of deploy/ (`cargo xtask deploy`, a step of `cargo xtask test`).

- Kubernetes: every manifest of the Kustomize base and every rendered file, validated with
  kubernetes-validate in strict mode (an unknown field fails) against KUBERNETES_VERSION;
  the ServiceMonitor, a custom resource that kubernetes-validate does not know, against the
  Prometheus Operator's API schema (servicemonitor.mjs, which says what that covers); the
  rendered base is exactly the base's resources, and with `kubectl` on PATH every rendered
  file is what `kubectl kustomize` prints now; the references between the resources and to
  the Dockerfile (ports, labels, the Secret, the data folder, the user, /tmp on a read-only
  root) hold.
- Prometheus: `promtool check rules` and `promtool test rules`; every alert has a runbook
  annotation and a unit test.
- Grafana: the dashboard parses, has its `datasource` and `instance` variables, and every
  panel has a query.
- Every PromQL expression (rules and dashboard) names only metrics that exist: the server's
  families (read from server/src), the recording rules', and Prometheus's own (`up`,
  `ALERTS`).

Run from the workspace root with the Python of kubernetes-validate's virtual environment;
PROMTOOL names promtool (default: the one on PATH); GPULAB_BINARY names the server to run as
the DaemonSet runs it (check_pod_run). Prints what it checked; exits 1 on the
first failed group of checks, with every failure of that group listed. With
`--docker-run-flags` it only prints, as JSON, the `docker run` flags that match the
DaemonSet's security context, which the container test runs the image with.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

# A current Kubernetes release, the newest whose schemas kubernetes-validate 1.37.0 carries.
KUBERNETES_VERSION = "1.37.0"

KUBERNETES = Path("deploy/kubernetes")
BASE = KUBERNETES / "base"
RENDERED = KUBERNETES / "rendered"
RULES = Path("deploy/prometheus/gpulab-rules.yml")
RULE_TESTS = Path("deploy/prometheus/gpulab-rules.test.yml")
DASHBOARD = Path("deploy/grafana/gpulab-dashboard.json")
DOCKERFILE = Path("Dockerfile")
# The container test's last full run, which records the uid the image's server runs as.
CONTAINER_FIGURES = Path("docs/docker/full-figures.txt")

# Series Prometheus makes itself.
PROMETHEUS_METRICS = {"up", "ALERTS", "ALERTS_FOR_STATE"}

PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan", "atan2", "start", "end",
}


class Failed(Exception):
    """A group of checks failed; the message lists every failure."""


def fail_if(problems, what):
    if problems:
        raise Failed(what + ":\n  " + "\n  ".join(problems))


def metric_names(expr):
    """The metric names a PromQL expression selects (Grafana's `$variables` allowed)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges and subqueries
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\$\{?\w+\}?", " ", s)  # Grafana's variables
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        word = m.group(0)
        before = s[m.start() - 1] if m.start() else " "
        if before.isdigit() or before == ".":
            continue  # the exponent or unit of a number: 1e9, 5m
        if s[m.end():].lstrip().startswith("("):
            continue  # a function
        if word.lower() in PROMQL_KEYWORDS:
            continue
        names.add(word)
    return names


def server_metrics(source=Path("server/src")):
    """Every metric family the server writes: the `gpulab_*` names given to
    `Exposition::family` in server/src (histograms with their three series)."""
    names = set()
    for path in sorted(source.rglob("*.rs")):
        text = path.read_text()
        if "MetricType::" not in text:
            continue
        for m in re.finditer(r'"(gpulab_[a-z0-9_]+)"\s*,\s*MetricType::(\w+)', text):
            name, kind = m.groups()
            names.add(name)
            if kind == "Histogram":
                names.update(name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def load_yaml_documents(path):
    with open(path) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def key(resource):
    meta = resource.get("metadata", {})
    return (resource.get("kind"), meta.get("namespace", ""), meta.get("name"))


# ---- Kubernetes ----


def check_kubernetes():
    import kubernetes_validate

    base = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    manifests = [BASE / name for name in base["resources"]]
    rendered = sorted(RENDERED.glob("*.yaml"))
    overlays = sorted(p.parent for p in (KUBERNETES / "overlays").glob("*/kustomization.yaml"))
    wanted = {RENDERED / "base.yaml"} | {RENDERED / f"{o.name}.yaml" for o in overlays}
    problems = [f"{p} is missing: render it with kubectl kustomize" for p in sorted(wanted - set(rendered))]
    problems += [f"{p} renders no kustomization of deploy/kubernetes" for p in sorted(set(rendered) - wanted)]
    fail_if(problems, "rendered output")

    service_monitors = []
    problems = []
    checked = 0
    for path in manifests + rendered:
        for resource in load_yaml_documents(path):
            if (resource.get("apiVersion"), resource.get("kind")) == ("monitoring.coreos.com/v1", "ServiceMonitor"):
                service_monitors.append({"file": str(path), "resource": resource})
                continue
            try:
                kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
                checked += 1
            except kubernetes_validate.ValidationError as e:
                problems.append(f"{path}: {key(resource)}: {e.message} at {'.'.join(map(str, e.path))}")
            except Exception as e:  # an unknown kind, a schema it cannot load
                problems.append(f"{path}: {key(resource)}: {e}")
    fail_if(problems, f"kubernetes-validate --strict (Kubernetes {KUBERNETES_VERSION})")
    print(f"ok: {checked} resources in {len(manifests) + len(rendered)} files valid against Kubernetes {KUBERNETES_VERSION} (strict)")

    if shutil.which("node") is None:
        raise Failed("node is not on PATH: the ServiceMonitor check needs Node.js")
    result = subprocess.run(
        ["node", "servicemonitor.mjs"], cwd="deploy/check", input=json.dumps(service_monitors),
        capture_output=True, text=True,
    )
    print(result.stdout, end="")
    if result.returncode != 0 or len(service_monitors) != len(manifests_of_kind(manifests + rendered, "ServiceMonitor")):
        raise Failed("ServiceMonitor:\n" + result.stdout + result.stderr)

    # The base adds nothing: its rendering is its resources, in any order.
    sources = {key(r): r for path in manifests for r in load_yaml_documents(path)}
    output = {key(r): r for r in load_yaml_documents(RENDERED / "base.yaml")}
    if sources != output:
        raise Failed(
            f"{RENDERED / 'base.yaml'} is not the base's resources: render it again with\n"
            f"  kubectl kustomize {BASE} > {RENDERED / 'base.yaml'}"
        )
    print(f"ok: {RENDERED / 'base.yaml'} holds exactly the {len(sources)} resources of {BASE}")

    if shutil.which("kubectl"):
        for target, path in [(BASE, RENDERED / "base.yaml")] + [(o, RENDERED / f"{o.name}.yaml") for o in overlays]:
            now = subprocess.run(["kubectl", "kustomize", str(target)], capture_output=True, text=True, check=True).stdout
            if now != path.read_text():
                problems.append(f"{path} differs from `kubectl kustomize {target}`: render it again")
        fail_if(problems, "rendered output")
        print("ok: every rendered file is what `kubectl kustomize` prints now")
    else:
        print("note: no kubectl on PATH, so the overlays' rendered files were not rendered again")

    for path in [RENDERED / "base.yaml"] + [RENDERED / f"{o.name}.yaml" for o in overlays]:
        fail_if(cross_references(load_yaml_documents(path)), f"{path}: the resources do not fit together")
    print("ok: the resources refer to each other, to the Dockerfile and to the container test consistently")


def manifests_of_kind(paths, kind):
    return [r for p in paths for r in load_yaml_documents(p) if r.get("kind") == kind]


def dockerfile_facts():
    text = DOCKERFILE.read_text()
    runtime = text.split("FROM ${RUNTIME_BASE}")[-1]
    env = dict(re.findall(r"(GPULAB_[A-Z_]+)=(\S+)", runtime))
    return {
        "user": re.search(r"^USER (\S+)", runtime, re.M).group(1),
        "expose": int(re.search(r"^EXPOSE (\d+)", runtime, re.M).group(1)),
        "volume": re.search(r"^VOLUME (\S+)", runtime, re.M).group(1),
        "data_dir": env["GPULAB_DATA_DIR"],
        "command": json.loads(re.search(r"^CMD (\[.*\])", runtime, re.M).group(1)),
    }


def measured_uid():
    """The uid the container test saw the image's server run as, if it has run."""
    if not CONTAINER_FIGURES.is_file():
        return None
    m = re.search(r"^server uid\s+(\d+)", CONTAINER_FIGURES.read_text(), re.M)
    return int(m.group(1)) if m else None


def cross_references(resources):
    """What neither Kubernetes' schemas nor the operator's can see."""
    problems = []
    by_kind = {}
    for r in resources:
        by_kind.setdefault(r["kind"], []).append(r)
    for kind in ["Namespace", "DaemonSet", "Service", "ServiceMonitor", "NetworkPolicy"]:
        if len(by_kind.get(kind, [])) != 1:
            problems.append(f"expected one {kind}, found {len(by_kind.get(kind, []))}")
    if problems:
        return problems
    [ds], [svc], [sm], [netpol] = (by_kind[k] for k in ["DaemonSet", "Service", "ServiceMonitor", "NetworkPolicy"])
    docker = dockerfile_facts()
    pod = ds["spec"]["template"]
    spec = pod["spec"]
    labels = pod["metadata"]["labels"]
    [container] = spec["containers"]
    sc, psc = container.get("securityContext", {}), spec.get("securityContext", {})
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}

    def matches(selector, labels):
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    def expect(condition, what):
        if not condition:
            problems.append(what)

    # The pod's security, as the container test runs the image (`cargo xtask docker`).
    expect(psc.get("runAsNonRoot") is True or sc.get("runAsNonRoot") is True, "runAsNonRoot is not set")
    uid = sc.get("runAsUser", psc.get("runAsUser"))
    expect(isinstance(uid, int) and uid != 0, f"the server's runAsUser is {uid!r}: the image's user {docker['user']} needs a numeric non-root uid")
    measured = measured_uid()
    expect(measured is None or uid == measured, f"runAsUser {uid} is not the uid the container test measured ({measured}, {CONTAINER_FIGURES})")
    expect(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation is not false")
    expect(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem is not true")
    expect(sc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities do not drop ALL")
    expect(not sc.get("capabilities", {}).get("add"), "the server's container adds capabilities")
    expect(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "the Pod's seccomp profile is not RuntimeDefault")
    tmp = mounts.get("/tmp")
    expect(tmp is not None and "emptyDir" in volumes.get(tmp["name"], {}),
           "no emptyDir on /tmp: the workers write there and the root is read-only (the container test's --tmpfs /tmp)")
    # The image: its command, port, data folder.
    expect(container.get("command", docker["command"]) == docker["command"] and "args" not in container,
           f"the container does not run the image's command {docker['command']}")
    expect(ports.get("http") == docker["expose"], f"port `http` is not the image's {docker['expose']}")
    expect(env.get("GPULAB_ADDR", f"0.0.0.0:{docker['expose']}").endswith(f":{docker['expose']}"), "GPULAB_ADDR is not the exposed port")
    data_dir = env.get("GPULAB_DATA_DIR", docker["data_dir"])
    expect(data_dir == docker["volume"], f"the data folder {data_dir} is not the image's volume {docker['volume']}")
    expect(data_dir in mounts, f"nothing is mounted on the data folder {data_dir}")
    # GPUs: every one of the node's, without taking any from the scheduler.
    resources = container.get("resources", {})
    expect(all("nvidia.com/gpu" not in resources.get(k, {}) for k in ("requests", "limits")),
           "the DaemonSet requests nvidia.com/gpu: it would take GPUs from the scheduler")
    expect(env.get("NVIDIA_VISIBLE_DEVICES") == "all", "NVIDIA_VISIBLE_DEVICES is not `all`")
    expect(resources.get("requests") and resources.get("limits"), "resource requests or limits are missing")
    expect(any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", [])), "no toleration for nvidia.com/gpu")
    # Probes on the health check, which needs no token.
    for probe in ("livenessProbe", "readinessProbe"):
        get = container.get(probe, {}).get("httpGet", {})
        expect(get.get("path") == "/api/health" and get.get("port") in ("http", docker["expose"]),
               f"the {probe} does not ask /api/health on the server's port")
    # The token: a file from the Secret the ServiceMonitor scrapes with.
    token_file = env.get("GPULAB_TOKEN_FILE", "")
    secret_mount = next((m for p, m in mounts.items() if token_file.startswith(p.rstrip("/") + "/")), None)
    secret = volumes.get(secret_mount["name"], {}).get("secret") if secret_mount else None
    expect(secret is not None, f"GPULAB_TOKEN_FILE {token_file!r} is not in a mounted Secret")
    [endpoint] = sm["spec"]["endpoints"]
    credentials = endpoint.get("authorization", {}).get("credentials", {})
    if secret:
        item_keys = {i["key"] for i in secret.get("items", [])} or {credentials.get("key")}
        expect(credentials.get("name") == secret["secretName"] and credentials.get("key") in item_keys,
               "the ServiceMonitor does not scrape with the token the server reads")
    # The Service, the ServiceMonitor and the NetworkPolicy find the Pods.
    expect(svc["spec"].get("clusterIP") == "None", "the Service is not headless")
    expect(svc["metadata"]["name"] == "gpulab", "the Service (the job label of the scrape) is not named gpulab, as the rules expect")
    expect(matches(svc["spec"].get("selector"), labels), "the Service's selector does not match the Pods")
    svc_ports = {p["name"]: p for p in svc["spec"].get("ports", [])}
    expect(endpoint.get("port") in svc_ports, "the ServiceMonitor's port is not one of the Service's")
    expect(svc_ports.get(endpoint.get("port"), {}).get("targetPort") in ("http", docker["expose"]), "the Service does not target the server's port")
    expect(matches(sm["spec"]["selector"].get("matchLabels"), svc["metadata"].get("labels", {})), "the ServiceMonitor's selector does not match the Service")
    expect(ds["metadata"]["namespace"] in sm["spec"].get("namespaceSelector", {}).get("matchNames", []), "the ServiceMonitor does not look in the DaemonSet's namespace")
    expect(endpoint.get("path") == "/metrics", "the ServiceMonitor does not scrape /metrics")
    expect(matches(netpol["spec"]["podSelector"].get("matchLabels"), labels), "the NetworkPolicy does not select the Pods")
    allowed_ports = [p.get("port") for rule in netpol["spec"].get("ingress", []) for p in rule.get("ports", [])]
    expect(any(p in ("http", docker["expose"]) for p in allowed_ports), "the NetworkPolicy does not let Prometheus reach the server's port")
    return problems


def docker_run_flags(resources):
    """The `docker run` flags that give a container what the DaemonSet gives its Pod: the
    user and groups, a read-only root with a tmpfs where the Pod has an emptyDir (but the
    data folder, where the container test mounts its volume), no capabilities and no
    privilege escalation. seccomp RuntimeDefault is Docker's default profile already."""
    [ds] = [r for r in resources if r["kind"] == "DaemonSet"]
    spec = ds["spec"]["template"]["spec"]
    [container] = spec["containers"]
    psc, sc = spec.get("securityContext", {}), container.get("securityContext", {})
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    data_dir = env.get("GPULAB_DATA_DIR", dockerfile_facts()["data_dir"])
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    flags = []
    user = sc.get("runAsUser", psc.get("runAsUser"))
    group = sc.get("runAsGroup", psc.get("runAsGroup"))
    if user is not None:
        flags += ["--user", f"{user}:{group}" if group is not None else str(user)]
    if psc.get("fsGroup") is not None:
        flags += ["--group-add", str(psc["fsGroup"])]
    if sc.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    for mount in container.get("volumeMounts", []):
        if "emptyDir" in volumes.get(mount["name"], {}) and mount["mountPath"] != data_dir:
            flags += ["--tmpfs", mount["mountPath"]]
    for capability in sc.get("capabilities", {}).get("drop", []):
        flags += ["--cap-drop", capability]
    for capability in sc.get("capabilities", {}).get("add", []):
        flags += ["--cap-add", capability]
    if sc.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    return flags


def check_pod_run(binary):
    """Runs the server as the DaemonSet's container does, minus the container: its command
    and environment, the Secret's token file, an empty data folder and /tmp, as the Pod's
    user and group with no capabilities and no privilege escalation (setpriv; as root only)
    and listening beyond loopback. Then the probes must answer without the token, /metrics
    must refuse a scrape without it and answer the ServiceMonitor's bearer token, and
    SIGTERM must stop the server within terminationGracePeriodSeconds."""
    import signal
    import tempfile
    import time
    import urllib.error
    import urllib.request

    resources = load_yaml_documents(RENDERED / "base.yaml")
    [ds] = [r for r in resources if r["kind"] == "DaemonSet"]
    [sm] = [r for r in resources if r["kind"] == "ServiceMonitor"]
    spec = ds["spec"]["template"]["spec"]
    [container] = spec["containers"]
    psc, sc = spec.get("securityContext", {}), container.get("securityContext", {})
    uid, gid = sc.get("runAsUser", psc.get("runAsUser")), sc.get("runAsGroup", psc.get("runAsGroup"))
    [endpoint] = sm["spec"]["endpoints"]
    token = "pod-run-check-token"
    with tempfile.TemporaryDirectory(prefix="gpulab-pod-") as root:
        os.chmod(root, 0o755)

        def inside(path):  # a path of the Pod, under this run's own folder
            return root + path

        env = {e["name"]: e["value"] for e in container.get("env", [])}
        for name in ("GPULAB_DATA_DIR", "GPULAB_TOKEN_FILE"):
            env[name] = inside(env[name])
        # Beyond loopback, as in the Pod, but on a free port.
        env["GPULAB_ADDR"] = "0.0.0.0:0"
        env["TMPDIR"] = inside("/tmp")
        env["GPULAB_STATIC_DIR"] = inside("/nonexistent")
        for mount in container["volumeMounts"]:
            os.makedirs(inside(mount["mountPath"]), exist_ok=True)
        token_file = Path(env["GPULAB_TOKEN_FILE"])
        token_file.write_text(token + "\n")
        as_pod = os.geteuid() == 0 and shutil.which("setpriv")
        if as_pod:
            for mount in container["volumeMounts"]:
                os.chown(inside(mount["mountPath"]), uid, gid)
            os.chown(token_file, 0, psc.get("fsGroup", gid))
            os.chmod(token_file, 0o440)  # the Secret volume's defaultMode
        command = [str(Path(binary).resolve())] + container["command"][1:]
        if as_pod:
            groups = [str(psc["fsGroup"])] if "fsGroup" in psc else []
            command = ["setpriv", f"--reuid={uid}", f"--regid={gid}",
                       f"--groups={','.join(groups)}" if groups else "--clear-groups",
                       "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all"] + command
        else:
            print("note: not root, so the server runs as this user, not as the Pod's")
        log = open(Path(root) / "server.log", "w+")
        server = subprocess.Popen(command, env={"PATH": os.environ["PATH"], **env},
                                  stdout=subprocess.PIPE, stderr=log, text=True, cwd=root)
        try:
            deadline = time.monotonic() + 60
            url = None
            while url is None and time.monotonic() < deadline:
                line = server.stdout.readline()
                if not line:
                    break
                if line.startswith("gpulab listening on "):
                    url = line.split()[-1].replace("0.0.0.0", "127.0.0.1")
            if url is None:
                log.seek(0)
                raise Failed(f"the server as the Pod runs it did not start: {' '.join(command)}\n{log.read()[-3000:]}")

            def get(path, bearer=None):
                request = urllib.request.Request(url + path)
                if bearer:
                    request.add_header("Authorization", f"Bearer {bearer}")
                try:
                    with urllib.request.urlopen(request, timeout=10) as answer:
                        return answer.status, answer.read().decode()
                except urllib.error.HTTPError as error:
                    return error.code, ""

            problems = []
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                path = container.get(probe, {}).get("httpGet", {}).get("path")
                if path and get(path)[0] != 200:
                    problems.append(f"the {probe} ({path}) does not answer 200 without the token")
            if get(endpoint["path"])[0] != 401:
                problems.append(f"{endpoint['path']} answers a scrape without the token")
            status, body = get(endpoint["path"], token)
            if status != 200 or "gpulab_build_info" not in body:
                problems.append(f"{endpoint['path']} with the ServiceMonitor's bearer token answered {status}")
            grace = spec.get("terminationGracePeriodSeconds", 30)
            started = time.monotonic()
            server.send_signal(signal.SIGTERM)
            try:
                code = server.wait(timeout=grace)
                if code != 0:
                    problems.append(f"the server exited {code} on SIGTERM")
            except subprocess.TimeoutExpired:
                problems.append(f"the server did not stop within terminationGracePeriodSeconds ({grace} s)")
            fail_if(problems, "the server run as the DaemonSet runs it")
            print(f"ok: run as the Pod ({'uid %s, no capabilities, no new privileges' % uid if as_pod else 'this user'}): "
                  f"the probes answer without the token, /metrics needs the ServiceMonitor's token, "
                  f"SIGTERM stops it in {time.monotonic() - started:.1f} s")
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
            log.close()


# ---- Prometheus ----


def check_rules(promtool):
    for args in (["check", "rules", RULES.name], ["test", "rules", RULE_TESTS.name]):
        result = subprocess.run([promtool, *args], cwd=RULES.parent, capture_output=True, text=True)
        if result.returncode != 0:
            raise Failed(f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}")
        print(f"ok: promtool {' '.join(args)}")

    rules = yaml.safe_load(RULES.read_text())
    tests = yaml.safe_load(RULE_TESTS.read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    firing, silent = set(), set()
    for case in tests["tests"]:
        for t in case.get("alert_rule_test", []):
            (firing if t.get("exp_alerts") else silent).add(t["alertname"])
    problems = []
    for a in alerts:
        name = a["alert"]
        if not a.get("annotations", {}).get("runbook", "").strip():
            problems.append(f"{name} has no runbook annotation")
        if name not in firing:
            problems.append(f"{name} has no unit test in which it fires")
        if name not in silent:
            problems.append(f"{name} has no unit test in which it does not fire")
    fail_if(problems, str(RULE_TESTS))
    print(f"ok: {len(alerts)} alerts, each with a runbook and unit tests where it fires and where it does not")
    return rules


# ---- Grafana ----


def dashboard_queries():
    dashboard = json.loads(DASHBOARD.read_text())
    problems = []
    inputs = dashboard.get("__inputs", [])
    if not any(i.get("type") == "datasource" and i.get("pluginId") == "prometheus" for i in inputs):
        problems.append("__inputs has no Prometheus data source to ask for at import")
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    datasource = variables.get("datasource", {})
    if datasource.get("type") != "datasource" or datasource.get("query") != "prometheus":
        problems.append("no `datasource` variable of Prometheus data sources")
    if variables.get("instance", {}).get("type") != "query":
        problems.append("no `instance` query variable")
    queries = []
    panels = [p for p in dashboard.get("panels", []) if p.get("type") != "row"]
    ids = [p.get("id") for p in dashboard.get("panels", [])]
    if len(ids) != len(set(ids)):
        problems.append("panel ids are not unique")
    for panel in panels:
        title = panel.get("title", f"panel {panel.get('id')}")
        targets = panel.get("targets", [])
        exprs = [t.get("expr", "").strip() for t in targets]
        if not exprs or not all(exprs):
            problems.append(f"panel `{title}` has a target without a query, or none")
        for thing in [panel] + targets:
            if thing.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"panel `{title}` does not use the `datasource` variable")
        queries += [(f"panel `{title}`", e) for e in exprs if e]
    if variables.get("instance"):
        definition = variables["instance"].get("definition", "")
        queries.append(("variable `instance`", re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", definition)))
    fail_if(problems, str(DASHBOARD))
    print(f"ok: {DASHBOARD} has {len(panels)} panels, each with a query, and its variables")
    return queries


def check_metric_names(rules, dashboard):
    server = server_metrics()
    if not server:
        raise Failed("no metric family found in server/src")
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    known = server | recorded | PROMETHEUS_METRICS
    queries = [(f"rule `{r.get('alert') or r.get('record')}`", r["expr"]) for g in rules["groups"] for r in g["rules"]]
    queries += dashboard
    problems = []
    for where, expr in queries:
        names = metric_names(expr)
        if not names:
            problems.append(f"{where} selects no metric: {expr}")
        for name in sorted(names - known):
            problems.append(f"{where} uses `{name}`, which neither the server nor a recording rule makes")
    fail_if(problems, "metric names")
    print(f"ok: the {len(queries)} expressions use only metrics that exist ({len(server)} of the server's, "
          f"{len(recorded)} recorded, Prometheus's own)")


def main():
    sys.stdout.reconfigure(line_buffering=True)
    if sys.argv[1:] == ["--docker-run-flags"]:
        # For the container test (`cargo xtask docker`), which runs the image so.
        print(json.dumps(docker_run_flags(load_yaml_documents(RENDERED / "base.yaml"))))
        return 0
    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not promtool:
        print("promtool is missing: `cargo xtask deploy` installs Debian's prometheus package", file=sys.stderr)
        return 1
    try:
        check_kubernetes()
        if os.environ.get("GPULAB_BINARY"):
            check_pod_run(os.environ["GPULAB_BINARY"])
        else:
            print("note: GPULAB_BINARY is not set, so the server was not run as the Pod runs it")
        rules = check_rules(promtool)
        check_metric_names(rules, dashboard_queries())
    except Failed as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
