// A fleet on loopback, for the Fleet page's test (fleet.test.mjs) and its screenshots
// (fleet-screenshots.mjs): gpulab nodes, each with its own data folder; Debian's Prometheus
// scraping them every second from a generated configuration, with the rules of
// deploy/prometheus/gpulab-rules.yml; and a hub, one more gpulab, that reads that Prometheus
// (--prometheus-url). Everything is real: no part is mocked.

import { spawn } from 'node:child_process';
import { existsSync, openSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { freePort, killed, startServer } from './servers.mjs';

export const ROOT = fileURLToPath(new URL('../', import.meta.url));
export const RULES = path.join(ROOT, 'deploy/prometheus/gpulab-rules.yml');
export const DASHBOARD = path.join(ROOT, 'deploy/grafana/gpulab-dashboard.json');
// `cargo xtask test` passes the binary of Debian's `prometheus` package, which it installs.
export const PROMETHEUS = process.env.GPULAB_PROMETHEUS ?? '/usr/bin/prometheus';
// The scrape job the rules and the dashboard select.
export const JOB = 'gpulab';

// Starts `count` nodes, Prometheus and the hub; answers the fleet, whose `stop()` ends them
// all and removes their folders. `silentTargets` more targets of the job are addresses where
// nothing listens: nodes that never answered.
export async function startFleet(count, { silentTargets = 0 } = {}) {
  if (!existsSync(PROMETHEUS)) {
    throw new Error(
      `Prometheus is not at ${PROMETHEUS}: install Debian's prometheus package ` +
        '(apt-get install prometheus; `cargo xtask test` does), or set GPULAB_PROMETHEUS to its binary',
    );
  }
  if (!existsSync(RULES)) throw new Error(`the alert rules are missing: ${RULES}`);
  const dir = await mkdtemp(path.join(tmpdir(), 'gpulab-fleet-'));
  const children = [];
  const fleet = {
    dir,
    nodes: [],
    prometheus: null,
    hub: null,
    async stop() {
      await Promise.all(children.map((child) => killed(child, 'SIGTERM')));
      await rm(dir, { recursive: true, force: true });
    },
  };
  try {
    for (let i = 0; i < count; i += 1) {
      const port = await freePort();
      const dataDir = path.join(dir, `node-${i}`);
      await mkdir(dataDir);
      // Test faults: a job that crashes its worker is how a node gets a failed job.
      const child = await startServer(port, dataDir, { GPULAB_LOG: 'warn' }, ['--enable-test-faults']);
      children.push(child);
      fleet.nodes.push({ instance: `127.0.0.1:${port}`, url: `http://127.0.0.1:${port}`, child });
    }

    fleet.silent = [];
    for (let i = 0; i < silentTargets; i += 1) fleet.silent.push(`127.0.0.1:${await freePort()}`);
    const targets = [...fleet.nodes.map((n) => n.instance), ...fleet.silent];
    const port = await freePort();
    const config = path.join(dir, 'prometheus.yml');
    // JSON strings are YAML strings.
    await writeFile(
      config,
      [
        'global:',
        '  scrape_interval: 1s',
        '  evaluation_interval: 1s',
        'rule_files:',
        `  - ${JSON.stringify(RULES)}`,
        'scrape_configs:',
        `  - job_name: ${JOB}`,
        '    static_configs:',
        `      - targets: [${targets.map((t) => JSON.stringify(t)).join(', ')}]`,
        '',
      ].join('\n'),
    );
    const logFile = path.join(dir, 'prometheus.log');
    const log = openSync(logFile, 'w');
    const prometheus = spawn(
      PROMETHEUS,
      [
        `--config.file=${config}`,
        `--storage.tsdb.path=${path.join(dir, 'tsdb')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
      ],
      { stdio: ['ignore', log, log] },
    );
    children.push(prometheus);
    fleet.prometheus = { url: `http://127.0.0.1:${port}`, child: prometheus, logFile };
    await waitFor(
      async () => {
        if (prometheus.exitCode !== null) {
          throw new Error(`Prometheus exited (${prometheus.exitCode}):\n${readFileSync(logFile, 'utf8')}`);
        }
        const ready = await fetch(`${fleet.prometheus.url}/-/ready`).catch(() => null);
        return ready?.ok;
      },
      30_000,
      'Prometheus to be ready',
    );

    const hubPort = await freePort();
    const hubDir = path.join(dir, 'hub');
    await mkdir(hubDir);
    const hub = await startServer(hubPort, hubDir, {
      GPULAB_LOG: 'warn',
      GPULAB_PROMETHEUS_URL: fleet.prometheus.url,
    });
    children.push(hub);
    fleet.hub = { url: `http://127.0.0.1:${hubPort}`, child: hub };
  } catch (error) {
    await fleet.stop();
    throw error;
  }
  return fleet;
}

// The answer of Prometheus' instant query `expr`: `{resultType, result}`. A refusal throws.
export async function query(prometheusUrl, expr) {
  const response = await fetch(`${prometheusUrl}/api/v1/query?query=${encodeURIComponent(expr)}`);
  const body = await response.json();
  if (body.status !== 'success') {
    throw new Error(`Prometheus refused \`${expr}\` (${response.status}): ${body.errorType}: ${body.error}`);
  }
  return body.data;
}

// Calls `check` every 250 ms until it answers something truthy, which is returned; throws
// after `timeoutMs`, naming `what` and the last error.
export async function waitFor(check, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      last = error;
      if (/exited/.test(error.message)) throw error;
    }
    if (Date.now() > deadline) {
      throw new Error(`waited ${timeoutMs / 1000} s for ${what}${last ? `: ${last.message}` : ''}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

// Queues `request` on the node at `url` and waits until the job has ended; answers it.
export async function runJob(url, request) {
  const response = await fetch(`${url}/api/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(request),
  });
  if (response.status !== 202) {
    throw new Error(`POST ${url}/api/jobs ${JSON.stringify(request)}: ${response.status} ${await response.text()}`);
  }
  const { id } = await response.json();
  return waitFor(
    async () => {
      const job = await (await fetch(`${url}/api/jobs/${id}`)).json();
      return ['queued', 'running'].includes(job.status) ? null : job;
    },
    60_000,
    `job ${id} on ${url} to end`,
  );
}

// Gives a node's job metrics something to show: a job that succeeds and one that fails (its
// worker crashes), twice, a few scrapes apart, so that counters and histograms increase
// within a rate window rather than only appear.
export async function exerciseJobs(url) {
  const jobs = [];
  for (let round = 0; round < 2; round += 1) {
    if (round) await new Promise((resolve) => setTimeout(resolve, 2_500));
    jobs.push(await runJob(url, { kernel: 'vector_add', device: 'cpu', params: { n: 4096 }, repetitions: 2 }));
    jobs.push(await runJob(url, { kernel: '_test_fault', device: 'cpu', params: { mode: 'crash' } }));
  }
  return jobs;
}
