/**
 * Waits for `work` but no longer than `ms`; resolves either way and never rejects. The timer is
 * cleared as soon as the work settles, so a clean shutdown is not held open by it.
 */
export async function settleWithin(work: Promise<unknown>, ms: number): Promise<'settled' | 'timed_out'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timed_out'>((resolve) => {
    timer = setTimeout(() => resolve('timed_out'), ms);
  });
  try {
    return await Promise.race([
      work.then(
        () => 'settled' as const,
        () => 'settled' as const,
      ),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}
