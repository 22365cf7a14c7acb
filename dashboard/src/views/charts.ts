import type { BarChart } from '../experiment-charts.js';
import { intervalGeometry } from '../experiment-charts.js';
import type { MetricRow } from '../experiments.js';
import { html } from './html.js';

/**
 * The experiment view's charts as inline SVG, from the geometry in experiment-charts.ts: positions
 * are SVG attributes and colours the stylesheet's classes (`arm-control`, `arm-candidate`), so
 * nothing here needs an inline style or a script the page's CSP forbids. Each chart is one image
 * for screen readers, with its numbers in a table under it; each bar has its numbers as a tooltip.
 */
export function BarChartSvg({
  chart,
  name,
  label,
  unit,
  empty,
}: {
  chart: BarChart;
  name: string;
  label: string;
  unit: string;
  empty: string;
}) {
  if (chart.empty) return html`<p class="muted" data-chart-empty=${name}>${empty}</p>`;
  const { plot } = chart;
  return html`<svg class="chart" data-chart=${name} viewBox=${`0 0 ${chart.width} ${chart.height}`} role="img" aria-label=${label}>
    <g class="axis">
      ${chart.yTicks.map(
        (t) => html`<line class="grid-line" x1=${plot.left} x2=${plot.right} y1=${t.pos} y2=${t.pos}></line>
          <text class="tick" x=${plot.left - 6} y=${t.pos} text-anchor="end" dominant-baseline="middle">${t.label}</text>`,
      )}
      ${chart.xTicks.map(
        (t) => html`<text class="tick" x=${t.pos} y=${plot.bottom + 16} text-anchor="middle">${t.label}</text>`,
      )}
      <text class="tick" x=${plot.left - 6} y=${plot.top - 8} text-anchor="end">${unit}</text>
      <line class="baseline" x1=${plot.left} x2=${plot.right} y1=${plot.bottom} y2=${plot.bottom}></line>
    </g>
    ${chart.bars.map(
      (b) => html`<g key=${`${b.arm}-${b.key}`}>
        <rect class=${`bar arm-${b.arm}`} data-arm=${b.arm} data-key=${b.key} data-value=${b.value}
          x=${b.x} y=${b.y} width=${b.width} height=${Math.max(0, b.height)}><title>${b.title}</title></rect>
        ${b.text === null ? null : html`<text class="bar-label" x=${b.x + b.width / 2} y=${b.y - 4} text-anchor="middle">${b.text}</text>`}
      </g>`,
    )}
  </svg>`;
}

/** The arms' colours in words: the legend every chart shares. */
export function ArmLegend({ control, candidate }: { control: string; candidate: string }) {
  return html`<ul class="legend chart-legend">
    <li><span class="swatch arm-control" aria-hidden="true"></span> control ${control}</li>
    <li><span class="swatch arm-candidate" aria-hidden="true"></span> candidate ${candidate}</li>
  </ul>`;
}

/**
 * A metric's difference as a small bar: the interval (coloured by the verdict), the estimate as a
 * dot, zero and the threshold as lines, and the side the limit does not allow shaded.
 */
export function IntervalBar({ metric }: { metric: MetricRow }) {
  const g = intervalGeometry(metric);
  if (!g) return null;
  const mid = g.height / 2;
  return html`<svg class=${`interval verdict-${metric.verdict}`} data-interval=${metric.metric} viewBox=${`0 0 ${g.width} ${g.height}`}
    width=${g.width} height=${g.height} role="img" aria-label=${g.label}>
    <rect class="bad-side" x=${g.bad.x} y="0" width=${g.bad.width} height=${g.height}></rect>
    <line class="zero" x1=${g.zero} x2=${g.zero} y1="2" y2=${g.height - 2}></line>
    <line class="threshold" x1=${g.threshold} x2=${g.threshold} y1="0" y2=${g.height}></line>
    ${g.interval ? html`<rect class="ci" x=${g.interval.x1} y=${mid - 3} width=${Math.max(1, g.interval.x2 - g.interval.x1)} height="6"></rect>` : null}
    <circle class="estimate" cx=${g.estimate} cy=${mid} r="3.5"></circle>
  </svg>`;
}
