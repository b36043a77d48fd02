// Browser tests of the Diagnostics pages (/diagnostics, /diagnostics/{id}) and of the last
// verdict on the device card, against a running server (GPULAB_URL); see ui.test.mjs for how
// they run. The fault injected in the failing run needs a server started with
// --enable-test-faults, as `cargo xtask test` starts it. Screenshots go to
// end2end/artifacts/diagnostics-*.png.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ARTIFACTS, BASE_URL, DESKTOP, PHONE, api, withPage } from './browser.mjs';

// The level the tests run on the CPU: level 2 loads it (memory test, bandwidth, a compute
// stress twice), which is what a check with evidence to show needs.
const LEVEL = 2;
// How long that level may take on the CPU of a small CI machine, from start to verdict.
const DIAGNOSTIC_TIMEOUT_MS = 180_000;
const VERDICTS = ['pass', 'warn', 'fail', 'skip'];
const SIGNS = { pass: '✓ pass', warn: '⚠ warn', fail: '✗ fail', skip: '– skip' };

// Sends `request` to POST /api/diagnostics, as a script would; answers the diagnostic.
async function postDiagnostic(request) {
  const response = await fetch(`${BASE_URL}/api/diagnostics`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(request),
  });
  const body = await response.text();
  assert.equal(response.status, 202, `POST /api/diagnostics ${JSON.stringify(request)}: ${body}`);
  const diagnostic = JSON.parse(body);
  assert.equal(response.headers.get('location'), `/api/diagnostics/${diagnostic.id}`);
  return diagnostic;
}

// Queues a job, as another user of the server would.
async function postJob(request) {
  const response = await fetch(`${BASE_URL}/api/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(request),
  });
  assert.ok(response.ok, `POST /api/jobs ${JSON.stringify(request)}: ${response.status}`);
  return response.json();
}

// Asks the API until diagnostic `id` has ended; answers it.
async function apiDiagnosticDone(id) {
  const deadline = Date.now() + DIAGNOSTIC_TIMEOUT_MS;
  for (;;) {
    const diagnostic = await api(`/api/diagnostics/${id}`);
    if (!['queued', 'running'].includes(diagnostic.status)) return diagnostic;
    assert.ok(Date.now() < deadline, `diagnostic ${id} still ${diagnostic.status}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

// Waits on a diagnostic's page until it has ended; answers its badge's status and verdict.
async function finalBadge(page) {
  await page.waitForFunction(
    () => {
      const badge = document.querySelector('[data-testid="diagnostic-status"] [data-status]');
      return badge && !['queued', 'running'].includes(badge.dataset.status);
    },
    null,
    { timeout: DIAGNOSTIC_TIMEOUT_MS },
  );
  const badge = page.locator('[data-testid="diagnostic-status"] [data-status]');
  return {
    status: await badge.getAttribute('data-status'),
    verdict: await badge.getAttribute('data-verdict'),
    text: (await badge.innerText()).trim(),
  };
}

// Every check the page shows for `device`, as it shows it.
function shownChecks(page, device) {
  return page.evaluate((device) => {
    const section = document.querySelector(`[data-testid="diag-device-${device}"]`);
    return [...(section?.querySelectorAll('[data-testid="check"]') ?? [])].map((check) => ({
      check: check.dataset.check,
      state: check.dataset.state,
      verdict: check.dataset.verdict ?? null,
      badge: check.querySelector('[data-testid="check-state"]')?.textContent.trim(),
      title: check.querySelector('h3')?.textContent.trim(),
      reason: check.querySelector('[data-testid="check-reason"]')?.textContent.trim() ?? null,
      evidence: [...check.querySelectorAll('[data-testid="evidence-row"]')].map((row) => ({
        verdict: row.dataset.verdict,
        cells: [...row.querySelectorAll('th, td')].map((cell) => cell.textContent.trim()),
      })),
    }));
  }, device);
}

test(`the Diagnostics page runs level ${LEVEL} on the CPU and follows every check to its verdict`, async () => {
  await withPage('diagnostics-run', async (page, requests) => {
    await page.goto(`${BASE_URL}/`);
    await page.getByRole('link', { name: 'Diagnostics', exact: true }).click();
    await page.waitForURL(/\/diagnostics$/);
    assert.equal(await page.title(), 'Diagnostics · gpulab');
    const form = page.getByTestId('diag-form');
    await form.waitFor();
    await form.locator(`input[name="level"][value="${LEVEL}"]`).check();
    await form.locator('select[name="device"]').selectOption('cpu');
    assert.equal(await form.locator('input[name="duration_s"]').count(), 0, 'no stress time below level 3');

    // A job ahead of it on the CPU, so the diagnostic is seen waiting and then everything it
    // does arrives through the event stream.
    await postJob({ kernel: 'mandelbrot', device: 'cpu', params: { width: 256, height: 256 }, repetitions: 100 });
    await page.evaluate(() => {
      // Every state each check is shown in, in order, across the client-side navigation.
      window.seen = { statuses: [], checks: {} };
      const record = () => {
        const badge = document.querySelector('[data-testid="diagnostic-status"] [data-status]');
        const status = badge?.dataset.status;
        if (status && window.seen.statuses.at(-1) !== status) window.seen.statuses.push(status);
        for (const check of document.querySelectorAll('[data-testid="check"]')) {
          const states = (window.seen.checks[check.dataset.check] ??= []);
          const state = check.dataset.verdict ?? check.dataset.state;
          if (state && states.at(-1) !== state) states.push(state);
        }
      };
      new MutationObserver(record).observe(document.body, {
        subtree: true,
        childList: true,
        characterData: true,
        attributes: true,
      });
    });
    await page.getByTestId('diag-start').click();
    await page.waitForURL(/\/diagnostics\/\d+$/);
    const id = Number(new URL(page.url()).pathname.split('/').pop());
    await page.getByTestId('diag-device-cpu').waitFor();
    await page.screenshot({ path: `${ARTIFACTS}/diagnostics-queued.png`, fullPage: true });
    assert.equal(await page.getByTestId('diagnostic-cancel').count(), 1, 'a cancel button while it waits');

    const badge = await finalBadge(page);
    await page.screenshot({ path: `${ARTIFACTS}/diagnostics-finished.png`, fullPage: true });
    const diagnostic = await api(`/api/diagnostics/${id}`);
    assert.equal(diagnostic.level, LEVEL);
    assert.equal(diagnostic.status, 'finished', `it ran to its end: ${diagnostic.error}`);
    assert.deepEqual(badge, { status: 'finished', verdict: diagnostic.verdict, text: SIGNS[diagnostic.verdict] });
    assert.equal(await page.title(), `Diagnostic ${id} (${SIGNS[diagnostic.verdict]}) · gpulab`);
    assert.equal(await page.getByTestId('diagnostic-cancel').count(), 0, 'no cancel button once finished');

    // Each check as the API has it: its verdict in words, its reason, its evidence.
    const [cpu] = diagnostic.devices;
    const shown = await shownChecks(page, 'cpu');
    assert.deepEqual(
      shown.map((c) => c.check),
      cpu.checks.map((c) => c.check),
      'every check, in the order they ran',
    );
    assert.ok(shown.length >= 2, `level ${LEVEL} has several checks: ${shown.map((c) => c.check)}`);
    for (const [i, check] of cpu.checks.entries()) {
      const seen = shown[i];
      assert.equal(seen.title, check.title);
      assert.equal(seen.state, 'done', check.check);
      assert.ok(VERDICTS.includes(check.verdict), `${check.check}: ${check.verdict}`);
      assert.equal(seen.verdict, check.verdict, check.check);
      assert.equal(seen.badge, SIGNS[check.verdict], `${check.check} reads without colour`);
      if (check.reason) assert.ok(seen.reason.includes(check.reason), `${check.check}: ${seen.reason}`);
      assert.equal(seen.evidence.length, check.evidence.length, `${check.check}: one row per figure`);
      for (const [j, evidence] of check.evidence.entries()) {
        const row = seen.evidence[j];
        assert.equal(row.verdict, evidence.verdict);
        assert.equal(row.cells[0], evidence.name);
        assert.equal(row.cells.at(-1), SIGNS[evidence.verdict]);
        if (evidence.source) assert.equal(row.cells[4], evidence.source);
        if (evidence.measured_text) assert.equal(row.cells[1], evidence.measured_text);
        else if (evidence.measured !== null) assert.match(row.cells[1], /\d/, `${evidence.name}: ${row.cells[1]}`);
      }
    }
    assert.ok(
      shown.some((c) => c.evidence.length > 0),
      `a loaded level shows figures: ${JSON.stringify(shown)}`,
    );

    // Followed live: waiting behind the job, then running, then finished; each check from
    // waiting through running to its verdict; fetched once, the rest pushed.
    const seen = await page.evaluate(() => window.seen);
    assert.deepEqual(seen.statuses, ['queued', 'running', 'finished'], 'statuses in order');
    for (const check of cpu.checks) {
      const states = seen.checks[check.check];
      assert.equal(states[0], 'waiting', `${check.check} waited first: ${states}`);
      assert.equal(states.at(-1), check.verdict, `${check.check} ended with its verdict: ${states}`);
    }
    assert.ok(
      Object.values(seen.checks).some((states) => states.includes('running')),
      `a check was seen running: ${JSON.stringify(seen.checks)}`,
    );
    const fetched = requests.filter((r) => r === `GET /api/diagnostics/${id}`);
    assert.equal(fetched.length, 1, `fetched once, then pushed: ${requests.join(', ')}`);

    // The history lists it with its verdict, linking to it.
    await page.getByRole('link', { name: 'All diagnostics' }).click();
    await page.waitForURL(/\/diagnostics$/);
    const row = page.locator(`[data-testid="history-cpu"] [data-testid="diagnostic-row"][data-diagnostic-id="${id}"]`);
    await row.waitFor();
    assert.equal(await row.locator('[data-verdict]').getAttribute('data-verdict'), diagnostic.verdict);
    assert.equal(await row.getByRole('link').getAttribute('href'), `/diagnostics/${id}`);

    // The CPU's card shows it as its last diagnostic.
    await page.getByRole('link', { name: 'Devices', exact: true }).click();
    const last = page.locator('[data-testid="device-card-cpu"] [data-testid="last-diagnostic"]');
    await last.waitFor();
    const link = last.getByTestId('last-diagnostic-link');
    assert.equal(await link.getAttribute('href'), `/diagnostics/${id}`);
    assert.equal((await link.innerText()).trim(), `${SIGNS[diagnostic.verdict]} level ${LEVEL}`);
    assert.match(await last.innerText(), /^Last diagnostic: .*, \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
    const device = (await api('/api/devices')).find((d) => d.id === 'cpu');
    assert.equal(device.last_diagnostic?.id, id, 'the inventory says the same');
  });
});

test('a diagnostic with a flipped memory bit shows the failing evidence, and the card turns to fail', async () => {
  const diagnostic = await postDiagnostic({ level: LEVEL, device: 'cpu', inject: ['memory_bit_flip'] });
  await withPage('diagnostics-fail', async (page) => {
    // The card is open while it runs: its last verdict turns to this one through the stream.
    await page.goto(`${BASE_URL}/`);
    const last = page.locator('[data-testid="device-card-cpu"] [data-testid="last-diagnostic"]');
    await last.waitFor();
    await page.waitForFunction(
      (id) =>
        document
          .querySelector('[data-testid="device-card-cpu"] [data-testid="last-diagnostic-link"]')
          ?.getAttribute('href') === `/diagnostics/${id}`,
      diagnostic.id,
      { timeout: DIAGNOSTIC_TIMEOUT_MS },
    );
    assert.match(await last.innerText(), /✗ fail level \d/);

    await last.getByTestId('last-diagnostic-link').click();
    await page.waitForURL(new RegExp(`/diagnostics/${diagnostic.id}$`));
    const badge = await finalBadge(page);
    assert.deepEqual(badge, { status: 'finished', verdict: 'fail', text: '✗ fail' });
    const finished = await api(`/api/diagnostics/${diagnostic.id}`);
    const failing = finished.devices[0].checks.filter((c) => c.verdict === 'fail');
    assert.ok(failing.length >= 1, 'the injected fault fails a check');

    const shown = await shownChecks(page, 'cpu');
    for (const check of failing) {
      const seen = shown.find((c) => c.check === check.check);
      assert.equal(seen.verdict, 'fail');
      assert.equal(seen.badge, '✗ fail');
      assert.ok(seen.reason, `${check.check} says why it failed`);
      assert.ok(seen.reason.startsWith('Failed: '), seen.reason);
      assert.ok(seen.reason.includes(check.reason), `${seen.reason} / ${check.reason}`);
      const bad = seen.evidence.filter((row) => row.verdict === 'fail');
      assert.ok(bad.length >= 1, `${check.check} shows the figure that failed: ${JSON.stringify(seen.evidence)}`);
      assert.equal(bad[0].cells.at(-1), '✗ fail');
    }
    await page
      .locator(`[data-testid="check"][data-verdict="fail"]`)
      .first()
      .screenshot({ path: `${ARTIFACTS}/diagnostics-failing-check.png` });
  });
});

test('the form refuses a stress time of zero itself, and shows the server\'s refusal of one too long', async () => {
  await withPage('diagnostics-refused', async (page, requests) => {
    await page.goto(`${BASE_URL}/diagnostics?device=cpu`);
    const form = page.getByTestId('diag-form');
    await form.waitFor();
    assert.equal(await form.locator('select[name="device"]').inputValue(), 'cpu', '?device= chooses it');
    await form.locator('input[name="level"][value="3"]').check();
    const duration = form.locator('input[name="duration_s"]');
    assert.equal(await duration.inputValue(), '600', 'the default stress time');
    await duration.fill('0');
    await page.getByTestId('diag-start').click();
    await page.getByTestId('field-error-duration_s').getByText(/more than 0/).waitFor();
    assert.equal(await duration.getAttribute('aria-invalid'), 'true');
    assert.ok(!requests.includes('POST /api/diagnostics'), `nothing was posted: ${requests.join(', ')}`);
    assert.equal(new URL(page.url()).pathname, '/diagnostics');

    // Longer than the server allows: its problem document goes beside the field.
    await duration.fill('100000');
    await page.getByTestId('diag-start').click();
    const refusal = page.getByTestId('field-error-duration_s');
    await refusal.getByText(/--max-timeout-s/).waitFor();
    assert.match(await refusal.innerText(), /`duration_s` must be a number of seconds from 1 to \d+/);
    assert.ok(requests.includes('POST /api/diagnostics'), 'this one was sent');
    assert.equal(new URL(page.url()).pathname, '/diagnostics', 'and refused');
  }, { expectedErrors: [/status of 422/] });
});

test('a running diagnostic is cancelled from its page', async () => {
  const diagnostic = await postDiagnostic({ level: 3, device: 'cpu', duration_s: 300 });
  await withPage('diagnostics-cancel', async (page, requests) => {
    await page.goto(`${BASE_URL}/diagnostics/${diagnostic.id}`);
    await page.waitForFunction(
      () => document.querySelector('[data-testid="diagnostic-status"] [data-status]')?.dataset.status === 'running',
      null,
      { timeout: DIAGNOSTIC_TIMEOUT_MS },
    );
    await page.getByTestId('diagnostic-cancel').click();
    const badge = await finalBadge(page);
    assert.equal(badge.status, 'cancelled');
    assert.equal(badge.text, 'cancelled');
    assert.ok(requests.includes(`DELETE /api/diagnostics/${diagnostic.id}`), requests.join(', '));
    assert.equal(await page.getByTestId('diagnostic-cancel').count(), 0, 'no cancel button once cancelled');
    assert.equal((await api(`/api/diagnostics/${diagnostic.id}`)).status, 'cancelled');
    // The checks that never ran are not shown as judged.
    const shown = await shownChecks(page, 'cpu');
    const unfinished = shown.filter((c) => c.state !== 'done');
    assert.ok(unfinished.length > 0, `some checks never ended: ${JSON.stringify(shown.map((c) => c.state))}`);
    for (const check of unfinished) assert.equal(check.badge, 'not finished', check.check);
  });
});

test('a level 3 run draws its stress check live, with its samples as a table', async () => {
  const diagnostic = await postDiagnostic({ level: 3, device: 'cpu', duration_s: 6 });
  await withPage('diagnostics-stress', async (page) => {
    await page.goto(`${BASE_URL}/diagnostics/${diagnostic.id}`);
    await page.getByTestId('diag-device-cpu').waitFor();
    // The throughput line grows while the stress runs.
    const points = () =>
      page.evaluate(() =>
        (document.querySelector('[data-testid="stress-chart-throughput"] polyline')?.getAttribute('points') ?? '')
          .split(/\s+/)
          .filter(Boolean).length,
      );
    await page.waitForFunction(
      () => document.querySelector('[data-testid="stress-chart-throughput"] polyline'),
      null,
      { timeout: DIAGNOSTIC_TIMEOUT_MS },
    );
    const early = await points();
    const stillRunning = await page
      .locator('[data-testid="check"]:has([data-testid="stress-chart-throughput"])')
      .getAttribute('data-state');
    assert.equal(stillRunning, 'running', 'the chart is drawn while the stress runs');
    await page.waitForFunction(
      (early) =>
        (document.querySelector('[data-testid="stress-chart-throughput"] polyline')?.getAttribute('points') ?? '')
          .split(/\s+/)
          .filter(Boolean).length > early,
      early,
      { timeout: 30_000 },
    );
    await page.screenshot({ path: `${ARTIFACTS}/diagnostics-stress-running.png`, fullPage: true });
    await finalBadge(page);
    await page.screenshot({ path: `${ARTIFACTS}/diagnostics-stress.png`, fullPage: true });

    const finished = await api(`/api/diagnostics/${diagnostic.id}`);
    const stress = finished.devices[0].checks.filter((c) => c.series.length > 0);
    assert.ok(stress.length >= 1, 'level 3 has a stress check with samples');
    for (const check of stress) {
      const shown = page.getByTestId(`stress-${check.check}`);
      const plot = shown.getByTestId('stress-chart-throughput').locator('[role="img"]');
      assert.match(
        await plot.getAttribute('aria-label'),
        /^Throughput over \d+ (second|minute)s? of stress, ([\d.]+ GFLOP\/s to [\d.]+ GFLOP\/s|steady at [\d.]+ GFLOP\/s)$/,
      );
      const line = await plot.locator('polyline').getAttribute('points');
      assert.equal(line.split(' ').length, check.series.length, 'one point per sample');
      for (const point of line.split(' ')) {
        const [x, y] = point.split(',').map(Number);
        assert.ok(x >= 0 && x <= 300 && y >= 0 && y <= 100, `point ${point} lies inside the view box`);
      }
      // The table alternative: one row per second, throughput as measured.
      await shown.locator('summary').click();
      const rows = shown.getByTestId('stress-samples').locator('tbody tr');
      assert.equal(await rows.count(), check.series.length);
      assert.match(await rows.first().innerText(), /^\d+\s+[\d.]+/);
      // What the device does not report says so rather than drawing nothing.
      for (const [metric, field] of [
        ['sm-clock', 'sm_clock_mhz'],
        ['temperature', 'temperature_celsius'],
        ['power', 'power_watts'],
      ]) {
        const chart = shown.getByTestId(`stress-chart-${metric}`);
        if (check.series.every((s) => s[field] === null)) {
          assert.match(await chart.innerText(), /Not reported by this device/);
        } else {
          assert.equal(await chart.locator('polyline').count(), 1, `${metric} is drawn`);
        }
      }
    }
  });
});

test('the diagnostics pages fit a phone and read well light and dark', async () => {
  const diagnostic = await apiDiagnosticDone((await postDiagnostic({ level: 1, device: 'cpu' })).id);
  for (const [scheme, viewport, size] of [
    ['light', DESKTOP, 'desktop'],
    ['dark', DESKTOP, 'desktop'],
    ['light', PHONE, 'phone'],
    ['dark', PHONE, 'phone'],
  ]) {
    await withPage(`diagnostics-pages-${scheme}-${size}`, async (page) => {
      for (const [name, path, ready] of [
        ['diagnostics', '/diagnostics', '[data-testid="diagnostic-row"]'],
        ['diagnostic', `/diagnostics/${diagnostic.id}`, '[data-testid="check"]'],
      ]) {
        await page.goto(`${BASE_URL}${path}`);
        await page.locator(ready).first().waitFor();
        await page.waitForFunction(() => !document.querySelector('.loading'));
        const { scroll, width } = await page.evaluate(() => ({
          scroll: document.documentElement.scrollWidth,
          width: window.innerWidth,
        }));
        assert.ok(scroll <= width, `${path} is ${scroll} px wide in a ${width} px window`);
        await page.screenshot({ path: `${ARTIFACTS}/page-${name}-${scheme}-${size}.png`, fullPage: true });
      }
    }, { context: { viewport, colorScheme: scheme } });
  }
});
