// Drives the node's web console in the system Chromium (Debian's
// `chromium`), as a person would: host/tests/console.rs starts the nodes and
// runs this with one JSON argument:
//   {"url", "tokenUrl", "token", "module", "echo", "shots"}
// `url` is a node without a token, `tokenUrl` one started with
// WASMATIC_TOKEN=`token`; `module` a core module exporting add(i32, i32)
// -> i32, `echo` the echo handler; screenshots go to `shots`. Prints one
// `ok:` line per check and exits 0, or prints `FAIL:` and exits 1. Every
// wait is bounded.

import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const cfg = JSON.parse(process.argv[2]);
const WAIT = 6000;
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

mkdirSync(cfg.shots, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), 'wasmatic-console-'));
const problems = [];

function check(condition, what) {
  if (!condition) throw new Error(what);
  console.log(`ok: ${what}`);
}

/** A full-page screenshot at 1280 px and at 390 px wide; at 390 px the
 * page must not scroll sideways. */
async function shot(page, name) {
  await page.screenshot({ path: join(cfg.shots, `${name}.png`), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  await page.screenshot({ path: join(cfg.shots, `${name}-390.png`), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 900 });
  check(overflow <= 1, `${name}: nothing overflows at 390 px (${overflow} px)`);
}

async function text(locator) {
  await locator.first().waitFor({ timeout: WAIT });
  return (await locator.first().textContent()).trim();
}

async function runFile(page) {
  await page.goto(`${cfg.url}/`);
  check(new URL(page.url()).pathname === '/ui/', `a browser's GET / lands on /ui/ (${page.url()})`);
  await page.waitForSelector('body[data-ready="true"]');
  await page.getByLabel('WebAssembly file').setInputFiles(cfg.module);
  check(await text(page.locator('#run-kind')) === 'module', 'the file is inspected as a core module');
  const add = page.locator('[data-export="add"]');
  check((await text(add.locator('.sig'))) === 'add(i32, i32) -> (i32)', 'its export is shown with its signature');
  await add.getByLabel('add parameter 1 (i32)').fill('2');
  await add.getByLabel('add parameter 2 (i32)').fill('3');
  await add.getByRole('button', { name: 'Run' }).press('Enter');
  check(await text(add.locator('.value')) === '5', 'add(2, 3) shows 5');
  check((await text(add.locator('.outcome .hint'))).startsWith('Duration:'), 'the duration is shown');
  await shot(page, 'run');
}

async function handlers(page) {
  await page.getByRole('link', { name: 'Handlers & components' }).click();
  const form = page.locator('#register-form');
  await form.getByLabel('Component file').setInputFiles(cfg.echo);
  await form.getByLabel('Name', { exact: true }).fill('echo');
  await form.getByRole('button', { name: 'Register' }).click();
  check((await text(page.locator('#register-result .ok'))).startsWith('Registered echo (handler'), 'echo registers through the form');
  check(await text(page.locator('#handlers-list tr[data-name="echo"] td')) === 'echo', 'echo is listed');
  const detail = page.locator('#handler-detail');
  await detail.getByLabel('Input').fill('hello console');
  await detail.getByRole('button', { name: 'Run' }).click();
  check(await text(detail.locator('.result .value')) === 'hello console', 'running echo shows its output');
  await page.locator('#handler-runs .run pre.output', { hasText: 'hello console' }).waitFor({ timeout: WAIT });
  console.log('ok: the run appears in its history');
  check(await page.locator('#handler-runs svg.chart rect.bar.ok').count() >= 1, 'the chart has a bar for the run');
  await shot(page, 'handlers');
}

async function schedules(page) {
  await page.getByRole('link', { name: 'Schedules & triggers' }).click();
  const form = page.locator('#sched-form');
  await form.getByLabel('Handler').fill('echo');
  await form.getByLabel(/^Cron line/).fill('* * * * * *');
  const times = (await text(page.locator('#sched-next-times'))).split(', ');
  check(times.length === 3 && times.every((t) => / UTC$/.test(t)), `the next three fire times are shown (${times.join(' | ')})`);
  const [first, second] = times.map((t) => Date.parse(t.replace(' UTC', 'Z').replace(' ', 'T')));
  check(second - first === 1000, 'every second, one second apart');
  await form.getByLabel(/^Cron line/).fill('0 0 1 1 *');
  check((await text(page.locator('#sched-next-times'))).split(', ').every((t) => /-01-01 00:00:00 UTC$/.test(t)), 'a yearly line fires on 1 January');
  await form.getByLabel(/^Cron line/).fill('61 * * * *');
  check((await text(page.locator('#sched-next .bad'))).includes('out of range'), 'a bad line is refused before saving');
  await form.getByLabel(/^Cron line/).fill('* * * * * *');
  await form.getByLabel('Input', { exact: true }).fill('tick');
  await form.getByRole('button', { name: 'Create' }).click();
  check((await text(page.locator('#sched-result .ok'))).startsWith('Scheduled echo'), 'the schedule is created');
  check(await page.locator('#sched-list tr[data-id]').count() === 1, 'it is listed');
  await page.locator('#sched-history .run pre.output', { hasText: 'tick' }).first().waitFor({ timeout: WAIT });
  console.log('ok: its runs arrive while the runs panel is open');
  await shot(page, 'schedules');
}

async function workflows(page) {
  await page.getByRole('link', { name: 'Workflows' }).click();
  const bad = {
    name: 'greet',
    steps: [
      { id: 'say', type: 'run', handler: 'echo', input: 'hi {{ trigger.who }}' },
      { id: 'fmt', type: 'run', handler: 'nope', input: '{{ steps.say.output }}!' },
    ],
  };
  const editor = page.getByLabel('Workflow (JSON)');
  await editor.fill(JSON.stringify(bad, null, 2));
  await page.locator('#wf-form').getByRole('button', { name: 'Save' }).click();
  const error = await text(page.locator('#wf-steps li[data-step="fmt"] .step-error'));
  check(error.startsWith('step `fmt`:') && error.includes('`nope`'), `the error is shown beside step fmt (${error})`);
  check(await page.locator('#wf-steps li[data-step="say"] .step-error').count() === 0, 'and not beside step say');
  await shot(page, 'workflows-error');
  bad.steps[1].handler = 'echo';
  await editor.fill(JSON.stringify(bad, null, 2));
  await page.locator('#wf-form').getByRole('button', { name: 'Save' }).click();
  check(await text(page.locator('#wf-result .ok')) === 'Saved greet.', 'the corrected workflow is saved');
  await page.getByRole('button', { name: 'Run or see the history of greet' }).click();
  await page.locator('#wf-detail').getByLabel(/^Trigger \(JSON/).fill('{"who": "ann"}');
  await page.locator('#wf-detail').getByRole('button', { name: 'Run' }).click();
  await page.locator('#wf-history li[data-step="fmt"] pre', { hasText: 'hi ann!' }).waitFor({ timeout: WAIT });
  check(await text(page.locator('#wf-history li[data-step="say"] pre')) === 'hi ann', 'the history shows each step\'s output');
  await shot(page, 'workflows');
}

async function token(page) {
  await page.goto(`${cfg.tokenUrl}/ui/#handlers`);
  await page.waitForSelector('body[data-ready="true"]');
  const form = page.locator('#register-form');
  await form.getByLabel('Component file').setInputFiles(cfg.echo);
  await form.getByLabel('Name', { exact: true }).fill('echo');
  const register = form.getByRole('button', { name: 'Register' });
  await register.click();
  const said = await text(page.locator('#notice'));
  check(said.includes('needs the node\'s token') && said.includes('Token field'), `without the token: ${said}`);
  check((await text(page.locator('#register-result .bad'))).startsWith('401'), 'the form says 401');
  await shot(page, 'token-missing');
  await page.getByLabel('Token').fill(cfg.token);
  await page.getByLabel('Token').press('Enter');
  check(await page.evaluate(() => sessionStorage.getItem('wasmatic-token')) === cfg.token, 'the token is kept in sessionStorage');
  await register.click();
  check((await text(page.locator('#register-result .ok'))).startsWith('Registered echo'), 'with the token, registering succeeds');
  await shot(page, 'token');
}

let context;
let page;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 900 },
    timeout: 20000,
  });
  page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on('pageerror', (e) => problems.push(`script error: ${e.message}`));
  page.on('console', (m) => {
    if (/Content Security Policy|Refused to/i.test(m.text())) problems.push(`CSP: ${m.text()}`);
  });
  page.on('dialog', (d) => d.dismiss());
  await runFile(page);
  await handlers(page);
  await schedules(page);
  await workflows(page);
  await token(page);
  check(problems.length === 0, `no script errors or CSP refusals${problems.length ? `: ${problems.join('; ')}` : ''}`);
  console.log('console: all scenarios passed');
} catch (e) {
  console.log(`FAIL: ${e.message.split('\n')[0]}`);
  if (problems.length) console.log(`page problems: ${problems.join('; ')}`);
  if (page) await page.screenshot({ path: join(cfg.shots, 'failure.png'), fullPage: true }).catch(() => {});
  process.exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
