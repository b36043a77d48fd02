#!/usr/bin/env python3
"""The diagnostics part of the GPU check, run by run.sh: `gpulab diag` on the first GPU.

  * level 1, 2 and 3 (--duration 60s) with --json, each verdict and figure into the report;
  * one run with an injected fault (a flipped bit in the memory test's readback), which must
    fail (exit code 2) naming the address and the bit;
  * `nvidia-smi -q` saved beside level 1's JSON, and what level 1 reports compared with it.
Writes diag-level{1,2,3}.json, diag-fault.json, nvidia-smi-q.txt, diag.json and diag.md into
--report. Standard library only. Exit status 1 when a run could not run, a fault was not
seen, level 1 disagrees with nvidia-smi, or a level took longer than its limit.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

# The limits per GPU: level 1 within 10 s, level 2 within 2 minutes.
LIMITS_S = {1: 10.0, 2: 120.0}
RESULTS = []  # {"name", "passed", "detail"}


def check(name, passed, detail=""):
    RESULTS.append({"name": name, "passed": bool(passed), "detail": detail})
    print(("PASS " if passed else "FAIL ") + name + (f": {detail}" if detail else ""), flush=True)
    return passed


def diag(gpulab, report, name, args, timeout_s):
    started = time.monotonic()
    proc = subprocess.run([gpulab, "diag", "--json", *args], capture_output=True, text=True,
                          timeout=timeout_s)
    seconds = time.monotonic() - started
    with open(os.path.join(report, f"{name}.json"), "w") as f:
        f.write(proc.stdout)
    with open(os.path.join(report, f"{name}.stderr.txt"), "w") as f:
        f.write(proc.stderr)
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError:
        doc = None
    return proc.returncode, doc, seconds


def checks_of(doc):
    return doc["devices"][0]["checks"] if doc and doc.get("devices") else []


def evidence(doc, check_id, name):
    for c in checks_of(doc):
        if c["check"] == check_id:
            for e in c["evidence"]:
                if e["name"] == name:
                    return e
    return None


def smi_value(text, label):
    """The first `label : value` line of nvidia-smi -q."""
    m = re.search(r"^\s*" + re.escape(label) + r"\s*:\s*(.+?)\s*$", text, re.M)
    return m.group(1) if m else None


def compare_with_smi(doc, smi):
    uuid = evidence(doc, "identity", "UUID in NVML")
    smi_uuid = smi_value(smi, "GPU UUID")
    check("level 1's UUID is nvidia-smi's", uuid and smi_uuid and uuid["measured_text"] == smi_uuid,
          f"{uuid and uuid['measured_text']} vs {smi_uuid}")
    pm = evidence(doc, "persistence_mode", "persistence mode")
    smi_pm = smi_value(smi, "Persistence Mode")
    check("level 1's persistence mode is nvidia-smi's",
          pm and smi_pm and (pm["measured_text"] == "enabled") == (smi_pm == "Enabled"),
          f"{pm and pm['measured_text']} vs {smi_pm}")
    ecc = evidence(doc, "ecc", "ECC mode")
    m = re.search(r"ECC Mode\s*\n\s*Current\s*:\s*(\S+)", smi)
    smi_ecc = m.group(1) if m and m.group(1) != "N/A" else None
    check("level 1's ECC mode is nvidia-smi's",
          ecc is None and smi_ecc is None or
          (ecc and smi_ecc and ecc["measured_text"].startswith("enabled") == (smi_ecc == "Enabled")),
          f"{ecc and ecc['measured_text']} vs {smi_ecc}")
    width = evidence(doc, "pcie_link", "link width")
    m = re.search(r"Link Width\s*\n\s*Max\s*:\s*(\d+)x", smi)
    check("level 1's maximum PCIe width is nvidia-smi's",
          width and m and width["expected"] == float(m.group(1)),
          f"{width and width['expected']} vs {m and m.group(1)}")
    driver = evidence(doc, "libraries", "NVIDIA driver")
    smi_driver = smi_value(smi, "Driver Version")
    check("level 1's driver version is nvidia-smi's",
          driver and smi_driver and smi_driver in driver["measured_text"],
          f"{driver and driver['measured_text']} vs {smi_driver}")


def markdown(runs):
    lines = ["# gpulab diag on the GPU", ""]
    for name, (code, doc, seconds) in runs.items():
        verdict = doc and doc.get("verdict")
        lines += [f"## {name}: {verdict}, exit code {code}, {seconds:.1f} s", "",
                  "| check | verdict | s | summary | evidence |", "| --- | --- | --- | --- | --- |"]
        for c in checks_of(doc):
            figures = "; ".join(
                f"{e['name']}: {e.get('measured_text') or e.get('measured')} {e.get('unit') or ''}"
                + (f" (expected {e.get('expected_text') or e.get('expected')})"
                   if e.get("expected") is not None or e.get("expected_text") else "")
                for e in c["evidence"][:4])
            lines.append(f"| {c.get('check')} | {c.get('verdict')} | {c.get('duration_s') or 0:.1f} | "
                         f"{c.get('summary')} | {figures} |")
        lines.append("")
    lines += ["## Checks", ""] + [f"- {'PASS' if r['passed'] else 'FAIL'} {r['name']}: {r['detail']}"
                                 for r in RESULTS]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpulab", required=True)
    parser.add_argument("--report", required=True)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--duration", default="60s")
    args = parser.parse_args()
    os.makedirs(args.report, exist_ok=True)
    runs = {}
    try:
        smi = subprocess.run(["nvidia-smi", "-q"], capture_output=True, text=True).stdout
        with open(os.path.join(args.report, "nvidia-smi-q.txt"), "w") as f:
            f.write(smi)
        for level, extra, timeout_s in [(1, [], 60), (2, [], 300),
                                        (3, ["--duration", args.duration], 420)]:
            code, doc, seconds = diag(args.gpulab, args.report, f"diag-level{level}",
                                      ["--device", args.device, "--level", str(level), *extra],
                                      timeout_s)
            runs[f"level {level}"] = (code, doc, seconds)
            check(f"level {level} ran (exit code {code}: 0 pass, 1 warn, 2 fail)",
                  code in (0, 1, 2) and doc is not None, f"{seconds:.1f} s, verdict {doc and doc['verdict']}")
            if level in LIMITS_S:
                check(f"level {level} within {LIMITS_S[level]:.0f} s", seconds <= LIMITS_S[level],
                      f"{seconds:.1f} s")
            if level == 1 and doc:
                compare_with_smi(doc, smi)
        code, doc, seconds = diag(args.gpulab, args.report, "diag-fault",
                                  ["--device", args.device, "--level", "2", "--inject",
                                   "memory_bit_flip", "--memory-test-mib", "1024"], 300)
        runs["level 2, fault memory_bit_flip"] = (code, doc, seconds)
        flipped = [e for c in checks_of(doc) if c["check"] == "memory_test"
                   for e in c["evidence"] if "error at offset" in e["name"]]
        check("an injected bit flip fails the GPU's memory test (exit code 2) with its address and bit",
              code == 2 and flipped and flipped[0]["measured_text"].startswith("bit 13"),
              f"exit {code}: {flipped[:1]}")
    except Exception as e:  # a broken step is a failed check, and the report is still written
        check("the diagnostics check ran to the end", False, f"{type(e).__name__}: {e}")
    finally:
        with open(os.path.join(args.report, "diag.json"), "w") as f:
            json.dump({"checks": RESULTS,
                       "seconds": {k: round(v[2], 1) for k, v in runs.items()}}, f, indent=2)
        with open(os.path.join(args.report, "diag.md"), "w") as f:
            f.write(markdown(runs))
    failed = [r for r in RESULTS if not r["passed"]]
    print(f"diag: {len(RESULTS)} checks, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
