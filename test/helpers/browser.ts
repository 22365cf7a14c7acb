import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import type { Test } from 'tap';
import { CHROMIUM_FLAGS } from '../../scripts/bench/chromium.js';

/**
 * Debian's chromium driven by playwright-core, for the dashboard's browser tests (issue 13).
 * Never a browser build downloaded by playwright: the executable is the system's `chromium`
 * (installed by `.ci/run` with apt-get). Outside CI a missing chromium skips the browser tests,
 * saying why; under CI it is a failure, as for promtool in coordinator-metrics.test.ts.
 */

export const NO_CHROMIUM =
  "Debian's chromium is not installed: install it with `apt-get install -y chromium` (the browser tests never use a downloaded browser build)";

const ciSet = (process.env.CI ?? '') !== '' && process.env.CI !== 'false' && process.env.CI !== '0';

/** The chromium on PATH, else /usr/bin/chromium, else null. */
export function findChromium(): string | null {
  const r = spawnSync('which', ['chromium'], { encoding: 'utf8' });
  const found = r.status === 0 ? r.stdout.trim() : '';
  if (found !== '') return found;
  return existsSync('/usr/bin/chromium') ? '/usr/bin/chromium' : null;
}

const CHROMIUM = findChromium();

/** The `skip` option of a browser test: false, or why it is skipped (no chromium, CI not set). */
export function browserSkip(): false | string {
  return CHROMIUM || ciSet ? false : `${NO_CHROMIUM}; skipped because CI is not set`;
}

export interface OpenOptions {
  /**
   * Console errors that are expected, not the page failing: e.g. Chromium's own log line for a
   * WebSocket that could not connect while the coordinator restarts. Anything else logged at
   * error level, or thrown, fails the test.
   */
  allow?: readonly RegExp[];
  viewport?: { width: number; height: number };
}

export type OpenPage = (options?: OpenOptions) => Promise<Page>;

interface Watched {
  page: Page;
  context: BrowserContext;
  errors: string[];
}

/** One chromium for a test file; each page gets its own context (its own sessionStorage). */
export class BrowserHarness {
  private constructor(readonly browser: Browser) {}

  /**
   * Launches chromium, closed in t.teardown. Resolves null when chromium is missing outside CI
   * (the caller's test carries `skip: browserSkip()`); under CI a missing chromium fails `t`.
   */
  static async launch(t: Test): Promise<BrowserHarness | null> {
    if (!CHROMIUM) {
      if (ciSet) t.fail(`${NO_CHROMIUM} (CI is set: the browser tests must run)`);
      else t.pass('no browser tests', { skip: NO_CHROMIUM });
      return null;
    }
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS });
    t.teardown(() => browser.close().catch(() => {}));
    return new BrowserHarness(browser);
  }

  /**
   * A subtest whose pages are watched: a console message of type error (not allowed by the
   * page's `allow`) or an uncaught exception (`pageerror`) in any of them fails it. The check
   * runs when the body ends, whether it passed or threw, so a failure also shows what the page
   * said; the pages are closed then.
   */
  test(t: Test, name: string, body: (t: Test, open: OpenPage) => Promise<void>): Promise<unknown> {
    return t.test(name, async (t) => {
      const watched: Watched[] = [];
      const open: OpenPage = async (options = {}) => {
        const context = await this.browser.newContext({ viewport: options.viewport ?? { width: 1280, height: 800 } });
        // Waits are for conditions, bounded generously for a busy 2-core machine.
        context.setDefaultTimeout(60_000);
        const page = await context.newPage();
        const w: Watched = { page, context, errors: [] };
        const allow = options.allow ?? [];
        // Each error is also a comment when it happens, so the log shows which step caused it.
        const record = (text: string) => {
          w.errors.push(text);
          t.comment(`page ${watched.length}: ${text}`);
        };
        page.on('console', (m) => {
          if (m.type() !== 'error' || allow.some((re) => re.test(m.text()))) return;
          const at = m.location();
          record(`console.error: ${m.text()} (${at.url}:${at.lineNumber})`);
        });
        page.on('pageerror', (err) => record(`uncaught: ${err.stack ?? err.message}`));
        page.on('crash', () => record('the page crashed'));
        watched.push(w);
        return page;
      };
      try {
        await body(t, open);
      } finally {
        for (const [i, w] of watched.entries()) {
          t.same(w.errors, [], `page ${i + 1}: nothing logged at error level, nothing thrown`);
          await w.context.close().catch(() => {});
        }
      }
    });
  }
}

/** The header's link indicator in a given state ("live", "reconnecting", ...). */
export function linkIndicator(page: Page, kind: string) {
  return page.getByRole('status').and(page.locator(`[data-link="${kind}"]`));
}

/** Opens the page (unless it is already there) and submits the sign-in form; does not wait. */
export async function submitSignIn(page: Page, baseUrl: string, user: string, token: string): Promise<void> {
  if (!page.url().startsWith(baseUrl)) await page.goto(`${baseUrl}/`);
  await page.getByLabel('Operator').fill(user);
  await page.getByLabel('Token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

/** Signs in and waits until the header says "live" (connected and subscribed). */
export async function signIn(page: Page, baseUrl: string, user: string, token: string): Promise<void> {
  await submitSignIn(page, baseUrl, user, token);
  await linkIndicator(page, 'live').waitFor();
}

/**
 * What the in-page scripts below touch of the page's globals. The tests compile without the DOM
 * library (they are node code), so the page's `globalThis` is described here, minimally.
 */
interface PageGlobals {
  location: { hash: string };
  sessionStorage: { getItem(key: string): string | null };
  document: {
    body: unknown;
    querySelector(selector: string): { textContent: string | null; getAttribute(name: string): string | null } | null;
  };
  MutationObserver: new (
    callback: () => void,
  ) => {
    observe(
      target: unknown,
      options: { subtree: boolean; childList: boolean; attributes: boolean; characterData: boolean },
    ): void;
  };
  __marker?: number;
  __records?: Record<string, string[]>;
}

/** Moves to a view of the signed-in page by its hash: no reload. */
export async function goToRoute(page: Page, hash: string): Promise<void> {
  await page.evaluate((h) => {
    (globalThis as unknown as PageGlobals).location.hash = h;
  }, hash);
}

/** A value of the page's sessionStorage. */
export function sessionValue(page: Page, key: string): Promise<string | null> {
  return page.evaluate((k) => (globalThis as unknown as PageGlobals).sessionStorage.getItem(k), key);
}

/**
 * Sets a mark on the page's window; `marked` tells whether it is still there. A reload (or any
 * navigation to a new document) loses it: how a test proves the page updated by itself.
 */
export async function mark(page: Page): Promise<void> {
  await page.evaluate(() => {
    (globalThis as unknown as PageGlobals).__marker = 1;
  });
}

export function marked(page: Page): Promise<boolean> {
  return page.evaluate(() => (globalThis as unknown as PageGlobals).__marker === 1);
}

/**
 * Records, under `name`, every value the first element matching `selector` shows as the page
 * changes (its text, or the attribute `attribute`): a MutationObserver in the page, not a poll,
 * so short-lived states are seen too. Consecutive repeats are recorded once.
 */
export async function recordChanges(page: Page, name: string, selector: string, attribute?: string): Promise<void> {
  await page.evaluate(
    ({ name, selector, attribute }) => {
      const g = globalThis as unknown as PageGlobals;
      const seen: string[] = [];
      g.__records = { ...g.__records, [name]: seen };
      const record = () => {
        const el = g.document.querySelector(selector);
        const value = (attribute ? el?.getAttribute(attribute) : el?.textContent?.trim()) ?? '';
        if (value !== '' && seen.at(-1) !== value) seen.push(value);
      };
      record();
      new g.MutationObserver(record).observe(g.document.body, {
        subtree: true,
        childList: true,
        attributes: true,
        characterData: true,
      });
    },
    { name, selector, attribute },
  );
}

/** What `recordChanges` recorded under `name` so far. */
export function recorded(page: Page, name: string): Promise<string[]> {
  return page.evaluate((n) => (globalThis as unknown as PageGlobals).__records?.[n] ?? [], name);
}
