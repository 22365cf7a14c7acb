/**
 * The V8 flags the coordinator runs with (systemd/ota-coordinator.service's ExecStart=, and
 * `npm run bench:fleet`; test/systemd.test.ts keeps the unit in step with this list).
 *
 * `--heap-growing-percent=15`: after each major GC V8 lets the old generation grow to 1.15x the
 * live set instead of its default factor (up to ~2x for a fast-allocating process), so the
 * garbage of report ingestion is collected before it turns into resident memory. At 10,000
 * devices: peak RSS ~530 MB -> under 400 MB with ingest above 15,000 reports/s (BENCHMARKS.md,
 * coordinator memory). 20 was enough until the wave's desired states went out 3,000 at a time
 * (ordered-publisher.ts): one run of six then peaked at 400.1 MB. Unlike --max-old-space-size
 * it is no ceiling: a bigger fleet gets a bigger heap instead of an out-of-memory crash.
 *
 * `--max-semi-space-size=8` (MB): the young generation at most 2 x 8 MB instead of 2 x 16, which
 * a coordinator under load always reached. Measured 2026-12-07 (BENCHMARKS.md, "2026-12-07
 * (later)"), 2 runs each at 10,000 devices: peak RSS 14-26 MB lower (embedded and through
 * Mosquitto), the 9,000-device wave and halt p99 as without it, ingest within the runs' spread
 * (13,518 and 16,909/s embedded against 15,605 and 15,495); at 50,000 (one run each, three
 * phases) 369 MB against 391. `--optimize-for-size` saved 30-67 MB more but cost ~20% of ingest
 * and made the 9,000-device wave 2.0-2.5 s (goal < 2 s).
 */
export const COORDINATOR_NODE_FLAGS: readonly string[] = ['--heap-growing-percent=15', '--max-semi-space-size=8'];
