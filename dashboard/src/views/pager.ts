import { html } from './html.js';

/** Previous / next over pages of a list; the count is text, so it reads the same to everyone. */
export function Pager({
  page,
  pages,
  total,
  onPage,
}: {
  page: number;
  pages: number;
  total: number;
  onPage: (p: number) => void;
}) {
  if (pages <= 1) return html`<p class="small muted" data-field="total">${total} shown</p>`;
  return html`<nav class="pager" aria-label="Pages">
    <button type="button" disabled=${page <= 1} onClick=${() => onPage(page - 1)}>← Previous</button>
    <span data-field="page">page ${page} of ${pages} (${total})</span>
    <button type="button" disabled=${page >= pages} onClick=${() => onPage(page + 1)}>Next →</button>
  </nav>`;
}
