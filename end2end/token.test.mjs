// Browser tests of the API token against a server of their own started with GPULAB_TOKEN
// (as `gpulab serve --token` would be): the UI is refused without the token, says so, takes
// the token in the header, and then sends it with every launch and cancel and puts it in
// "Copy as curl". They need GPULAB_BIN and GPULAB_STATIC_DIR, which the xtask sets.
// Screenshots go to end2end/artifacts/token-*.png.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';

import {
  ARTIFACTS,
  GPULAB_BIN,
  GPULAB_STATIC_DIR,
  PHONE,
  freePort,
  killed,
  startServer,
  withPage,
} from './browser.mjs';

// A quote and a `$`, so that the curl command must quote it for the shell.
const TOKEN = "s3cret'$HOME";
const skip = !(GPULAB_BIN && GPULAB_STATIC_DIR) && 'set GPULAB_BIN and GPULAB_STATIC_DIR';

let server;
let url;
let dataDir;

before(async () => {
  if (skip) return;
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  dataDir = await mkdtemp(join(tmpdir(), 'gpulab-token-'));
  server = await startServer(port, dataDir, { GPULAB_TOKEN: TOKEN });
});

after(async () => {
  if (server) await killed(server, 'SIGTERM');
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

function postJob(request, token) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  return fetch(`${url}/api/jobs`, { method: 'POST', headers, body: JSON.stringify(request) });
}

// The Authorization header of every POST and DELETE the page sends to the API.
function recordChanges(page) {
  const sent = [];
  page.on('request', (request) => {
    if (['POST', 'DELETE'].includes(request.method()) && new URL(request.url()).pathname.startsWith('/api/')) {
      sent.push({ method: request.method(), authorization: request.headers().authorization });
    }
  });
  return sent;
}

const focusedId = (page) => page.evaluate(() => document.activeElement?.id);

test('a launch refused for want of the token asks for it; with it, the launch and its curl command go through', { skip }, async () => {
  // The server really wants it.
  assert.equal((await postJob({ kernel: 'vector_add', device: 'cpu' })).status, 401);

  await withPage(
    'token-launch',
    async (page, requests, context) => {
      await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: url });
      const sent = recordChanges(page);
      await page.goto(`${url}/launch`);
      const form = page.getByTestId('launch-form');
      await form.waitFor();
      await form.locator('select[name="kernel"]').selectOption('vector_add');
      await form.locator('select[name="device"]').selectOption('cpu');
      await form.locator('[name="param-n"]').fill('1000');
      await form.locator('input[name="repetitions"]').fill('1');
      assert.match(await page.getByTestId('token-toggle').innerText(), /API token\s*none/);
      await page.getByTestId('launch-submit').click();

      // Refused: the notice says why and what to do.
      const notice = page.getByTestId('unauthorized');
      await notice.waitFor();
      const text = await notice.innerText();
      assert.match(text, /The server needs an API token\./);
      assert.match(text, /401 Unauthorized/);
      assert.match(text, /“API token” at the top of the page/);
      assert.deepEqual(sent, [{ method: 'POST', authorization: undefined }]);
      assert.match(page.url(), /\/launch$/, 'still on the form');

      // Its button opens the header's panel with the keyboard in the token's field.
      await notice.getByRole('button', { name: 'Enter the API token' }).click();
      assert.equal(await page.getByTestId('token-settings').evaluate((d) => d.open), true);
      assert.equal(await focusedId(page), 'api-token');
      assert.equal(await page.getByLabel('API token', { exact: true }).getAttribute('type'), 'password');
      // Pasted with its scheme, as it may be copied from a curl command.
      await page.keyboard.type(`Bearer ${TOKEN}`);
      await page.keyboard.press('Enter');
      await page.locator('.token-saved').filter({ hasText: 'Saved' }).waitFor();
      assert.match(await page.getByTestId('token-toggle').innerText(), /API token\s*set/);
      assert.equal(await page.evaluate(() => localStorage.getItem('gpulab.apiToken')), TOKEN);
      await page.screenshot({ path: `${ARTIFACTS}/token-saved.png` });
      // Escape closes the panel and gives the focus back to its toggle.
      await page.keyboard.press('Escape');
      assert.equal(await page.getByTestId('token-settings').evaluate((d) => d.open), false);
      assert.equal(await page.evaluate(() => document.activeElement?.dataset.testid), 'token-toggle');

      await page.getByTestId('launch-submit').click();
      await page.waitForURL(/\/jobs\/\d+$/);
      assert.deepEqual(sent[1], { method: 'POST', authorization: `Bearer ${TOKEN}` });
      const id = Number(new URL(page.url()).pathname.split('/').pop());

      // Copy as curl: the command carries the token, and a shell runs it past the server.
      await page.getByTestId('copy-curl').click();
      const shown = page.getByTestId('curl-command');
      await shown.waitFor();
      const command = (await shown.innerText()).trim();
      assert.equal(await page.evaluate(() => navigator.clipboard.readText()), command, 'copied as shown');
      assert.match(
        command,
        /^curl -X POST \S+\/api\/jobs -H 'Authorization: Bearer s3cret'\\''\$HOME' -H 'content-type: application\/json' -d '\{.*\}'$/,
      );
      const { stdout } = await promisify(execFile)('bash', ['-c', `${command} --silent --show-error --fail-with-body`]);
      const copy = JSON.parse(stdout);
      assert.ok(copy.id > id, `a new job: ${stdout}`);
      assert.equal(copy.kernel, 'vector_add');
      assert.deepEqual(copy.params.n, 1000);

      // Forgetting the token takes it out of the command again.
      await page.getByTestId('token-toggle').click();
      await page.getByTestId('token-forget').click();
      assert.match(await page.getByTestId('token-toggle').innerText(), /API token\s*none/);
      assert.doesNotMatch(await shown.innerText(), /Authorization/);
      assert.equal(await page.evaluate(() => localStorage.getItem('gpulab.apiToken')), null);
    },
    { expectedErrors: [/status of 401/] },
  );
});

test('a cancel refused with a wrong token asks for the right one, then stops the job', { skip }, async () => {
  const response = await postJob(
    { kernel: 'mandelbrot', device: 'cpu', params: { width: 512, height: 512 }, repetitions: 5000 },
    TOKEN,
  );
  assert.equal(response.status, 202);
  const job = await response.json();
  try {
    await withPage(
      'token-cancel',
      async (page, requests, context) => {
        // A token kept from an earlier visit, no longer the server's.
        await context.addInitScript(() => localStorage.setItem('gpulab.apiToken', 'old-token'));
        const sent = recordChanges(page);
        await page.goto(`${url}/jobs/${job.id}`);
        assert.match(await page.getByTestId('token-toggle').innerText(), /API token\s*set/);
        await page.getByTestId('job-progress').waitFor({ timeout: 60_000 });
        await page.getByTestId('job-cancel').click();

        const notice = page.getByTestId('unauthorized');
        await notice.waitFor();
        assert.match(await notice.innerText(), /The server refused the API token\./);
        assert.deepEqual(sent, [{ method: 'DELETE', authorization: 'Bearer old-token' }]);
        await notice.getByRole('button', { name: 'Change the API token' }).click();
        assert.equal(await focusedId(page), 'api-token');
        // The old token is selected: typing replaces it.
        await page.keyboard.type(TOKEN);
        await page.keyboard.press('Enter');
        await page.locator('.token-saved').filter({ hasText: 'Saved' }).waitFor();
        await page.keyboard.press('Escape');

        await page.getByTestId('job-cancel').click();
        await page.waitForFunction(
          () => /cancelled/i.test(document.querySelector('[data-testid="job-status"]')?.textContent ?? ''),
          null,
          { timeout: 30_000 },
        );
        assert.deepEqual(sent[1], { method: 'DELETE', authorization: `Bearer ${TOKEN}` });
        assert.equal(await page.getByTestId('unauthorized').count(), 0, 'the refusal is gone');
      },
      { expectedErrors: [/status of 401/] },
    );
    assert.equal((await (await fetch(`${url}/api/jobs/${job.id}`)).json()).status, 'cancelled');
  } finally {
    await fetch(`${url}/api/jobs/${job.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${TOKEN}` } });
  }
});

test('the token panel is reached with the keyboard and fits a phone, dark', { skip }, async () => {
  await withPage(
    'token-phone-dark',
    async (page) => {
      await page.goto(`${url}/`);
      await page.getByTestId('token-toggle').waitFor();
      // From the top of the page, Tab reaches the panel's toggle; Enter opens it.
      let reached = false;
      for (let i = 0; i < 12 && !reached; i++) {
        await page.keyboard.press('Tab');
        reached = await page.evaluate(() => document.activeElement?.dataset.testid === 'token-toggle');
      }
      assert.ok(reached, 'Tab reaches the API token toggle');
      await page.keyboard.press('Enter');
      assert.equal(await page.getByTestId('token-settings').evaluate((d) => d.open), true);
      await page.keyboard.press('Tab');
      assert.equal(await focusedId(page), 'api-token');
      const box = await page.locator('.token-form').boundingBox();
      assert.ok(box.x >= 0 && box.x + box.width <= PHONE.width, `the panel fits the screen: ${JSON.stringify(box)}`);
      const { scroll, width } = await page.evaluate(() => ({
        scroll: document.documentElement.scrollWidth,
        width: window.innerWidth,
      }));
      assert.ok(scroll <= width, `the page is ${scroll} px wide in a ${width} px window`);
    },
    { context: { viewport: PHONE, colorScheme: 'dark' } },
  );
});
