import { z } from 'zod';

/**
 * The inference health probe a release carries in its signed manifest (docs/probe-spec.md).
 * The agent runs it in a child process after the swap; a model that fails it is rolled back.
 */

export const TENSOR_TYPES = ['float32', 'float64', 'int8', 'uint8', 'int32', 'int64', 'bool'] as const;
export const TensorTypeSchema = z.enum(TENSOR_TYPES);
export type TensorType = z.infer<typeof TensorTypeSchema>;

/** Caps keep a probe (which travels inside every desired-state message) small. */
const MAX_PROBE_VALUES = 16_384;
const tensorName = z.string().min(1).max(128);
const dims = z.array(z.number().int().min(0).max(1_000_000)).max(8);
const values = z.array(z.number()).max(MAX_PROBE_VALUES);

export const ProbeTensorSchema = z.strictObject({
  type: TensorTypeSchema.default('float32'),
  dims,
  data: values,
});

export const GoldenOutputSchema = z.strictObject({
  dims,
  data: values,
});

const absolutePath = z
  .string()
  .max(4096)
  .refine((p) => p.startsWith('/') && !p.split('/').includes('..'), 'must be an absolute path without ".."');

export const ExtraProbeSchema = z.discriminatedUnion('kind', [
  z.strictObject({
    kind: z.literal('http'),
    url: z
      .string()
      .max(2048)
      .refine((u) => /^https?:\/\//.test(u), 'must be an http:// or https:// URL'),
    timeoutMs: z.number().int().min(1).max(600_000).default(5_000),
  }),
  z.strictObject({ kind: z.literal('file'), path: absolutePath }),
  z.strictObject({
    kind: z.literal('exec'),
    path: absolutePath,
    argv: z.array(z.string().max(1024)).max(32).default([]),
    timeoutMs: z.number().int().min(1).max(600_000).default(10_000),
  }),
]);

export const ToleranceSchema = z.strictObject({
  abs: z.number().min(0).default(1e-5),
  rel: z.number().min(0).default(1e-4),
});

export const ProbeSpecSchema = z
  .strictObject({
    /** Named input tensors; without them the agent builds inputs from the model's declared shapes. */
    inputs: z.record(tensorName, ProbeTensorSchema).optional(),
    /** Expected outputs for `inputs`, compared within `tolerance`. Needs `inputs`. */
    golden: z.record(tensorName, GoldenOutputSchema).optional(),
    tolerance: ToleranceSchema.default({ abs: 1e-5, rel: 1e-4 }),
    /** Upper bound on one inference run, measured in the probe child. */
    latencyBudgetMs: z.number().int().min(1).max(600_000).optional(),
    /** Runs of the whole probe before it is declared failed. */
    attempts: z.number().int().min(1).max(10).default(1),
    /** Hard limit for the whole probe child, after which it is killed. */
    timeoutMs: z.number().int().min(100).max(3_600_000).default(30_000),
    /** Wait before the first attempt (lets a reloaded application settle). */
    initialDelayMs: z.number().int().min(0).max(600_000).default(0),
    extra: z.array(ExtraProbeSchema).max(8).default([]),
  })
  .superRefine((spec, ctx) => {
    if (spec.golden && !spec.inputs) {
      ctx.addIssue({ code: 'custom', path: ['golden'], message: 'golden outputs need explicit inputs' });
    }
    const check = (group: 'inputs' | 'golden', entries: Record<string, { dims: number[]; data: number[] }>) => {
      for (const [name, t] of Object.entries(entries)) {
        const expected = t.dims.reduce((a, b) => a * b, 1);
        if (expected !== t.data.length) {
          ctx.addIssue({
            code: 'custom',
            path: [group, name, 'data'],
            message: `has ${t.data.length} values but dims ${JSON.stringify(t.dims)} need ${expected}`,
          });
        }
      }
    };
    if (spec.inputs) check('inputs', spec.inputs);
    if (spec.golden) check('golden', spec.golden);
  });

export type ProbeSpec = z.infer<typeof ProbeSpecSchema>;
export type ProbeSpecInput = z.input<typeof ProbeSpecSchema>;
export type GoldenOutput = z.infer<typeof GoldenOutputSchema>;

/** A model input or output as the manifest records it. */
export interface ModelIoShape {
  name: string;
  dims: readonly (number | string)[];
}

/**
 * Problems between a probe spec and the model it is meant for: unknown input or output names, a
 * shape that cannot fit, a missing input. Empty when they fit; `otactl release sign` refuses to
 * sign a release whose probe could never pass on any device.
 */
export function probeModelMismatches(
  spec: ProbeSpec,
  inputs: readonly ModelIoShape[],
  outputs: readonly ModelIoShape[],
): string[] {
  const problems: string[] = [];
  const fits = (dims: readonly number[], declared: readonly (number | string)[]) =>
    declared.length === 0 ||
    (dims.length === declared.length && declared.every((d, i) => typeof d === 'string' || d < 0 || d === dims[i]));
  if (spec.inputs) {
    for (const [name, tensor] of Object.entries(spec.inputs)) {
      const io = inputs.find((i) => i.name === name);
      if (!io)
        problems.push(
          `probe input ${name} is not an input of the model (inputs: ${inputs.map((i) => i.name).join(', ')})`,
        );
      else if (!fits(tensor.dims, io.dims)) {
        problems.push(
          `probe input ${name} has dims ${JSON.stringify(tensor.dims)}, the model declares ${JSON.stringify(io.dims)}`,
        );
      }
    }
    for (const io of inputs) {
      if (!Object.hasOwn(spec.inputs, io.name))
        problems.push(`the model input ${io.name} has no value in the probe inputs`);
    }
  }
  for (const [name, golden] of Object.entries(spec.golden ?? {})) {
    const io = outputs.find((o) => o.name === name);
    if (!io)
      problems.push(
        `golden output ${name} is not an output of the model (outputs: ${outputs.map((o) => o.name).join(', ')})`,
      );
    else if (!fits(golden.dims, io.dims)) {
      problems.push(
        `golden output ${name} has dims ${JSON.stringify(golden.dims)}, the model declares ${JSON.stringify(io.dims)}`,
      );
    }
  }
  return problems;
}
