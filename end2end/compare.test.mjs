// Browser tests of the device comparison (/compare) against a running server (GPULAB_URL);
// see ui.test.mjs for how they run. Screenshots go to end2end/artifacts/compare-*.png.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { BASE_URL, PHONE, api, withPage } from './browser.mjs';

// How long a small job may take from launch to its final status.
const JOB_TIMEOUT_MS = 60_000;


// Opens the comparison, picks `kernel` with `params` and runs it on the ticked devices.
async function compare(page, kernel, params, repetitions) {
  await page.goto(`${BASE_URL}/compare`);
  const form = page.getByTestId('compare-form');
  await form.waitFor();
  await form.locator('select[name="kernel"]').selectOption(kernel);
  for (const [name, value] of Object.entries(params)) {
    await form.locator(`[name="param-${name}"]`).fill(String(value));
  }
  await form.locator('input[name="repetitions"]').fill(String(repetitions));
  await page.getByTestId('compare-run').click();
}

// Waits until the bar of `device` has ended and returns its status.
async function finalStatus(page, device) {
  await page.waitForFunction(
    (device) => {
      const status = document.querySelector(`[data-testid="compare-bar-${device}"]`)?.dataset.status;
      return status === 'succeeded' || status === 'failed';
    },
    device,
    { timeout: JOB_TIMEOUT_MS },
  );
  return page.getByTestId(`compare-bar-${device}`).getAttribute('data-status');
}

test('vector_add on every device shows a bar with its throughput for each', async () => {
  const devices = await api('/api/devices');
  const kernels = await api('/api/kernels');
  const kinds = kernels.find((k) => k.name === 'vector_add').devices;
  const eligible = devices.filter((d) => kinds.includes(d.kind));
  await withPage('compare', async (page, requests) => {
    await compare(page, 'vector_add', { n: 4096 }, 3);
    assert.equal(await page.title(), 'Compare · gpulab');
    for (const device of eligible) {
      assert.equal(await finalStatus(page, device.id), 'succeeded', device.id);
      const bar = page.getByTestId(`compare-bar-${device.id}`);
      const text = await bar.innerText();
      assert.ok(text.includes(device.name), `the bar names ${device.name}: ${text}`);
      assert.match(text, /\d+(\.\d+)? [KMGT]?(B|FLOP|op|sample)\w*\/s/, `a figure with its unit: ${text}`);
      const width = await bar.locator('.bar-fill').evaluate((fill) => fill.getBoundingClientRect().width);
      assert.ok(width > 0, `the bar of ${device.id} is drawn`);
    }
    // One job per device, each with the same parameters.
    const posted = requests.filter((r) => r === 'POST /api/jobs').length;
    assert.equal(posted, eligible.length);
    const cpu = page.getByTestId('compare-bar-cpu');
    if (eligible.length > 1) {
      assert.match(await cpu.innerText(), /baseline/);
    } else {
      assert.doesNotMatch(await cpu.innerText(), /×|baseline/, 'one figure is compared with nothing');
    }
    for (const gpu of eligible.filter((d) => d.kind === 'cuda')) {
      assert.match(await page.getByTestId(`compare-bar-${gpu.id}`).innerText(), /[\d.]+× the CPU/);
    }
    const link = cpu.getByRole('link');
    const id = Number((await link.getAttribute('href')).split('/').pop());
    const job = await api(`/api/jobs/${id}`);
    assert.equal(job.kernel, 'vector_add');
    assert.equal(job.params.n, 4096);
    assert.equal(job.repetitions, 3);
  });
});

test('with only the CPU the page says that comparing needs a GPU, and still runs', async () => {
  const devices = await api('/api/devices');
  const health = await api('/api/health');
  const gpus = devices.filter((d) => d.kind === 'cuda');
  await withPage('compare-cpu-only', async (page) => {
    await page.goto(`${BASE_URL}/compare`);
    await page.getByTestId('compare-form').waitFor();
    const note = page.getByTestId('compare-needs-gpu');
    if (gpus.length > 0) {
      assert.equal(await note.count(), 0);
      return;
    }
    const text = await note.innerText();
    assert.match(text, /Comparing needs at least one GPU/);
    if (health.cuda.reason) assert.ok(text.includes(health.cuda.reason), text);
    assert.equal(await page.locator('input[name="device"]').count(), 1, 'only the CPU to tick');
    assert.ok(await page.locator('#device-cpu').isChecked());
    await compare(page, 'saxpy', { n: 2048 }, 2);
    assert.equal(await finalStatus(page, 'cpu'), 'succeeded');
    assert.match(await page.getByTestId('compare-bar-cpu').innerText(), /GB\/s|GFLOP\/s/);
  });
});

test('a device that fails shows its error instead of a bar', async () => {
  // The browser logs every error answer, the refusal below included.
  const expected = [/status of 429/];
  await withPage('compare-refused', async (page, requests) => {
    await page.goto(`${BASE_URL}/compare`);
    const form = page.getByTestId('compare-form');
    await form.waitFor();
    await form.locator('select[name="kernel"]').selectOption('vector_add');
    // Untick every device: the form says why nothing runs and sends nothing.
    for (const box of await form.locator('input[name="device"]').all()) await box.uncheck();
    await page.getByTestId('compare-run').click();
    assert.match(await page.getByTestId('field-error-devices').innerText(), /Tick at least one device/);
    assert.ok(!requests.includes('POST /api/jobs'));
    await form.locator('#device-cpu').check();

    // A problem larger than the server allows is refused by the server, not by the form.
    await page.route('**/api/jobs', (route) =>
      route.request().method() === 'POST'
        ? route.fulfill({
            status: 429,
            contentType: 'application/problem+json',
            body: JSON.stringify({
              type: 'about:blank',
              title: 'Too Many Requests',
              status: 429,
              detail: 'the queue of cpu is full; try again in a few seconds',
            }),
          })
        : route.continue(),
    );
    await page.getByTestId('compare-run').click();
    const bar = page.getByTestId('compare-bar-cpu');
    await page.waitForFunction(
      () => document.querySelector('[data-testid="compare-bar-cpu"]')?.dataset.status === 'failed',
    );
    assert.match(await bar.innerText(), /the queue of cpu is full/);
  }, { expectedErrors: expected });
});

// A host with two GPUs, as the server would describe it; the answers are made up in the
// browser, so this runs on any host. Each job is answered as already ended.
async function pretendThereAreGpus(page, outcomes) {
  const device = (id, kind, name) => ({
    id, kind, name, total_memory_bytes: null, free_memory_bytes: null, cuda: null, cpu: null,
  });
  await page.route('**/api/devices', (route) =>
    route.fulfill({
      json: [device('cuda:0', 'cuda', 'Test GPU A'), device('cuda:1', 'cuda', 'Test GPU B'), device('cpu', 'cpu', 'Test CPU')],
    }),
  );
  await page.route('**/api/health', (route) =>
    route.fulfill({ json: { status: 'ok', version: 'test', cuda: { available: true, driver_version: '12.8', reason: null, libraries: { nvrtc: { found: true, version: '12.8', error: null }, cublas: { found: true, version: '12.8.4', error: null } } } } }),
  );
  await page.route('**/api/kernels', async (route) => {
    const kernels = await (await route.fetch()).json();
    for (const kernel of kernels) kernel.devices = ['cpu', 'cuda'];
    return route.fulfill({ json: kernels });
  });
  let id = 100_000;
  await page.route('**/api/jobs', (route) => {
    if (route.request().method() !== 'POST') return route.continue();
    const request = route.request().postDataJSON();
    const outcome = outcomes[request.device];
    const now = new Date().toISOString();
    const result = outcome.value === undefined ? null : {
      timing: { repetitions: request.repetitions, min_ms: 1, median_ms: 1, max_ms: 1 },
      throughput: { value: outcome.value, unit: 'GB/s' },
      verification: { passed: true, max_abs_error: 0, max_rel_error: 0, tolerance: 1e-6, method: 'test' },
      output: {},
      has_artifact: false,
    };
    return route.fulfill({
      status: 202,
      json: {
        id: (id += 1), kernel: request.kernel, device: request.device, params: request.params,
        repetitions: request.repetitions, timeout_s: 60,
        status: outcome.value === undefined ? 'failed' : 'succeeded',
        created_at: now, started_at: now, finished_at: now, progress: null,
        result, error: outcome.error ?? null,
      },
    });
  });
}

test('with GPUs each bar says how many times the CPU it is, and a failed GPU its error', async () => {
  await withPage('compare-gpus', async (page) => {
    await pretendThereAreGpus(page, {
      cpu: { value: 10 },
      'cuda:0': { value: 2000 },
      'cuda:1': { error: 'CUDA_ERROR_OUT_OF_MEMORY: out of memory' },
    });
    await page.goto(`${BASE_URL}/compare`);
    await page.getByTestId('compare-form').waitFor();
    assert.equal(await page.getByTestId('compare-needs-gpu').count(), 0);
    assert.equal(await page.locator('input[name="device"]:checked').count(), 3, 'every device is ticked');
    await compare(page, 'vector_add', { n: 4096 }, 3);
    assert.equal(await finalStatus(page, 'cuda:0'), 'succeeded');
    assert.equal(await finalStatus(page, 'cuda:1'), 'failed');
    assert.equal(await finalStatus(page, 'cpu'), 'succeeded');

    const gpu = await page.getByTestId('compare-bar-cuda:0').innerText();
    assert.match(gpu, /2000 GB\/s/);
    assert.match(gpu, /200× the CPU/);
    assert.match(await page.getByTestId('compare-bar-cpu').innerText(), /10\.0 GB\/s[\s\S]*baseline/);
    assert.match(await page.getByTestId('compare-bar-cuda:1').innerText(), /out of memory/);
    const width = (id) =>
      page.getByTestId(`compare-bar-${id}`).locator('.bar-fill').evaluate((fill) => fill.getBoundingClientRect().width);
    const [fast, slow] = [await width('cuda:0'), await width('cpu')];
    assert.ok(Math.abs(slow / fast - 10 / 2000) < 0.01, `bars in proportion: ${slow} of ${fast}`);
  });
});

test('the comparison reads well in the dark and on a phone', async () => {
  for (const [name, options] of [
    ['compare-dark', { context: { colorScheme: 'dark' } }],
    ['compare-phone', { context: { viewport: PHONE } }],
  ]) {
    await withPage(
      name,
      async (page) => {
        await compare(page, 'reduce_sum', { n: 65536 }, 2);
        assert.equal(await finalStatus(page, 'cpu'), 'succeeded');
        const overflow = await page.evaluate(
          () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
        );
        assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow}px`);
      },
      options,
    );
  }
});
