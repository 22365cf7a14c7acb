import type { MetricsObservation } from '../../shared/metrics/client.js';
import { MAX_VALUE_MAGNITUDE, MAX_VALUE_NAMES, VALUE_NAME_PATTERN } from '../../shared/metrics/limits.js';

/**
 * One line of the metrics socket (docs/metrics.md, "Wire format"): a JSON object (one
 * observation) or a JSON array of them (a batch). Pure, and hand-written rather than zod: this is
 * the hot path (50,000 observations/s on a 2-core device). Strict on purpose: an unknown field is
 * refused, so an application learns it mistyped a name, and nothing but the fields below (numbers,
 * a flag, and names the agent already knows) can ever reach a summary. The metadata-only line of
 * design section 11 rests on this.
 */

/** A line longer than this (bytes, without its newline) is refused. */
export const MAX_LINE_BYTES = 64 * 1024;
/** Observations in one batch line. */
export const MAX_BATCH = 1000;

export type MetricsErrorCode =
  | 'E_METRICS_LINE'
  | 'E_METRICS_FIELD'
  | 'E_METRICS_UNKNOWN_MODEL'
  | 'E_METRICS_UNKNOWN_VERSION'
  | 'E_METRICS_VALUE_NAME';

/** A valid observation (the Node client's MetricsObservation); `values` a null-prototype record. */
export type Observation = MetricsObservation;

export interface ObservationContext {
  /** The versions the agent has for the model (current, previous, installing); undefined: not installed. */
  knownVersions(model: string): ReadonlySet<string> | undefined;
  /** The value names the agent config declares (`metrics.values`). */
  declaredValues: ReadonlySet<string>;
}

export interface Refusal {
  code: MetricsErrorCode;
  message: string;
  /** The observation's position in a batch line (absent for a single observation or a whole line). */
  index?: number;
}

export interface ParsedLine {
  observations: Observation[];
  refused: Refusal[];
  /** Observations this line carried that were refused (a batch refused whole counts all of them). */
  dropped: number;
}

const FIELDS = 'model, version, latencyMs, confidence, error, values';

/** A piece of what the application sent, short and quoted, for an answer it reads back. */
function quote(value: unknown): string {
  const s = typeof value === 'string' ? value : String(value);
  return JSON.stringify(s.length > 64 ? `${s.slice(0, 64)}...` : s);
}

function refuse(code: MetricsErrorCode, message: string): Refusal {
  return { code, message };
}

function isNumberInRange(v: unknown): v is number {
  return typeof v === 'number' && v >= -MAX_VALUE_MAGNITUDE && v <= MAX_VALUE_MAGNITUDE; // false for NaN too
}

/** Checks one decoded observation: the observation, or why it is refused. */
export function checkObservation(raw: unknown, ctx: ObservationContext): Observation | Refusal {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
    return refuse(
      'E_METRICS_FIELD',
      `an observation must be a JSON object like {"model":"m","version":"1.0.0","latencyMs":12.5}`,
    );
  const o = raw as Record<string, unknown>;
  let model: unknown;
  let version: unknown;
  let latencyMs: unknown;
  let confidence: unknown;
  let error: unknown;
  let values: unknown;
  for (const key in o) {
    switch (key) {
      case 'model':
        model = o[key];
        break;
      case 'version':
        version = o[key];
        break;
      case 'latencyMs':
        latencyMs = o[key];
        break;
      case 'confidence':
        confidence = o[key];
        break;
      case 'error':
        error = o[key];
        break;
      case 'values':
        values = o[key];
        break;
      default:
        return refuse(
          'E_METRICS_FIELD',
          `unknown field ${quote(key)}; an observation has only ${FIELDS} (inputs, outputs and text are never reported)`,
        );
    }
  }
  if (typeof model !== 'string')
    return refuse(
      'E_METRICS_FIELD',
      'field "model" is missing or not a string; send the model name the agent installed',
    );
  if (typeof version !== 'string')
    return refuse(
      'E_METRICS_FIELD',
      'field "version" is missing or not a string; send the version the application ran (models/<name>/current)',
    );
  if (!isNumberInRange(latencyMs) || latencyMs < 0)
    return refuse(
      'E_METRICS_FIELD',
      `field "latencyMs" must be a number from 0 to ${MAX_VALUE_MAGNITUDE} (milliseconds of the inference), got ${quote(JSON.stringify(latencyMs) ?? 'nothing')}`,
    );
  if (confidence !== undefined && (!isNumberInRange(confidence) || confidence < 0 || confidence > 1))
    return refuse(
      'E_METRICS_FIELD',
      `field "confidence" must be a number in [0, 1], got ${quote(JSON.stringify(confidence))}; leave it out if there is none`,
    );
  if (error !== undefined && typeof error !== 'boolean')
    return refuse('E_METRICS_FIELD', `field "error" must be true or false, got ${quote(JSON.stringify(error))}`);
  const versions = ctx.knownVersions(model);
  if (versions === undefined)
    return refuse(
      'E_METRICS_UNKNOWN_MODEL',
      `model ${quote(model)} is not installed by this agent; report the model name the agent installed (models/<name>/current)`,
    );
  if (!versions.has(version))
    return refuse(
      'E_METRICS_UNKNOWN_VERSION',
      `version ${quote(version)} of model ${quote(model)} is not one the agent has (${[...versions].map((v) => quote(v)).join(', ') || 'none'}); report the version the application loaded (the target of models/<name>/current)`,
    );
  const out: Observation = { model, version, latencyMs };
  if (confidence !== undefined) out.confidence = confidence as number;
  if (error !== undefined) out.error = error as boolean;
  if (values !== undefined) {
    const checked = checkValues(values, ctx.declaredValues);
    if ('code' in checked) return checked;
    out.values = checked.values;
  }
  return out;
}

function checkValues(values: unknown, declared: ReadonlySet<string>): { values: Record<string, number> } | Refusal {
  if (values === null || typeof values !== 'object' || Array.isArray(values))
    return refuse('E_METRICS_FIELD', 'field "values" must be an object of name to number, like {"boxes":3}');
  const out = Object.create(null) as Record<string, number>;
  let n = 0;
  const v = values as Record<string, unknown>;
  for (const name in v) {
    if (++n > MAX_VALUE_NAMES)
      return refuse(
        'E_METRICS_VALUE_NAME',
        `field "values" has more than ${MAX_VALUE_NAMES} names; report at most ${MAX_VALUE_NAMES}`,
      );
    if (!VALUE_NAME_PATTERN.test(name))
      return refuse(
        'E_METRICS_VALUE_NAME',
        `value name ${quote(name)} is not a valid name (1-32 lowercase letters, digits, "_", from a letter); rename it and declare it in the agent config "metrics.values"`,
      );
    if (!declared.has(name))
      return refuse(
        'E_METRICS_VALUE_NAME',
        `value name ${quote(name)} is not declared in the agent config; add it to "metrics.values" (declared: ${[...declared].map((d) => quote(d)).join(', ') || 'none'})`,
      );
    const x = v[name];
    if (!isNumberInRange(x))
      return refuse(
        'E_METRICS_FIELD',
        `value ${quote(name)} must be a number from -${MAX_VALUE_MAGNITUDE} to ${MAX_VALUE_MAGNITUDE}, got ${quote(JSON.stringify(x))}`,
      );
    out[name] = x;
  }
  return { values: out };
}

/** Parses one line (without its newline; `bytes` is its length in bytes when known). */
export function parseObservationLine(
  line: string,
  ctx: ObservationContext,
  bytes = Buffer.byteLength(line),
): ParsedLine {
  if (bytes > MAX_LINE_BYTES)
    return wholeLine(`the line is longer than ${MAX_LINE_BYTES} bytes; send smaller batches`, 1);
  let decoded: unknown;
  try {
    decoded = JSON.parse(line);
  } catch {
    return wholeLine('the line is not JSON; send one JSON object or array per line, ended by "\\n"', 1);
  }
  if (Array.isArray(decoded)) {
    if (decoded.length > MAX_BATCH)
      return wholeLine(
        `a batch holds at most ${MAX_BATCH} observations, this one ${decoded.length}; split it into several lines`,
        decoded.length,
      );
    const observations: Observation[] = [];
    const refused: Refusal[] = [];
    for (let i = 0; i < decoded.length; i++) {
      const r = checkObservation(decoded[i], ctx);
      if ('code' in r) refused.push({ ...r, index: i });
      else observations.push(r);
    }
    return { observations, refused, dropped: refused.length };
  }
  if (decoded === null || typeof decoded !== 'object')
    return wholeLine('a line must be a JSON object (one observation) or a JSON array of them (a batch)', 1);
  const r = checkObservation(decoded, ctx);
  return 'code' in r ? { observations: [], refused: [r], dropped: 1 } : { observations: [r], refused: [], dropped: 0 };
}

function wholeLine(message: string, dropped: number): ParsedLine {
  return { observations: [], refused: [refuse('E_METRICS_LINE', message)], dropped };
}
