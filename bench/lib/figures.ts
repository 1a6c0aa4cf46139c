// The figures a report carries in its JSON sidecar (bench/report.json), for
// bench/compare.ts. A figure is one number with its unit and which way is better; when
// the bench has per-run samples they come along, so a comparison can tell noise from a
// regression.

export type Better = 'higher' | 'lower';

/** ratio: a dimensionless ×; ms: a latency or a duration; rate: req/s, MB/s. */
export type FigureKind = 'ratio' | 'ms' | 'rate';

export interface Figure {
  /** Stable across runs: `section.name`. */
  id: string;
  label: string;
  value: number;
  kind: FigureKind;
  better: Better;
  /** Per-run values the value summarises (the median of these), when the bench has them. */
  samples?: number[];
}

export interface ReportMeta {
  commit: string;
  dirty: boolean;
  date: string;
  durationS: number;
  machine: { cpus: number; cpuModel: string; memoryGiB: number; kernel: string; loadAvgAtStart: [number, number, number] };
  node: string;
}

export interface ReportSection {
  name: string;
  title: string;
  /** The command that produces this section alone. */
  command: string;
  figures: Figure[];
}

export interface ReportJson {
  meta: ReportMeta;
  sections: ReportSection[];
}

export const fig = (id: string, label: string, value: number, kind: FigureKind, better: Better, samples?: number[]): Figure =>
  samples === undefined ? { id, label, value, kind, better } : { id, label, value, kind, better, samples };
