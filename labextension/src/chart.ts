/**
 * A small SVG line chart for the loss curves: the layout is pure (tested), the rendering a few DOM
 * calls. Enough for two curves against step; no plotting library in the bundle.
 */
import { Point } from './model';

export interface ISeries {
  name: string;
  points: Point[];
  className: string;
  /** draw a marker per point (sparse series such as eval loss) */
  markers?: boolean;
}

export interface IChartLayout {
  width: number;
  height: number;
  plot: { left: number; top: number; right: number; bottom: number };
  xDomain: [number, number];
  yDomain: [number, number];
  paths: { name: string; className: string; d: string; markers: Point[] }[];
  xTicks: { value: number; pos: number; label: string }[];
  yTicks: { value: number; pos: number; label: string }[];
}

/** Round tick values (1, 2, 5 times a power of ten) covering [lo, hi]. */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!isFinite(lo) || !isFinite(hi)) {
    return [];
  }
  if (hi === lo) {
    return [lo];
  }
  const raw = (hi - lo) / Math.max(1, count);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map(f => f * mag).find(s => s >= raw) || 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Number(v.toPrecision(12)));
  }
  return out;
}

function label(v: number): string {
  return Math.abs(v) >= 1000 || Number.isInteger(v) ? String(Math.round(v)) : Number(v.toPrecision(3)).toString();
}

/** Scales, SVG path data and ticks for ``series`` in a ``width`` x ``height`` box. */
export function chartLayout(series: ISeries[], width = 560, height = 260): IChartLayout {
  const plot = { left: 48, top: 12, right: width - 12, bottom: height - 28 };
  const all = series.flatMap(s => s.points);
  let [x0, x1] = all.length ? [Math.min(...all.map(p => p[0])), Math.max(...all.map(p => p[0]))] : [0, 1];
  let [y0, y1] = all.length ? [Math.min(...all.map(p => p[1])), Math.max(...all.map(p => p[1]))] : [0, 1];
  if (x0 === x1) {
    x0 -= 1;
    x1 += 1;
  }
  if (y0 === y1) {
    const pad = Math.abs(y0) * 0.05 || 0.5;
    y0 -= pad;
    y1 += pad;
  } else {
    const pad = (y1 - y0) * 0.05;
    y0 -= pad;
    y1 += pad;
  }
  const sx = (x: number) => plot.left + ((x - x0) / (x1 - x0)) * (plot.right - plot.left);
  const sy = (y: number) => plot.bottom - ((y - y0) / (y1 - y0)) * (plot.bottom - plot.top);
  const paths = series.map(s => ({
    name: s.name,
    className: s.className,
    d: s.points.map((p, i) => `${i ? 'L' : 'M'}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(''),
    markers: s.markers ? s.points.map(p => [sx(p[0]), sy(p[1])] as Point) : []
  }));
  const xTicks = niceTicks(x0, x1).map(v => ({ value: v, pos: sx(v), label: label(v) }));
  const yTicks = niceTicks(y0, y1, 4).map(v => ({ value: v, pos: sy(v), label: label(v) }));
  return { width, height, plot, xDomain: [x0, x1], yDomain: [y0, y1], paths, xTicks, yTicks };
}

const SVG = 'http://www.w3.org/2000/svg';

function el(name: string, attrs: { [k: string]: string | number }, parent?: Element): SVGElement {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) {
    node.setAttribute(k, String(v));
  }
  if (parent) {
    parent.appendChild(node);
  }
  return node;
}

/** Render ``series`` as an SVG element (axes, ticks, one path per series, a legend). */
export function renderChart(series: ISeries[], xLabel: string, width = 560, height = 260): SVGElement {
  const layout = chartLayout(series, width, height);
  const { plot } = layout;
  const svg = el('svg', { class: 'jft-chart', width, height, viewBox: `0 0 ${width} ${height}` });
  for (const t of layout.yTicks) {
    el('line', { class: 'jft-grid', x1: plot.left, x2: plot.right, y1: t.pos, y2: t.pos }, svg);
    const text = el('text', { class: 'jft-tick', x: plot.left - 6, y: t.pos + 4, 'text-anchor': 'end' }, svg);
    text.textContent = t.label;
  }
  for (const t of layout.xTicks) {
    const text = el('text', { class: 'jft-tick', x: t.pos, y: plot.bottom + 16, 'text-anchor': 'middle' }, svg);
    text.textContent = t.label;
  }
  el('line', { class: 'jft-axis', x1: plot.left, x2: plot.right, y1: plot.bottom, y2: plot.bottom }, svg);
  el('line', { class: 'jft-axis', x1: plot.left, x2: plot.left, y1: plot.top, y2: plot.bottom }, svg);
  const xl = el('text', { class: 'jft-tick', x: plot.right, y: height - 2, 'text-anchor': 'end' }, svg);
  xl.textContent = xLabel;
  let legendX = plot.left + 8;
  for (const p of layout.paths) {
    const path = el('path', { class: `jft-line ${p.className}`, d: p.d, fill: 'none' }, svg);
    path.setAttribute('data-series', p.name);
    for (const [mx, my] of p.markers) {
      el('circle', { class: `jft-marker ${p.className}`, cx: mx, cy: my, r: 3 }, svg);
    }
    el('line', { class: `jft-line ${p.className}`, x1: legendX, x2: legendX + 16, y1: plot.top + 6, y2: plot.top + 6 }, svg);
    const name = el('text', { class: 'jft-legend', x: legendX + 20, y: plot.top + 10 }, svg);
    name.textContent = p.name;
    legendX += 28 + p.name.length * 7;
  }
  return svg;
}
