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

// Opens the launcher, fills in the form and submits it; returns the new job's id.
async function launch(page, kernel, device, params, repetitions) {
  await page.goto(`${BASE_URL}/launch`);
  const form = page.getByTestId('launch-form');
  await form.waitFor();
  await form.locator('select[name="kernel"]').selectOption(kernel);
  await form.locator('select[name="device"]').selectOption(device);
  for (const [name, value] of Object.entries(params)) {
    await form.locator(`[name="param-${name}"]`).fill(String(value));
  }
  await form.locator('input[name="repetitions"]').fill(String(repetitions));
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
