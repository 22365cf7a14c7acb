const UNITS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * "90d", "12h", "30m", "45s" -> milliseconds; null when the text is not such a duration. The one
 * syntax of durations an operator types (otactl options, an analysis file's bakeTime).
 */
export function parseDuration(text: string): number | null {
  const m = /^(\d+)([smhd])$/.exec(text);
  return m ? Number(m[1]) * (UNITS[m[2] as string] as number) : null;
}
