import type { BrokerId, BrokerInfo } from './brokers.js';
import { takesPart } from './bridge-metrics.js';
import type { DiskResult } from './jobs.js';
import { DISK_METRICS, METRICS, SCENARIO_TITLES, SINK_SCENARIOS, type MetricDef, type ScenarioId } from './metrics.js';
import { max, median, min, sum } from './stats.js';

/** One run of one scenario on one broker, as stored in the results JSON. */
export interface RunRecord {
  scenario: ScenarioId;
  broker: BrokerId;
  run: number;
  ok: boolean;
  error?: string;
  seconds: number;
  metrics: Record<string, number>;
  notes: string[];
  raw?: unknown;
  /** Share of the machine's CPU other processes used during the measurement (0–1). */
  disturbance?: number;
  /** Replaced by a rerun (it was disturbed); kept in the JSON, left out of the table. */
  superseded?: boolean;
}

export interface Cell {
  /** The combined value (median or total), NaN when no run gave one. */
  value: number;
  min: number;
  max: number;
  runs: number;
  text: string;
  errors: string[];
}

export interface Row {
  key: string;
  scenario: ScenarioId;
  label: string;
  unit: string;
  better: MetricDef['better'];
  cells: Partial<Record<BrokerId, Cell>>;
  /** ours / peer, on the combined values. */
  ratios: Partial<Record<BrokerId, number>>;
}

const integer = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

export function formatValue(value: number, format: MetricDef['format']): string {
  if (!Number.isFinite(value)) return 'n/a';
  switch (format) {
    case 'rate':
    case 'count':
    case 'bytes':
      return integer.format(value);
    case 'ms':
    case 'us':
      return value < 10 ? value.toFixed(2) : value < 100 ? value.toFixed(1) : integer.format(value);
    case 'percent':
      return `${Math.round(value * 100)}`;
    case 'times':
      return `${value >= 10 ? value.toFixed(1) : value.toFixed(2)}×`;
    case 'mib': {
      const mib = value / 1_048_576;
      return mib < 10 ? mib.toFixed(2) : mib.toFixed(1);
    }
    default:
      return String(value);
  }
}

function compact(value: number): string {
  if (!Number.isFinite(value)) return 'n/a';
  if (value >= 1_000) return `${(value / 1000).toFixed(value >= 100_000 ? 0 : 1)}k`;
  return integer.format(value);
}

/** Brokers whose cells are compared with ours: not the trivial sink, which is no broker. */
export function peersOf(brokers: BrokerId[]): BrokerId[] {
  return brokers.filter((broker) => broker !== 'ours' && broker !== 'sink');
}

export function buildRows(records: RunRecord[], brokers: BrokerId[], scenarios: ScenarioId[]): Row[] {
  const rows: Row[] = [];
  const counted = records.filter((record) => !record.superseded);
  for (const def of METRICS) {
    if (!scenarios.includes(def.scenario)) continue;
    const row: Row = { key: def.key, scenario: def.scenario, label: def.label, unit: def.unit, better: def.better, cells: {}, ratios: {} };
    if (def.headroomOf !== undefined) {
      fillHeadroom(row, rows.find((other) => other.key === def.headroomOf), brokers);
      rows.push(row);
      continue;
    }
    for (const broker of brokers) {
      if ((broker === 'sink' && !SINK_SCENARIOS.includes(def.scenario)) || !takesPart(def.scenario, broker)) {
        row.cells[broker] = { value: NaN, min: NaN, max: NaN, runs: 0, text: '—', errors: [] };
        continue;
      }
      const runs = counted.filter((record) => record.scenario === def.scenario && record.broker === broker);
      const good = runs.filter((record) => record.ok);
      const values = good.map((record) => record.metrics[def.key]).filter((value): value is number => typeof value === 'number' && !Number.isNaN(value));
      const errors = runs.filter((record) => !record.ok).map((record) => record.error ?? 'error');
      const value = values.length === 0 ? NaN : def.aggregate === 'sum' ? sum(values) : median(values);
      let text: string;
      if (values.length === 0) text = errors.length ? `error (${errors.length}/${runs.length} runs)` : 'n/a';
      else if (def.format === 'ratio-of-runs') {
        const denominator = def.of === 'runs' ? good.length : sum(good.map((record) => record.metrics[def.of ?? ''] ?? NaN));
        text = `${integer.format(value)}/${integer.format(denominator)}`;
      } else {
        text = formatValue(value, def.format);
        if (def.throughput && values.length > 1) text += ` (${compact(min(values))}–${compact(max(values))})`;
      }
      if (values.length > 0 && errors.length > 0) text += ` ⚠ ${errors.length} failed`;
      row.cells[broker] = { value, min: min(values), max: max(values), runs: values.length, text, errors };
    }
    const ours = row.cells.ours?.value;
    if (def.better !== 'none' && def.format !== 'count' && ours !== undefined) {
      for (const broker of peersOf(brokers)) {
        const peer = row.cells[broker]?.value;
        if (peer !== undefined && Number.isFinite(ours) && Number.isFinite(peer) && peer !== 0) row.ratios[broker] = ours / peer;
      }
    }
    rows.push(row);
  }
  return rows;
}

/** sink ÷ broker for every broker of a rate row (the sink's own cell stays empty). */
function fillHeadroom(row: Row, rate: Row | undefined, brokers: BrokerId[]): void {
  const sink = rate?.cells.sink?.value ?? NaN;
  for (const broker of brokers) {
    const value = broker === 'sink' ? NaN : sink / (rate?.cells[broker]?.value ?? NaN);
    const runs = Number.isFinite(value) ? Math.min(rate?.cells.sink?.runs ?? 0, rate?.cells[broker]?.runs ?? 0) : 0;
    row.cells[broker] = { value, min: value, max: value, runs, text: Number.isFinite(value) ? formatValue(value, 'times') : '—', errors: [] };
  }
}

/**
 * The check every table carries: did the load generator, against the trivial sink, reach at least
 * `factor` × the fastest broker in each rate row? One line per row that falls short.
 */
export function headroomWarnings(rows: Row[], factor = 2): string[] {
  const warnings: string[] = [];
  for (const row of rows) {
    const rate = rows.find((other) => other.key === METRICS.find((def) => def.key === row.key)?.headroomOf);
    if (!rate) continue;
    const lowest = Math.min(...Object.entries(row.cells).filter(([broker]) => broker !== 'sink').map(([, cell]) => cell?.value ?? NaN).filter(Number.isFinite));
    if (Number.isFinite(lowest) && lowest < factor) {
      warnings.push(`${rate.label}: the load generator reached only ${formatValue(lowest, 'times')} the fastest broker against the trivial sink (want ≥ ${factor}×): that row may be capped by the generator`);
    }
  }
  return warnings;
}

export interface ReportHeader {
  date: string;
  machine: { cores: number; cpu: string; memoryGiB: number; node: string; kernel: string; filesystem: string };
  brokers: BrokerInfo[];
  skipped: Array<{ id: BrokerId; reason: string }>;
  options: Record<string, unknown>;
  durationS: number;
}

const betterText = { higher: 'higher', lower: 'lower', none: '—' } as const;

/** One line on how much other work shared the machine during the measurements. */
function disturbanceSummary(records: RunRecord[]): string | undefined {
  const shares = records.filter((record) => !record.superseded && record.disturbance !== undefined).map((record) => record.disturbance!);
  if (shares.length === 0) return undefined;
  const percent = (value: number) => `${Math.round(value * 100)} %`;
  const reruns = records.filter((record) => record.superseded).length;
  return (
    `Other processes on the machine during the measurements (share of all cores, from /proc/stat minus the broker and the load process): ` +
    `median ${percent(median(shares))}, max ${percent(max(shares))} over ${shares.length} runs` +
    (reruns > 0 ? `; ${reruns} disturbed attempt(s) were rerun.` : '.')
  );
}

export function markdown(header: ReportHeader, rows: Row[], brokers: BrokerId[], disk: DiskResult | undefined, records: RunRecord[]): string {
  const out: string[] = [];
  const m = header.machine;
  out.push(`# Benchmark ${header.date}`, '');
  out.push(
    `Machine: ${m.cores} cores (${m.cpu}), ${m.memoryGiB} GiB RAM, Linux ${m.kernel}, Node ${m.node}; data directories on ${m.filesystem}. ` +
      `Run took ${Math.round(header.durationS)} s.`,
    '',
  );
  const o = header.options;
  out.push(
    `Sizes: ${o['messages']} deliveries per throughput run${o['measureMs'] ? ` or more, measured for at least ${Number(o['measureMs']) / 1000} s (up to ${o['measureGrowth']}×)` : ''}${o['warmupMs'] ? ` after up to ${Number(o['warmupMs']) / 1000} s of warm-up` : ''}, window ${o['window']} per publisher, ${o['payload']}-byte payloads; ` +
      `offline queue ${o['queueSize']} messages; crash stream ${o['crashMessages']} messages (SIGKILL at 40 % acknowledged); ` +
      `${o['runs']} run(s) per scenario and broker, runs interleaved across brokers.` +
      ((o['scenarios'] as string[] | undefined)?.includes('memory') ? ` Memory: ${o['retainedCount']} retained messages; ${o['sessionCount']} offline sessions.` : ''),
    '',
  );
  out.push('| broker | version | configuration |', '|---|---|---|');
  for (const info of header.brokers) out.push(`| ${info.label} | ${info.version} | ${info.config} |`);
  for (const skipped of header.skipped) out.push(`| ${skipped.id} | — | skipped: ${skipped.reason} |`);
  out.push('');

  const peers = peersOf(brokers);
  const hasOurs = brokers.includes('ours');
  const head = ['metric', 'unit', ...brokers, ...(hasOurs ? peers.map((peer) => `ours/${peer}`) : []), 'better', 'runs'];
  out.push(`| ${head.join(' | ')} |`, `|${head.map((_, i) => (i < 2 ? '---' : '---:')).join('|')}|`);
  for (const row of rows) {
    const cells = brokers.map((broker) => row.cells[broker]?.text ?? 'n/a');
    const ratios = hasOurs
      ? peers.map((peer) => {
          const ratio = row.ratios[peer];
          return ratio === undefined ? '—' : `${ratio >= 10 ? ratio.toFixed(1) : ratio.toFixed(2)}×`;
        })
      : [];
    const runs = Math.max(0, ...brokers.map((broker) => row.cells[broker]?.runs ?? 0));
    out.push(`| ${[row.label, row.unit, ...cells, ...ratios, betterText[row.better], String(runs)].join(' | ')} |`);
  }
  out.push('');
  out.push(
    'Cells are medians over the runs (throughput rows: median (min–max)); crash rows are totals over the runs. ' +
      'Ratios are ours ÷ peer: for a "higher" row a ratio above 1 means ours is better, for a "lower" row a ratio below 1 does.',
    '',
  );

  if (brokers.includes('sink')) {
    // Quick runs are a few hundred messages: start-up, not capacity.
    const warnings = o['quick'] ? [] : headroomWarnings(rows);
    const verdict = o['quick']
      ? 'A quick run is too short to judge it.'
      : warnings.length === 0
        ? 'Every measured rate row has at least 2× headroom.'
        : 'Rows with less than 2× headroom:';
    out.push(
      'The trivial sink (`bench/peers/sink-server.ts`) is not a broker: it acknowledges and forwards in memory, and its throughput runs keep ' +
        'enough messages in flight that the load generator, not the round trip, bounds them (a note says when the generator was under 90 % ' +
        'busy), so its rate column is what the generator itself can do on this machine; the headroom rows divide it by each broker, and ' +
        `"load generator busy" says how much of one core the generator used in each broker's own runs. ${verdict}`,
      '',
      ...warnings.map((warning) => `- ${warning}`),
      ...(warnings.length > 0 ? [''] : []),
    );
  }

  if (disk) {
    out.push('Machine limits (data disk, measured in the same run):', '', '| measurement | rate | unit |', '|---|---:|---|');
    for (const metric of DISK_METRICS) out.push(`| ${metric.label} | ${integer.format(disk[metric.key])} | ${metric.unit} |`);
    out.push('');
  }

  const spread = disturbanceSummary(records);
  if (spread) out.push(spread, '');

  const notes = records.filter((record) => !record.ok || record.notes.length > 0 || record.superseded);
  if (notes.length > 0) {
    out.push('Notes and errors:', '');
    for (const record of notes) {
      const parts = [...(record.superseded ? ['rerun (this attempt is not in the table)'] : []), ...(record.ok ? [] : [`ERROR: ${record.error}`]), ...record.notes];
      out.push(`- ${SCENARIO_TITLES[record.scenario]}, ${record.broker}, run ${record.run}: ${parts.join('; ')}`);
    }
    out.push('');
  }
  return out.join('\n');
}
