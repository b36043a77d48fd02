// Browser tests of the gpulab UI against a running server.
//
// `cargo xtask test` starts the real server on a free port with the built dist/ and sets
// GPULAB_URL; by hand: GPULAB_URL=http://127.0.0.1:8080 node --test end2end/
//
// Every test fails on any page error or console error: a green build proves nothing about
// the wasm, so the UI has to load and run in a real browser. Screenshots go to
// end2end/artifacts/.
//
// The test of the event stream across a server restart starts a server of its own: it needs
// GPULAB_BIN (the gpulab binary) and GPULAB_STATIC_DIR (the built UI), which the xtask sets.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';

import {
  ARTIFACTS,
  BASE_URL,
  DESKTOP,
  GPULAB_BIN,
  GPULAB_STATIC_DIR,
  PHONE,
  api,
  freePort,
  killed,
  startServer,
  withPage,
} from './browser.mjs';

// How long a small job may take from launch to its final status.
const JOB_TIMEOUT_MS = 60_000;

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

test("the launcher offers matmul's variants from the catalog and runs register_tiled on the CPU", async () => {
  const catalog = await api('/api/kernels');
  const variant = catalog.find((k) => k.name === 'matmul').params.find((p) => p.name === 'variant');
  assert.ok(variant.choices.includes('register_tiled'), JSON.stringify(variant));
  await withPage('launch-matmul-variants', async (page) => {
    await page.goto(`${BASE_URL}/launch`);
    const form = page.getByTestId('launch-form');
    await form.waitFor();
    await form.locator('select[name="kernel"]').selectOption('matmul');
    const select = form.locator('select[name="param-variant"]');
    const offered = await select.locator('option').evaluateAll((options) => options.map((o) => o.value));
    assert.deepEqual(offered, variant.choices);
    await form.locator('select[name="device"]').selectOption('cpu');
    for (const [name, value] of Object.entries({ m: 65, n: 33, k: 17 })) {
      await form.locator(`[name="param-${name}"]`).fill(String(value));
    }
    await select.selectOption('register_tiled');
    await form.locator('input[name="repetitions"]').fill('2');
    await page.getByTestId('launch-submit').click();
    await page.waitForURL(/\/jobs\/\d+$/);
    assert.equal(await finalStatus(page), 'succeeded');
    const id = new URL(page.url()).pathname.split('/').pop();
    const job = await api(`/api/jobs/${id}`);
    assert.equal(job.params.variant, 'register_tiled');
    // The CPU has one SGEMM for every variant, and its result says so.
    assert.match(job.result.output.ran, /matrixmultiply.*register_tiled/);
  });
});

test("the launcher offers matmul's dtypes that the chosen device runs, and runs fp64 on the CPU", async () => {
  const catalog = await api('/api/kernels');
  const dtype = catalog.find((k) => k.name === 'matmul').params.find((p) => p.name === 'dtype');
  const onCpu = dtype.choices_by_device.cpu;
  assert.deepEqual(onCpu, ['fp64', 'fp32'], JSON.stringify(dtype));
  await withPage('launch-matmul-dtypes', async (page) => {
    await page.goto(`${BASE_URL}/launch`);
    const form = page.getByTestId('launch-form');
    await form.waitFor();
    await form.locator('select[name="kernel"]').selectOption('matmul');
    await form.locator('select[name="device"]').selectOption('cpu');
    const select = form.locator('select[name="param-dtype"]');
    const options = () =>
      select.locator('option').evaluateAll((os) => os.map((o) => ({ value: o.value, disabled: o.disabled })));
    // Every type is listed; those the CPU does not run are disabled.
    const listed = await options();
    assert.deepEqual(listed.map((o) => o.value), dtype.choices);
    assert.deepEqual(listed.filter((o) => !o.disabled).map((o) => o.value), onCpu);
    assert.match(await form.locator('#help-dtype').innerText(), /This device runs: fp64, fp32\./);
    for (const [name, value] of Object.entries({ m: 40, n: 24, k: 56 })) {
      await form.locator(`[name="param-${name}"]`).fill(String(value));
    }
    await select.selectOption('fp64');
    await form.locator('input[name="repetitions"]').fill('2');
    await page.getByTestId('launch-submit').click();
    await page.waitForURL(/\/jobs\/\d+$/);
    assert.equal(await finalStatus(page), 'succeeded');
    const id = new URL(page.url()).pathname.split('/').pop();
    const job = await api(`/api/jobs/${id}`);
    assert.equal(job.params.dtype, 'fp64');
    assert.equal(job.result.output.accumulate, 'fp64');
    assert.ok(job.result.verification.passed, JSON.stringify(job.result.verification));
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
    // The panel is drawn before the stubbed history arrives: wait for its first value.
    await page.waitForFunction(
      () => document.querySelector('[data-testid="telemetry-cuda:0"] [data-testid="value-utilization"]')?.innerText !== '—',
    );
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

// Waits until the header's live indicator is in `state` (connecting, live, reconnecting).
function liveState(page, state, timeout = 15_000) {
  return page.waitForFunction(
    (state) => document.querySelector('[data-testid="live-status"]')?.dataset.state === state,
    state,
    { timeout },
  );
}

// Waits until the API reports job `id` in one of `statuses`, and returns it.
async function apiJobUntil(baseUrl, id, statuses, timeout = JOB_TIMEOUT_MS) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const job = await (await fetch(`${baseUrl}/api/jobs/${id}`)).json();
    if (statuses.includes(job.status)) return job;
    assert.ok(Date.now() < deadline, `job ${id} is still ${job.status}, not ${statuses.join(' or ')}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

test('a running job is cancelled from its page', async () => {
  const job = await postJob({
    kernel: 'mandelbrot',
    device: 'cpu',
    params: { width: 512, height: 512 },
    repetitions: 5000,
  });
  try {
    await withPage('job-cancelled', async (page) => {
      await page.goto(`${BASE_URL}/jobs/${job.id}`);
      // Running, so the cancel has a worker to stop, not just a queue entry to drop.
      await page.getByTestId('job-progress').waitFor({ timeout: JOB_TIMEOUT_MS });
      await page.getByTestId('job-cancel').click();
      assert.equal(await finalStatus(page), 'cancelled');
      assert.equal(await page.getByTestId('job-cancel').count(), 0, 'no cancel button once cancelled');
      assert.equal(await page.getByTestId('job-progress').count(), 0, 'no progress once cancelled');
      assert.equal(await page.title(), `Job ${job.id} (cancelled) · gpulab`);
    });
    assert.equal((await api(`/api/jobs/${job.id}`)).status, 'cancelled');
  } finally {
    // Whatever failed above, the CPU must not stay busy for the tests after this one.
    await fetch(`${BASE_URL}/api/jobs/${job.id}`, { method: 'DELETE' });
  }
});

test('"Copy as curl" copies a command that creates the same job', async () => {
  const job = await postJob({
    kernel: 'saxpy',
    device: 'cpu',
    params: { n: 3000, a: 0.5 },
    repetitions: 2,
    timeout_s: 30,
  });
  await withPage('job-copy-curl', async (page, requests, context) => {
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: BASE_URL });
    await page.goto(`${BASE_URL}/jobs/${job.id}`);
    await page.getByTestId('copy-curl').click();
    const shown = page.getByTestId('curl-command');
    await shown.waitFor();
    const command = (await shown.innerText()).trim();
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), command, 'copied as shown');
    assert.match(command, /^curl -X POST \S+\/api\/jobs -H 'content-type: application\/json' -d '\{.*\}'$/);
    assert.match(await page.locator('.copy-command [role="status"]').innerText(), /Copied/);

    // The command, run by a shell, queues a job like this one.
    const { stdout } = await promisify(execFile)('bash', ['-c', `${command} --silent --show-error`]);
    const copy = JSON.parse(stdout);
    assert.notEqual(copy.id, job.id, 'a new job');
    for (const field of ['kernel', 'device', 'params', 'repetitions', 'timeout_s']) {
      assert.deepEqual(copy[field], job[field], field);
    }
    await apiJobUntil(BASE_URL, copy.id, ['succeeded']);
  });
});

// A finished job as the API would answer it, for what CI cannot make: a bandwidth sweep (the
// CUDA kernel's), a compiler's error, a parameter with quotes in it.
function fakeJob(id, fields) {
  const at = new Date().toISOString();
  return {
    id,
    kernel: 'bandwidth',
    device: 'cuda:0',
    params: { size_mib: 256, seed: 42 },
    repetitions: 10,
    timeout_s: 60,
    status: 'succeeded',
    created_at: at,
    started_at: at,
    finished_at: at,
    progress: null,
    result: null,
    error: null,
    ...fields,
  };
}

// Answers GET /api/jobs/{job.id} with `job` on this page.
async function serveFakeJob(page, job) {
  await page.route(
    (url) => url.pathname === `/api/jobs/${job.id}`,
    (route) => route.fulfill({ json: job }),
  );
}

test('a custom CUDA job shows its module and its output buffers (a GPU result faked in)', async () => {
  // The shape of the server's custom-kernel result, as the GPU check saw it on an H200.
  const job = fakeJob(990002, {
    kernel: 'custom',
    status: 'failed',
    error: 'verification failed: max relative error 2.441e-4 exceeds the tolerance 0.000e0 (A custom kernel has no reference to compare with)',
    params: { entry: 'vector_add', n: 4096 },
    result: {
      timing: { repetitions: 2, min_ms: 0.0061, median_ms: 0.0064, max_ms: 0.0067 },
      throughput: { value: 0.64, unit: 'Gelements/s' },
      verification: {
        passed: false,
        max_abs_error: 1,
        max_rel_error: 1 / 4096,
        tolerance: 0,
        method: 'A custom kernel has no reference to compare with: the check is only that every output buffer holds finite numbers. The error is the number (absolute) and the fraction (relative) of output elements that are NaN or ∞, and must be 0.',
      },
      output: {
        entry: 'vector_add',
        n: 4096,
        grid: [32, 1, 1],
        block: [128, 1, 1],
        shared_mem_bytes: 0,
        launches: 3,
        modules: [{ cache_hit: false, compile_ms: 16.04, load_ms: 0.093, image: 'cubin', target: 'sm_90' }],
        buffers: [
          {
            arg: 2,
            type: 'f32',
            first: [1, 2, null, 4],
            min: 1,
            max: 4096,
            mean: 2048.5,
            non_finite: 1,
            checksum: '8c2f0d5a1b3e4f60',
          },
        ],
      },
      has_artifact: false,
    },
  });
  await withPage('job-cuda-output', async (page) => {
    await serveFakeJob(page, job);
    await page.goto(`${BASE_URL}/jobs/${job.id}`);
    const cuda = page.getByTestId('job-cuda');
    await cuda.waitFor();
    const text = await cuda.innerText();
    assert.match(text, /cubin sm_90: compiled by NVRTC in 16\.0 ms, loaded in 0\.093 ms/);
    assert.match(text, /32 × 1 × 1 blocks of 128 × 1 × 1 threads, 3 launches/);
    const cells = await page.getByTestId('job-buffers').locator('tbody td').allInnerTexts();
    assert.deepEqual(cells, ['2', 'f32', '1.00', '4096', '2048', '1', '8c2f0d5a1b3e4f60']);
    await cuda.locator('summary').click();
    assert.match(await cuda.locator('.buffer-values p').innerText(), /^1\.00, 2\.00, —, 4\.00$/);
  });
});

test('a job page draws a bandwidth sweep on a log2 axis (a CUDA sweep faked in)', async () => {
  const sizes = Array.from({ length: 17 }, (_, i) => 2 ** (10 + i)); // 1 KiB to 64 MiB
  const curve = (peak, half) => sizes.map((bytes) => ({ bytes, gb_per_s: (peak * bytes) / (bytes + half) }));
  const job = fakeJob(990001, {
    result: {
      timing: { repetitions: 10, min_ms: 1.91, median_ms: 2.05, max_ms: 2.62 },
      throughput: { value: 24.6, unit: 'GB/s' },
      verification: {
        passed: true,
        max_abs_error: 0,
        max_rel_error: 0,
        tolerance: 0,
        method: 'every copied byte compared with its source',
      },
      output: {
        size_bytes: 256 * 2 ** 20,
        sweep: { h2d: curve(24.5, 2 ** 17), d2h: curve(26.1, 2 ** 17), d2d: curve(1650, 2 ** 21) },
      },
      has_artifact: false,
    },
  });
  await withPage('job-sweep', async (page) => {
    await serveFakeJob(page, job);
    await page.goto(`${BASE_URL}/jobs/${job.id}`);
    const chart = page.getByTestId('sweep-chart');
    await chart.waitFor();
    assert.equal(await chart.locator('.curve polyline').count(), 3, 'one line per direction');
    const points = (await chart.locator('.curve polyline').first().getAttribute('points')).split(' ');
    assert.equal(points.length, sizes.length, 'a point per size');
    // Sizes double at each step: equal steps on a log2 axis.
    const xs = points.map((p) => Number(p.split(',')[0]));
    const steps = xs.slice(1).map((x, i) => x - xs[i]);
    for (const step of steps) assert.ok(Math.abs(step - steps[0]) < 0.2, `equal steps: ${steps}`);
    assert.equal(xs[0], 0);
    assert.equal(xs.at(-1), 1000);
    const text = await chart.innerText();
    // PCIe copies peak near 25 GB/s, copies within the GPU near 1.6 TB/s: a log axis shows both.
    for (const label of ['GB/s (log₁₀ scale)', 'Transfer size (log₂ scale)', '1 KiB', '64 MiB', 'h2d', 'd2h', 'd2d']) {
      assert.ok(text.includes(label), `the chart shows "${label}": ${text}`);
    }
    assert.match(
      await chart.locator('figure').getAttribute('aria-label'),
      /^Bandwidth by transfer size from 1 KiB to 64 MiB: peak \d+ GB\/s \(d2d\) at 64 MiB$/,
    );
    // The timing range bar: the median between the two ends.
    const timing = page.getByTestId('timing-chart');
    assert.match(await timing.innerText(), /median 2\.05 ms[\s\S]*min 1\.91 ms[\s\S]*max 2\.62 ms/);
    const [min, median, max] = await Promise.all(
      ['rect', 'line.median'].map((s) => timing.locator(s).first()),
    ).then(async ([rect, line]) => {
      const x = Number(await rect.getAttribute('x'));
      return [x, Number(await line.getAttribute('x1')), x + Number(await rect.getAttribute('width'))];
    });
    assert.ok(min < median && median < max, `min ${min} < median ${median} < max ${max}`);
    await page.screenshot({ path: `${ARTIFACTS}/job-sweep.png`, fullPage: true });
  });
  // The other shape a sweep may have: one list of points, one curve, on a linear axis.
  const single = structuredClone(job);
  single.id = 990003;
  single.result.output.sweep = curve(24.5, 2 ** 17);
  await withPage('job-sweep-phone-dark', async (page) => {
    await serveFakeJob(page, single);
    await page.goto(`${BASE_URL}/jobs/${single.id}`);
    const chart = page.getByTestId('sweep-chart');
    await chart.waitFor();
    assert.equal(await chart.locator('.curve polyline').count(), 1);
    assert.equal((await chart.locator('.sweep-y-title').innerText()).trim(), 'GB/s');
    assert.equal(await chart.locator('.legend').count(), 0, 'no legend for a single curve');
    await assertNoSideScroll(page);
  }, { context: { viewport: PHONE, colorScheme: 'dark' } });
});

test('a failed job shows the compiler log line for line, and its curl command survives the shell', async () => {
  const log = [
    'kernel.cu(12): error: identifier "x" is undefined',
    '      out[i] = x * in[i];',
    '               ^',
    '',
    "kernel.cu(3,14): warning #177-D: variable \"y\" was declared but never referenced",
    '1 error detected in the compilation of "kernel.cu".',
  ].join('\n');
  const job = fakeJob(990002, {
    kernel: 'custom',
    status: 'failed',
    error: 'verification failed: max relative error 2.441e-4 exceeds the tolerance 0.000e0 (A custom kernel has no reference to compare with)',
    params: { source: "__global__ void k() { printf(\"it's $HOME\\n\"); }", name: "it's" },
    status: 'failed',
    error: `NVRTC could not compile the kernel:\n${log}`,
  });
  await withPage('job-error', async (page) => {
    // As in a page served over plain HTTP from another host: no clipboard at all.
    await page.addInitScript(() => Object.defineProperty(Navigator.prototype, 'clipboard', { get: () => undefined }));
    await serveFakeJob(page, job);
    await page.goto(`${BASE_URL}/jobs/${job.id}`);
    const error = page.getByTestId('job-error');
    await error.waitFor();
    assert.equal(await error.locator('pre').innerText(), job.error, 'every line, as written');
    assert.deepEqual(
      await error.locator('.diagnostic').allInnerTexts(),
      [log.split('\n')[0], log.split('\n')[4]],
      'the compiler messages stand out',
    );

    await page.getByTestId('copy-curl').click();
    const shown = page.getByTestId('curl-command');
    await shown.waitFor();
    assert.match(await page.locator('.copy-command [role="status"]').innerText(), /copy it/);
    const command = (await shown.innerText()).trim();
    assert.equal(await page.evaluate(() => window.getSelection().toString().trim()), command, 'selected for copying');
    // Each word as the shell hands it to curl: the body arrives exactly as JSON, quotes and $.
    const { stdout } = await promisify(execFile)('bash', ['-c', `curl() { printf '%s\\0' "$@"; }; ${command}`]);
    const words = stdout.split('\0').slice(0, -1);
    assert.deepEqual(words.slice(0, 6), ['-X', 'POST', `${BASE_URL}/api/jobs`, '-H', 'content-type: application/json', '-d']);
    assert.deepEqual(JSON.parse(words[6]), {
      kernel: job.kernel,
      device: job.device,
      params: job.params,
      repetitions: job.repetitions,
      timeout_s: job.timeout_s,
    });
  });
});

test("a custom kernel's compile errors are marked on its source, errors apart from warnings", async () => {
  const source = [
    '__global__ void scale(float *out, const float *in, unsigned n) {',
    '\tunsigned i = blockIdx.x * blockDim.x + threadIdx.x;',
    '\tint unused;',
    '\tif (i < n) out[i] = factor * in[i];',
    '}',
  ].join('\n');
  const log = [
    'kernel.cu(4,22): error: identifier "factor" is undefined',
    '\tif (i < n) out[i] = factor * in[i];',
    '\t                    ^',
    '',
    'kernel.cu(3): warning #177-D: variable "unused" was declared but never referenced',
    'cuda_fp16.h(12): error: a problem in a header',
    '2 errors detected in the compilation of "kernel.cu".',
  ].join('\n');
  const job = fakeJob(990004, {
    kernel: 'custom',
    params: { source, entry: 'scale', grid: [4, 1, 1], block: [256, 1, 1], shared_mem_bytes: 0 },
    status: 'failed',
    error: `compiling the kernel failed:\n${log}`,
  });
  for (const [name, options] of [
    ['job-compile-errors', {}],
    ['job-compile-errors-phone-dark', { context: { viewport: PHONE, colorScheme: 'dark' } }],
  ]) {
    await withPage(name, async (page) => {
      await serveFakeJob(page, job);
      await page.goto(`${BASE_URL}/jobs/${job.id}`);
      const card = page.getByTestId('job-source');
      await card.waitFor();
      assert.equal(
        (await page.getByTestId('source-summary').innerText()).trim(),
        'The compiler reported 2 errors and 1 warning.',
      );
      // Every line of the source, numbered, as it was sent (tabs and all).
      const lines = await card.locator('.src-line').evaluateAll((rows) =>
        rows.map((row) => ({
          number: row.querySelector('.src-gutter').textContent,
          text: row.querySelector('.src-text').textContent,
          severity: row.dataset.severity ?? null,
        })),
      );
      assert.deepEqual(
        lines,
        source.split('\n').map((text, i) => ({
          number: String(i + 1),
          text,
          severity: { 3: 'warning', 4: 'error' }[i + 1] ?? null,
        })),
      );
      // Each message right under its line, with where it points.
      const notes = await card.locator('[data-testid="source-note"]').evaluateAll((notes) =>
        notes.map((note) => ({
          line: note.dataset.line,
          column: note.dataset.column ?? null,
          severity: note.dataset.severity,
          after: note.previousElementSibling.dataset.line,
          text: note.querySelector('.src-message').textContent,
        })),
      );
      assert.deepEqual(notes, [
        { line: '3', column: null, severity: 'warning', after: '3', text: 'warning (line 3): variable "unused" was declared but never referenced' },
        { line: '4', column: '22', severity: 'error', after: '4', text: 'error (line 4, column 22): identifier "factor" is undefined' },
      ]);
      // The column: the name it points at is marked.
      const marked = card.locator('.src-line[data-line="4"] mark.src-at');
      assert.deepEqual(await marked.allInnerTexts(), ['factor']);
      assert.equal(await marked.getAttribute('data-severity'), 'error');
      // An error's line does not look like a warning's, nor like a line without a message.
      const look = (selector) =>
        card.locator(selector).evaluate((el) => {
          const style = getComputedStyle(el);
          return `${style.backgroundColor} ${style.color}`;
        });
      const [error, warning, plain] = await Promise.all(
        ['.src-line[data-line="4"]', '.src-line[data-line="3"]', '.src-line[data-line="1"]'].map(look),
      );
      assert.notEqual(error, warning);
      assert.notEqual(error, plain);
      assert.notEqual(warning, plain);
      assert.notEqual(
        await look('[data-testid="source-note"][data-severity="error"]'),
        await look('[data-testid="source-note"][data-severity="warning"]'),
      );
      // A message about another file is listed apart, not put on a line of this one.
      assert.equal(
        (await page.getByTestId('source-elsewhere').innerText()).trim(),
        'cuda_fp16.h(12): error: a problem in a header',
      );
      // The facts list does not repeat the source.
      assert.match(await page.locator('.facts').innerText(), /source\s+5 lines, shown below/);
      await assertNoSideScroll(page);
    }, options);
  }
});

// Fails when the page is wider than the window: on a phone, that is a page to pan sideways.
async function assertNoSideScroll(page) {
  const { scroll, width } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    width: window.innerWidth,
  }));
  assert.ok(scroll <= width, `the page is ${scroll} px wide in a ${width} px window`);
}

test('the launch form is labelled and can be filled and sent with the keyboard alone', async () => {
  await withPage('launch-keyboard', async (page) => {
    await page.goto(`${BASE_URL}/launch`);
    await page.getByTestId('launch-form').waitFor();
    await page.locator('select[name="kernel"]').selectOption('vector_add');
    await page.locator('select[name="kernel"]').focus();
    const visited = [];
    for (let i = 0; i < 12; i++) {
      const focused = await page.evaluate(() => {
        const el = document.activeElement;
        const style = getComputedStyle(el);
        const label = el.labels?.[0]?.textContent.trim() || el.getAttribute('aria-label') || el.textContent.trim();
        return {
          name: el.getAttribute('name') ?? el.dataset.testid ?? el.tagName,
          label,
          ring: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2,
        };
      });
      visited.push(focused.name);
      assert.ok(focused.label, `${focused.name} has a label`);
      assert.ok(focused.ring, `${focused.name} shows where the focus is`);
      if (focused.name === 'launch-submit') break;
      await page.keyboard.press('Tab');
    }
    assert.deepEqual(visited, [
      'kernel',
      'device',
      'param-n',
      'param-seed',
      'repetitions',
      'timeout_s',
      'launch-submit',
    ]);
    await page.keyboard.press('Enter');
    await page.waitForURL(/\/jobs\/\d+$/);
  });
});

test(
  'the event stream comes back after the server restarts, and the jobs list follows again',
  { skip: !(GPULAB_BIN && GPULAB_STATIC_DIR) && 'set GPULAB_BIN and GPULAB_STATIC_DIR' },
  async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const dataDir = await mkdtemp(join(tmpdir(), 'gpulab-restart-'));
    let server = await startServer(port, dataDir);
    try {
      const before = await (
        await fetch(`${url}/api/jobs`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ kernel: 'vector_add', device: 'cpu', params: { n: 1 }, repetitions: 1 }),
        })
      ).json();
      await withPage('jobs-reconnected', async (page) => {
        let loads = 0;
        page.on('load', () => loads++);
        await page.goto(`${url}/jobs`);
        await page.locator(`[data-testid="job-row"][data-job-id="${before.id}"]`).waitFor();
        await liveState(page, 'live');

        await killed(server, 'SIGKILL');
        await liveState(page, 'reconnecting');
        assert.match(await page.getByTestId('live-status').innerText(), /Reconnecting/);
        await page.screenshot({ path: `${ARTIFACTS}/jobs-reconnecting.png`, fullPage: true });

        server = await startServer(port, dataDir);
        await liveState(page, 'live', 30_000);
        const after = await (
          await fetch(`${url}/api/jobs`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ kernel: 'vector_add', device: 'cpu', params: { n: 2 }, repetitions: 1 }),
          })
        ).json();
        const row = page.locator(`[data-testid="job-row"][data-job-id="${after.id}"]`);
        await row.waitFor({ timeout: 10_000 });
        await page.waitForFunction(
          (id) =>
            document.querySelector(`[data-testid="job-row"][data-job-id="${id}"]`)?.dataset.status === 'succeeded',
          after.id,
          { timeout: JOB_TIMEOUT_MS },
        );
        assert.equal(loads, 1, 'the page was not reloaded');
      }, {
        // What the browser logs as the server dies and while it is away.
        expectedErrors: [/ERR_INCOMPLETE_CHUNKED_ENCODING|ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE/],
      });
    } finally {
      await killed(server, 'SIGTERM');
      await rm(dataDir, { recursive: true, force: true });
    }
  },
);

test('every page reads well light and dark, on a desktop and on a phone', async () => {
  const job = await postJob({
    kernel: 'mandelbrot',
    device: 'cpu',
    params: { width: 320, height: 200, max_iter: 64 },
    repetitions: 3,
  });
  await apiJobUntil(BASE_URL, job.id, ['succeeded']);
  const pages = [
    ['devices', '/', '[data-testid="device-card-cpu"]', true],
    ['launch', '/launch', '[data-testid="launch-form"]', true],
    ['jobs', '/jobs', '[data-testid="job-row"]', true],
    ['job', `/jobs/${job.id}`, '[data-testid="job-artifact"]', true],
    // The other engineer's pages: screenshots only.
    ['compare', '/compare', 'main h1', false],
    ['editor', '/editor', 'main h1', false],
  ];
  for (const [scheme, viewport, size] of [
    ['light', DESKTOP, 'desktop'],
    ['dark', DESKTOP, 'desktop'],
    ['light', PHONE, 'phone'],
    ['dark', PHONE, 'phone'],
  ]) {
    await withPage(`pages-${scheme}-${size}`, async (page) => {
      for (const [name, path, ready, ours] of pages) {
        await page.goto(`${BASE_URL}${path}`);
        await page.locator(ready).first().waitFor();
        await page.waitForFunction(() => !document.querySelector('.loading'));
        if (ours && size === 'phone') await assertNoSideScroll(page);
        await page.screenshot({ path: `${ARTIFACTS}/page-${name}-${scheme}-${size}.png`, fullPage: true });
      }
    }, { context: { viewport, colorScheme: scheme } });
  }
});

test('the jobs table pages through a history of 1,000 jobs', async () => {
  for (let i = 0; i < 1000; i++) {
    const request = { kernel: 'vector_add', device: 'cpu', params: { n: 1 }, repetitions: 1 };
    for (;;) {
      const response = await fetch(`${BASE_URL}/api/jobs`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(request),
      });
      // A long job of another test file may hold the CPU: wait while its queue is full.
      if (response.status === 429) {
        await new Promise((resolve) => setTimeout(resolve, 200));
        continue;
      }
      assert.equal(response.status, 202, `POST /api/jobs: ${await response.text()}`);
      break;
    }
  }
  await withPage('jobs-history', async (page) => {
    await page.goto(`${BASE_URL}/jobs`);
    await page.locator('[data-testid="job-row"]').first().waitFor();
    const ids = () => page.locator('[data-testid="job-row"]').evaluateAll((rows) => rows.map((r) => Number(r.dataset.jobId)));
    const pages = [await ids()];
    const turns = [];
    for (const button of ['jobs-older', 'jobs-older', 'jobs-older', 'jobs-newer']) {
      const first = pages.at(-1)[0];
      const t0 = Date.now();
      await page.getByTestId(button).click();
      await page.waitForFunction(
        (first) => Number(document.querySelector('[data-testid="job-row"]')?.dataset.jobId) !== first,
        first,
      );
      turns.push(Date.now() - t0);
      pages.push(await ids());
    }
    for (const rows of pages) {
      assert.equal(rows.length, 25, 'a full page');
      assert.deepEqual(rows, [...rows].sort((a, b) => b - a), 'newest first');
    }
    // Each older page continues where the one before ended; "Newer" goes back.
    for (let i = 1; i <= 3; i++) assert.ok(pages[i][0] < pages[i - 1].at(-1), `page ${i + 1} is older`);
    assert.deepEqual(pages[4], pages[2], '"Newer" shows the page before again');
    assert.match(await page.getByTestId('jobs-page').innerText(), /Page 3/);
    // Generous, for a shared CI machine: a page turn is one small request and 25 rows.
    for (const ms of turns) assert.ok(ms < 1000, `a page turn took ${ms} ms: ${turns.join(', ')}`);
  });
});
