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
 */
export const COORDINATOR_NODE_FLAGS: readonly string[] = ['--heap-growing-percent=15'];
