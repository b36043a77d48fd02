// Browser tests of the gpulab UI against a running server.
//
// `cargo xtask test` starts the real server on a free port with the built dist/ and sets
// GPULAB_URL; by hand: GPULAB_URL=http://127.0.0.1:8080 node --test end2end/
//
// Every test fails on any page error or console error: a green build proves nothing about
// the wasm, so the UI has to load and run in a real browser. Screenshots go to
// end2end/artifacts/.

import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const BASE_URL = (process.env.GPULAB_URL ?? '').replace(/\/+$/, '');
const ARTIFACTS = fileURLToPath(new URL('./artifacts/', import.meta.url));
const CHROMIUM = process.env.GPULAB_CHROMIUM ?? '/usr/bin/chromium';
// How long a small job may take from launch to its final status.
const JOB_TIMEOUT_MS = 60_000;

let browser;

before(async () => {
  assert.ok(BASE_URL, 'set GPULAB_URL to the URL of a running gpulab server');
  await mkdir(ARTIFACTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
});

after(async () => {
  await browser?.close();
});

// Runs `body` with a fresh page that records page errors, console errors and the requests
// it makes; saves a screenshot named `name` and fails on any error, whatever `body` did.
async function withPage(name, body) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const errors = [];
  const requests = [];
  page.on('pageerror', (error) => errors.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(`console error: ${message.text()}`);
  });
  page.on('request', (request) => requests.push(`${request.method()} ${new URL(request.url()).pathname}`));
  try {
    await body(page, requests);
  } finally {
    await page.screenshot({ path: `${ARTIFACTS}/${name}.png`, fullPage: true }).catch(() => {});
    await context.close();
  }
  assert.deepEqual(errors, [], `the page reported errors:\n${errors.join('\n')}`);
}

async function api(path) {
  const response = await fetch(`${BASE_URL}${path}`);
  assert.equal(response.status, 200, `GET ${path}`);
  const type = response.headers.get('content-type') ?? '';
  return type.includes('json') ? response.json() : response.text();
}

// Queues a job through the API, as another user of the server would.
async function postJob(request) {
  const response = await fetch(`${BASE_URL}/api/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(request),
  });
  assert.ok(response.ok, `POST /api/jobs ${JSON.stringify(request)}: ${response.status}`);
  return response.json();
}

// Opens the launcher, fills in the form and submits it; returns the new job's id.
// `beforeSubmit` runs just before the click.
async function launch(page, kernel, device, params, repetitions, beforeSubmit = async () => {}) {
  await page.goto(`${BASE_URL}/launch`);
  const form = page.getByTestId('launch-form');
  await form.waitFor();
  await form.locator('select[name="kernel"]').selectOption(kernel);
  await form.locator('select[name="device"]').selectOption(device);
  for (const [name, value] of Object.entries(params)) {
    await form.locator(`[name="param-${name}"]`).fill(String(value));
  }
  await form.locator('input[name="repetitions"]').fill(String(repetitions));
  await beforeSubmit();
  await page.getByTestId('launch-submit').click();
  await page.waitForURL(/\/jobs\/\d+$/);
  return Number(new URL(page.url()).pathname.split('/').pop());
}

// Waits on the job page until the job has ended and returns its final status.
async function finalStatus(page) {
  const status = page.getByTestId('job-status');
  await page.waitForFunction(
    () => {
      const text = document.querySelector('[data-testid="job-status"]')?.textContent ?? '';
      return text.trim() !== '' && !/queued|running/.test(text);
    },
    null,
    { timeout: JOB_TIMEOUT_MS },
  );
  return (await status.textContent()).trim();
}

test('the devices page shows the CPU card, the device count and the CUDA status', async () => {
  const devices = await api('/api/devices');
  const cpu = devices.find((d) => d.id === 'cpu');
  assert.ok(cpu, 'the server lists the CPU');
  const health = await api('/api/health');
  const pycudaLine = await api('/api/devices?format=text');

  await withPage('devices', async (page) => {
    await page.goto(`${BASE_URL}/`);
    const card = page.getByTestId('device-card-cpu');
    await card.waitFor();
    const text = await card.innerText();
    assert.ok(text.includes(cpu.name), `the card names the CPU (${cpu.name}): ${text}`);
    if (cpu.cpu?.model) assert.ok(text.includes(cpu.cpu.model), `the card shows the model: ${text}`);
    assert.match(text, /Memory/);
    if (cpu.total_memory_bytes) assert.match(text, /free of [\d.]+ (MiB|GiB|TiB)/, text);

    const count = (await page.getByTestId('device-count').innerText()).trim();
    assert.match(count, /^\d+ device\(s\) found\.$/);
    assert.ok(pycudaLine.startsWith(count), `"${count}" begins the server's "${pycudaLine}"`);

    const cuda = await page.getByTestId('cuda-status').innerText();
    if (!health.cuda.available) assert.ok(cuda.includes(health.cuda.reason), cuda);

    for (const device of devices) {
      await page.getByTestId(`device-card-${device.id}`).waitFor();
    }
    assert.equal(await page.title(), 'Devices · gpulab');
  });
});

test('a vector_add job on the CPU runs to success and shows its throughput', async () => {
  await withPage('jobs', async (page) => {
    const id = await launch(page, 'vector_add', 'cpu', { n: 4096 }, 3);
    assert.equal(await finalStatus(page), 'succeeded');
    const throughput = await page.getByTestId('job-throughput').innerText();
    assert.match(throughput, /\d/, `throughput: ${throughput}`);
    assert.match(throughput, /\/s/, `throughput has a rate unit: ${throughput}`);
    assert.match(await page.getByTestId('job-verification').innerText(), /passed/);
    assert.equal(await page.getByTestId('job-cancel').count(), 0, 'no cancel button once finished');
    assert.equal(await page.title(), `Job ${id} (succeeded) · gpulab`);
    await page.screenshot({ path: `${ARTIFACTS}/job-vector-add.png`, fullPage: true });

    // The jobs table lists it, with its status.
    await page.getByRole('link', { name: 'Jobs', exact: true }).click();
    await page.waitForURL(/\/jobs$/);
    const row = page.locator(`[data-testid="job-row"][data-job-id="${id}"]`);
    await row.waitFor();
    assert.equal(await row.getAttribute('data-status'), 'succeeded');
  });
});

test('the launcher refuses an out-of-range parameter without sending anything', async () => {
  await withPage('launch-refused', async (page, requests) => {
    await page.goto(`${BASE_URL}/launch`);
    const form = page.getByTestId('launch-form');
    await form.waitFor();
    await form.locator('select[name="kernel"]').selectOption('vector_add');
    await form.locator('[name="param-n"]').fill('0');
    const error = page.getByTestId('field-error-n');
    await page.waitForFunction(
      () => document.querySelector('[data-testid="field-error-n"]')?.textContent.trim() !== '',
    );
    await page.getByTestId('launch-submit').click();
    await page.waitForTimeout(500);
    assert.match(await error.innerText(), /from 1 to/);
    assert.equal(await form.locator('[name="param-n"]').getAttribute('aria-invalid'), 'true');
    assert.ok(!requests.includes('POST /api/jobs'), `no job was posted: ${requests.join(', ')}`);
    assert.equal(new URL(page.url()).pathname, '/launch');
  });
});

test('a small mandelbrot job shows the image it computed', async () => {
  await withPage('job-mandelbrot', async (page) => {
    const id = await launch(page, 'mandelbrot', 'cpu', { width: 64, height: 48, max_iter: 64 }, 1);
    assert.equal(await finalStatus(page), 'succeeded');
    const image = page.getByTestId('job-artifact');
    await image.waitFor();
    assert.equal(await image.getAttribute('src'), `/api/jobs/${id}/artifact`);
    await page.waitForFunction(() => {
      const img = document.querySelector('[data-testid="job-artifact"]');
      return img?.complete && img.naturalWidth > 0;
    });
    assert.equal(await image.evaluate((img) => img.naturalWidth), 64);
  });
});

// The number of points of a sparkline's line.
function sparklinePoints(page, device, metric) {
  return page.evaluate(
    ([device, metric]) => {
      const line = document.querySelector(
        `[data-testid="telemetry-${device}"] [data-testid="sparkline-${metric}"] polyline`,
      );
      return (line?.getAttribute('points') ?? '').split(/\s+/).filter(Boolean).length;
    },
    [device, metric],
  );
}

test('the CPU card shows live telemetry that the event stream keeps moving', async () => {
  await withPage('devices-telemetry', async (page, requests) => {
    await page.goto(`${BASE_URL}/`);
    const telemetry = page.getByTestId('telemetry-cpu');
    await telemetry.waitFor();
    const utilization = telemetry.getByTestId('value-utilization');
    await page.waitForFunction(
      () =>
        /^\d+ %$/.test(
          document
            .querySelector('[data-testid="telemetry-cpu"] [data-testid="value-utilization"]')
            ?.textContent.trim() ?? '',
        ),
      null,
      { timeout: 5_000 },
    );
    assert.match(await utilization.innerText(), /^\d+ %$/);
    await page.waitForFunction(
      () => {
        const line = document.querySelector(
          '[data-testid="telemetry-cpu"] [data-testid="sparkline-utilization"] polyline',
        );
        return (line?.getAttribute('points') ?? '').split(/\s+/).filter(Boolean).length >= 2;
      },
      null,
      { timeout: 5_000 },
    );
    const sparkline = telemetry.getByTestId('sparkline-utilization');
    assert.match(
      await sparkline.getAttribute('aria-label'),
      /^CPU utilisation over the last \d+ (second|minute)s?, (\d+ % to \d+ %|steady at \d+ %)$/,
    );
    for (const point of (await sparkline.locator('polyline').getAttribute('points')).split(' ')) {
      const [x, y] = point.split(',').map(Number);
      assert.ok(x >= 0 && x <= 100 && y >= 0 && y <= 30, `point ${point} lies inside the view box`);
    }
    assert.ok((await sparklinePoints(page, 'cpu', 'memory')) >= 2, 'memory has a sparkline too');
    assert.match(await telemetry.innerText(), /Load \(1, 5, 15 min\)\s+[\d.]+ · [\d.]+ · [\d.]+/);

    // New samples arrive through the stream, not by asking again.
    const live = page.getByTestId('live-status');
    await page.waitForFunction(
      () => document.querySelector('[data-testid="live-status"]')?.dataset.state === 'live',
    );
    assert.match(await live.getAttribute('aria-label'), /connected/);
    const line = sparkline.locator('polyline');
    const before = await line.getAttribute('points');
    await page.waitForFunction(
      (before) =>
        document
          .querySelector('[data-testid="telemetry-cpu"] [data-testid="sparkline-utilization"] polyline')
          ?.getAttribute('points') !== before,
      before,
      { timeout: 5_000 },
    );
    const asked = requests.filter((r) => r === 'GET /api/devices/cpu/telemetry');
    assert.equal(asked.length, 1, `the history is fetched once: ${requests.join(', ')}`);
    assert.equal(requests.filter((r) => r === 'GET /api/events').length, 1, 'one event stream');
  });
});

test('a job launched from the UI is followed from queued to succeeded without polling', async () => {
  const params = { width: 256, height: 256 };
  await withPage('job-live', async (page, requests) => {
    const id = await launch(page, 'mandelbrot', 'cpu', params, 300, async () => {
      // Every status the job page shows, as it shows it, across the client-side navigation.
      await page.evaluate(() => {
        window.seen = { statuses: [], progress: [] };
        const record = () => {
          const status = document.querySelector('[data-testid="job-status"]')?.textContent.trim();
          if (status && window.seen.statuses.at(-1) !== status) window.seen.statuses.push(status);
          const progress = document.querySelector('[data-testid="job-progress"] label')?.textContent;
          if (progress && window.seen.progress.at(-1) !== progress) window.seen.progress.push(progress);
        };
        new MutationObserver(record).observe(document.body, {
          subtree: true,
          childList: true,
          characterData: true,
        });
      });
      // A job ahead of it on the CPU, so the new one is seen waiting in the queue.
      await postJob({ kernel: 'mandelbrot', device: 'cpu', params, repetitions: 100 });
    });
    await page.getByTestId('job-status').waitFor();
    await page.screenshot({ path: `${ARTIFACTS}/job-queued.png`, fullPage: true });
    const progress = page.getByTestId('job-progress');
    await progress.waitFor({ timeout: JOB_TIMEOUT_MS });
    assert.match(await progress.innerText(), /^\d+ of 300 runs \(\d+ %\)$/);
    await page.screenshot({ path: `${ARTIFACTS}/job-running.png`, fullPage: true });
    assert.equal(await finalStatus(page), 'succeeded');
    await page.getByTestId('job-artifact').waitFor();

    const seen = await page.evaluate(() => window.seen);
    assert.deepEqual(seen.statuses, ['queued', 'running', 'succeeded'], 'statuses in order');
    assert.ok(seen.progress.length >= 2, `progress moved: ${seen.progress.join(' | ')}`);
    const fetched = requests.filter((r) => r === `GET /api/jobs/${id}`);
    assert.equal(fetched.length, 1, `the job is fetched once, then pushed: ${requests.join(', ')}`);
    assert.equal(await page.getByTestId('job-cancel').count(), 0, 'no cancel button once finished');
  });
});

test('the jobs table shows a job queued elsewhere and follows it to its end', async () => {
  await withPage('jobs-live', async (page, requests) => {
    await page.goto(`${BASE_URL}/jobs`);
    await page.getByRole('heading', { name: 'Jobs' }).waitFor();
    await page.waitForFunction(
      () => document.querySelector('[data-testid="live-status"]')?.dataset.state === 'live',
    );
    await page.waitForFunction(() => !document.querySelector('.loading'));
    const listed = requests.filter((r) => r === 'GET /api/jobs').length;

    const job = await postJob({ kernel: 'vector_add', device: 'cpu', params: { n: 4096 }, repetitions: 3 });
    const row = page.locator(`[data-testid="job-row"][data-job-id="${job.id}"]`);
    await row.waitFor({ timeout: 5_000 });
    const first = page.locator('[data-testid="job-row"]').first();
    assert.equal(await first.getAttribute('data-job-id'), String(job.id), 'the new job is on top');
    await page.waitForFunction(
      (id) =>
        document.querySelector(`[data-testid="job-row"][data-job-id="${id}"]`)?.dataset.status ===
        'succeeded',
      job.id,
      { timeout: JOB_TIMEOUT_MS },
    );
    assert.match(await row.innerText(), /GB\/s|\/s/);
    assert.equal(requests.filter((r) => r === 'GET /api/jobs').length, listed, 'no polling');

    // With a status filter, a job joins the table when it comes to match and leaves it
    // when it no longer does.
    await Promise.all([
      page.waitForResponse((r) => new URL(r.url()).searchParams.get('status') === 'running'),
      page.locator('select[name="status"]').selectOption('running'),
    ]);
    const listedFiltered = requests.filter((r) => r === 'GET /api/jobs').length;
    const long = await postJob({
      kernel: 'mandelbrot',
      device: 'cpu',
      params: { width: 256, height: 256 },
      repetitions: 100,
    });
    const longRow = page.locator(`[data-testid="job-row"][data-job-id="${long.id}"]`);
    await longRow.waitFor({ timeout: JOB_TIMEOUT_MS });
    assert.equal(await longRow.getAttribute('data-status'), 'running');
    await page.screenshot({ path: `${ARTIFACTS}/jobs-running.png`, fullPage: true });
    await longRow.waitFor({ state: 'detached', timeout: JOB_TIMEOUT_MS });
    assert.equal(requests.filter((r) => r === 'GET /api/jobs').length, listedFiltered, 'no polling');
    assert.equal((await api(`/api/jobs/${long.id}`)).status, 'succeeded');
  });
});

// A GPU's telemetry as NVML would report it, `i` seconds into a run.
function gpuSample(at, i) {
  const GiB = 2 ** 30;
  return {
    device: 'cuda:0',
    at: new Date(at).toISOString(),
    cpu: null,
    gpu: {
      temperature_celsius: 40 + (i % 12),
      power_watts: 100 + 10 * (i % 15),
      power_limit_watts: 700,
      energy_joules: 1.5e6,
      utilization_ratio: (i % 11) / 10,
      memory_utilization_ratio: 0.25,
      memory_used_bytes: (2 + (i % 3)) * GiB,
      memory_free_bytes: (78 - (i % 3)) * GiB,
      memory_total_bytes: 80 * GiB,
      sm_clock_mhz: 1980,
      memory_clock_mhz: 2619,
      performance_state: 0,
      throttle_reasons: ['sw_power_cap'],
      fan_speed_ratio: null,
      pcie_generation: 5,
      pcie_width: 16,
      pcie_tx_bytes_per_second: 1.5 * 2 ** 20,
      pcie_rx_bytes_per_second: 3 * 2 ** 20,
      ecc_corrected_errors: 0,
      ecc_uncorrected_errors: 0,
      retired_pages: null,
      remapped_rows: { correctable: 0, uncorrectable: 0, pending: false, failed: false },
      processes: [{ pid: 4242, used_memory_bytes: 512 * 2 ** 20 }],
    },
  };
}

test('a GPU card shows NVML telemetry (a GPU stubbed in, as CI has none)', async () => {
  await withPage('devices-gpu', async (page) => {
    const GiB = 2 ** 30;
    await page.route(
      (url) => url.pathname === '/api/devices' && !url.searchParams.has('format'),
      async (route) => {
        const devices = await (await route.fetch()).json();
        devices.push({
          id: 'cuda:0',
          kind: 'cuda',
          name: 'NVIDIA H100 80GB HBM3',
          total_memory_bytes: 80 * GiB,
          free_memory_bytes: 79 * GiB,
          cuda: { ordinal: 0, compute_capability: { major: 9, minor: 0 }, multiprocessor_count: 132 },
          cpu: null,
        });
        await route.fulfill({ json: devices });
      },
    );
    const now = Date.now();
    const history = Array.from({ length: 120 }, (_, i) => gpuSample(now - (120 - i) * 1000, i));
    await page.route(
      (url) => decodeURIComponent(url.pathname) === '/api/devices/cuda:0/telemetry',
      (route) =>
        route.fulfill({
          json: {
            device: 'cuda:0',
            interval_s: 1,
            window_s: 600,
            latest: history.at(-1),
            history,
            notes: ['fan speed: not reported by this GPU (passively cooled)'],
          },
        }),
    );
    await page.goto(`${BASE_URL}/`);
    const telemetry = page.getByTestId('telemetry-cuda:0');
    await telemetry.waitFor();
    const latest = history.at(-1).gpu;
    const value = (metric) => telemetry.getByTestId(`value-${metric}`).innerText();
    assert.equal(await value('utilization'), `${Math.round(latest.utilization_ratio * 100)} %`);
    assert.equal(await value('power'), `${latest.power_watts} W`);
    assert.match(await telemetry.locator('.chart', { has: page.getByTestId('value-power') }).innerText(), /Power\s+limit 700 W/);
    assert.equal(await value('temperature'), `${latest.temperature_celsius} °C`);
    assert.match(await value('memory'), /^\d\.\d\d GiB$/);
    const text = await telemetry.innerText();
    for (const expected of [
      /Clocks\s+SM 1980 MHz · memory 2619 MHz/,
      /Performance state\s+P0/,
      /Throttle reasons\s+sw power cap/,
      /Fan\s+—/,
      /PCIe link\s+Gen 5 ×16/,
      /PCIe traffic\s+1\.50 MiB\/s out · 3\.00 MiB\/s in/,
      /ECC errors\s+0 corrected · 0 uncorrected/,
      /Processes\s+PID 4242 \(512 MiB\)/,
      /--pid=host/,
    ]) {
      assert.match(text, expected);
    }
    for (const metric of ['utilization', 'memory', 'power', 'temperature']) {
      assert.equal(await sparklinePoints(page, 'cuda:0', metric), 120, `${metric} has every sample`);
    }
    assert.equal(
      await telemetry.getByTestId('sparkline-power').getAttribute('aria-label'),
      'GPU power draw over the last 2 minutes, 100 W to 240 W',
    );
    assert.equal(
      await telemetry.getByTestId('sparkline-temperature').getAttribute('aria-label'),
      'GPU temperature over the last 2 minutes, 40 °C to 51 °C',
    );
    // The memory bar follows the telemetry, not the inventory taken at startup.
    assert.match(
      await page.getByTestId('device-card-cuda:0').innerText(),
      new RegExp(`${78 - (119 % 3)}\\.0 GiB free of 80\\.0 GiB`),
    );
  });
});
