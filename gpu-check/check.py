#!/usr/bin/env python3
"""The GPU check of gpulab, run by run.sh on a machine with an NVIDIA GPU.

Starts the release server, then:
  * compares the inventory and the live telemetry with nvidia-smi, and /metrics with the API;
  * runs every kernel of the catalog (GET /api/kernels), and every choice of its enum
    parameters (matmul's variants), on every GPU with verification;
  * runs a broken, a faulting and an endless custom kernel and checks the next job after each;
  * measures against PyTorch on the same GPU: a device copy and SGEMM at 8192 (fp32, TF32 off);
  * runs matmul in every dtype the catalog offers each GPU (verified), checks the refusals,
    and times each dtype at 8192 against torch.mm / torch._scaled_mm / torch._int_mm;
  * measures the smallest CUDA job's latency and a cached module's load time.
Writes gpu-check.json and gpu-check.md into --report. Uses only the standard library and
PyTorch. Exit status 1 when any check or target fails.
"""
import argparse
import datetime
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

CHECKS = []   # {"name", "passed", "detail"}
FIGURES = {}  # name -> value
TARGETS = []  # {"name", "value", "target", "passed"}


def check(name, passed, detail=""):
    CHECKS.append({"name": name, "passed": bool(passed), "detail": detail})
    print(("PASS " if passed else "FAIL ") + name + (f": {detail}" if detail else ""), flush=True)
    return passed


def target(name, value, goal, passed):
    TARGETS.append({"name": name, "value": value, "target": goal, "passed": bool(passed)})
    print(("MET  " if passed else "MISS ") + f"{name}: {value} (target {goal})", flush=True)


class Api:
    def __init__(self, host, port):
        self.conn = http.client.HTTPConnection(host, port, timeout=600)

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"content-type": "application/json"} if data else {}
        self.conn.request(method, path, body=data, headers=headers)
        resp = self.conn.getresponse()
        raw = resp.read()
        ctype = resp.getheader("content-type", "")
        return resp.status, (json.loads(raw) if "json" in ctype else raw.decode(errors="replace"))

    def get(self, path):
        return self.call("GET", path)[1]

    def submit(self, body):
        status, job = self.call("POST", "/api/jobs", body)
        if status != 202:
            raise RuntimeError(f"POST /api/jobs {body.get('kernel')}: {status} {job}")
        return job

    def wait(self, job_id, limit_s=120, pause=0.0):
        deadline = time.monotonic() + limit_s
        while True:
            job = self.get(f"/api/jobs/{job_id}")
            if job["status"] in ("succeeded", "failed", "cancelled", "timed_out", "interrupted"):
                return job
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} still {job['status']} after {limit_s} s")
            if pause:
                time.sleep(pause)

    def run(self, body, limit_s=120):
        return self.wait(self.submit(body)["id"], limit_s, pause=0.01)


def start_server(gpulab, data_dir):
    proc = subprocess.Popen(
        [gpulab, "serve", "--addr", "127.0.0.1:0", "--data-dir", data_dir,
         "--static-dir", os.path.join(data_dir, "no-ui"), "--max-timeout-s", "600"],
        stdout=subprocess.PIPE, stderr=sys.stderr, text=True,
        env={**os.environ, "GPULAB_LOG": "warn"})
    line = proc.stdout.readline().strip()
    prefix = "gpulab listening on http://"
    if not line.startswith(prefix):
        raise RuntimeError(f"the server printed {line!r}")
    host, port = line[len(prefix):].rsplit(":", 1)
    return proc, Api(host, int(port))


def smi(fields, ids=None):
    out = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}",
                          "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=True).stdout
    rows = [dict(zip(fields, [v.strip() for v in line.split(",")])) for line in out.strip().splitlines()]
    return rows


def num(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def close(a, b, tol):
    return a is not None and b is not None and abs(a - b) <= tol


def check_inventory(api):
    devices = [d for d in api.get("/api/devices") if d["kind"] == "cuda"]
    rows = smi(["index", "name", "uuid", "pci.bus_id", "memory.total", "compute_cap",
                "clocks.max.sm", "clocks.max.mem", "driver_version"])
    check("inventory: as many CUDA devices as nvidia-smi lists", len(devices) == len(rows),
          f"{len(devices)} vs {len(rows)}")
    FIGURES["driver"] = rows[0]["driver_version"] if rows else None
    for d, r in zip(sorted(devices, key=lambda d: d["cuda"]["ordinal"]), rows):
        c = d["cuda"]
        tag = d["id"]
        # CUDA orders by speed by default and nvidia-smi by PCI bus: compare by UUID.
        r = next((row for row in rows if row["uuid"] == c["uuid"]), None)
        if not check(f"{tag}: UUID known to nvidia-smi", r is not None, c["uuid"]):
            continue
        check(f"{tag}: name", d["name"] == r["name"], f"{d['name']!r} vs {r['name']!r}")
        bus = r["pci.bus_id"].lower()
        check(f"{tag}: PCI bus id", bus.endswith(c["pci_bus_id"].lower()[-12:]), f"{c['pci_bus_id']} vs {bus}")
        cc = f"{c['compute_capability']['major']}.{c['compute_capability']['minor']}"
        check(f"{tag}: compute capability", cc == r["compute_cap"], f"{cc} vs {r['compute_cap']}")
        smi_mib = num(r["memory.total"])
        ours_mib = d["total_memory_bytes"] / 2**20
        # cuDeviceTotalMem leaves out what the driver reserves; NVML (nvidia-smi) does not.
        check(f"{tag}: total memory within 1% of nvidia-smi", close(ours_mib, smi_mib, 0.01 * smi_mib),
              f"{ours_mib:.0f} MiB (CUDA) vs {smi_mib:.0f} MiB (nvidia-smi)")
        check(f"{tag}: max SM clock", close(c["max_sm_clock_mhz"], num(r["clocks.max.sm"]), 1),
              f"{c['max_sm_clock_mhz']} vs {r['clocks.max.sm']} MHz")
        FIGURES.setdefault("gpus", []).append({"id": tag, "name": d["name"], "uuid": c["uuid"],
                                               "sms": c["multiprocessor_count"], "cc": cc})
    return devices


def check_telemetry(api, devices):
    fields = ["uuid", "temperature.gpu", "power.draw", "power.limit", "memory.used", "memory.total",
              "pstate", "pcie.link.gen.current", "pcie.link.width.current", "utilization.gpu",
              "clocks.sm", "clocks.mem", "ecc.errors.corrected.volatile.total"]
    metrics = api.get("/metrics")
    for d in devices:
        tag = d["id"]
        t = api.get(f"/api/devices/{tag}/telemetry")
        r = next(row for row in smi(fields) if row["uuid"] == d["cuda"]["uuid"])
        g = (t.get("latest") or {}).get("gpu")
        if not check(f"{tag}: telemetry has a GPU sample", g is not None, json.dumps(t)[:300]):
            continue
        check(f"{tag}: history kept", len(t["history"]) >= 2, f"{len(t['history'])} samples")
        mib = 2**20
        comparisons = [
            ("temperature °C (±3)", g["temperature_celsius"], num(r["temperature.gpu"]), 3),
            ("power limit W (±1)", g["power_limit_watts"], num(r["power.limit"]), 1),
            ("power draw W (±40, sampled apart)", g["power_watts"], num(r["power.draw"]), 40),
            ("memory total MiB (exact)", g["memory_total_bytes"] / mib, num(r["memory.total"]), 1),
            ("memory used MiB (±256)", g["memory_used_bytes"] / mib, num(r["memory.used"]), 256),
            ("performance state", g["performance_state"], num(r["pstate"].lstrip("P")), 0),
            ("PCIe generation", g["pcie_generation"], num(r["pcie.link.gen.current"]), 0),
            ("PCIe width", g["pcie_width"], num(r["pcie.link.width.current"]), 0),
            ("memory clock MHz (±5)", g["memory_clock_mhz"], num(r["clocks.mem"]), 5),
        ]
        ecc = num(r["ecc.errors.corrected.volatile.total"])
        if ecc is not None:
            comparisons.append(("ECC corrected errors", g["ecc_corrected_errors"], ecc, 0))
        for name, ours, theirs, tol in comparisons:
            check(f"{tag}: telemetry {name} vs nvidia-smi", close(ours, theirs, tol), f"{ours} vs {theirs}")
        line = next((l for l in metrics.splitlines()
                     if l.startswith("gpulab_gpu_power_limit_watts{") and f'device="{tag}"' in l), "")
        value = num(line.rsplit(" ", 1)[-1]) if line else None
        check(f"{tag}: /metrics power limit equals the API's", close(value, g["power_limit_watts"], 1e-6),
              f"{value} vs {g['power_limit_watts']}")


# Sizes for the kernels the check knows; a kernel of the catalog missing here runs with its
# defaults, so none is skipped.
SIZES = {
    "vector_add": {"n": 1 << 24},
    "saxpy": {"n": 1 << 24},
    "reduce_sum": {"n": 1 << 24},
    "matmul": {"m": 2048, "n": 2048, "k": 2048},
    "bandwidth": {"size_mib": 1024},
    "mandelbrot": {"width": 1920, "height": 1080, "max_iter": 1000},
    "monte_carlo_pi": {"samples": 1 << 32},
}


def catalog_cases(catalog):
    """(kernel, params) for every kernel of `GET /api/kernels` that runs on CUDA, once with its
    default choices and once more for each other choice of each enum parameter (matmul's
    variants). The choices that depend on the device (matmul's dtype: `choices_by_device`)
    are left at their default here: check_dtypes runs each device's own."""
    cases = []
    for k in catalog:
        if "cuda" not in k["devices"]:
            continue
        enums = [p for p in k["params"] if p.get("choices")]
        base = {**SIZES.get(k["name"], {}), **{p["name"]: p["default"] for p in enums}}
        cases.append((k["name"], base))
        for p in enums:
            if p.get("choices_by_device"):
                continue
            for choice in p["choices"]:
                if choice != p["default"]:
                    cases.append((k["name"], {**base, p["name"]: choice}))
    return cases


def check_kernels(api, devices):
    catalog = api.get("/api/kernels")
    cases = catalog_cases(catalog)
    check("the catalog lists matmul's register_tiled variant",
          any(k == "matmul" and p.get("variant") == "register_tiled" for k, p in cases),
          ", ".join(k["name"] for k in catalog))
    results = []
    for d in devices:
        for kernel, params in cases:
            job = api.run({"kernel": kernel, "device": d["id"], "params": params, "repetitions": 10})
            r = job.get("result") or {}
            v = r.get("verification") or {}
            choices = [v for v in params.values() if isinstance(v, str)]
            label = kernel + (f" ({', '.join(choices)})" if choices else "")
            ok = check(f"{d['id']}: {label} succeeds and verifies", job["status"] == "succeeded" and v.get("passed"),
                       f"{job['status']}, {r.get('throughput')}, max rel err {v.get('max_rel_error')} "
                       f"≤ {v.get('tolerance')}; {job.get('error') or ''}"[:600])
            results.append({"device": d["id"], "kernel": label, "status": job["status"],
                            "throughput": r.get("throughput"), "median_ms": (r.get("timing") or {}).get("median_ms"),
                            "verified": v.get("passed"), "modules": (r.get("output") or {}).get("modules")})
            if ok and kernel == "matmul":
                out = r["output"]
                check(f"{d['id']}: {label} states its arithmetic",
                      out.get("dtype") == "fp32" and out.get("accumulate") == "fp32", json.dumps(out)[:300])
            if ok and kernel == "bandwidth":
                out = r["output"]
                FIGURES[f"{d['id']} bandwidth sweep"] = out["sweep"]
                FIGURES[f"{d['id']} copy kernel GB/s"] = out["copy_kernel_gb_per_s"]
    FIGURES["kernels"] = results


# What each dtype accumulates in and its output type (result.output), as the server states.
DTYPE_ARITHMETIC = {
    "fp64": ("fp64", "fp64"), "fp32": ("fp32", "fp32"), "tf32": ("fp32", "fp32"),
    "fp16": ("fp32", "fp16"), "bf16": ("fp32", "bf16"), "fp8_e4m3": ("fp32", "bf16"),
    "int8": ("int32", "int32"),
}


def matmul_dtypes(api):
    spec = next(k for k in api.get("/api/kernels") if k["name"] == "matmul")
    param = next(p for p in spec["params"] if p["name"] == "dtype")
    return param["choices"], param.get("choices_by_device") or {}


def check_dtypes(api, devices):
    """matmul in every dtype each GPU is offered, verified, and the refusals of the others."""
    choices, by_device = matmul_dtypes(api)
    for d in devices:
        offered = by_device.get(d["id"])
        cc = d["cuda"]["compute_capability"]
        check(f"{d['id']}: the catalog lists its dtypes (compute capability {cc['major']}.{cc['minor']})",
              bool(offered) and "fp32" in offered, str(offered))
        for dtype in offered or []:
            params = {"m": 2048, "n": 1024, "k": 4096, "dtype": dtype}
            job = api.run({"kernel": "matmul", "device": d["id"], "params": params, "repetitions": 5})
            r = job.get("result") or {}
            v = r.get("verification") or {}
            out = r.get("output") or {}
            check(f"{d['id']}: matmul {dtype} succeeds and verifies",
                  job["status"] == "succeeded" and v.get("passed"),
                  f"{job['status']}, {r.get('throughput')}, max rel err {v.get('max_rel_error')} "
                  f"≤ {v.get('tolerance')}; {job.get('error') or ''}"[:600])
            if job["status"] == "succeeded":
                accumulate, output_type = DTYPE_ARITHMETIC[dtype]
                check(f"{d['id']}: matmul {dtype} states its arithmetic",
                      out.get("dtype") == dtype and out.get("accumulate") == accumulate
                      and out.get("output_type") == output_type and out.get("compute_type"),
                      json.dumps(out)[:400])
                FIGURES[f"{d['id']} matmul {dtype} 2048×1024×4096 max rel err / tolerance"] = (
                    round(v["max_rel_error"] / v["tolerance"], 4) if v.get("tolerance") else v.get("max_rel_error"))
        for dtype in [c for c in choices if c not in (offered or [])]:
            status, body = api.call("POST", "/api/jobs", {"kernel": "matmul", "device": d["id"],
                                                          "params": {"dtype": dtype}})
            check(f"{d['id']}: matmul {dtype} is refused (not offered)",
                  status == 422 and body.get("field") == "params.dtype", f"{status} {body}"[:300])
        for dtype in [t for t in ("fp8_e4m3", "int8") if t in (offered or [])]:
            status, body = api.call("POST", "/api/jobs", {"kernel": "matmul", "device": d["id"],
                                                          "params": {"dtype": dtype, "n": 1000}})
            check(f"{d['id']}: matmul {dtype} with n = 1000 is refused (multiples of 16)",
                  status == 422 and "16" in str(body.get("detail")), f"{status} {body}"[:300])


def custom(source, entry, n, args, device, timeout_s=30):
    return {"kernel": "custom", "device": device, "timeout_s": timeout_s, "repetitions": 2,
            "params": {"source": source, "entry": entry, "n": n, "grid": None, "block": [128, 1, 1],
                       "shared_mem_bytes": 0, "args": args}}


VECTOR_ADD = """extern "C" __global__ void vector_add(const float* a, const float* b, float* c, unsigned n) {
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}"""


def vector_add(device):
    return custom(VECTOR_ADD, "vector_add", 4096, [
        {"kind": "buffer", "type": "f32", "fill": "iota"},
        {"kind": "buffer", "type": "f32", "fill": "ones"},
        {"kind": "buffer", "type": "f32", "fill": "zeros", "output": True},
        {"kind": "scalar", "type": "u32", "value": 4096}], device)


def check_custom(api, device):
    job = api.run(vector_add(device))
    out = (job.get("result") or {}).get("output") or {}
    buf = (out.get("buffers") or [{}])[0]
    check("custom vector_add succeeds with c = a + b", job["status"] == "succeeded"
          and buf.get("first", [None])[:3] == [1.0, 2.0, 3.0] and buf.get("max") == 4096.0,
          f"{job['status']} {job.get('error') or ''} first={buf.get('first', [])[:3]} max={buf.get('max')}")

    broken = "extern \"C\" __global__ void broken(float* y) {\n    y[threadIdx.x] = nope;\n}\n"
    job = api.run(custom(broken, "broken", 32, [{"kind": "buffer", "type": "f32"}], device))
    err = job.get("error") or ""
    check("a compile error fails with NVRTC's log at line and column",
          job["status"] == "failed" and "kernel.cu(2,22): error" in err, err[:400])
    check("after the compile error the next job succeeds", api.run(vector_add(device))["status"] == "succeeded")

    wild = "extern \"C\" __global__ void wild(float* y) {\n    float* p = (float*)0x10;\n    p[threadIdx.x] = y[0];\n}\n"
    job = api.run(custom(wild, "wild", 32, [{"kind": "buffer", "type": "f32"}], device))
    err = job.get("error") or ""
    check("an illegal address fails with the CUDA error's name", job["status"] == "failed"
          and "CUDA_ERROR_ILLEGAL_ADDRESS" in err, err[:400])
    t0 = time.monotonic()
    nxt = api.run(vector_add(device))
    check("after the fault the next job succeeds (new worker)", nxt["status"] == "succeeded",
          f"{nxt['status']} in {time.monotonic() - t0:.2f} s {nxt.get('error') or ''}")

    spin = "extern \"C\" __global__ void spin(unsigned* flag) {\n    while (atomicAdd(flag, 0u) == 0u) { }\n}\n"
    job = api.run(custom(spin, "spin", 1, [{"kind": "buffer", "type": "u32"}], device, timeout_s=3))
    check("an endless kernel is timed_out", job["status"] == "timed_out", f"{job['status']} {job.get('error')}")
    t0 = time.monotonic()
    nxt = api.run(vector_add(device))
    check("after the endless kernel the next job succeeds (new worker)", nxt["status"] == "succeeded",
          f"{nxt['status']} in {time.monotonic() - t0:.2f} s {nxt.get('error') or ''}")

    # Too big for the GPU: refused before anything is allocated, naming the limit.
    huge = custom(VECTOR_ADD, "vector_add", 2**32 - 1, [{"kind": "buffer", "type": "f64"}] * 32, device)
    status, problem = api.call("POST", "/api/jobs", huge)
    check("a job too big for the GPU is a 422 naming the free memory",
          status == 422 and "GiB free" in str(problem), f"{status} {problem}"[:300])

    # The same job on every GPU, compared.
    status, group = api.call("POST", "/api/jobs", {"kernel": "saxpy", "device": "all", "params": {"n": 1 << 26}})
    if check("device all queues one job per GPU", status == 202 and len(group.get("jobs", [])) >= 1, str(group)[:300]):
        for job in group["jobs"]:
            api.wait(job["id"])
        comparison = api.get(group["compare"])
        FIGURES["device all: saxpy 2^26 comparison"] = comparison["entries"]
        check("the comparison has every GPU's figure", comparison["complete"]
              and all(e["throughput"] for e in comparison["entries"]), json.dumps(comparison)[:400])

    # A cached module: a built-in kernel again on its warm worker. (A custom kernel always
    # runs in a fresh worker, so it is compiled every time.)
    saxpy = {"kernel": "saxpy", "device": device, "params": {"n": 4096}}
    api.run(saxpy)
    job = api.run(saxpy)
    module = ((job.get("result") or {}).get("output") or {}).get("modules", [{}])[0]
    FIGURES["cached module load ms"] = module.get("load_ms")
    target("cached module load (ms)", module.get("load_ms"), "≤ 1 ms",
           module.get("cache_hit") is True and (module.get("load_ms") or 99) <= 1.0)
    again = api.run(vector_add(device))
    fresh = ((again.get("result") or {}).get("output") or {}).get("modules", [{}])[0]
    check("a custom kernel runs in a fresh worker (its module is never cached)",
          again["status"] == "succeeded" and fresh.get("cache_hit") is False, json.dumps(fresh)[:300])
    first = [m for r in FIGURES.get("kernels", []) for m in (r.get("modules") or []) if not m.get("cache_hit")]
    if first:
        FIGURES["module compile ms (first use, NVRTC)"] = [round(m["compile_ms"], 1) for m in first]
        FIGURES["module load ms (first use, cuModuleLoadData)"] = [round(m["load_ms"], 3) for m in first]
        FIGURES["module images"] = sorted({f"{m['image']} {m['target']}" for m in first})


def check_ptx_fallback(gpulab, device):
    """The PTX path, which a GPU that NVRTC knows never takes by itself."""
    out = subprocess.run([gpulab, "run", "saxpy", "--device", device, "--param", "n=1000003",
                          "--repetitions", "3"], capture_output=True, text=True,
                         env={**os.environ, "GPULAB_NVRTC_PTX": "1", "GPULAB_LOG": "warn"})
    try:
        body = json.loads(out.stdout)
        module = body["result"]["output"]["modules"][0]
        ok = body["status"] == "succeeded" and module["image"] == "ptx" and module["target"].startswith("compute_")
        detail = f"{body['status']}, {module['image']} {module['target']}, {body['result']['throughput']}"
    except (ValueError, KeyError, TypeError, IndexError) as e:
        ok, detail = False, f"{e}: {out.stdout[-300:]} {out.stderr[-300:]}"
    check("PTX fallback (GPULAB_NVRTC_PTX=1): the driver JIT-compiles it and saxpy verifies", ok, detail)


def measure_latency(api, device, count=200):
    body = {"kernel": "vector_add", "device": device, "params": {"n": 1}, "repetitions": 1}
    for _ in range(20):
        api.wait(api.submit(body)["id"])
    ms = []
    for _ in range(count):
        t0 = time.perf_counter()
        job = api.wait(api.submit(body)["id"])
        ms.append((time.perf_counter() - t0) * 1e3)
        if job["status"] != "succeeded":
            check("smallest CUDA job succeeds", False, str(job.get("error")))
            return
    ms.sort()
    p50, p99 = ms[len(ms) // 2], ms[int(0.99 * (len(ms) - 1))]
    FIGURES["smallest CUDA job p50 ms"] = round(p50, 3)
    FIGURES["smallest CUDA job p99 ms"] = round(p99, 3)
    target("smallest CUDA job end to end, POST → succeeded, warm worker (p50 ms)", round(p50, 3), "≤ 5 ms", p50 <= 5.0)


def gpulab_figure(api, device, kernel, params, reps=20):
    job = api.run({"kernel": kernel, "device": device, "params": params, "repetitions": reps}, limit_s=120)
    r = job.get("result") or {}
    ok = job["status"] == "succeeded" and r.get("verification", {}).get("passed")
    check(f"benchmark {kernel} {params} succeeds and verifies", ok, str(job.get("error") or r.get("throughput")))
    return r.get("throughput", {}).get("value") if ok else None


def measure_against_torch(api, device, ordinal):
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device(f"cuda:{ordinal}")

    def bench(fn, n):
        for _ in range(3):
            fn()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(n):
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return statistics.median(times)

    size = 2 << 30  # 2 GiB
    a = torch.empty(size, dtype=torch.uint8, device=dev)
    b = torch.empty_like(a)
    t = bench(lambda: b.copy_(a), 20)
    torch_copy = 2 * size / t / 1e9
    del a, b
    n = 8192
    x = torch.randn(n, n, device=dev)
    y = torch.randn(n, n, device=dev)
    t = bench(lambda: torch.mm(x, y), 10)
    torch_sgemm = 2 * n ** 3 / t / 1e9
    del x, y
    torch.cuda.empty_cache()
    FIGURES["torch copy GB/s (2 GiB, read + write)"] = round(torch_copy, 1)
    FIGURES["torch.mm fp32 8192 GFLOP/s (TF32 off)"] = round(torch_sgemm, 1)

    copy = gpulab_figure(api, device, "bandwidth", {"size_mib": 2048})
    saxpy = gpulab_figure(api, device, "saxpy", {"n": 1 << 29})
    reduce = gpulab_figure(api, device, "reduce_sum", {"n": 1 << 29})
    vadd = gpulab_figure(api, device, "vector_add", {"n": 1 << 29})
    cublas = gpulab_figure(api, device, "matmul", {"m": n, "n": n, "k": n, "variant": "cublas"}, reps=10)
    tiled = gpulab_figure(api, device, "matmul", {"m": n, "n": n, "k": n, "variant": "tiled"}, reps=3)
    register_tiled = gpulab_figure(api, device, "matmul",
                                   {"m": n, "n": n, "k": n, "variant": "register_tiled"}, reps=5)
    FIGURES.update({
        "gpulab d2d copy GB/s (2 GiB, cuMemcpyDtoD, read + write)": copy,
        "gpulab saxpy GB/s (n = 2^29)": saxpy,
        "gpulab reduce_sum GB/s (n = 2^29)": reduce,
        "gpulab vector_add GB/s (n = 2^29)": vadd,
        "gpulab matmul cuBLAS 8192 GFLOP/s": cublas,
        "gpulab matmul tiled 8192 GFLOP/s": tiled,
        "gpulab matmul register_tiled 8192 GFLOP/s": register_tiled,
    })
    ratio = lambda a, b: round(a / b, 3) if a and b else None
    r = ratio(copy, torch_copy)
    target("device copy / torch copy", r, "≥ 0.90", r is not None and r >= 0.90)
    ref = copy or torch_copy
    r = ratio(saxpy, ref)
    target("saxpy / gpulab copy", r, "≥ 0.85", r is not None and r >= 0.85)
    r = ratio(reduce, ref)
    target("reduce_sum / gpulab copy", r, "≥ 0.85", r is not None and r >= 0.85)
    r = ratio(cublas, torch_sgemm)
    target("cuBLAS SGEMM / torch.mm", r, "≥ 0.90", r is not None and r >= 0.90)
    FIGURES["tiled / cuBLAS"] = ratio(tiled, cublas)
    # The ladder naive → tiled → register-tiled → cuBLAS (issue 12: register-tiled ≥ 0.40).
    r = ratio(register_tiled, cublas)
    FIGURES["register_tiled / cuBLAS"] = r
    target("matmul register_tiled / cuBLAS SGEMM (8192³)", r, "≥ 0.40", r is not None and r >= 0.40)
    measure_dtypes_against_torch(api, device, dev, bench, ratio)


def measure_dtypes_against_torch(api, device, dev, bench, ratio):
    """Each dtype's 8192³ GEMM against PyTorch's on the same GPU: torch.mm for fp64, tf32
    (allow_tf32), fp16 and bf16, torch._scaled_mm for fp8 (bf16 out, fast accumulation off),
    torch._int_mm for int8. Target ≥ 0.95 of PyTorch each, and ≥ 0.70 of the computed dense
    peak for fp16, bf16 and fp8."""
    import torch
    _, by_device = matmul_dtypes(api)
    n = 8192

    def torch_mm(dtype):
        torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
        if dtype == "fp8_e4m3":
            x = torch.randn(n, n, device=dev).to(torch.float8_e4m3fn)
            y = torch.randn(n, n, device=dev).to(torch.float8_e4m3fn).t().contiguous().t()  # column-major
            one = torch.tensor(1.0, device=dev)
            fn = lambda: torch._scaled_mm(x, y, scale_a=one, scale_b=one, out_dtype=torch.bfloat16,
                                          use_fast_accum=False)
        elif dtype == "int8":
            x = torch.randint(-128, 128, (n, n), dtype=torch.int8, device=dev)
            y = torch.randint(-128, 128, (n, n), dtype=torch.int8, device=dev).t().contiguous().t()
            fn = lambda: torch._int_mm(x, y)
        else:
            ty = {"fp64": torch.float64, "tf32": torch.float32, "fp16": torch.float16,
                  "bf16": torch.bfloat16}[dtype]
            x = torch.randn(n, n, device=dev, dtype=ty)
            y = torch.randn(n, n, device=dev, dtype=ty)
            fn = lambda: torch.mm(x, y)
        try:
            t = bench(fn, 10)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = False
        del x, y
        torch.cuda.empty_cache()
        return 2 * n ** 3 / t / 1e9

    peaks = api.get(f"/api/devices/{device}").get("peaks") or []
    for dtype in [t for t in by_device.get(device, []) if t != "fp32"]:
        unit = "GOP/s" if dtype == "int8" else "GFLOP/s"
        try:
            theirs = torch_mm(dtype)
        except Exception as e:  # an older PyTorch without _scaled_mm's signature, say
            theirs = None
            check(f"torch {dtype} 8192 runs", False, f"{type(e).__name__}: {e}"[:300])
        ours = gpulab_figure(api, device, "matmul", {"m": n, "n": n, "k": n, "dtype": dtype}, reps=10)
        FIGURES[f"torch {dtype} 8192 {unit}"] = round(theirs, 1) if theirs else None
        FIGURES[f"gpulab matmul {dtype} 8192 {unit}"] = round(ours, 1) if ours else None
        r = ratio(ours, theirs)
        target(f"matmul {dtype} / torch ({dtype}, 8192)", r, "≥ 0.95", r is not None and r >= 0.95)
        if dtype in ("fp16", "bf16", "fp8_e4m3"):
            # Against the device's computed dense tensor-core peak (GET /api/devices/{id}).
            peak = next((p["value"] for p in peaks if p["name"] == dtype and p["unit"] == unit), None)
            r = ratio(ours, peak)
            target(f"matmul {dtype} / computed {dtype} peak (8192)", r, "≥ 0.70", r is not None and r >= 0.70)


def write_report(path):
    doc = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "checks": CHECKS, "targets": TARGETS, "figures": FIGURES}
    with open(os.path.join(path, "gpu-check.json"), "w") as f:
        json.dump(doc, f, indent=2)
    lines = ["# gpulab GPU check", "", f"Date: {doc['date']}  ", f"GPUs: {FIGURES.get('gpus')}  ",
             f"Driver: {FIGURES.get('driver')}", "", "## Targets", "", "| | value | target | met |",
             "| --- | --- | --- | --- |"]
    lines += [f"| {t['name']} | {t['value']} | {t['target']} | {'yes' if t['passed'] else 'NO'} |" for t in TARGETS]
    lines += ["", "## Figures", ""]
    lines += [f"- {k}: {v}" for k, v in FIGURES.items() if k not in ("kernels",) and "sweep" not in k]
    lines += ["", "## Kernels", "", "| device | kernel | status | throughput | median ms | verified |",
              "| --- | --- | --- | --- | --- | --- |"]
    for r in FIGURES.get("kernels", []):
        tp = r["throughput"] or {}
        lines.append(f"| {r['device']} | {r['kernel']} | {r['status']} | {tp.get('value', 0):.1f} {tp.get('unit', '')} "
                     f"| {r['median_ms']} | {r['verified']} |")
    for k, sweep in FIGURES.items():
        if "sweep" in k:
            lines += ["", f"## {k} (GB/s)", "", "| bytes | " + " | ".join(
                sorted({p['direction'] for p in sweep})) + " |", "| --- |" + " --- |" * len({p['direction'] for p in sweep})]
            dirs = sorted({p['direction'] for p in sweep})
            for size in sorted({p["bytes"] for p in sweep}):
                row = {p["direction"]: p["gb_per_s"] for p in sweep if p["bytes"] == size}
                lines.append(f"| {size} | " + " | ".join(f"{row.get(d, 0):.1f}" for d in dirs) + " |")
    lines += ["", "## Checks", ""]
    lines += [f"- {'PASS' if c['passed'] else 'FAIL'} {c['name']}: {c['detail']}" for c in CHECKS]
    with open(os.path.join(path, "gpu-check.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpulab", required=True)
    parser.add_argument("--report", required=True)
    parser.add_argument("--skip-torch", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.report, exist_ok=True)
    data = tempfile.mkdtemp(prefix="gpulab-check-")
    proc, api = start_server(args.gpulab, data)
    started = time.monotonic()
    try:
        health = api.get("/api/health")
        check("health says CUDA is available", health["cuda"]["available"], json.dumps(health))
        devices = check_inventory(api)
        if devices:
            time.sleep(2.5)  # at least two telemetry samples
            check_telemetry(api, devices)
            check_kernels(api, devices)
            check_dtypes(api, devices)
            check_custom(api, devices[0]["id"])
            check_ptx_fallback(args.gpulab, devices[0]["id"])
            measure_latency(api, devices[0]["id"])
            if not args.skip_torch:
                measure_against_torch(api, devices[0]["id"], devices[0]["cuda"]["ordinal"])
    except Exception as e:  # a broken step is a failed check, and the report is still written
        check("the check ran to the end", False, f"{type(e).__name__}: {e}")
    finally:
        FIGURES["check seconds"] = round(time.monotonic() - started, 1)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        write_report(args.report)
    failed = [c for c in CHECKS if not c["passed"]] + [t for t in TARGETS if not t["passed"]]
    print(f"{len(CHECKS)} checks, {len(TARGETS)} targets, {len(failed)} failed or missed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
