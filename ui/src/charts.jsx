// Charts drawn as plain SVG from the API's 10 s metric points: no chart
// library, nothing inline that a strict Content-Security-Policy refuses.

const WIDTH = 600;
const HEIGHT = 140;
const PAD = { left: 44, right: 8, top: 8, bottom: 20 };

function path(values, max, width, height, left, top) {
  if (values.length === 0) return '';
  const step = values.length > 1 ? width / (values.length - 1) : 0;
  return values
    .map((v, i) => {
      const x = left + i * step;
      const y = top + height - (max > 0 ? (v / max) * height : 0);
      return `${i === 0 ? 'M' : 'L'}${x.toFixed(1)},${y.toFixed(1)}`;
    })
    .join(' ');
}

const sum = (values) => values.reduce((a, b) => a + b, 0);

function formatNumber(n) {
  if (n >= 100) return Math.round(n).toString();
  if (n >= 10) return n.toFixed(1).replace(/\.0$/, '');
  return n.toFixed(2).replace(/\.?0+$/, '') || '0';
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

// A small line of `values` for a table cell.
export function Sparkline({ values, label }) {
  const max = Math.max(0, ...values);
  const total = sum(values);
  return (
    <svg
      class="sparkline"
      viewBox="0 0 100 24"
      role="img"
      aria-label={`${label}: ${total} in the last hour`}
      data-total={total}
    >
      <path d={path(values, max, 100, 20, 0, 2)} />
      <text x="100" y="22" text-anchor="end">{total}</text>
    </svg>
  );
}

// A chart of one or more series over `points` (each series: label, and
// value(point) giving a number or null for no data).
export function Chart({ id, title, unit, points, series }) {
  const columns = series.map((s) => points.map((p) => s.value(p) ?? 0));
  const max = Math.max(0, ...columns.flat());
  const total = sum(columns.map(sum));
  const width = WIDTH - PAD.left - PAD.right;
  const height = HEIGHT - PAD.top - PAD.bottom;
  const first = points[0];
  const last = points[points.length - 1];
  const summary = series
    .map((s, i) => `${s.label}: latest ${formatNumber(columns[i].at(-1) ?? 0)}${unit}, peak ${formatNumber(Math.max(0, ...columns[i]))}${unit}`)
    .join('; ');
  return (
    <figure class="chart" id={id} data-total={total}>
      <figcaption>{title}</figcaption>
      <svg viewBox={`0 0 ${WIDTH} ${HEIGHT}`} role="img" aria-label={`${title}. ${points.length ? summary : 'No data yet.'}`}>
        <line class="axis" x1={PAD.left} y1={PAD.top + height} x2={WIDTH - PAD.right} y2={PAD.top + height} />
        <line class="grid" x1={PAD.left} y1={PAD.top} x2={WIDTH - PAD.right} y2={PAD.top} />
        <text class="tick" x={PAD.left - 4} y={PAD.top + 8} text-anchor="end">{formatNumber(max)}{unit}</text>
        <text class="tick" x={PAD.left - 4} y={PAD.top + height} text-anchor="end">0</text>
        {first && <text class="tick" x={PAD.left} y={HEIGHT - 4}>{clock(first.at)}</text>}
        {last && <text class="tick" x={WIDTH - PAD.right} y={HEIGHT - 4} text-anchor="end">{clock(last.at)}</text>}
        {columns.map((values, i) => (
          <path class={`series series-${i}`} d={path(values, max, width, height, PAD.left, PAD.top)} />
        ))}
      </svg>
      {series.length > 1 && (
        <ul class="legend">
          {series.map((s, i) => (
            <li class={`legend-${i}`}>{s.label}</li>
          ))}
        </ul>
      )}
    </figure>
  );
}
