// The fleet with real parts: three gpulab servers on loopback ports with their own data
// folders, Debian's Prometheus scraping them every second with the rules of
// deploy/prometheus/gpulab-rules.yml, and a fourth gpulab (the hub) started with
// --prometheus-url, whose Fleet page Chromium reads (fleet.mjs starts them); the scrape job
// has a fourth target where nothing listens, a node that never answered. Prometheus must see
// the three up, every query of deploy/grafana/gpulab-dashboard.json must answer, the Fleet
// page must show the three nodes and their devices, and the silent one down; then one node
// stops, and the page must show it down and Prometheus its GpulabDown alert pending. On a machine without a GPU
// each node has only its CPU, and the dashboard's GPU queries can only be checked to run.
// Screenshots go to end2end/artifacts/fleet-*.png.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, test } from 'node:test';

import { BASE_URL, withPage } from './browser.mjs';
import { DASHBOARD, JOB, exerciseJobs, query, startFleet, waitFor } from './fleet.mjs';
import { killed } from './servers.mjs';

// The alert of deploy/prometheus/gpulab-rules.yml on `up == 0`; it waits a minute before
// firing, so a node stopped a few seconds ago has it pending.
const DOWN_ALERT = 'GpulabDown';
// How long the Fleet page may take to show a change: its refresh (5 s), a scrape (1 s) and
// the hub's queries, with room for a loaded machine.
const PAGE_TIMEOUT_MS = 20_000;

let fleet;
// The diagnostic run on the first node's CPU, where the nodes have diagnostics.
let diagnostic = null;

before(async () => {
  fleet = await startFleet(3, { silentTargets: 1 });
});

after(async () => {
  await fleet?.stop();
});

// The nodes' `up` series as Prometheus has them now, by instance.
async function upByInstance() {
  const { result } = await query(fleet.prometheus.url, `up{job="${JOB}"}`);
  return Object.fromEntries(result.map((s) => [s.metric.instance, s.value[1]]));
}

test('Prometheus scrapes all three nodes: up == 1', async () => {
  const instances = fleet.nodes.map((n) => n.instance);
  const [silent] = fleet.silent;
  const up = await waitFor(
    async () => {
      const up = await upByInstance();
      return instances.every((i) => up[i] === '1') && up[silent] === '0' ? up : null;
    },
    30_000,
    'up == 1 for all three nodes, and 0 for the silent target',
  );
  assert.deepEqual(Object.keys(up).sort(), [...instances, silent].sort());
  const { result } = await query(fleet.prometheus.url, `up{job="${JOB}"} == 1`);
  assert.equal(result.length, 3);
});

test('every query of the Grafana dashboard runs, with data wherever this machine has the metrics', async (t) => {
  const dashboard = JSON.parse(await readFile(DASHBOARD, 'utf8'));
  // Jobs that succeed and fail, so that the job panels have something to count.
  await Promise.all(fleet.nodes.map((node) => exerciseJobs(node.url)));
  // Until diagnostics exist on these nodes (the diagnostics work adds them), their panels
  // have no data to show.
  const openapi = await (await fetch(`${fleet.nodes[0].url}/api/openapi.json`)).json();
  const diagnostics = Boolean(openapi.paths['/api/diagnostics']);
  diagnostic = diagnostics ? await runDiagnostic(fleet.nodes[0].url) : null;
  // A scrape and a rule evaluation after the last job.
  await new Promise((resolve) => setTimeout(resolve, 2_500));

  const variables = {
    // Every node, as Grafana's "All" on a multi-value variable would send them.
    instance: fleet.nodes.map((n) => n.instance).join('|'),
    // Grafana's own: the rate window and the dashboard's time range, wide enough for this test.
    __rate_interval: '1m',
    __interval: '15s',
    __range: '5m',
  };
  const substitute = (expr) =>
    expr.replace(/\$\{(\w+)\}|\$(\w+)|\[\[(\w+)\]\]/g, (whole, a, b, c) => {
      const name = a ?? b ?? c;
      assert.ok(name in variables, `the dashboard uses $${name}, which this test does not know: ${expr}`);
      return variables[name];
    });
  const targets = panels(dashboard.panels)
    .flatMap((panel) => (panel.targets ?? []).map((target) => ({ panel: panel.title, target })))
    .filter(({ target }) => target.expr && !target.hide);
  assert.ok(targets.length >= 10, `the dashboard has queries: ${targets.length}`);

  const withData = [];
  const excused = [];
  const empty = [];
  for (const { panel, target } of targets) {
    const expr = substitute(target.expr);
    const { result } = await query(fleet.prometheus.url, expr);
    if (result.length > 0) {
      withData.push(panel);
    } else if (/gpulab_gpu|:gpulab_gpu/.test(expr)) {
      excused.push(`${panel}: needs a GPU (${target.expr})`);
    } else if (!diagnostics && /gpulab_diagnostic/.test(expr)) {
      excused.push(`${panel}: these nodes export no diagnostics (${target.expr})`);
    } else if (!judged(diagnostic) && /gpulab_diagnostic/.test(expr)) {
      excused.push(`${panel}: the diagnostic judged nothing (${diagnostic?.verdict}) (${target.expr})`);
    } else if (diagnostic?.verdict === 'pass' && /gpulab_diagnostic_result.*> *0/.test(expr)) {
      excused.push(`${panel}: no check of the diagnostic warned or failed (${target.expr})`);
    } else {
      empty.push(`${panel}: ${expr}`);
    }
  }
  t.diagnostic(`${withData.length} queries returned data; ${excused.length} ran without data:`);
  for (const line of excused) t.diagnostic(`  ${line}`);
  assert.deepEqual(empty, [], 'queries without data although the nodes export what they ask for');
  assert.ok(withData.length >= 10, `most queries have data here: ${withData.length}`);
});

test('the Fleet page shows the three nodes, each up with its devices and a link to it', async () => {
  await withPage('fleet', async (page) => {
    await page.goto(`${fleet.hub.url}/fleet`);
    // The page sets its title once the app runs.
    await page.waitForFunction(() => document.title === 'Fleet · gpulab');
    assert.equal(
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Fleet' }).getAttribute('aria-current'),
      'page',
    );
    const cards = page.getByTestId('fleet-node');
    await waitFor(async () => (await page.locator('[data-testid="fleet-node"][data-up="true"]').count()) === 3, PAGE_TIMEOUT_MS, 'three nodes up on the page');
    assert.equal(await page.getByTestId('fleet-count').innerText(), '4 node(s): 3 up, 1 down');
    // The target that never answered is a node of the job all the same: down, no devices.
    const silent = cards.and(page.locator(`[data-instance="${fleet.silent[0]}"]`));
    assert.equal(await silent.getAttribute('data-up'), 'false');
    assert.match(await silent.getByTestId('fleet-node-state').innerText(), /^▼ down$/);
    assert.equal(await silent.getByTestId('fleet-device').count(), 0);
    for (const node of fleet.nodes) {
      const card = cards.and(page.locator(`[data-instance="${node.instance}"]`));
      assert.equal(await card.count(), 1, node.instance);
      assert.match(await card.getByTestId('fleet-node-state').innerText(), /^▲ up$/);
      assert.equal(await card.getByTestId('fleet-node-link').getAttribute('href'), `${node.url}/`);
      // The devices the node itself lists: here the CPU only, as this machine has no GPU.
      const devices = await (await fetch(`${node.url}/api/devices`)).json();
      const rows = card.getByTestId('fleet-device');
      assert.deepEqual(
        await rows.evaluateAll((rows) => rows.map((r) => r.dataset.device)),
        devices.map((d) => d.id),
      );
      for (const device of devices) {
        const row = rows.and(page.locator(`[data-device="${device.id}"]`));
        const text = await row.innerText();
        assert.ok(text.includes(device.name), `${node.instance} ${device.id} shows its model: ${text}`);
        assert.match(text, /\d+ %/, `its utilisation: ${text}`);
        assert.match(text, /[\d.]+ [KMGT]iB of [\d.]+ [KMGT]iB/, `its memory: ${text}`);
        assert.equal(await row.getAttribute('data-reported'), 'true');
        const last = diagnostic && node === fleet.nodes[0] && device.id === 'cpu' ? diagnostic : null;
        if (judged(last)) {
          assert.match(text, new RegExp(`${last.verdict} level 1`), `its last diagnostic: ${text}`);
        } else {
          assert.match(text, /unknown\s*$/, `no diagnostic ran: ${text}`);
        }
      }
    }
    // A node's link opens its own gpulab.
    const first = fleet.nodes[0];
    await cards.and(page.locator(`[data-instance="${first.instance}"]`)).getByTestId('fleet-node-link').click();
    await page.waitForURL(`${first.url}/`);
    await page.getByRole('heading', { name: 'Devices' }).waitFor();
  });
});

test('a stopped node turns down on the open Fleet page, and its GpulabDown alert is pending', async () => {
  const [stopped, ...running] = fleet.nodes.slice().reverse();
  await withPage('fleet-down', async (page) => {
    await page.goto(`${fleet.hub.url}/fleet`);
    await waitFor(async () => (await page.locator('[data-testid="fleet-node"][data-up="true"]').count()) === 3, PAGE_TIMEOUT_MS, 'three nodes up on the page');
    await killed(stopped.child, 'SIGTERM');
    // The page refreshes by itself: no reload.
    const card = page.locator(`[data-testid="fleet-node"][data-instance="${stopped.instance}"]`);
    await waitFor(async () => (await card.getAttribute('data-up')) === 'false', PAGE_TIMEOUT_MS, `${stopped.instance} down on the page`);
    assert.match(await card.getByTestId('fleet-node-state').innerText(), /^▼ down$/, 'said in words, not by colour alone');
    assert.match(await card.getByTestId('fleet-node-down').innerText(), /cannot scrape this node/);
    // Its devices stay listed, as last reported, without figures.
    const cpu = card.locator('[data-testid="fleet-device"][data-device="cpu"]');
    assert.equal(await cpu.getAttribute('data-reported'), 'false');
    assert.match(await cpu.innerText(), /last seen/);
    assert.doesNotMatch(await cpu.innerText(), /\d+ %/);
    for (const node of running) {
      assert.equal(await page.locator(`[data-testid="fleet-node"][data-instance="${node.instance}"]`).getAttribute('data-up'), 'true');
    }
    assert.equal(await page.getByTestId('fleet-count').innerText(), '4 node(s): 2 up, 2 down');
  });

  const up = await upByInstance();
  assert.equal(up[stopped.instance], '0');
  const alert = await waitFor(
    async () => {
      const { data } = await (await fetch(`${fleet.prometheus.url}/api/v1/alerts`)).json();
      return data.alerts.find((a) => a.labels.alertname === DOWN_ALERT && a.labels.instance === stopped.instance);
    },
    15_000,
    `the ${DOWN_ALERT} alert of ${stopped.instance}`,
  );
  assert.equal(alert.state, 'pending', `it fires only after its minute: ${JSON.stringify(alert)}`);
  const { data } = await (await fetch(`${fleet.prometheus.url}/api/v1/alerts`)).json();
  const others = data.alerts
    .filter((a) => a.labels.alertname === DOWN_ALERT)
    .map((a) => a.labels.instance)
    .filter((instance) => instance !== stopped.instance);
  assert.deepEqual(others, fleet.silent, 'the running nodes have no such alert, the silent target has');
});

test('without --prometheus-url the Fleet page says how to set it up', async () => {
  await withPage('fleet-setup', async (page) => {
    await page.goto(`${BASE_URL}/fleet`);
    const setup = page.getByTestId('fleet-setup');
    await setup.waitFor();
    const text = await setup.innerText();
    assert.match(text, /--prometheus-url/);
    assert.match(text, /GPULAB_PROMETHEUS_URL/);
    assert.equal(await page.getByTestId('fleet-node').count(), 0);
  });
});

// Whether a diagnostic ended with a verdict that gpulab exports (a skipped one has none).
function judged(diagnostic) {
  return ['pass', 'warn', 'fail'].includes(diagnostic?.verdict);
}

// Every panel of `list`, those inside rows included.
function panels(list = []) {
  return list.flatMap((panel) => [panel, ...panels(panel.panels)]);
}

// Runs a level 1 diagnostic on the CPU of the node at `url`; answers it once it has ended.
async function runDiagnostic(url) {
  const response = await fetch(`${url}/api/diagnostics`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ level: 1, device: 'cpu' }),
  });
  assert.equal(response.status, 202, `POST /api/diagnostics: ${await response.clone().text()}`);
  const { id } = await response.json();
  return waitFor(
    async () => {
      const diagnostic = await (await fetch(`${url}/api/diagnostics/${id}`)).json();
      return ['queued', 'running'].includes(diagnostic.status) ? null : diagnostic;
    },
    60_000,
    `diagnostic ${id} to end`,
  );
}
