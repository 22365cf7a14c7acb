/**
 * A batch of texts to sign, in memory shared by the coordinator's thread and its signing workers
 * (parallel-signer.ts): every thread claims the next unsigned text with an atomic add until none
 * is left, so no thread waits for another's share, and a worker that is late or gone holds back
 * at most the one text it claimed.
 */
export interface SignJob {
  /** The UTF-8 bytes of every text, back to back. */
  bytes: Uint8Array;
  /** Text i is bytes[offsets[i], offsets[i + 1]); n + 1 entries. */
  offsets: Int32Array;
  /** [0]: the next index to claim. */
  next: Int32Array;
  /** Per text: 0 while unsigned, else who signed it (SIGNED_HERE, or a worker's number + 2). */
  signedBy: Int32Array;
  /** The 64-byte Ed25519 signatures (RFC 8032 section 5.1.6), text i's at i * 64. */
  signatures: Uint8Array;
}

export const SIGNATURE_BYTES = 64;
/** `signedBy` of a text the coordinator's own thread signed. */
export const SIGNED_HERE = 1;

/** The job for `texts`, in shared memory. */
export function createSignJob(texts: readonly string[]): SignJob {
  // Encoded straight into shared memory: a wave's texts are ~13 MB, not to be held twice.
  const offsets = new Int32Array(new SharedArrayBuffer(4 * (texts.length + 1)));
  let at = 0;
  texts.forEach((t, i) => {
    offsets[i] = at;
    at += Buffer.byteLength(t, 'utf8');
  });
  offsets[texts.length] = at;
  const bytes = new Uint8Array(new SharedArrayBuffer(Math.max(1, at)));
  const encoder = new TextEncoder();
  texts.forEach((t, i) => {
    encoder.encodeInto(t, bytes.subarray(offsets[i] as number, offsets[i + 1] as number));
  });
  return {
    bytes,
    offsets,
    next: new Int32Array(new SharedArrayBuffer(4)),
    signedBy: new Int32Array(new SharedArrayBuffer(4 * Math.max(1, texts.length))),
    signatures: new Uint8Array(new SharedArrayBuffer(SIGNATURE_BYTES * Math.max(1, texts.length))),
  };
}

/** How many texts the job holds. */
export function jobSize(job: SignJob): number {
  return job.offsets.length - 1;
}

/**
 * Claims and signs texts of `job` until every text is claimed; returns how many this caller
 * signed. `who` is recorded in `signedBy` (SIGNED_HERE, or a worker's number + 2).
 */
export function signClaimed(job: SignJob, sign: (message: Uint8Array) => Uint8Array, who: number): number {
  const n = jobSize(job);
  let count = 0;
  for (;;) {
    const i = Atomics.add(job.next, 0, 1);
    if (i >= n) return count;
    signOne(job, i, sign, who);
    count++;
  }
}

/**
 * Signs text i and publishes it: the signature is written before `signedBy` says so. When the
 * caller's thread signs a text a late worker also finishes, both write the same bytes (Ed25519 is
 * deterministic, RFC 8032 section 5.1.6) and the first to finish is the one recorded.
 */
export function signOne(job: SignJob, i: number, sign: (message: Uint8Array) => Uint8Array, who: number): void {
  const signature = sign(job.bytes.subarray(job.offsets[i] as number, job.offsets[i + 1] as number));
  job.signatures.set(signature, i * SIGNATURE_BYTES);
  if (Atomics.compareExchange(job.signedBy, i, 0, who) === 0) Atomics.notify(job.signedBy, i);
}

/** Signs each text (its UTF-8 bytes) on this thread, in order. */
export function signEach(texts: readonly string[], sign: (message: Uint8Array) => Uint8Array): Uint8Array[] {
  const encoder = new TextEncoder();
  return texts.map((t) => sign(encoder.encode(t)));
}
