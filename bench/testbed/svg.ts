// Line charts as SVG, written by hand (no plotting package): linear or logarithmic axes with
// round tick values, one coloured line with point markers per series, a legend, and a figure
// that lays several charts out in a grid.

export interface Series {
  name: string;
  color: string;
  points: Array<[number, number]>;
}

export interface ChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  xLog?: boolean;
  yLog?: boolean;
  /** Tick positions on x (default: round values); the data's own x values read best. */
  xTicks?: number[];
  width?: number;
  height?: number;
}

const FONT = 'font-family="Helvetica, Arial, sans-serif"';

export function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A round step near range / count: 1, 2 or 5 times a power of ten. */
function niceStep(range: number, count: number): number {
  const raw = range / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(raw));
  const fraction = raw / power;
  return (fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10) * power;
}

export function formatTick(value: number): string {
  const abs = Math.abs(value);
  if (abs >= 1e6) return `${trim(value / 1e6)}M`;
  if (abs >= 1e4) return `${trim(value / 1e3)}k`;
  return trim(value);
}

function trim(value: number): string {
  return Number(value.toPrecision(3)).toString();
}

interface Axis {
  min: number;
  max: number;
  ticks: number[];
  log: boolean;
}

function linearAxis(values: number[], fromZero: boolean, ticks?: number[]): Axis {
  let min = fromZero ? Math.min(0, ...values) : Math.min(...values);
  let max = Math.max(...values);
  if (!Number.isFinite(min) || !Number.isFinite(max))
    return { min: 0, max: 1, ticks: [0, 1], log: false };
  if (max === min) max = min + (min === 0 ? 1 : Math.abs(min) * 0.5);
  if (ticks)
    return { min: Math.min(min, ...ticks), max: Math.max(max, ...ticks), ticks, log: false };
  const step = niceStep(max - min, 5);
  min = Math.floor(min / step) * step;
  max = Math.ceil(max / step) * step;
  const out: number[] = [];
  for (let v = min; v <= max + step / 2; v += step) out.push(Number(v.toPrecision(12)));
  return { min, max, ticks: out, log: false };
}

function logAxis(values: number[], ticks?: number[]): Axis {
  const positive = values.filter((v) => v > 0);
  if (positive.length === 0) return { min: 1, max: 10, ticks: [1, 10], log: true };
  const lo = 10 ** Math.floor(Math.log10(Math.min(...positive)));
  let hi = 10 ** Math.ceil(Math.log10(Math.max(...positive)));
  if (hi === lo) hi = lo * 10;
  if (ticks) return { min: Math.min(lo, ...ticks), max: Math.max(hi, ...ticks), ticks, log: true };
  const out: number[] = [];
  for (let v = lo; v <= hi * 1.0001; v *= 10) out.push(v);
  return { min: lo, max: hi, ticks: out, log: true };
}

function scale(axis: Axis, from: number, to: number): (v: number) => number {
  if (axis.log) {
    const a = Math.log10(axis.min);
    const b = Math.log10(axis.max);
    return (v) => from + ((Math.log10(Math.max(v, axis.min)) - a) / (b - a)) * (to - from);
  }
  return (v) => from + ((v - axis.min) / (axis.max - axis.min)) * (to - from);
}

/** One chart as an SVG group of size width × height, origin at its top left corner. */
export function lineChart(options: ChartOptions): string {
  const width = options.width ?? 440;
  const height = options.height ?? 300;
  const margin = { left: 62, right: 14, top: 30, bottom: 78 };
  const series = options.series.map((s) => ({
    ...s,
    points: s.points.filter(
      ([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!options.yLog || y > 0),
    ),
  }));
  const xs = series.flatMap((s) => s.points.map(([x]) => x));
  const ys = series.flatMap((s) => s.points.map(([, y]) => y));
  const xAxis = options.xLog ? logAxis(xs, options.xTicks) : linearAxis(xs, false, options.xTicks);
  const yAxis = options.yLog ? logAxis(ys) : linearAxis(ys, true);
  const x = scale(xAxis, margin.left, width - margin.right);
  const y = scale(yAxis, height - margin.bottom, margin.top);
  const parts: string[] = [];
  parts.push(`<rect width="${width}" height="${height}" fill="#fff"/>`);
  parts.push(
    `<text x="${width / 2}" y="18" text-anchor="middle" font-size="13" font-weight="bold" ${FONT}>${escapeXml(options.title)}</text>`,
  );
  // grid and ticks
  for (const t of yAxis.ticks) {
    const py = y(t).toFixed(1);
    parts.push(
      `<line x1="${margin.left}" x2="${width - margin.right}" y1="${py}" y2="${py}" stroke="#e4e4e4"/>`,
    );
    parts.push(
      `<text x="${margin.left - 6}" y="${py}" dy="4" text-anchor="end" font-size="10" ${FONT}>${formatTick(t)}</text>`,
    );
  }
  for (const t of xAxis.ticks) {
    const px = x(t).toFixed(1);
    parts.push(
      `<line x1="${px}" x2="${px}" y1="${margin.top}" y2="${height - margin.bottom}" stroke="#f0f0f0"/>`,
    );
    parts.push(
      `<text x="${px}" y="${height - margin.bottom + 14}" text-anchor="middle" font-size="10" ${FONT}>${formatTick(t)}</text>`,
    );
  }
  parts.push(
    `<rect x="${margin.left}" y="${margin.top}" width="${width - margin.left - margin.right}" height="${height - margin.top - margin.bottom}" fill="none" stroke="#888"/>`,
  );
  parts.push(
    `<text x="${(margin.left + width - margin.right) / 2}" y="${height - margin.bottom + 32}" text-anchor="middle" font-size="11" ${FONT}>${escapeXml(options.xLabel)}</text>`,
  );
  const midY = (margin.top + height - margin.bottom) / 2;
  parts.push(
    `<text transform="translate(14 ${midY}) rotate(-90)" text-anchor="middle" font-size="11" ${FONT}>${escapeXml(options.yLabel)}</text>`,
  );
  // lines
  for (const s of series) {
    const sorted = [...s.points].sort((a, b) => a[0] - b[0]);
    if (sorted.length > 1) {
      const d = sorted
        .map(([px, py], i) => `${i ? "L" : "M"}${x(px).toFixed(1)},${y(py).toFixed(1)}`)
        .join(" ");
      parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2"/>`);
    }
    for (const [px, py] of sorted) {
      parts.push(
        `<circle cx="${x(px).toFixed(1)}" cy="${y(py).toFixed(1)}" r="3" fill="${s.color}"/>`,
      );
    }
  }
  // legend, below the x label
  let lx = margin.left;
  const ly = height - 18;
  for (const s of series) {
    const label = s.points.length ? s.name : `${s.name} (no data)`;
    parts.push(
      `<line x1="${lx}" x2="${lx + 18}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="3"/>`,
    );
    parts.push(
      `<text x="${lx + 22}" y="${ly + 4}" font-size="11" ${FONT}>${escapeXml(label)}</text>`,
    );
    lx += 30 + label.length * 6.2;
  }
  if (xs.length === 0) {
    parts.push(
      `<text x="${width / 2}" y="${midY}" text-anchor="middle" font-size="12" fill="#999" ${FONT}>no data</text>`,
    );
  }
  return `<g>${parts.join("")}</g>`;
}

/** Charts in a grid of `columns`, with a title, as a whole SVG document. */
export function figure(title: string, charts: ChartOptions[], columns = 2): string {
  const width = 440;
  const height = 300;
  const rows = Math.ceil(charts.length / columns);
  const totalWidth = width * Math.min(columns, charts.length);
  const totalHeight = 36 + height * rows;
  const groups = charts.map((chart, i) => {
    const gx = (i % columns) * width;
    const gy = 36 + Math.floor(i / columns) * height;
    return `<g transform="translate(${gx} ${gy})">${lineChart({ ...chart, width, height })}</g>`;
  });
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${totalWidth}" height="${totalHeight}" viewBox="0 0 ${totalWidth} ${totalHeight}">`,
    `<rect width="${totalWidth}" height="${totalHeight}" fill="#fff"/>`,
    `<text x="${totalWidth / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold" ${FONT}>${escapeXml(title)}</text>`,
    ...groups,
    "</svg>",
    "",
  ].join("\n");
}
