import type { BrokerId, BrokerInfo } from './brokers.js';
import type { DiskResult } from './jobs.js';
import { DISK_METRICS, METRICS, SCENARIO_TITLES, type MetricDef, type ScenarioId } from './metrics.js';
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
      return value < 10 ? value.toFixed(2) : value < 100 ? value.toFixed(1) : integer.format(value);
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

export function buildRows(records: RunRecord[], brokers: BrokerId[], scenarios: ScenarioId[]): Row[] {
  const rows: Row[] = [];
  for (const def of METRICS) {
    if (!scenarios.includes(def.scenario)) continue;
    const row: Row = { key: def.key, scenario: def.scenario, label: def.label, unit: def.unit, better: def.better, cells: {}, ratios: {} };
    for (const broker of brokers) {
      const runs = records.filter((record) => record.scenario === def.scenario && record.broker === broker);
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
      for (const broker of brokers) {
        if (broker === 'ours') continue;
        const peer = row.cells[broker]?.value;
        if (peer !== undefined && Number.isFinite(ours) && Number.isFinite(peer) && peer !== 0) row.ratios[broker] = ours / peer;
      }
    }
    rows.push(row);
  }
  return rows;
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
    `Sizes: ${o['messages']} deliveries per throughput run, window ${o['window']} per publisher, ${o['payload']}-byte payloads; ` +
      `offline queue ${o['queueSize']} messages; crash stream ${o['crashMessages']} messages (SIGKILL at 40 % acknowledged); ` +
      `${o['runs']} run(s) per scenario and broker, runs interleaved across brokers.`,
    '',
  );
  out.push('| broker | version | configuration |', '|---|---|---|');
  for (const info of header.brokers) out.push(`| ${info.label} | ${info.version} | ${info.config} |`);
  for (const skipped of header.skipped) out.push(`| ${skipped.id} | — | skipped: ${skipped.reason} |`);
  out.push('');

  const peers = brokers.filter((broker) => broker !== 'ours');
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

  if (disk) {
    out.push('Machine limits (data disk, measured in the same run):', '', '| measurement | rate | unit |', '|---|---:|---|');
    for (const metric of DISK_METRICS) out.push(`| ${metric.label} | ${integer.format(disk[metric.key])} | ${metric.unit} |`);
    out.push('');
  }

  const notes = records.filter((record) => !record.ok || record.notes.length > 0);
  if (notes.length > 0) {
    out.push('Notes and errors:', '');
    for (const record of notes) {
      const parts = [...(record.ok ? [] : [`ERROR: ${record.error}`]), ...record.notes];
      out.push(`- ${SCENARIO_TITLES[record.scenario]}, ${record.broker}, run ${record.run}: ${parts.join('; ')}`);
    }
    out.push('');
  }
  return out.join('\n');
}
