// Browser tests of lab mode (accounts) against a server of their own with a fresh data
// folder, whose first account is made with the real command line (`gpulab users add admin
// --admin`, which prints the key alone on stdout): signing in and out, an admin adding a
// user on the Users page whose key then signs in, privacy between users, and the Usage page
// after a job. They need GPULAB_BIN and GPULAB_STATIC_DIR, which the xtask sets.
// Screenshots go to end2end/artifacts/lab-*.png.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';

import { ARTIFACTS, GPULAB_BIN, GPULAB_STATIC_DIR, freePort, killed, startServer, withPage } from './browser.mjs';

const skip = !(GPULAB_BIN && GPULAB_STATIC_DIR) && 'set GPULAB_BIN and GPULAB_STATIC_DIR';
const JOB_TIMEOUT_MS = 60_000;
// The browser logs every refused request as a console error: these tests cause them.
const REFUSALS = [/status of 40[134]/];

let server;
let url;
let dataDir;
let adminKey;
// Whether the server serves GET /api/usage (branch lab-share).
let hasUsage = false;

before(async () => {
  if (skip) return;
  dataDir = await mkdtemp(join(tmpdir(), 'gpulab-lab-'));
  // The key alone on stdout; what was done goes to stderr.
  const { stdout, stderr } = await promisify(execFile)(GPULAB_BIN, ['users', 'add', 'admin', '--admin', '--data-dir', dataDir]);
  adminKey = stdout.trim();
  assert.match(adminKey, /^\S{16,}$/, `one key on stdout: ${JSON.stringify(stdout)}`);
  assert.match(stderr, /shown this once/);
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  server = await startServer(port, dataDir);
  const openapi = await (await fetch(`${url}/api/openapi.json`)).json();
  hasUsage = Boolean(openapi.paths?.['/api/usage']);
});

after(async () => {
  if (server) await killed(server, 'SIGTERM');
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

// A call of the API as `key`'s user, from a script (the key as a bearer token).
async function call(method, path, key, body) {
  const headers = { authorization: `Bearer ${key}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(`${url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

// A new user, added by the admin through the API; answers their key.
async function addUser(name) {
  const { status, body } = await call('POST', '/api/users', adminKey, { name });
  assert.equal(status, 201, JSON.stringify(body));
  return body.api_key;
}

// Signs in on the sign-in page the browser is on, and waits until the header shows the user.
async function signIn(page, name, key) {
  const form = page.getByTestId('sign-in-form');
  // The first page of a context also loads the app, slow on a loaded machine.
  await form.waitFor({ timeout: 30_000 });
  await form.getByLabel('Name').fill(name);
  await form.getByLabel('API key').fill(key);
  await page.getByTestId('sign-in-submit').click();
  await page.getByTestId('signed-in-user').filter({ hasText: name }).waitFor();
}

// Waits on a job's page until the job has ended and returns its final status.
async function finalStatus(page) {
  await page.waitForFunction(
    () => {
      const text = document.querySelector('[data-testid="job-status"]')?.textContent ?? '';
      return text.trim() !== '' && !/queued|running/.test(text);
    },
    null,
    { timeout: JOB_TIMEOUT_MS },
  );
  return (await page.getByTestId('job-status').textContent()).trim();
}

test('a page asks for sign-in, a wrong key is refused in the server words, the right one goes back to the page, and sign-out ends the session', { skip }, async () => {
  await withPage(
    'lab-sign-in',
    async (page, requests, context) => {
      await page.goto(`${url}/jobs?status=succeeded`);
      await page.waitForURL(/\/signin\?next=/);
      assert.equal(new URL(page.url()).searchParams.get('next'), '/jobs?status=succeeded');
      assert.equal(await page.title(), 'Sign in · gpulab');
      // Nobody signed in: no API token panel, no user, no pages of lab mode in the menu.
      assert.equal(await page.getByTestId('token-settings').count(), 0);
      assert.equal(await page.getByRole('link', { name: 'Usage' }).count(), 0);

      const form = page.getByTestId('sign-in-form');
      await form.getByLabel('Name').fill('admin');
      await form.getByLabel('API key').fill(`${adminKey}x`);
      await page.getByTestId('sign-in-submit').click();
      const refused = page.getByTestId('sign-in-error');
      await refused.waitFor();
      const { body: problem } = await fetch(`${url}/api/session`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'admin', key: `${adminKey}x` }),
      }).then(async (r) => ({ body: await r.json() }));
      assert.ok((await refused.innerText()).includes(problem.detail), `the server's detail: ${problem.detail}`);
      assert.match(page.url(), /\/signin/, 'still on the sign-in page');

      await signIn(page, 'admin', adminKey);
      await page.waitForURL((u) => u.pathname === '/jobs' && u.search === '?status=succeeded');
      await page.getByRole('link', { name: 'Users' }).waitFor();
      await page.getByRole('link', { name: 'Usage' }).waitFor();
      assert.equal(await page.getByTestId('token-settings').count(), 0, 'no API token panel in lab mode');
      await page.screenshot({ path: `${ARTIFACTS}/lab-signed-in.png` });

      // The key is kept nowhere in the page's reach; the session cookie is HttpOnly.
      const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie);
      assert.ok(!stored.includes(adminKey), 'the key is not in localStorage, sessionStorage or a readable cookie');
      assert.ok(!stored.includes('gpulab_session'), 'the session cookie is not readable by the page');
      const [cookie] = (await context.cookies(url)).filter((c) => c.name === 'gpulab_session');
      assert.ok(cookie, 'the session cookie is set');
      assert.equal(cookie.httpOnly, true);
      assert.equal(cookie.sameSite, 'Strict');

      // A change the UI makes carries the CSRF token of the session.
      const sent = [];
      page.on('request', (r) => {
        if (r.method() !== 'GET' && new URL(r.url()).pathname.startsWith('/api/')) sent.push(r.headers()['x-csrf-token']);
      });
      const session = await page.evaluate(() => fetch('/api/session').then((r) => r.json()));
      assert.equal(session.mode, 'lab');
      assert.equal(session.user.name, 'admin');

      await page.getByTestId('sign-out').click();
      await page.waitForURL(/\/signin/);
      assert.deepEqual(sent, [session.csrf_token], 'DELETE /api/session sent the CSRF token');
      const after = await page.evaluate(() => fetch('/api/session').then((r) => r.json()));
      assert.equal(after.user, null, 'signed out on the server too');
      // The pages are closed again.
      await page.goto(`${url}/usage`);
      await page.waitForURL(/\/signin\?next=%2Fusage$/);
    },
    { expectedErrors: REFUSALS },
  );
});

test('an admin adds a user on the Users page, sees the key once, and that key signs in; a user has no Users page', { skip }, async () => {
  let key;
  await withPage(
    'lab-admin',
    async (page, requests, context) => {
      await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: url });
      await page.goto(`${url}/admin/users`);
      await signIn(page, 'admin', adminKey);
      await page.waitForURL(/\/admin\/users$/);
      await page.getByTestId('users-table').waitFor();

      const form = page.getByTestId('add-user');
      await form.getByLabel('Name').fill('ada');
      await page.getByTestId('add-user-submit').click();
      const shown = page.getByTestId('new-key');
      await shown.waitFor();
      assert.match(await shown.innerText(), /shown once/);
      key = (await page.getByTestId('new-key-value').innerText()).trim();
      await page.getByTestId('new-key-copy').click();
      await shown.getByText('Copied to the clipboard.').waitFor();
      assert.equal(await page.evaluate(() => navigator.clipboard.readText()), key);

      const row = page.locator('[data-testid="user-row"][data-user="ada"]');
      await row.waitFor();
      assert.match(await row.innerText(), /user/);
      // A quota, set and shown.
      await row.getByLabel('Quota', { exact: true }).fill('2 h');
      await row.getByTestId('set-quota').click();
      await page.getByTestId('admin-outcome').filter({ hasText: 'ada' }).waitFor();
      await page.locator('[data-testid="user-row"][data-user="ada"] [data-testid="user-quota"]').filter({ hasText: '2 h per day' }).waitFor();
      // The audit log has both actions, newest first.
      await page.locator('[data-testid="audit-row"][data-action="quota_changed"]').waitFor();
      await page.locator('[data-testid="audit-row"][data-action="user_added"]').filter({ hasText: 'ada' }).waitFor();
      await page.screenshot({ path: `${ARTIFACTS}/lab-admin-users.png`, fullPage: true });

      // The admin's own key, rotated on the page: shown once, the old one refused, and the
      // page signed in again with the new one (a rotation ends the user's sessions).
      await page.locator('[data-testid="user-row"][data-user="admin"] [data-testid="rotate-key"]').click();
      await page.locator('[data-testid="new-key"][data-user="admin"]').waitFor();
      const rotated = (await page.getByTestId('new-key-value').innerText()).trim();
      assert.notEqual(rotated, adminKey);
      assert.equal((await call('GET', '/api/users', adminKey)).status, 401, 'the old admin key is refused');
      adminKey = rotated;
      await page.locator('[data-testid="audit-row"][data-action="key_rotated"]').waitFor();
      assert.equal(await page.getByTestId('signed-in-user').innerText(), 'admin');

      // The key is on the server as the UI showed it.
      const { status, body } = await call('GET', '/api/session', key);
      assert.equal(status, 200);
      assert.equal(body.user?.name, 'ada');
      assert.deepEqual(body.user.quota, { period: 'daily', seconds: 7200 });

      // The quota removed; the user disabled (refused at once) and enabled again.
      const adaRow = () => page.locator('[data-testid="user-row"][data-user="ada"]');
      await adaRow().getByTestId('remove-quota').click();
      await adaRow().getByTestId('user-quota').filter({ hasText: 'none' }).waitFor();
      assert.equal((await call('GET', '/api/session', key)).body.user.quota, null);
      await adaRow().getByTestId('toggle-disabled').click();
      await page.locator('[data-testid="user-row"][data-user="ada"][data-disabled="true"]').waitFor();
      assert.equal((await call('GET', '/api/jobs', key)).status, 401, 'a disabled user is refused');
      await adaRow().getByTestId('toggle-disabled').click();
      await page.locator('[data-testid="user-row"][data-user="ada"][data-disabled="false"]').waitFor();
      assert.equal((await call('GET', '/api/jobs', key)).status, 200, 'and enabled again');
    },
    { expectedErrors: REFUSALS },
  );

  await withPage(
    'lab-new-user',
    async (page) => {
      await page.goto(`${url}/`);
      await signIn(page, 'ada', key);
      await page.waitForURL(`${url}/`);
      assert.equal(await page.getByRole('link', { name: 'Users' }).count(), 0, 'no Users page in the menu');
      await page.goto(`${url}/admin/users`);
      await page.getByText('Only admins manage users.').waitFor();
      assert.equal(await page.getByTestId('users-table').count(), 0);

      // Her own account: a new key, shown once, and the old one stops working.
      await page.getByTestId('signed-in-user').click();
      await page.waitForURL(/\/account$/);
      await page.getByTestId('rotate-own-key').click();
      await page.getByTestId('new-key').waitFor();
      const fresh = (await page.getByTestId('new-key-value').innerText()).trim();
      assert.notEqual(fresh, key);
      assert.equal((await call('GET', '/api/jobs', key)).status, 401, 'the old key is refused');
      assert.equal((await call('GET', '/api/jobs', fresh)).status, 200, 'the new key works');
      // The rotation ended her sessions; the page signed in again with the new key.
      await page.getByRole('link', { name: 'Jobs', exact: true }).click();
      await page.waitForURL(/\/jobs$/);
      await page.getByText('No jobs yet.').waitFor();
      assert.equal(await page.getByTestId('signed-in-user').innerText(), 'ada');
    },
    { expectedErrors: REFUSALS },
  );
});

test('a user sees neither the page nor the row of another user’s job', { skip }, async () => {
  const carol = await addUser('carol');
  const dave = await addUser('dave');
  const { status, body: job } = await call('POST', '/api/jobs', carol, { kernel: 'vector_add', device: 'cpu', params: { n: 1000 }, repetitions: 1 });
  assert.equal(status, 202, JSON.stringify(job));
  assert.equal(job.owner, 'carol');

  await withPage(
    'lab-privacy',
    async (page) => {
      await page.goto(`${url}/jobs/${job.id}`);
      await signIn(page, 'dave', dave);
      await page.waitForURL(`${url}/jobs/${job.id}`);
      const notice = page.locator('[role="alert"]');
      await notice.waitFor();
      assert.match(await notice.innerText(), /not found/i);
      assert.doesNotMatch(await page.locator('main').innerText(), /vector_add/, 'nothing of the job shows');

      await page.getByRole('link', { name: 'Jobs', exact: true }).click();
      await page.waitForURL(/\/jobs$/);
      await page.getByText('No jobs yet.').waitFor();
      assert.equal(await page.locator(`[data-testid="job-row"][data-job-id="${job.id}"]`).count(), 0);
    },
    { expectedErrors: REFUSALS },
  );

  // Carol sees it: the list above was empty for want of rights, not of jobs.
  await withPage('lab-privacy-owner', async (page) => {
    await page.goto(`${url}/jobs`);
    await signIn(page, 'carol', carol);
    await page.locator(`[data-testid="job-row"][data-job-id="${job.id}"]`).waitFor();
  }, { expectedErrors: REFUSALS });
});

test('the Usage page shows the device time of a job the user just ran, with the CSV link for the same days', { skip }, async (t) => {
  if (!hasUsage) {
    t.skip('the server has no GET /api/usage (branch lab-share not merged)');
    return;
  }
  const erin = await addUser('erin');
  await withPage(
    'lab-usage',
    async (page) => {
      await page.goto(`${url}/launch`);
      await signIn(page, 'erin', erin);
      const form = page.getByTestId('launch-form');
      await form.waitFor();
      await form.locator('select[name="kernel"]').selectOption('vector_add');
      await form.locator('select[name="device"]').selectOption('cpu');
      await form.locator('[name="param-n"]').fill('200000');
      await form.locator('input[name="repetitions"]').fill('5');
      await page.getByTestId('launch-submit').click();
      await page.waitForURL(/\/jobs\/\d+$/);
      assert.equal(await finalStatus(page), 'succeeded');

      await page.getByRole('link', { name: 'Usage' }).click();
      await page.waitForURL(/\/usage$/);
      const row = page.getByTestId('usage-row').filter({ hasText: 'vector_add' });
      await row.waitFor();
      const cells = await row.locator('td').allInnerTexts();
      // Day, user, device, kernel, jobs, GPU seconds, CPU seconds.
      assert.equal(cells[1], 'erin');
      assert.equal(cells[2], 'cpu');
      assert.equal(cells[4], '1');
      assert.ok(Number(cells[6]) > 0, `CPU seconds: ${cells[6]}`);
      // The table shows what the API answers for the same days.
      const from = await page.locator('#usage-from').inputValue();
      const to = await page.locator('#usage-to').inputValue();
      const report = (await call('GET', `/api/usage?from=${from}&to=${to}&format=json`, erin)).body;
      assert.equal(report.rows.length, 1);
      assert.equal(cells[6], report.rows[0].cpu_seconds.toFixed(2));
      await page.getByTestId('usage-total').filter({ hasText: 'erin' }).waitFor();
      await page.getByTestId('usage-chart').waitFor();
      await page.getByTestId('quota-summary').waitFor();

      const href = await page.getByTestId('usage-csv').getAttribute('href');
      assert.equal(href, `/api/usage?from=${from}&to=${to}&format=csv`);
      const csv = await page.evaluate((h) => fetch(h).then((r) => r.text()), href);
      assert.match(csv, /vector_add/);
      await page.screenshot({ path: `${ARTIFACTS}/lab-usage.png`, fullPage: true });
    },
    { expectedErrors: REFUSALS },
  );

  // An admin sees everyone's usage with totals per day, and can pick one user.
  await withPage(
    'lab-usage-admin',
    async (page) => {
      await page.goto(`${url}/usage`);
      await signIn(page, 'admin', adminKey);
      await page.getByTestId('usage-row').filter({ hasText: 'erin' }).waitFor();
      await page.getByTestId('usage-days').waitFor();
      const everyone = (await call('GET', `/api/usage?from=${await page.locator('#usage-from').inputValue()}&to=${await page.locator('#usage-to').inputValue()}`, adminKey)).body;
      assert.equal(await page.getByTestId('usage-row').count(), everyone.rows.length);
      await page.getByLabel('User', { exact: true }).selectOption('erin');
      await page.waitForFunction(() => /user=erin/.test(document.querySelector('[data-testid="usage-csv"]')?.getAttribute('href') ?? ''));
      await page.waitForFunction(() =>
        [...document.querySelectorAll('[data-testid="usage-row"] td:nth-child(2)')].every((td) => td.textContent === 'erin'),
      );
      await page.screenshot({ path: `${ARTIFACTS}/lab-usage-admin.png`, fullPage: true });
    },
    { expectedErrors: REFUSALS },
  );
});

test('a launch over the quota is refused on the launch page with what is left and when it renews', { skip }, async (t) => {
  if (!hasUsage) {
    t.skip('the server has no quotas yet (branch lab-share not merged)');
    return;
  }
  const gus = await addUser('gus');
  const quota = await call('PATCH', '/api/users/gus', adminKey, { quota: { period: 'daily', seconds: 30 } });
  assert.equal(quota.status, 200, JSON.stringify(quota.body));
  // What the server answers a script for the same launch: the page must say the same.
  const request = { kernel: 'vector_add', device: 'cpu', params: { n: 1000 }, repetitions: 1, timeout_s: 60 };
  const refused = await call('POST', '/api/jobs', gus, request);
  assert.equal(refused.status, 429, JSON.stringify(refused.body));
  assert.equal(refused.body.remaining_seconds, 30);
  const renews = new Date(refused.body.renews_at);

  await withPage(
    'lab-quota',
    async (page) => {
      await page.goto(`${url}/launch`);
      await signIn(page, 'gus', gus);
      const form = page.getByTestId('launch-form');
      await form.waitFor();
      await form.locator('select[name="kernel"]').selectOption('vector_add');
      await form.locator('select[name="device"]').selectOption('cpu');
      await form.locator('[name="param-n"]').fill('1000');
      await form.locator('input[name="repetitions"]').fill('1');
      await form.locator('input[name="timeout_s"]').fill('60');
      await page.getByTestId('launch-submit').click();
      const notice = page.getByTestId('quota-refused');
      await notice.waitFor();
      assert.equal(await page.getByTestId('quota-remaining').innerText(), '30.0 s of device time left in this period.');
      // The renewal in the browser's time zone, as the page writes times.
      const local = await page.evaluate((iso) => {
        const d = new Date(iso);
        const two = (n) => String(n).padStart(2, '0');
        return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
      }, renews.toISOString());
      assert.equal(await page.getByTestId('quota-renews').innerText(), `The quota renews ${local}.`);
      assert.match(page.url(), /\/launch$/, 'still on the form');
      await page.screenshot({ path: `${ARTIFACTS}/lab-quota.png`, fullPage: true });
    },
    { expectedErrors: [...REFUSALS, /status of 429/] },
  );
});
