import type { z } from 'zod';

/** "field.path: message" for the first issue, so errors name the bad field. */
export function describeZodError(error: z.ZodError, limit = 3): string {
  return error.issues
    .slice(0, limit)
    .map((issue) => `${issue.path.length ? issue.path.join('.') : '(root)'}: ${issue.message}`)
    .join('; ');
}
