// The console in a real browser: headless Chromium (Debian's) driven by
// playwright-core against a running `flare server`. Run by
// crates/flare/tests/console.rs, which starts the server and creates the
// function; by hand:
//   FLARE_API=http://127.0.0.1:8081 FLARE_TOKEN=flr_... FLARE_FUNCTION=hello \
//   FLARE_VIEWER_TOKEN=flr_... node ui/test/console.mjs
// Screenshots go to $SCREENSHOTS (default ./screenshots).
import { readFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const need = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const API = need('FLARE_API');
const TOKEN = need('FLARE_TOKEN');
const VIEWER = need('FLARE_VIEWER_TOKEN');
const FUNCTION = need('FLARE_FUNCTION');
// An asynchronous invocation that failed (retries used up), to retry.
const FAILED = need('FLARE_FAILED_INVOCATION');
// An HTTP trigger's path that routes to FUNCTION.
const TRIGGER_PATH = need('FLARE_TRIGGER_PATH');
const LOG_LINE = process.env.FLARE_LOG_LINE || 'console-test-line';
const SHOTS = process.env.SCREENSHOTS || 'screenshots';
const AXE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
mkdirSync(SHOTS, { recursive: true });

let step = 'start';
const say = (what) => {
  step = what;
  console.log(`- ${what}`);
};
function check(condition, message) {
  if (!condition) throw new Error(message);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
const problems = [];
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  // Every script error and every Content-Security-Policy refusal is a defect.
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 40[13]/.test(m.text())) problems.push(`console error: ${m.text()}`);
  });
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));

  // Accessibility basics on what is on screen now: axe-core's WCAG 2 A
  // and AA rules (labels, names, contrast, landmarks...).
  const accessible = async (where, { labels = false } = {}) => {
    await page.evaluate(AXE);
    const result = await page.evaluate(() =>
      globalThis.axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa'] } }),
    );
    const found = result.violations.map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
    check(found.length === 0, `${where}: accessibility violations:\n  ${found.join('\n  ')}`);
    // Where there are fields, their labels were checked (and passed).
    if (labels) check(result.passes.some((p) => p.id === 'label'), `${where}: axe did not check labels`);
  };
  // The page's heading gets the focus once the page is drawn.
  const headingFocused = (text) =>
    page
      .waitForFunction((t) => document.activeElement?.tagName === 'H1' && document.activeElement.textContent === t, text, { timeout: 10_000 })
      .catch(async () => {
        throw new Error(`the focus is not on the heading "${text}" but on ${JSON.stringify(await focused())}`);
      });
  const focused = () => page.evaluate(() => ({ tag: document.activeElement?.tagName, id: document.activeElement?.id, text: document.activeElement?.textContent }));

  say('the console is served at /ui with a strict policy');
  const response = await page.goto(`${API}/ui`);
  check(response.url() === `${API}/ui/`, `/ui went to ${response.url()}`);
  const policy = response.headers()['content-security-policy'] || '';
  check(policy.includes("script-src 'self'") && policy.includes("frame-ancestors 'none'"), `policy: ${policy}`);

  say('sign-in is reachable by keyboard and a wrong token is refused with an alert');
  await page.waitForSelector('#token');
  check((await focused()).id === 'token', 'the token field has the focus when the page opens');
  await accessible('sign-in', { labels: true });
  await page.keyboard.type('flr_not-a-real-token');
  await page.keyboard.press('Enter');
  const alert = await page.waitForSelector('[role=alert]');
  check(/not valid/.test(await alert.textContent()), `alert: ${await alert.textContent()}`);
  check((await focused()).id === 'token', 'the focus is back on the token field');
  await page.screenshot({ path: `${SHOTS}/1-sign-in-refused.png` });

  say('a right token signs in; it is in session storage only');
  await page.fill('#token', TOKEN);
  await page.keyboard.press('Enter');
  await headingFocused('Functions');
  const storage = await page.evaluate(() => ({
    session: sessionStorage.getItem('flare.token'),
    local: localStorage.length,
    cookie: document.cookie,
    url: location.href,
  }));
  check(storage.session === TOKEN, 'the token is in session storage');
  check(storage.local === 0 && storage.cookie === '', `nothing in local storage or cookies: ${JSON.stringify(storage)}`);

  say('the functions table lists the function');
  const link = await page.waitForSelector(`table a:text-is("${FUNCTION}")`);
  await page.waitForSelector('.sparkline');
  await accessible('functions');
  await page.screenshot({ path: `${SHOTS}/2-functions.png`, fullPage: true });

  say('the function page opens with the focus on its heading');
  await link.click();
  await headingFocused(`Function ${FUNCTION}`);
  await page.waitForSelector('#chart-rate');
  await page.waitForSelector('#spec-title');
  await page.waitForSelector(`section:has(#triggers-title) code:text("${TRIGGER_PATH}")`);
  await page.waitForSelector('section:has(#versions-title) li:text("prod → version 1")');

  say('follow its logs, invoke it from the test form, see the line arrive live');
  await page.click('button:text("Follow")');
  await page.waitForSelector('button[aria-pressed=true]');
  await page.waitForSelector('text=Following: new lines appear here');
  await page.selectOption('#test-method', 'POST');
  await page.fill('#test-body', 'from the browser');
  await page.click('button:text("Invoke")');
  const status = await page.waitForSelector('#test-status');
  check((await status.textContent()).startsWith('200'), `status: ${await status.textContent()}`);
  const body = await page.textContent('#test-body-out');
  check(body.includes('<b id=injected>hello</b>'), `the response body is shown as text: ${body}`);
  check((await page.$('#injected')) === null, 'markup in a body is not rendered');
  check(/ms$/.test(await page.textContent('#test-duration')), 'the duration is shown');
  await page.waitForSelector(`.log li:has-text("${LOG_LINE}")`);
  check((await page.$('.log img')) === null, 'markup in a log line is not rendered');
  check(await page.evaluate(() => globalThis.pwned === undefined), 'nothing in a log line ran');

  say('the log filters of flare fn logs: text, time range');
  await page.click('button:text("Stop following")');
  await page.fill('#logs-contains', 'console-test');
  await page.click('button:text("Search")');
  await page.waitForSelector(`.log li:has-text("${LOG_LINE}")`);
  await page.fill('#logs-contains', 'no-line-has-this');
  await page.click('button:text("Search")');
  await page.waitForSelector('text=No lines match.');
  await page.fill('#logs-contains', '');
  await page.fill('#logs-until', '1h');
  await page.click('button:text("Search")');
  await page.waitForSelector('text=No lines match.');
  await page.fill('#logs-until', '');
  await page.fill('#logs-since', '2000-01-01T00:00:00Z');
  await page.click('button:text("Search")');
  await page.waitForSelector(`.log li:has-text("${LOG_LINE}")`);

  say('its chart moves (the 10 s metric points, polled)');
  await page.waitForFunction(() => Number(document.querySelector('#chart-rate')?.dataset.total) > 0, null, { timeout: 60_000 });
  await accessible('function', { labels: true });
  await page.screenshot({ path: `${SHOTS}/3-function.png`, fullPage: true });

  say('back on the functions table: its warm instance and its invocation in the sparkline');
  await page.click('nav a:text("Functions")');
  await page.waitForFunction(
    (name) => {
      const row = [...document.querySelectorAll('tbody tr')].find((r) => r.querySelector('th')?.textContent === name);
      return row?.querySelector('.instances')?.textContent === '1 / 0' && Number(row.querySelector('.sparkline')?.dataset.total) > 0;
    },
    FUNCTION,
    { timeout: 60_000 },
  );
  check(!(await page.isVisible('text=Loading the Flare console')), 'the loading note is gone');

  say('a developer serves an earlier version from the versions table');
  await page.click(`table a:text-is("${FUNCTION}")`);
  await headingFocused(`Function ${FUNCTION}`);
  await page.waitForSelector('td:text-is("serving")');
  await page.click('button:text("Serve version 1")');
  await page.waitForSelector('[role=status]:has-text("Version 1 is serving now.")');
  await page.waitForSelector('.summary:has-text("version 1")');
  await page.waitForSelector('button:text("Serve version 2")');

  say("a canary's state on its function's page");
  await page.goto(`${API}/ui/#/functions/canaried`);
  await headingFocused('Function canaried');
  const canary = await page.waitForSelector('section:has(#canary-title) p:has-text("slowly: version 1 → 2 by 10%")');
  check(/running/.test(await canary.textContent()), `canary: ${await canary.textContent()}`);
  check(/% of traffic on version 2/.test(await canary.textContent()), `canary: ${await canary.textContent()}`);

  say('the other pages open, each with the focus on its heading and what it lists');
  const shows = {
    Invocations: `code:text("${FAILED}")`,
    Triggers: `code:text("${TRIGGER_PATH}")`,
    Environments: 'td:text-is("python")',
    Nodes: 'tbody tr',
  };
  for (const [name, content] of Object.entries(shows)) {
    await page.click(`nav a:text("${name}")`);
    await headingFocused(name);
    await page.waitForSelector(content);
    const blank = await page.$$eval('tbody td', (cells) => cells.filter((c) => c.textContent.trim() === '' && !c.querySelector('button')).length);
    check(blank === 0 || name === 'Invocations', `${name}: ${blank} empty cells`);
    await accessible(name);
    if (name === 'Invocations') {
      say('a failed invocation is retried from its row');
      await page.click(`button[aria-label="Retry invocation ${FAILED}"]`);
      const said = await page.waitForSelector('[role=status]:has-text("submitted again as")');
      const retried = (await said.textContent()).match(/as (\S+)\.$/)?.[1];
      check(retried && retried !== FAILED, `the retry's id: ${await said.textContent()}`);
      await page.waitForSelector(`code:text("${retried}")`);
      await page.screenshot({ path: `${SHOTS}/4-invocations.png`, fullPage: true });
    }
  }
  await page.screenshot({ path: `${SHOTS}/5-nodes.png`, fullPage: true });

  say('no token in any URL; every call went to this API');
  for (const url of requests) {
    check(!url.includes(TOKEN) && !url.includes('flr_'), `a token in a URL: ${url}`);
    check(url.startsWith(`${API}/ui`) || url.startsWith(`${API}/v1/`), `a request elsewhere: ${url}`);
  }

  say('sign out forgets the token');
  await page.click('button:text("Sign out")');
  await page.waitForSelector('#token');
  check((await page.evaluate(() => sessionStorage.length)) === 0, 'session storage is empty after sign-out');

  say('a viewer sees the function but cannot invoke it');
  await page.fill('#token', VIEWER);
  await page.keyboard.press('Enter');
  await page.waitForSelector('h1:text("Functions")');
  await page.click(`table a:text-is("${FUNCTION}")`);
  await page.waitForSelector(`h1:text("Function ${FUNCTION}")`);
  check(await page.isDisabled('button:text("Invoke")'), 'the Invoke button is disabled for a viewer');
  await page.waitForSelector('td:text-is("serving")');
  check((await page.$$('button:has-text("Serve version")')).length === 0, 'a viewer is offered no version to serve');
  await page.waitForSelector('text=A viewer token cannot invoke functions.');

  check(problems.length === 0, `the page reported problems:\n  ${problems.join('\n  ')}`);
  console.log('console test passed');
} catch (e) {
  console.error(`FAILED at "${step}": ${e.message}`);
  if (problems.length) console.error(`page problems:\n  ${problems.join('\n  ')}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
