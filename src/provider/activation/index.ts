// Which way to answer a message that found no warm instance (issue 15): resume a paused
// instance, restore a saved state, fork a warm one, or start cold from the image — on
// whichever host — by what each way has measured on that host. A pure policy plus a small
// estimator fed with every completed activation; the deployer gathers the candidates and
// carries out the choice. No I/O here; the clock is not needed (estimates are averages).

export type ActivationPath = 'resume' | 'restore' | 'fork' | 'cold';
export const ACTIVATION_PATHS: readonly ActivationPath[] = ['resume', 'restore', 'fork', 'cold'];

export interface ActivationCandidate {
  path: ActivationPath;
  host: string;
  driver: string;
  /** The paused instance, the state or the source instance the path starts from. */
  from?: string;
}

export interface ActivationChoice {
  choice: ActivationCandidate;
  /** Every candidate with its estimate, cheapest first: the cold-start attribution's "why". */
  considered: Array<ActivationCandidate & { estimateMs: number }>;
}

/** The cheapest candidate by estimate; ties go to the earlier path in ACTIVATION_PATHS, then the order given. */
export function chooseActivation(candidates: readonly ActivationCandidate[], estimate: (c: ActivationCandidate) => number): ActivationChoice | undefined {
  if (candidates.length === 0) return undefined;
  const considered = candidates
    .map((c, i) => ({ ...c, estimateMs: estimate(c), i }))
    .sort((a, b) => a.estimateMs - b.estimateMs || ACTIVATION_PATHS.indexOf(a.path) - ACTIVATION_PATHS.indexOf(b.path) || a.i - b.i)
    .map(({ i: _i, ...c }) => c);
  const { estimateMs: _e, ...choice } = considered[0]!;
  return { choice, considered };
}

/**
 * Before any measurement, what these paths cost on this kind of machine (bench/report.md:
 * a wasm restore is tens of ms, a cold start hundreds; a resume is a signal). Replaced by
 * measurements as they come.
 */
export const PRIOR_MS: Readonly<Record<ActivationPath, number>> = { resume: 5, restore: 60, fork: 40, cold: 400 };

export interface CostEstimator {
  /** Feeds one measured activation (first message → ready) of a path on a host. */
  observe(c: Pick<ActivationCandidate, 'path' | 'host' | 'driver'>, ms: number): void;
  /** The estimate: this host's average for the path and driver; else any host's; else the prior. */
  estimate(c: Pick<ActivationCandidate, 'path' | 'host' | 'driver'>): number;
}

/** Exponentially weighted averages per (path, driver, host) and per (path, driver). */
export function createCostEstimator(options: { weight?: number; prior?: Partial<Record<ActivationPath, number>> } = {}): CostEstimator {
  const weight = options.weight ?? 0.3;
  const prior = { ...PRIOR_MS, ...options.prior };
  const perHost = new Map<string, number>();
  const perDriver = new Map<string, number>();
  const fold = (m: Map<string, number>, key: string, ms: number) => {
    const old = m.get(key);
    m.set(key, old === undefined ? ms : old + weight * (ms - old));
  };
  return {
    observe(c, ms) {
      if (!Number.isFinite(ms) || ms < 0) return;
      fold(perHost, `${c.path}|${c.driver}|${c.host}`, ms);
      fold(perDriver, `${c.path}|${c.driver}`, ms);
    },
    estimate(c) {
      return perHost.get(`${c.path}|${c.driver}|${c.host}`) ?? perDriver.get(`${c.path}|${c.driver}`) ?? prior[c.path];
    },
  };
}
