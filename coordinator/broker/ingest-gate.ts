/**
 * While `active()` (a wave's desired states are going out, and a little after), admits at most
 * `perTurn` device publishes per turn of the event loop; the rest wait, in arrival order, for the
 * next turns (the broker's authorizePublish answers them then). Otherwise everything passes at
 * once, as without a gate.
 *
 * Why: a wave's desired states reach 9,000 devices within a second, their answers arrive
 * together, and Aedes would parse, check, acknowledge and hand over all of them in one stretch of
 * the event loop: 2.9 s and ~90 MB of heap at 10,000 devices (BENCHMARKS.md, "bigwave"). Nothing
 * is dropped here; a waiting report is a parsed packet, and its connection is not read further
 * meanwhile (Aedes reads a connection again when the packets it parsed from it are handled), so
 * the rest stays in the kernel's socket buffers. Only during a wave: a gate costs a burst of
 * reports outside one about 40% of its rate (each device waits for a PUBACK before its next).
 */
export class IngestGate {
  private admittedThisTurn = 0;
  private readonly waiting: (() => void)[] = [];
  private head = 0;
  private turnScheduled = false;

  constructor(
    private readonly perTurn: number,
    private readonly active: () => boolean,
  ) {}

  /** Runs `work` now if nobody is waiting and the gate is open or this turn has room; else later, in order. */
  admit(work: () => void): void {
    if (this.backlog === 0 && !this.active()) {
      work();
      return;
    }
    this.scheduleTurn();
    if (this.backlog === 0 && this.admittedThisTurn < this.perTurn) {
      this.admittedThisTurn++;
      work();
      return;
    }
    this.waiting.push(work);
  }

  /** Publishes waiting for a later turn. */
  get backlog(): number {
    return this.waiting.length - this.head;
  }

  private scheduleTurn(): void {
    if (this.turnScheduled) return;
    this.turnScheduled = true;
    setImmediate(() => this.nextTurn());
  }

  private nextTurn(): void {
    this.turnScheduled = false;
    this.admittedThisTurn = 0;
    const limit = this.active() ? this.perTurn : Number.POSITIVE_INFINITY;
    while (this.head < this.waiting.length && this.admittedThisTurn < limit) {
      const work = this.waiting[this.head] as () => void;
      this.waiting[this.head] = noop; // released for the GC before the array is compacted
      this.head++;
      this.admittedThisTurn++;
      work();
    }
    if (this.head === this.waiting.length) {
      this.waiting.length = 0;
      this.head = 0;
    } else if (this.head > 4096) {
      this.waiting.splice(0, this.head);
      this.head = 0;
    }
    if (this.backlog > 0) this.scheduleTurn();
  }
}

function noop(): void {}
