import { useEffect } from 'preact/hooks';
import type { ViewProps } from './context.js';

/**
 * Follows the own topics of the devices a view shows while it is on screen: the set is replaced
 * when the rows change (another page, another filter) and emptied when the view goes away.
 */
export function useWatch(watch: ViewProps['watch'], ids: readonly string[]): void {
  // By value: `ids` is a new array at each render.
  const key = ids.join('\n');
  useEffect(() => watch(ids), [watch, key]);
  useEffect(() => () => watch([]), [watch]);
}
