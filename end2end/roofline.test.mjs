// Browser tests of the roofline (/devices/:id/roofline), % of peak on the job, compare and
// device pages, and the launch form's per-device data types, against a running server
// (GPULAB_URL); see ui.test.mjs for how they run. Screenshots go to
// end2end/artifacts/roofline-*.png. Every figure the page shows is checked against what
// the API answers for the same jobs.

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, test } from 'node:test';

import {
  ARTIFACTS,
  BASE_URL,
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
// The peaks that are not compute ceilings.
const NOT_CEILINGS = ['memory_bandwidth', 'pcie'];

// Queues a job through the API and waits until it has ended; answers it as it ended.
async function runJob(baseUrl, request) {
  const response = await fetch(`${baseUrl}/api/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(request),
  });
  const body = await response.text();
  assert.equal(response.status, 202, `POST /api/jobs ${JSON.stringify(request)}: ${body}`);
  const { id } = JSON.parse(body);
  const deadline = Date.now() + JOB_TIMEOUT_MS;
  for (;;) {
    const job = await (await fetch(`${baseUrl}/api/jobs/${id}`)).json();
    if (['succeeded', 'failed', 'cancelled', 'timed_out', 'interrupted'].includes(job.status)) return job;
    assert.ok(Date.now() < deadline, `job ${id} is still ${job.status}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

// The number a cell or line shows, such as 0.083 from "0.083" or 63 from "63 %".
function figure(text) {
  const match = /-?\d+(\.\d+)?(e-?\d+)?/.exec(text.replace(/,/g, ''));
  assert.ok(match, `a number in ${JSON.stringify(text)}`);
  return Number(match[0]);
}

// Whether `shown` is `value` as the UI rounds it: three significant digits, but three
// decimals from 0.001 to 1.
function near(shown, value) {
  const magnitude = Math.abs(value);
  const tolerance = magnitude >= 0.001 && magnitude < 1 ? 0.0005 : magnitude * 0.005;
  return Math.abs(shown - value) <= tolerance + 1e-12;
}

// A line's end points as numbers (the SVG draws in percentages of its box).
async function lineOf(locator) {
  return locator.evaluate((line) =>
    Object.fromEntries(['x1', 'y1', 'x2', 'y2'].map((a) => [a, parseFloat(line.getAttribute(a))])),
  );
}

let vectorAdd;
let matmul;

before(async () => {
  vectorAdd = await runJob(BASE_URL, {
    kernel: 'vector_add',
    device: 'cpu',
    params: { n: 1 << 20 },
    repetitions: 3,
  });
  matmul = await runJob(BASE_URL, {
    kernel: 'matmul',
    device: 'cpu',
    params: { m: 256, n: 256, k: 256 },
    repetitions: 3,
  });
  for (const job of [vectorAdd, matmul]) {
    assert.equal(job.status, 'succeeded', `${job.kernel}: ${job.error}`);
    assert.ok(job.result.roofline, `${job.kernel} has result.roofline`);
    assert.ok(job.result.fraction_of_peak, `${job.kernel} has result.fraction_of_peak`);
  }
});

test('the CPU roofline draws the slope, a ceiling per peak and a marker per job', async () => {
  const device = await api('/api/devices/cpu');
  const ceilings = device.peaks.filter((p) => !NOT_CEILINGS.includes(p.name));
  assert.ok(ceilings.length > 0, 'the CPU has at least one compute peak');

  await withPage('roofline-cpu', async (page) => {
    // Other test files run jobs on the CPU meanwhile: the page is checked against the
    // answer it got.
    const answer = page.waitForResponse((r) => new URL(r.url()).pathname === '/api/devices/cpu/roofline');
    await page.goto(`${BASE_URL}/devices/cpu/roofline`);
    const response = await answer;
    assert.equal(response.status(), 200);
    const roofline = await response.json();
    assert.deepEqual(
      roofline.ceilings.map((c) => c.name).sort(),
      ceilings.map((c) => c.name).sort(),
      'the roofline has a ceiling per compute peak of the device',
    );
    const ids = roofline.points.map((p) => p.job_id);
    assert.ok(ids.includes(vectorAdd.id) && ids.includes(matmul.id), `both jobs are points: ${ids}`);
    const svg = page.getByTestId('roofline-svg');
    await svg.waitFor();
    assert.equal(await page.title(), 'Roofline of cpu · gpulab');
    assert.equal(await svg.getAttribute('role'), 'img');
    assert.match(await svg.locator('title').textContent(), /Roofline of cpu/);
    assert.match(await svg.locator('desc').textContent(), new RegExp(`${roofline.points.length} jobs`));

    // The slope rises from the left edge to where it meets the highest ceiling.
    const top = roofline.ceilings.reduce((a, b) => (a.value >= b.value ? a : b));
    const slope = page.getByTestId('roofline-slope');
    assert.equal(await slope.count(), roofline.bandwidth ? 1 : 0);
    const topLine = await lineOf(page.getByTestId(`roofline-ceiling-${top.name}`));
    if (roofline.bandwidth) {
      const s = await lineOf(slope);
      assert.equal(s.x1, 0, 'the slope starts at the left edge');
      assert.ok(s.y2 < s.y1, `the slope rises: ${JSON.stringify(s)}`);
      assert.ok(Math.abs(s.x2 - topLine.x1) < 0.02 && Math.abs(s.y2 - topLine.y1) < 0.02, 'it meets the top ceiling');
    }
    // One horizontal line per ceiling, the higher peak higher up.
    assert.equal(await page.locator('line.ceiling').count(), roofline.ceilings.length);
    const heights = [];
    for (const ceiling of roofline.ceilings) {
      const line = page.getByTestId(`roofline-ceiling-${ceiling.name}`);
      assert.equal(Number(await line.getAttribute('data-value')), ceiling.value);
      const l = await lineOf(line);
      assert.equal(l.y1, l.y2, `${ceiling.name} is horizontal`);
      assert.equal(l.x2, 100, `${ceiling.name} reaches the right edge`);
      heights.push([ceiling.value, l.y1]);
    }
    for (const [v1, y1] of heights) {
      for (const [v2, y2] of heights) if (v1 > v2) assert.ok(y1 <= y2, 'a higher peak is drawn higher');
    }

    // A marker per point, placed by arithmetic intensity and throughput.
    const markers = page.locator('a[data-testid="roofline-point"]');
    assert.equal(await markers.count(), roofline.points.length);
    const shown = await markers.evaluateAll((as) => as.map((a) => Number(a.dataset.job)));
    assert.deepEqual(shown, ids);
    const at = async (id) =>
      page
        .locator(`a[data-testid="roofline-point"][data-job="${id}"] circle`)
        .evaluate((c) => [parseFloat(c.getAttribute('cx')), parseFloat(c.getAttribute('cy'))]);
    const [vx, vy] = await at(vectorAdd.id);
    const [mx, my] = await at(matmul.id);
    assert.ok(mx > vx, 'matmul is right of vector_add: more FLOPs per byte');
    assert.equal(
      my < vy,
      matmul.result.roofline.achieved > vectorAdd.result.roofline.achieved,
      'the faster job is drawn higher',
    );

    // The tables say the same as the API.
    const peakRows = page.locator('[data-testid="roofline-ceilings"] tbody tr');
    const expectedPeaks = [roofline.bandwidth, ...roofline.ceilings].filter(Boolean);
    assert.deepEqual(
      await peakRows.evaluateAll((rows) => rows.map((r) => r.dataset.peak)),
      expectedPeaks.map((p) => p.name),
    );
    for (const peak of expectedPeaks) {
      const row = await page.locator(`[data-testid="roofline-ceilings"] tr[data-peak="${peak.name}"]`).innerText();
      assert.ok(row.includes(peak.formula), `${peak.name} shows its formula: ${row}`);
      assert.ok(row.includes(peak.source), `${peak.name} shows its source: ${row}`);
      assert.ok(row.includes(peak.basis), `${peak.name} shows its basis: ${row}`);
    }
    const pointRows = page.locator('[data-testid="roofline-points"] tbody tr');
    assert.deepEqual(await pointRows.evaluateAll((rows) => rows.map((r) => Number(r.dataset.job))), ids);
    for (const point of roofline.points.filter((p) => [vectorAdd.id, matmul.id].includes(p.job_id))) {
      const cells = await page
        .locator(`[data-testid="roofline-points"] tr[data-job="${point.job_id}"] td`)
        .allTextContents();
      assert.equal(cells[1], point.label);
      assert.ok(near(figure(cells[2]), point.point.arithmetic_intensity), `intensity ${cells[2]}`);
      assert.ok(near(figure(cells[3]), point.point.achieved), `GFLOP/s ${cells[3]}`);
      assert.equal(cells[4], point.point.ceiling);
      assert.ok(Math.abs(figure(cells[5]) - point.fraction_of_peak.fraction * 100) <= 0.5, `% ${cells[5]}`);
    }

    // Hovering a marker shows its job, with a link to it; so does focusing one.
    const tip = page.getByTestId('roofline-tip');
    assert.equal(await tip.count(), 0, 'no tip before a marker is hovered');
    const matmulPoint = roofline.points.find((p) => p.job_id === matmul.id);
    await page.locator(`a[data-testid="roofline-point"][data-job="${matmul.id}"]`).hover();
    await tip.waitFor();
    const text = await tip.innerText();
    assert.ok(text.includes(matmulPoint.label), text);
    assert.match(text, new RegExp(`% of ${matmulPoint.fraction_of_peak.peak} peak`));
    assert.equal(await tip.getByRole('link').getAttribute('href'), `/jobs/${matmul.id}`);
    const vectorPoint = roofline.points.find((p) => p.job_id === vectorAdd.id);
    const vectorMarker = page.locator(`a[data-testid="roofline-point"][data-job="${vectorAdd.id}"]`);
    assert.equal(await vectorMarker.evaluate((a) => a.tabIndex), 0, 'a marker is in the tab order');
    await vectorMarker.focus();
    await page.waitForFunction(
      (label) => document.querySelector('[data-testid="roofline-tip"]')?.innerText.includes(label),
      vectorPoint.label,
    );
    assert.ok((await tip.innerText()).includes(vectorPoint.label));
    assert.equal(await tip.getByRole('link').getAttribute('href'), `/jobs/${vectorAdd.id}`);

    // The ladder is a GPU lesson, and says so on the CPU.
    assert.match(await page.getByTestId('ladder-cpu').innerText(), /on the CPU every matmul variant/);

    // On a phone the chart narrows with the page instead of making it pan sideways.
    await page.setViewportSize(PHONE);
    const { scroll, width } = await page.evaluate(() => ({
      scroll: document.documentElement.scrollWidth,
      width: window.innerWidth,
    }));
    assert.ok(scroll <= width, `the page is ${scroll} px wide in a ${width} px window`);
    await page.screenshot({ path: `${ARTIFACTS}/roofline-cpu-phone.png`, fullPage: true });
  });
});

test('the job page shows its % of peak with the convention and the peak formula', async () => {
  const device = await api('/api/devices/cpu');
  const fraction = matmul.result.fraction_of_peak;
  const peak = device.peaks.find((p) => p.name === fraction.peak);
  assert.ok(peak, `the CPU has the ${fraction.peak} peak the job names`);
  await withPage('roofline-job-fraction', async (page) => {
    await page.goto(`${BASE_URL}/jobs/${matmul.id}`);
    const shown = page.getByTestId('job-fraction-of-peak');
    await shown.waitFor();
    const line = await shown.locator('p').innerText();
    assert.match(line, new RegExp(`% of ${fraction.peak} peak \\(.+, ${fraction.basis}\\)`));
    assert.ok(Math.abs(figure(line) - fraction.fraction * 100) <= 0.5, `${line} vs ${fraction.fraction}`);
    assert.equal(await shown.locator('p').getAttribute('title'), fraction.convention);
    await shown.locator('summary').click();
    const details = await shown.locator('details').innerText();
    assert.ok(details.includes(fraction.convention), details);
    await page.waitForFunction(
      (formula) => document.querySelector('[data-testid="job-fraction-of-peak"] details')?.innerText.includes(formula),
      peak.formula,
    );
    assert.equal(await page.getByTestId('job-roofline-link').getAttribute('href'), '/devices/cpu/roofline');
    await page.getByTestId('job-roofline-link').click();
    await page.getByTestId('roofline-svg').waitFor();
  });
});

test('the device card lists the peaks with formula and source and links to the roofline', async () => {
  const device = await api('/api/devices/cpu');
  await withPage('roofline-device-peaks', async (page) => {
    await page.goto(`${BASE_URL}/`);
    const card = page.getByTestId('device-card-cpu');
    await card.waitFor();
    const peaks = card.getByTestId('device-peaks');
    assert.match(await peaks.locator('summary').innerText(), new RegExp(`Peaks \\(${device.peaks.length}\\)`));
    await peaks.locator('summary').click();
    for (const peak of device.peaks) {
      const text = await peaks.locator(`dd[data-peak="${peak.name}"]`).innerText();
      assert.ok(text.includes(peak.formula) && text.includes(peak.source), `${peak.name}: ${text}`);
      assert.ok(text.includes(`(${peak.basis})`), `${peak.name} says how it was obtained: ${text}`);
    }
    assert.equal(await card.getByTestId('device-roofline-link').getAttribute('href'), '/devices/cpu/roofline');
  });
});

test('comparing shows each device its % of its own peak', async () => {
  await withPage('roofline-compare-fraction', async (page) => {
    await page.goto(`${BASE_URL}/compare`);
    const form = page.getByTestId('compare-form');
    await form.waitFor();
    await form.locator('select[name="kernel"]').selectOption('matmul');
    for (const [name, value] of Object.entries({ m: 128, n: 128, k: 128 })) {
      await form.locator(`[name="param-${name}"]`).fill(String(value));
    }
    await form.locator('input[name="repetitions"]').fill('2');
    await page.getByTestId('compare-run').click();
    const bar = page.getByTestId('compare-bar-cpu');
    await page.waitForFunction(
      () => document.querySelector('[data-testid="compare-bar-cpu"]')?.dataset.status === 'succeeded',
      null,
      { timeout: JOB_TIMEOUT_MS },
    );
    const id = Number((await bar.getByRole('link').getAttribute('href')).split('/').pop());
    const job = await api(`/api/jobs/${id}`);
    const fraction = job.result.fraction_of_peak;
    const peak = bar.locator('.bar-peak');
    const text = await peak.innerText();
    assert.match(text, new RegExp(`% of ${fraction.peak} peak`));
    assert.ok(Math.abs(figure(text) - fraction.fraction * 100) <= 0.5, `${text} vs ${fraction.fraction}`);
    assert.equal(await peak.getAttribute('title'), fraction.convention);
  });
});

test('the launch form lets matmul run only the data types the chosen device runs', async () => {
  const kernels = await api('/api/kernels');
  const dtype = kernels.find((k) => k.name === 'matmul')?.params.find((p) => p.name === 'dtype');
  assert.ok(dtype, 'matmul has a dtype parameter');
  assert.equal(dtype.type, 'enum');
  assert.ok(dtype.choices_by_device, 'matmul dtype has choices_by_device');
  const cpu = dtype.choices_by_device.cpu ?? dtype.choices;
  assert.ok(cpu.length < dtype.choices.length, `the CPU runs fewer types than all: ${cpu}`);
  await withPage('roofline-launch-dtype', async (page) => {
    await page.goto(`${BASE_URL}/launch?kernel=matmul&device=cpu`);
    const select = page.locator('select[name="param-dtype"]');
    await select.waitFor();
    // Every type is listed, those the CPU does not run disabled.
    const listed = await select.locator('option').evaluateAll((os) => os.map((o) => [o.value, o.disabled]));
    assert.deepEqual(listed.map(([value]) => value), dtype.choices);
    assert.deepEqual(listed.filter(([, disabled]) => !disabled).map(([value]) => value), cpu);
    assert.ok(cpu.includes(await select.inputValue()), 'the chosen value is one the CPU runs');
    for (const name of ['m', 'n', 'k']) await page.locator(`[name="param-${name}"]`).fill('64');
    // Another type than the default: the form sends it, and the job is judged against
    // that type's peak.
    const choice = cpu.find((c) => c !== dtype.default);
    assert.ok(choice, `the CPU runs a type besides ${dtype.default}`);
    await select.selectOption(choice);
    await page.getByTestId('launch-submit').click();
    await page.waitForURL(/\/jobs\/\d+$/);
    const id = Number(new URL(page.url()).pathname.split('/').pop());
    assert.equal((await api(`/api/jobs/${id}`)).params.dtype, choice);
    const shown = page.getByTestId('job-fraction-of-peak');
    await shown.waitFor({ timeout: JOB_TIMEOUT_MS });
    const job = await api(`/api/jobs/${id}`);
    assert.equal(job.result.fraction_of_peak.peak, choice);
    assert.match(await shown.locator('p').innerText(), new RegExp(`% of ${choice} peak`));
  });
});

test(
  'a device without jobs says how to put points on its roofline, and a job that finishes is offered to it',
  { skip: !(GPULAB_BIN && GPULAB_STATIC_DIR) && 'set GPULAB_BIN and GPULAB_STATIC_DIR' },
  async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const dataDir = await mkdtemp(join(tmpdir(), 'gpulab-roofline-'));
    const server = await startServer(port, dataDir);
    try {
      const roofline = await (await fetch(`${url}/api/devices/cpu/roofline`)).json();
      assert.deepEqual(roofline.points, []);
      await withPage('roofline-empty', async (page) => {
        await page.goto(`${url}/devices/cpu/roofline`);
        const notice = page.getByTestId('roofline-no-points');
        await notice.waitFor();
        assert.match(await notice.innerText(), /Run matmul .* or vector_add/);
        const links = await notice.getByRole('link').evaluateAll((as) => as.map((a) => a.getAttribute('href')));
        assert.deepEqual(links, ['/launch?device=cpu&kernel=matmul', '/launch?device=cpu&kernel=vector_add']);
        assert.equal(await page.locator('a[data-testid="roofline-point"]').count(), 0);
        // The roof is drawn from the peaks all the same.
        assert.equal(await page.locator('line.ceiling').count(), roofline.ceilings.length);

        // A job that finishes meanwhile is announced by the event stream; redrawing adds it.
        assert.equal(await page.getByTestId('roofline-newer').count(), 0);
        const job = await runJob(url, { kernel: 'vector_add', device: 'cpu', params: { n: 4096 }, repetitions: 2 });
        assert.equal(job.status, 'succeeded');
        const newer = page.getByTestId('roofline-newer');
        await newer.waitFor();
        assert.match(await newer.innerText(), /1 more job has finished/);
        await page.getByTestId('roofline-redraw').click();
        await page.locator(`a[data-testid="roofline-point"][data-job="${job.id}"]`).waitFor();
        assert.equal(await page.locator('a[data-testid="roofline-point"]').count(), 1);
        assert.equal(await page.getByTestId('roofline-no-points').count(), 0);
        assert.equal(await page.getByTestId('roofline-newer').count(), 0);
      });
    } finally {
      await killed(server, 'SIGTERM');
      await rm(dataDir, { recursive: true, force: true });
    }
  },
);
